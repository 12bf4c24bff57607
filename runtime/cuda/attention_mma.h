// The bf16 tensor-core path of the fused attention kernels (attention.h):
// flash-attention-2 style kernels whose tile products are mma.sync
// m16n8k16 bf16 instructions with f32 accumulation, score tiles kept in
// registers, and operand tiles double-buffered in shared memory with
// cp.async. Internal to runtime/cuda: attention.cu calls it for the shapes
// and layouts mma_attention_takes accepts and keeps its own kernels, which
// take the dense layout only, for the others (f32, TF32, head dims that are
// not 16, 32 or 64, unaligned tensors or strides).
//
// Numerics as bf16 flash-attention kernels: the probabilities and the score
// gradients are rounded to bf16 as product operands; statistics, sums and
// accumulators are f32; results are rounded to bf16 once. Deterministic: no
// atomics (dq has its own kernel), so replays are bitwise equal.
//
// Why dq has its own kernel, which recomputes the scores and their
// gradients (7 tile products in all where flash-attention 2 does 5): summing
// dq in the key-tile kernel, share by share, was measured slower on an H200
// at GPT-2 small's shape (96 x 1024 x 64, causal; 238 us with the own
// kernel): 491 us with the shares added in a fixed order (read, add, store
// per 64 x 64 share), 357 us with f32 atomics, 261 us with float2 atomics,
// 239 us with sm_90 bulk reductions from shared memory (the last three not
// deterministic), against 185 us with the 418 MB of share traffic left out.
#pragma once

#include <cuda_runtime_api.h>

#include <initializer_list>

#include "tessera/cuda/attention.h"

namespace tessera::cuda {

// A device tensor and its strides (resolved: AttentionLayout::of).
struct MmaTensor {
  const void* data;
  AttentionStrides strides;
};

// Whether the mma path takes `s` with these tensors (null data: not used):
// bf16, dim 16, 32 or 64, and every tensor 16-byte aligned with strides
// that are multiples of 8 elements (rows move as 16-byte copies), row
// strides below 2^31.
bool mma_attention_takes(const AttentionShape& s, std::initializer_list<MmaTensor> tensors);

// As attention_forward and attention_backward, for shapes mma_attention_takes;
// `layout` has every tensor's strides resolved (AttentionLayout::of).
void mma_attention_forward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                           const void* v, void* out, float* lse, cudaStream_t stream);
void mma_attention_backward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                            const void* v, const void* out, const void* grad, void* dq, void* dk, void* dv,
                            float* scratch, const float* forward_lse, cudaStream_t stream);

}  // namespace tessera::cuda
