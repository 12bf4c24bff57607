// GemmStep: one GEMM whose operands are byte offsets into a DeviceArena, the
// form a memory-planned step takes ("call cuBLASLt on arena offsets"). The
// offsets are resolved through DeviceArena::at, so each operand's whole span
// (all batches) is bounds- and alignment-checked before anything is queued.
//
// This does not plan offsets (the memory plan does) or decide the order of
// steps; errors are tessera::Error naming the step, the operand and the bytes.
#pragma once

#include <cstddef>
#include <string>

#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/gemm.h"

namespace tessera::cuda {

struct GemmStep {
  static constexpr size_t kNoBias = static_cast<size_t>(-1);

  std::string name;  // for errors, e.g. "step 12 (linear mlp.fc1)"
  GemmShape shape;
  size_t a = 0, b = 0, c = 0;  // byte offsets of A, B and C in the arena
  size_t bias = kNoBias;       // byte offset of the bias, when the epilogue has one
  float alpha = 1.0f, beta = 0.0f;
};

// Queues `step` through `gemm` on operands in `arena`.
void run_gemm_step(CublasLtGemm& gemm, DeviceArena& arena, const GemmStep& step);

}  // namespace tessera::cuda
