// The op library: functions that add library-op nodes to a GraphBuilder.
//
// Each op is defined once, as a Halide-style pure function over index Vars
// (src/frontend/ops_*.cpp); these functions only add nodes, checking shapes
// and dtypes as they go. Node op names and attributes (what the text form
// prints) are given beside each function.
//
// Conventions: shapes are row-major; negative axes count from the end;
// binary ops broadcast as NumPy does and need equal dtypes (use cast).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/builder.h"

namespace tessera {

// ---- Elementwise unary: op name = function name ---------------------------
Tensor neg(Tensor x);
Tensor abs(Tensor x);
Tensor exp(Tensor x);
Tensor log(Tensor x);
Tensor sqrt(Tensor x);
Tensor rsqrt(Tensor x);
Tensor tanh(Tensor x);
Tensor sigmoid(Tensor x);
Tensor relu(Tensor x);
Tensor silu(Tensor x);  // x * sigmoid(x)
// gelu{approximate="none"|"tanh"}: x/2 (1 + erf(x/sqrt 2)), or the tanh form.
Tensor gelu(Tensor x, const std::string& approximate = "none");
// cast{dtype}: float->int truncates toward zero; to bool is x != 0.
Tensor cast(Tensor x, DType dtype);

// ---- Elementwise binary with broadcasting ----------------------------------
Tensor add(Tensor a, Tensor b);
Tensor sub(Tensor a, Tensor b);
Tensor mul(Tensor a, Tensor b);
Tensor div(Tensor a, Tensor b);  // float: IEEE; integer: truncating
Tensor pow(Tensor a, Tensor b);  // float only
Tensor maximum(Tensor a, Tensor b);
Tensor minimum(Tensor a, Tensor b);
// Comparisons give bool: eq, ne, lt, le, gt, ge.
Tensor eq(Tensor a, Tensor b);
Tensor ne(Tensor a, Tensor b);
Tensor lt(Tensor a, Tensor b);
Tensor le(Tensor a, Tensor b);
Tensor gt(Tensor a, Tensor b);
Tensor ge(Tensor a, Tensor b);
// where(cond: bool, a, b): a where cond else b, all three broadcast.
Tensor where(Tensor cond, Tensor a, Tensor b);

// Operators; a double operand becomes a scalar constant of the other's dtype.
Tensor operator+(Tensor a, Tensor b);
Tensor operator-(Tensor a, Tensor b);
Tensor operator*(Tensor a, Tensor b);
Tensor operator/(Tensor a, Tensor b);
Tensor operator-(Tensor a);
Tensor operator+(Tensor a, double b);
Tensor operator-(Tensor a, double b);
Tensor operator*(Tensor a, double b);
Tensor operator/(Tensor a, double b);
Tensor operator+(double a, Tensor b);
Tensor operator-(double a, Tensor b);
Tensor operator*(double a, Tensor b);
Tensor operator/(double a, Tensor b);

// ---- Reductions: sum, mean, max {axes=[...], keepdim} ---------------------
// Empty axes means all axes; a repeated axis is an error. mean needs a float
// dtype; sum and max take any numeric dtype (not bool) and keep it (integer
// sums wrap). f16/bf16 accumulate in f32 and round once.
Tensor sum(Tensor x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor mean(Tensor x, std::vector<int64_t> axes = {}, bool keepdim = false);
Tensor max(Tensor x, std::vector<int64_t> axes = {}, bool keepdim = false);

// ---- Shape ops --------------------------------------------------------------
Tensor reshape(Tensor x, Shape shape);  // reshape{shape} (stored as given); one -1 is inferred
Tensor permute(Tensor x, std::vector<int64_t> dims);  // permute{dims}: out dim d = in dim dims[d]
Tensor transpose(Tensor x, int64_t dim0, int64_t dim1);  // a permute node
Tensor broadcast_to(Tensor x, Shape shape);              // broadcast_to{shape}
// slice{axis, start, end, step}: PyTorch semantics (negative start/end count
// from the end, both clamped to [0, size]; step >= 1). An empty result is an
// error, since dims must be >= 1.
Tensor slice(Tensor x, int64_t axis, int64_t start, int64_t end, int64_t step = 1);
Tensor concat(const std::vector<Tensor>& xs, int64_t axis);  // concat{axis}
// squeeze{axes}: each listed axis has size 1; empty axes squeezes every size-1 dim.
Tensor squeeze(Tensor x, std::vector<int64_t> axes);
Tensor unsqueeze(Tensor x, int64_t axis);                    // unsqueeze{axis}

// ---- Linear algebra ----------------------------------------------------------
// matmul: a[..., M, K] x b[..., K, N] -> [..., M, N]; batch dims broadcast.
// Both operands need rank >= 2 and equal numeric dtypes; f16/bf16 accumulate in f32.
Tensor matmul(Tensor a, Tensor b);
// linear: x[..., in] . weight[out, in]^T (+ bias[out]) -> [..., out] (PyTorch layout).
Tensor linear(Tensor x, Tensor weight);
Tensor linear(Tensor x, Tensor weight, Tensor bias);

// ---- Neural-network ops ----------------------------------------------------
// embedding(indices: int[...], weight[V, D]) -> [..., D]. An index out of
// [0, V) reads row clamp(index, 0, V-1). Any integer dtype for indices.
Tensor embedding(Tensor indices, Tensor weight);
Tensor softmax(Tensor x, int64_t axis = -1);      // softmax{axis}
Tensor log_softmax(Tensor x, int64_t axis = -1);  // log_softmax{axis}
// layer_norm{eps} over the last dim, optional weight and bias [D]:
// (x - mean) / sqrt(var + eps) (* weight + bias), var biased (as PyTorch).
Tensor layer_norm(Tensor x, double eps = 1e-5);
Tensor layer_norm(Tensor x, Tensor weight, Tensor bias, double eps = 1e-5);
// rms_norm{eps} over the last dim: x / sqrt(mean(x^2) + eps) (* weight).
Tensor rms_norm(Tensor x, double eps = 1e-6);
Tensor rms_norm(Tensor x, Tensor weight, double eps = 1e-6);
// logsumexp(x[..., C]) -> [...]: log(sum(exp(x))) over the last dim,
// computed as max + log(sum(exp(x - max))) (torch.logsumexp(x, -1)).
Tensor logsumexp(Tensor x);
// cross_entropy{ignore_index}: logits[N, C], target int[N] -> scalar mean of
// -log_softmax(logits)[n, target[n]] over the n whose target != ignore_index
// (0 if there are none). target is i32 or i64; a target outside [0, C) other
// than ignore_index reads class clamp(target, 0, C-1). The node's optional
// third input is logsumexp(logits); this function adds it, so the loss and
// its gradient reduce the logits once.
Tensor cross_entropy(Tensor logits, Tensor target, int64_t ignore_index = -100);
// dropout{p, seed, offset}: keeps element e (row-major index) when the first
// 32-bit word of Philox4x32-10(counter = {e + offset low, high, 0, 0},
// key = {seed low, seed high}) / 2^32 >= p, scaling kept values by 1/(1-p).
// The same bits on every backend. p must be in [0, 1); p == 0 is the identity.
// seed and offset are stored as int64 attributes holding the uint64's bits.
Tensor dropout(Tensor x, double p, uint64_t seed, uint64_t offset = 0);
// attention{causal, scale}: q, k, v [..., T, D] -> softmax(q k^T * scale
// (+ causal mask)) v. scale <= 0 means 1/sqrt(D). v may have its own last dim
// Dv: q, k [..., T, D], v [..., T, Dv] -> [..., T, Dv]. causal masks key j > query i.
Tensor attention(Tensor q, Tensor k, Tensor v, bool causal = true, double scale = 0.0);

// ---- Gradient ops (what the backward of the ops above builds) ----------------
// embedding_grad{num_embeddings}(indices: int[...], grad[..., D]) -> [V, D]:
// a zero table with grad's row at each position added into row
// clamp(index, 0, V-1) (the gradient of embedding's weight; V = num_embeddings).
Tensor embedding_grad(Tensor indices, Tensor grad, int64_t num_embeddings);
// gelu_grad{approximate}(x, grad) -> grad * gelu'(x) (same types; the
// gradient of gelu with the same `approximate` form).
Tensor gelu_grad(Tensor x, Tensor grad, const std::string& approximate = "none");
// layer_norm_grad{eps}(x, grad[, weight]) -> [x's shape]: the gradient of
// layer_norm(x[, weight, bias], eps) with respect to x, given the cotangent
// of its output. The row statistics are recomputed from x, so the gradient
// is one pass over the rows. rms_norm_grad likewise for rms_norm. An
// undefined weight means the norm had none.
Tensor layer_norm_grad(Tensor x, Tensor grad, Tensor weight, double eps = 1e-5);
Tensor rms_norm_grad(Tensor x, Tensor grad, Tensor weight, double eps = 1e-6);
// attention_grad{wrt, causal, scale}(q, k, v, out, grad) -> the gradient of
// attention(q, k, v, causal, scale) with respect to q (wrt 0), k (1) or v (2),
// given its output `out` and the cotangent `grad` of that output. It
// recomputes the probabilities (never stored); on CUDA the three gradients
// of one attention run as one fused kernel.
Tensor attention_grad(Tensor q, Tensor k, Tensor v, Tensor out, Tensor grad, int wrt, bool causal = true,
                      double scale = 0.0);

}  // namespace tessera
