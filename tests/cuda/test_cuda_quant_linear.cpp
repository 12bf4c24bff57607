// The CUDA quantized linears (tessera/cuda/quant_linear.h) against a CPU
// loop written here from the formats' definitions (tessera/quant_ops.h),
// in double: W[n, k] = code_book[code(n*K + k)] * absmax (NF4; the
// double-quantized absmax = map[code] * nested_absmax[block / 256] +
// offset, in f32) or weight * scale[n] (int8); forward x @ W^T + bias and
// grad_input x @ W. Random packed bytes, scales, maps and activations at
// awkward sizes: 1, 2, 5 and 8 rows (the GEMVs), 9, 130 and 257 rows (tiles,
// partial ones), 1 to 8201 output features, K of one to 257 absmax blocks
// of 64 (GEMV blocks that loop over batches of a row and over row groups;
// 1 to 4 chunks of x per thread of the streaming GEMV, and one past; the
// tensor-core GEMV: partial tiles, uneven K splits, the largest x that
// fits its shared memory and one past), x spread over 2^-60..2^60, inf
// and NaN in x, tiled products of few tiles split into a workspace, and the TF32
// tensor-core tiles (within TF32 rounding; one case tells TF32 from f32
// exactly). Outputs and workspaces are poisoned first. Unsupported shapes
// are Errors naming the shape. Label gpu; skips without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/device_stream.h"
#include "tessera/cuda/quant_linear.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::upload;

// bitsandbytes' NF4 values (test_quantize checks tessera's table against
// the paper's definition).
const float kCodeBook[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                             -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                             0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                             0.33791524726295471f, 0.44070982933044434f, 0.5626170039176941f,
                             0.7229568362236023f, 1.0f};

template <typename T>
std::vector<uint8_t> bytes_of(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Host tensors of one case, the dense W they mean, and device copies.
struct Case {
  QuantLinearShape s;
  std::vector<uint8_t> weight, scale;  // scale: f32 absmax / scale, or u8 codes
  std::vector<float> nested_absmax, nested_map, nested_offset, x, bias;
  std::vector<double> dense;  // W [N, K]
};

// x's elements are uniform in (-1, 1), times 2^j for j uniform in
// [-spread, spread].
Case make_case(QuantLinearShape s, std::mt19937& rng, int spread = 0) {
  Case c;
  c.s = s;
  const int64_t N = s.out_features, K = s.in_features, elems = N * K, blocks = elems / 64;
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f), positive(0.05f, 2.0f);
  c.dense.resize(elems);
  if (s.format == QuantLinearFormat::int8) {
    c.weight.resize(elems);
    std::vector<float> scale(N);
    for (uint8_t& b : c.weight) b = static_cast<uint8_t>(byte(rng));
    for (float& v : scale) v = positive(rng) / 127;
    for (int64_t e = 0; e < elems; ++e)
      c.dense[e] = static_cast<double>(static_cast<int8_t>(c.weight[e])) * scale[e / K];
    c.scale = bytes_of(scale);
  } else {
    c.weight.resize(elems / 2);
    for (uint8_t& b : c.weight) b = static_cast<uint8_t>(byte(rng));
    std::vector<float> absmax(blocks);
    if (s.format == QuantLinearFormat::nf4) {
      for (float& v : absmax) v = positive(rng);
      c.scale = bytes_of(absmax);
    } else {
      c.scale.resize(blocks);
      for (uint8_t& b : c.scale) b = static_cast<uint8_t>(byte(rng));
      c.nested_absmax.resize((blocks + 255) / 256);
      c.nested_map.resize(256);
      for (float& v : c.nested_absmax) v = positive(rng);
      for (float& v : c.nested_map) v = unit(rng);
      c.nested_offset = {positive(rng)};
      for (int64_t b = 0; b < blocks; ++b)
        absmax[b] = c.nested_map[c.scale[b]] * c.nested_absmax[b / 256] + c.nested_offset[0];
    }
    for (int64_t e = 0; e < elems; ++e) {
      const uint8_t b = c.weight[e / 2];
      c.dense[e] = static_cast<double>(kCodeBook[e % 2 == 0 ? b >> 4 : b & 15]) * absmax[e / 64];
    }
  }
  c.x.resize(s.rows * (s.grad_input ? N : K));
  std::uniform_int_distribution<int> binade(-spread, spread);
  for (float& v : c.x) v = std::ldexp(unit(rng), binade(rng));
  if (s.bias) {
    c.bias.resize(N);
    for (float& v : c.bias) v = unit(rng);
  }
  return c;
}

// The product of case c on the device, into a poisoned output. With
// `workspace_bytes` > 0 it gets a poisoned workspace that size (tiled
// products of few tiles split their reduction into it).
std::vector<float> run(const Case& c, size_t workspace_bytes) {
  const QuantLinearShape& s = c.s;
  const int64_t cols = s.grad_input ? s.in_features : s.out_features;
  const std::vector<std::vector<uint8_t>> host = {c.weight,        c.scale,           bytes_of(c.nested_absmax),
                                                  bytes_of(c.nested_map), bytes_of(c.nested_offset), bytes_of(c.x),
                                                  bytes_of(c.bias)};
  const size_t out_bytes = s.rows * cols * 4;
  size_t total = out_bytes + (workspace_bytes + 255) / 256 * 256;
  for (const auto& h : host) total += (h.size() + 255) / 256 * 256;
  DeviceArena arena(total + 256, "quant_linear test");
  std::vector<void*> dev;
  size_t at = 0;
  for (const auto& h : host) {
    dev.push_back(h.empty() ? nullptr : arena.at(at, h.size()));
    if (!h.empty()) upload(dev.back(), h);
    at += (h.size() + 255) / 256 * 256;
  }
  void* d_out = arena.at(at, out_bytes);
  testing::fill_bytes(d_out, 0xFF, out_bytes);
  void* workspace = workspace_bytes ? arena.at(at + (out_bytes + 255) / 256 * 256, workspace_bytes) : nullptr;
  if (workspace) testing::fill_bytes(workspace, 0xFF, workspace_bytes);
  const QuantWeight w{dev[0], dev[1], static_cast<const float*>(dev[2]), static_cast<const float*>(dev[3]),
                      static_cast<const float*>(dev[4])};
  DeviceStream stream;
  quant_linear(s, static_cast<const float*>(dev[5]), w, static_cast<const float*>(dev[6]), static_cast<float*>(d_out),
               stream.stream(), workspace, workspace_bytes);
  stream.synchronize("quant_linear test");
  std::vector<float> got(s.rows * cols);
  const std::vector<uint8_t> out = download(d_out, out_bytes);
  std::memcpy(got.data(), out.data(), out_bytes);
  return got;
}

// Case s with random tensors against the double-precision product: within
// f32 rounding of the sum of |terms|, or TF32's (operands rounded to 10
// mantissa bits: 2^-10 relative per product, with room for the sums).
void check(const QuantLinearShape& s, std::mt19937& rng, size_t workspace_bytes = 0, int spread = 0) {
  SCOPED_TRACE(s.text() + (workspace_bytes ? ", workspace " + std::to_string(workspace_bytes) : "") +
               (spread ? ", x spread over 2^+-" + std::to_string(spread) : ""));
  const Case c = make_case(s, rng, spread);
  const int64_t N = s.out_features, K = s.in_features, cols = s.grad_input ? K : N;
  const std::vector<float> got = run(c, workspace_bytes);
  const double tolerance = s.tf32 ? 1.5e-3 : 1e-5;
  int bad = 0;
  const int64_t depth = s.grad_input ? N : K;
  for (int64_t m = 0; m < s.rows; ++m)
    for (int64_t j = 0; j < cols; ++j) {
      double want = s.bias ? c.bias[j] : 0.0, magnitude = std::fabs(want);
      for (int64_t d = 0; d < depth; ++d) {
        const double term = c.x[m * depth + d] * (s.grad_input ? c.dense[d * K + j] : c.dense[j * K + d]);
        want += term;
        magnitude += std::fabs(term);
      }
      const double g = got[m * cols + j];
      if (!(std::fabs(g - want) <= tolerance * magnitude + 1e-7) && bad++ < 5)
        ADD_FAILURE() << "out[" << m << ", " << j << "] = " << g << ", want " << want << " (sum of |terms| "
                      << magnitude << ")";
    }
}

TEST(CudaQuantLinear, EqualsTheDequantizedProductInDouble) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  const QuantLinearFormat formats[] = {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8};
  struct Size {
    int64_t rows, n, k;
  };
  const Size forward[] = {{1, 1, 64}, {1, 300, 320}, {2, 17, 64}, {5, 130, 192}, {8, 33, 128},
                          {9, 17, 64}, {130, 129, 192}, {257, 300, 320}, {128, 128, 128},
                          // GEMV blocks that loop: over several batches of a row (K > 4096), over
                          // more row groups than the device holds blocks at once, and both
                          {3, 5, 4160}, {1, 8201, 64}, {2, 4099, 4160},
                          // the streaming GEMV (1 or 2 rows): 1 to 4 chunks of x per thread, one
                          // past (the other GEMV), partial last steps
                          {1, 37, 11008}, {1, 3, 16384}, {1, 5, 16448}, {2, 19, 8192}, {2, 7, 8256},
                          // the tensor-core GEMV (3 to 8 rows): partial 16-row tiles, warps with
                          // no absmax block, K split unevenly, the largest K of 4 rows whose x fits
                          // in an H100's or H200's shared memory beside NF4's table and one past
                          // (the f32 GEMV; int8, without a table, still fits)
                          {3, 45, 192}, {4, 16, 64}, {4, 33, 4160}, {3, 1000, 1088}, {4, 9, 9664}, {4, 9, 9728},
                          // 5 to 8 rows: two groups of 8 columns of x (hi and lo)
                          {6, 17, 4096}, {7, 40, 1088}, {8, 300, 4160}};
  const Size backward[] = {{9, 1, 64}, {9, 17, 64}, {130, 129, 192}, {257, 300, 320}, {128, 33, 128}};
  for (QuantLinearFormat f : formats) {
    for (const Size& z : forward)
      for (bool bias : {false, true}) check({f, false, z.rows, z.n, z.k, bias}, rng);
    for (const Size& z : backward) check({f, true, z.rows, z.n, z.k, false}, rng);
  }
}

// The tensor-core GEMV carries x in f16 (pairs of them unless tf32)
// scaled per 64-element slice: x spread over 2^-60..2^60 (beyond f16's
// range either way) still gives f32 accuracy (TF32's with tf32), as it
// does on the other paths.
TEST(CudaQuantLinear, XOfAnyMagnitudeKeepsF32Accuracy) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (QuantLinearFormat f : {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8})
    for (int64_t rows : {1, 4, 8, 9})
      for (bool tf32 : {false, true}) check({f, false, rows, 70, 4160, true, tf32}, rng, 0, 60);
}

// An inf or NaN in x never yields a finite number in its row's outputs,
// and leaves the other rows exact (within TF32 rounding with tf32).
TEST(CudaQuantLinear, NonFiniteXGivesNonFiniteOutputsInItsRowOnly) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (QuantLinearFormat f : {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8})
    for (int64_t rows : {2, 4, 9})
      for (bool tf32 : {false, true})
        for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
          Case c = make_case({f, false, rows, 40, 256, false, tf32}, rng);
          SCOPED_TRACE(c.s.text() + ", x[0, 100] = " + std::to_string(bad));
          c.x[100] = bad;
          const std::vector<float> got = run(c, 0);
          for (int64_t n = 0; n < 40; ++n) EXPECT_FALSE(std::isfinite(got[n])) << "out[0, " << n << "] = " << got[n];
          for (int64_t n = 0; n < 40; ++n) {
            double want = 0.0, magnitude = 0.0;
            for (int64_t k = 0; k < 256; ++k) {
              want += c.x[256 + k] * c.dense[n * 256 + k];
              magnitude += std::fabs(c.x[256 + k] * c.dense[n * 256 + k]);
            }
            EXPECT_NEAR(got[40 + n], want, (tf32 ? 1.5e-3 : 1e-5) * magnitude + 1e-7) << "out[1, " << n << "]";
          }
        }
}

// Tiled products of few tiles (a few rows, many inputs) split their
// reduction when given a workspace: into chunks of 256 or more (a
// multiple of 64) with a short last one, as many as fit in the workspace
// (here: room for 2 parts, then for 8).
TEST(CudaQuantLinear, FewTilesSplitTheirReductionIntoTheWorkspace) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (QuantLinearFormat f : {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8})
    for (size_t parts : {2, 8}) {
      check({f, false, 130, 129, 4160, true}, rng, parts * 130 * 129 * 4);
      check({f, false, 9, 300, 1344, false}, rng, parts * 9 * 300 * 4);
      check({f, true, 257, 4160, 192, false}, rng, parts * 257 * 192 * 4);
    }
}

// With tf32 the tiles run on the tensor cores: tiles of every kind (full,
// partial, one row or column, split), both directions, every format; so do
// the GEMVs of 3 to 8 rows (operands rounded to f16, as precise as TF32),
// up to the largest x their shared memory holds (8 x 16384 is past it).
TEST(CudaQuantLinear, TF32TilesEqualTheDequantizedProductWithinTF32Rounding) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  struct Size {
    int64_t rows, n, k;
  };
  const Size forward[] = {{9, 1, 64}, {9, 17, 64}, {130, 129, 192}, {257, 300, 320}, {128, 128, 128}, {3, 5, 4160},
                          // GEMVs (3 to 8 rows: the tensor-core GEMV with f16 operands)
                          {1, 1, 64}, {1, 300, 320}, {2, 17, 64}, {5, 130, 192}, {8, 33, 128}, {3, 37, 11008},
                          {4, 4099, 4160}, {8, 40, 8192}, {8, 9, 16384}};
  const Size backward[] = {{9, 1, 64}, {9, 17, 64}, {130, 129, 192}, {257, 300, 320}, {128, 33, 128}};
  for (QuantLinearFormat f : {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8}) {
    for (const Size& z : forward)
      for (bool bias : {false, true}) check({f, false, z.rows, z.n, z.k, bias, true}, rng);
    for (const Size& z : backward) check({f, true, z.rows, z.n, z.k, false, true}, rng);
    check({f, false, 130, 129, 4160, true, true}, rng, 4 * 130 * 129 * 4);
    check({f, true, 257, 4160, 192, false, true}, rng, 4 * 257 * 192 * 4);
  }
}

// The flag is honoured: x = 1 + 2^-13 is 1 in TF32, so 64 products with
// weight 1 sum to exactly 64 on the tensor cores and to 64 + 2^-7 in f32.
TEST(CudaQuantLinear, TF32TilesRoundTheirOperandsToTF32) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  for (bool grad_input : {false, true}) {
    for (bool tf32 : {false, true}) {
      Case c;
      c.s = {QuantLinearFormat::int8, grad_input, 16, 64, 64, false, tf32};
      c.weight.assign(64 * 64, 1);
      c.scale = bytes_of(std::vector<float>(64, 1.0f));
      c.x.assign(16 * 64, 1.0f + std::ldexp(1.0f, -13));
      const std::vector<float> got = run(c, 0);
      const float want = tf32 ? 64.0f : 64.0f + std::ldexp(1.0f, -7);
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want) << c.s.text() << ", element " << i;
    }
  }
}

TEST(CudaQuantLinear, NestedBlocksPastTheFirst256ReadTheirOwnNestedAbsmax) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  // 300 x 128 has 600 absmax blocks: three nested blocks.
  check({QuantLinearFormat::nf4_nested, false, 3, 300, 128, true}, rng);
  check({QuantLinearFormat::nf4_nested, false, 40, 300, 128, false}, rng);
  check({QuantLinearFormat::nf4_nested, true, 40, 300, 128, false}, rng);
}

TEST(CudaQuantLinear, ShapesItCannotTakeAreErrorsNamingTheShape) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream;
  auto message = [&](const QuantLinearShape& s) {
    try {
      quant_linear(s, nullptr, QuantWeight{}, nullptr, nullptr, stream.stream());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string odd = message({QuantLinearFormat::nf4, false, 4, 17, 33, false});
  EXPECT_NE(odd.find("nf4 forward [4 x 33] -> [4 x 17]"), std::string::npos) << odd;
  EXPECT_NE(odd.find("in_features 33 is not a multiple of 64"), std::string::npos) << odd;
  const std::string few = message({QuantLinearFormat::int8, true, 8, 17, 64, false});
  EXPECT_NE(few.find("int8 grad_input [8 x 17] -> [8 x 64]"), std::string::npos) << few;
  EXPECT_NE(few.find("at most 8 rows"), std::string::npos) << few;
  const std::string null = message({QuantLinearFormat::nf4, false, 4, 17, 64, false});
  EXPECT_NE(null.find("null pointer"), std::string::npos) << null;
  EXPECT_FALSE(quant_linear_supports({QuantLinearFormat::nf4, false, 0, 17, 64, false}));
  EXPECT_TRUE(quant_linear_supports({QuantLinearFormat::nf4_nested, true, 9, 1, 64, false}));
}

}  // namespace
}  // namespace tessera::cuda
