// library_attention: which attention nodes a GPU plan runs in the fused
// CUDA attention kernels (runtime/cuda/attention.cu) instead of decomposing
// them into products and a softmax (decompose_attention.h), and the call
// each such kernel is.
//
// The kernels take f32 or bf16 attention (every operand of one type) whose
// key and value dims are equal and at most 64 (tessera::cuda::fused_attention_supports says the same; this file
// builds without the CUDA toolkit). partition() puts the attention_grad
// nodes of one attention (equal inputs and attributes, wrt 0, 1, 2) in one
// kernel, which becomes one backward call writing dq, dk and dv.
//
// Operands are dense [batch..., T, D] buffers, or, where the tensor-core
// kernels take them (in_place_takes), views of other buffers read in place
// (strided_view.h): GPT's q, k and v are slices of one projection split into
// heads, read from the projection's buffer. Likewise the kernels write their
// results in place into the tensor they feed through permutes, reshapes and
// a concat: the forward's out as [B, T, H, D] where the next product reads
// it, the gradients dq, dk and dv into the concat that is the projection's
// gradient. prepare_gpu_attention reroutes the backward's read of the
// forward's out through that permute, so the forward writes only it.
//
// This decides nothing about speed and runs nothing: the PlanExecutor does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "partition.h"
#include "strided_view.h"

namespace tessera {

// Whether attention or attention_grad node `n` of `g` runs in the fused kernels.
bool fused_attention_takes(const Graph& g, const Node& n);

// Whether attention_grad nodes x and y of `g` are gradients of one attention
// the fused kernels take (equal inputs, causal flag and scale): one backward
// call computes both.
bool one_backward_call(const Graph& g, const Node& x, const Node& y);

// The graph a GPU plan partitions: without dead code (whose reads would
// count as readers); attention the fused kernels do not take decomposed
// (decompose_attention.h); a forward attention they take that
// some permute P reads has its other readers read permute(P) instead (see
// above); the rest as it is.
Graph prepare_gpu_attention(const Graph& g);

// Where one tensor of a fused attention call lies: element (y, t, d) (y
// over the leading dims, the last of which is `heads`) at offset + (y /
// heads) * batch + (y % heads) * head + t * row + d elements of its buffer.
// Strides of dims of extent 1 take their dense values.
struct AttentionPlacement {
  int64_t offset = 0, batch = 0, head = 0, row = 0;
  bool operator==(const AttentionPlacement& o) const {
    return offset == o.offset && batch == o.batch && head == o.head && row == o.row;
  }
};

// The placement of `v` (a [batch..., T, D] view) and its heads (the extent
// of its third-last dim, 1 for rank 2), or nothing when its last dim is not
// contiguous or its leading dims but the last do not merge into one.
std::optional<std::pair<AttentionPlacement, int64_t>> attention_placement(const StridedView& v);
// The dense placement of a [batch..., T, D] tensor with `heads` heads.
AttentionPlacement dense_attention_placement(const Shape& shape, int64_t heads);

// Whether the fused kernels read or write attention node n's tensors at
// `p` in place: any dense placement; others only on the bf16 tensor-core
// path (head dim 16, 32 or 64), every offset and stride a multiple of 8
// elements (16 bytes: rows move as 16-byte copies).
bool in_place_takes(const Graph& g, const Node& n, const AttentionPlacement& p, int64_t heads);

// partition()'s decisions for the fused attention calls of a GPU plan
// (library products), given which nodes are materialized (`root`; readers:
// Graph::use_counts). Before the kernel-level remat decisions: a forward
// read only by a permute materializes the permute instead, and writes it in
// place; the gradients of one backward call, when all of them feed one
// concat through views, materialize the concat instead. Returns the nodes
// so written (each a kernel of its own, joining no other).
std::vector<bool> place_attention_results(const Graph& g, const std::vector<int>& readers, std::vector<bool>& root);
// After them: each operand of an attention node is read in place from the
// buffer its views end at, where in_place_takes allows; else materialized.
void place_attention_operands(const Graph& g, std::vector<bool>& root);

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
  // Where each tensor lies in its buffer, in the order q, k, v, out, grad, dq, dk, dv.
  int64_t heads = 1;
  AttentionPlacement placement[8];
  bool in_place() const;  // whether any placement is not dense

  std::string text() const;  // "fused attention backward f32 [96 x 1024 x 64] causal (dq, dk, dv)"
};

// The fused attention call that `kernel` is, or nothing.
std::optional<LibraryAttention> match_library_attention(const Kernel& kernel);

}  // namespace tessera
