// Fused causal/full attention on CUDA (flash-attention style): the forward
// and its gradient in tiles of 64 rows, with the score matrix kept on chip,
// never in device memory.
// - bf16 tensors of head dim 16, 32 or 64 (16-byte aligned) run on bf16
//   tensor cores (mma.sync, f32 accumulation; runtime/cuda/attention_mma.cu).
//   As in bf16 flash-attention kernels, the probabilities and score
//   gradients are rounded to bf16 as product operands.
// - Other shapes, and f32 tensors, run kernels that compute in f32; with
//   `tf32` their tile products run on TF32 tensor cores (WMMA), as
//   cuBLASLt's TF32 GEMMs do, otherwise on CUDA cores in full f32; bf16
//   tensors of other head dims take the TF32 tensor cores.
// Results are rounded to the tensors' type once (bf16: nearest even).
//
// Layout: by default q, k, v, out, grad and the gradients are contiguous
// [batch, seq, dim] (batch: every leading dim of the graph's tensors, e.g.
// batch x heads). An AttentionLayout places each tensor's rows elsewhere
// (GPT's q, k and v read in place from the [B, T, 3 x C] projection, its
// out written as [B, T, C]); the bf16 tensor-core path takes any such
// layout whose strides are multiples of 8 elements, the other kernels only
// the dense one. The semantics are tessera's attention op (ops.h):
// out = softmax(q k^T * scale, keys j > query i masked when causal) v.
//
// The backward runs two kernels: one per query tile (the row statistics
// logsumexp and rowsum(grad * out), and dq), then one per key tile (dk, dv),
// which reads the statistics from `scratch`. The forward can write each
// query row's logsumexp for the backward, which then skips recomputing it
// (a third of the query-tile kernel's products). Nothing here allocates; every
// launch is checked and reported as a tessera::Error naming the shape. This
// does not handle f16, a value dim unlike the key dim, or dim > 64
// (fused_attention_supports says which shapes it takes).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "tessera/dtype.h"

namespace tessera::cuda {

struct AttentionShape {
  int64_t batch = 0;  // independent attentions (batch x heads)
  int64_t seq = 0;    // T: queries and keys
  int64_t dim = 0;    // D: of q, k and v
  bool causal = true;
  float scale = 0;    // > 0 (the caller resolves "1/sqrt(D)")
  DType dtype = DType::f32;  // of every tensor: f32 or bf16
  std::string text() const;  // "f32 [96 x 1024 x 64] causal scale 0.125"
};

// Element (y, t, d) of a tensor (y < batch, t < seq, d < dim) is at
// (y / heads) * batch + (y % heads) * head + t * row + d elements from its
// pointer. All zero: the dense layout.
struct AttentionStrides {
  int64_t batch = 0, head = 0, row = 0;
  bool operator==(const AttentionStrides& o) const { return batch == o.batch && head == o.head && row == o.row; }
};

struct AttentionLayout {
  int64_t heads = 1;  // divides AttentionShape::batch
  AttentionStrides q, k, v, out, grad, dq, dk, dv;
  // The strides of `t` (one of the members above) with zeros resolved to the dense layout.
  AttentionStrides of(const AttentionStrides& t, const AttentionShape& s) const;
  // Whether every tensor is laid out densely.
  bool dense(const AttentionShape& s) const;
  std::string text() const;  // "12 heads; q [2359296, 64, 2304], ..." (batch, head, row strides)
};

// Whether the kernels take attention of this key/value dim.
bool fused_attention_supports(int64_t dim, int64_t value_dim);

// Bytes of `scratch` attention_backward needs: two floats per query row.
size_t attention_backward_scratch_bytes(const AttentionShape& s);

// out = attention(q, k, v). Tensors hold s.dtype elements. With `lse`
// (batch * seq floats; may be null) also each query row's logsumexp of its
// scaled, masked scores, for attention_backward's `forward_lse`.
// `layout` (null: dense) places the tensors; a layout that is not dense
// needs the tensor-core path (else a tessera::Error says why).
void attention_forward(const AttentionShape& s, const void* q, const void* k, const void* v, void* out, float* lse,
                       bool tf32, cudaStream_t stream, const AttentionLayout* layout = nullptr);

// dq, dk, dv (each may be null: not computed) from q, k, v, the forward's
// out and the cotangent grad of out. forward_lse: what attention_forward
// wrote for these q, k, v (same tf32 flag), or null.
void attention_backward(const AttentionShape& s, const void* q, const void* k, const void* v, const void* out,
                        const void* grad, void* dq, void* dk, void* dv, float* scratch, const float* forward_lse,
                        bool tf32, cudaStream_t stream, const AttentionLayout* layout = nullptr);

}  // namespace tessera::cuda
