// Philox4x32-10 as Halide Exprs and as host code (see philox.h).
#include "philox.h"

#include <cmath>

namespace tessera {

namespace {
constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // key bumps (golden ratio, sqrt(3) - 1)
}  // namespace

std::array<Halide::Expr, 4> philox4x32_10(std::array<Halide::Expr, 4> ctr, std::array<Halide::Expr, 2> key) {
  using Halide::Expr;
  using Halide::UInt;
  const Expr m0 = Halide::Internal::make_const(UInt(32), kM0), m1 = Halide::Internal::make_const(UInt(32), kM1);
  const Expr w0 = Halide::Internal::make_const(UInt(32), kW0), w1 = Halide::Internal::make_const(UInt(32), kW1);
  for (Expr& c : ctr) c = Halide::cast(UInt(32), c);
  for (Expr& k : key) k = Halide::cast(UInt(32), k);
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] = key[0] + w0;  // uint32 arithmetic wraps in Halide
      key[1] = key[1] + w1;
    }
    // 32x32 -> 64-bit products; hi = top word, lo = bottom word.
    Expr p0 = Halide::cast(UInt(64), m0) * Halide::cast(UInt(64), ctr[0]);
    Expr p1 = Halide::cast(UInt(64), m1) * Halide::cast(UInt(64), ctr[2]);
    Expr hi0 = Halide::cast(UInt(32), p0 >> 32), lo0 = Halide::cast(UInt(32), p0);
    Expr hi1 = Halide::cast(UInt(32), p1 >> 32), lo1 = Halide::cast(UInt(32), p1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

std::array<uint32_t, 4> philox4x32_10_host(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key[0] += kW0;
      key[1] += kW1;
    }
    uint64_t p0 = uint64_t{kM0} * ctr[0], p1 = uint64_t{kM1} * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ key[0], static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ key[1], static_cast<uint32_t>(p0)};
  }
  return ctr;
}

uint64_t dropout_threshold(double p) {
  // p * 2^32 is exact in double, so its ceiling is the least kept word.
  return static_cast<uint64_t>(std::ceil(p * 4294967296.0));
}

uint32_t dropout_word(uint64_t e, uint64_t seed, uint64_t offset) {
  uint64_t c = e + offset;
  return philox4x32_10_host({static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u},
                       {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)})[0];
}

}  // namespace tessera
