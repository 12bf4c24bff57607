// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3", SC 2011), the counter-based generator behind dropout: as Halide Exprs,
// so that every backend computes the same bits, and as plain C++ for tests.
#pragma once

#include <Halide.h>

#include <array>
#include <cstdint>

namespace tessera {

// The four output words for a counter and key of uint32 Exprs (10 rounds).
std::array<Halide::Expr, 4> philox4x32_10(std::array<Halide::Expr, 4> ctr, std::array<Halide::Expr, 2> key);

// The same on the host.
std::array<uint32_t, 4> philox4x32_10_host(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key);

// dropout keeps element e iff word0 / 2^32 >= p, i.e. iff word0 >= this
// threshold (ceil(p * 2^32), exact; 2^32 keeps nothing). p in [0, 1).
uint64_t dropout_threshold(double p);

// Word 0 of Philox4x32-10 for dropout's element e (row-major index):
// counter {e + offset low 32 bits, high 32 bits, 0, 0}, key {seed low, seed high}.
uint32_t dropout_word(uint64_t e, uint64_t seed, uint64_t offset);

}  // namespace tessera
