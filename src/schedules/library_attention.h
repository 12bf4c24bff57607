// library_attention: which attention nodes a GPU plan runs in the fused
// CUDA attention kernels (runtime/cuda/attention.cu) instead of decomposing
// them into products and a softmax (decompose_attention.h), and the call
// each such kernel is.
//
// The kernels take f32 or bf16 attention (every operand of one type) whose
// key and value dims are equal and at most 64 (tessera::cuda::fused_attention_supports says the same; this file
// builds without the CUDA toolkit). partition() materializes their operands
// (dense [batch..., T, D] buffers) and puts the attention_grad nodes of one
// attention (equal inputs and attributes, wrt 0, 1, 2) in one kernel, which
// becomes one backward call writing dq, dk and dv.
//
// This decides nothing about speed and runs nothing: the PlanExecutor does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "partition.h"

namespace tessera {

// Whether attention or attention_grad node `n` of `g` runs in the fused kernels.
bool fused_attention_takes(const Graph& g, const Node& n);

// Whether attention_grad nodes x and y of `g` are gradients of one attention
// the fused kernels take (equal inputs, causal flag and scale): one backward
// call computes both.
bool one_backward_call(const Graph& g, const Node& x, const Node& y);

// The graph a GPU plan partitions: attention the fused kernels do not take
// decomposed (decompose_attention.h), the rest as it is.
Graph prepare_gpu_attention(const Graph& g);

struct LibraryAttention {
  DType dtype = DType::f32;  // of every operand: f32 or bf16
  bool backward = false;
  int64_t batch = 1, seq = 0, dim = 0;  // batch: the product of the leading dims
  bool causal = true;
  double scale = 0;  // resolved (never <= 0)
  // Positions in Kernel::inputs (out and grad: backward only, else -1).
  int q = -1, k = -1, v = -1, out = -1, grad = -1;
  // Backward: positions in Kernel::roots of the gradients it writes (-1: not wanted).
  int dq = -1, dk = -1, dv = -1;

  std::string text() const;  // "fused attention backward f32 [96 x 1024 x 64] causal (dq, dk, dv)"
};

// The fused attention call that `kernel` is, or nothing.
std::optional<LibraryAttention> match_library_attention(const Kernel& kernel);

}  // namespace tessera
