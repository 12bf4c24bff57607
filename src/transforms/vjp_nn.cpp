// VJP rules (see vjp.h) for the neural-network ops: embedding, softmax,
// log_softmax, logsumexp, layer_norm, rms_norm, cross_entropy, dropout and attention.
//
// Each rule builds its backward from library ops, recomputing what it needs
// from the forward's inputs (normalization statistics, attention
// probabilities, dropout's mask: regenerated from seed and offset, never
// saved) so that the backward graph reads only forward inputs, the forward
// output and the cotangent. Integer inputs (indices, targets) get no
// gradient. The rules for `define` nodes (user ops) are not here. Rules read
// the forward node's attributes before adding any node: adding nodes may move
// the graph's node storage that VjpContext::node refers to.
#include <cmath>
#include <limits>

#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

bool wants(const VjpContext& c, size_t i) {
  return c.needs_grad.size() <= i || c.needs_grad[i];
}

// A scalar constant of `like`'s dtype.
Tensor scalar(const VjpContext& c, double v, const Tensor& like) {
  return c.b.constant(v, like.dtype());
}

std::vector<Tensor> embedding_vjp(const VjpContext& c) {
  // indices: none; weight: the cotangent rows scattered into a [V, D] table.
  const int64_t vocab = c.inputs[1].shape()[0];
  if (!wants(c, 1)) return {Tensor(), Tensor()};
  return {Tensor(), embedding_grad(c.inputs[0], c.cotangent, vocab)};
}

std::vector<Tensor> softmax_vjp(const VjpContext& c) {
  // dx = y (g - sum(g y)) along the axis.
  const int64_t axis = attr_int(c.node.attrs, "axis", "softmax");
  Tensor y = c.output, g = c.cotangent;
  return {y * (g - sum(g * y, {axis}, true))};
}

std::vector<Tensor> log_softmax_vjp(const VjpContext& c) {
  // dx = g - softmax(x) sum(g) along the axis; softmax(x) = exp(y).
  const int64_t axis = attr_int(c.node.attrs, "axis", "log_softmax");
  Tensor y = c.output, g = c.cotangent;
  return {g - exp(y) * sum(g, {axis}, true)};
}

// Normalization backward: dx is one op (layer_norm_grad / rms_norm_grad,
// which recomputes the row statistics from x in the same pass); the weight's
// gradient sums g * xhat over the rows, xhat being the norm without weight
// and bias; the bias's sums g. When both are wanted they are one sum over
// the two stacked ([2, ..., D] -> [2, D]): one reduction over the rows
// instead of two, each of a few microseconds plus launches on a GPU.
std::vector<Tensor> norm_vjp(const VjpContext& c, bool rms) {
  const double eps = attr_float(c.node.attrs, "eps", rms ? "rms_norm" : "layer_norm");
  Tensor x = c.inputs[0], g = c.cotangent;
  const Shape row{x.shape().back()};
  Tensor w = c.inputs.size() >= 2 ? c.inputs[1] : Tensor();
  std::vector<Tensor> grads{Tensor()};
  if (wants(c, 0)) grads[0] = rms ? rms_norm_grad(x, g, w, eps) : layer_norm_grad(x, g, w, eps);
  if (c.inputs.size() < 2) return grads;
  if (!wants(c, 1)) {
    grads.push_back(Tensor());
    if (c.inputs.size() >= 3) grads.push_back(wants(c, 2) ? sum_to_shape(g, row) : Tensor());
    return grads;
  }
  Tensor gx = g * (rms ? rms_norm(x, eps) : layer_norm(x, eps));
  if (c.inputs.size() >= 3 && wants(c, 2) && x.shape().size() >= 2) {
    std::vector<int64_t> rows;
    for (int64_t a = 1; a < static_cast<int64_t>(x.shape().size()); ++a) rows.push_back(a);
    Tensor both = sum(concat({unsqueeze(gx, 0), unsqueeze(g, 0)}, 0), rows);  // [2, d]
    grads.push_back(reshape(slice(both, 0, 0, 1), row));
    grads.push_back(reshape(slice(both, 0, 1, 2), row));
    return grads;
  }
  grads.push_back(sum_to_shape(gx, row));
  if (c.inputs.size() >= 3) grads.push_back(wants(c, 2) ? sum_to_shape(g, row) : Tensor());
  return grads;
}

std::vector<Tensor> logsumexp_vjp(const VjpContext& c) {
  // dx = g exp(x - y): the softmax of the row times its cotangent.
  return {unsqueeze(c.cotangent, -1) * exp(c.inputs[0] - unsqueeze(c.output, -1))};
}

std::vector<Tensor> cross_entropy_vjp(const VjpContext& c) {
  // loss = sum over rows n whose target is not ignore_index of
  // (lse[n] - logits[n, target[n]]) / count (count of those rows, at least 1).
  // With the lse input (cross_entropy() adds it) the rule gives d lse =
  // g / count on those rows and d logits = -onehot g / count; logsumexp's
  // rule adds the softmax term, so the gradient reads the forward's row
  // statistics. Without it, d logits = g (softmax - onehot) / count, the
  // softmax as exp(logits - logsumexp(logits)): two row reductions and a
  // pointwise term that fuses into the gradient's kernel.
  const int64_t ignore = attr_int(c.node.attrs, "ignore_index", "cross_entropy");
  const bool has_lse = c.inputs.size() == 3;
  Tensor logits = c.inputs[0], target = c.inputs[1], g = c.cotangent;
  const int64_t classes = logits.shape()[1];
  GraphBuilder& b = c.b;
  // Targets are compared in their own integer type and the class ids as
  // i32: the one-hot term, evaluated per logit, then reads a 4-byte class id
  // table and does no 64-bit integer work when the targets are i32.
  const bool ignore_fits_i32 = ignore >= std::numeric_limits<int32_t>::min() && ignore <= std::numeric_limits<int32_t>::max();
  const DType ti = target.dtype() == DType::i64 || !ignore_fits_i32 ? DType::i64 : DType::i32;
  Tensor t = target.dtype() == ti ? target : cast(target, ti);
  Tensor valid = cast(ne(t, b.constant(static_cast<double>(ignore), ti)), logits.dtype());
  Tensor cls = maximum(minimum(t, b.constant(static_cast<double>(classes - 1), ti)), b.constant(0.0, ti));
  if (ti != DType::i32) cls = cast(cls, DType::i32);
  std::vector<double> iota(static_cast<size_t>(classes));
  for (int64_t k = 0; k < classes; ++k) iota[static_cast<size_t>(k)] = static_cast<double>(k);
  Tensor onehot = cast(eq(unsqueeze(cls, 1), b.constant(iota, {classes}, DType::i32)), logits.dtype());
  Tensor row_scale = valid * (g / maximum(sum(valid), scalar(c, 1.0, logits)));  // [N]
  if (has_lse)
    return {wants(c, 0) ? onehot * unsqueeze(-row_scale, 1) : Tensor(), Tensor(), wants(c, 2) ? row_scale : Tensor()};
  Tensor lse = unsqueeze(logsumexp(logits), 1);
  return {(exp(logits - lse) - onehot) * unsqueeze(row_scale, 1), Tensor()};
}

std::vector<Tensor> dropout_vjp(const VjpContext& c) {
  // The mask depends only on the element index, seed and offset: the same
  // dropout applied to the cotangent keeps and scales exactly the same elements.
  const double p = attr_float(c.node.attrs, "p", "dropout");
  const uint64_t seed = static_cast<uint64_t>(attr_int(c.node.attrs, "seed", "dropout"));
  const uint64_t offset = static_cast<uint64_t>(attr_int(c.node.attrs, "offset", "dropout"));
  return {dropout(c.cotangent, p, seed, offset)};
}

std::vector<Tensor> attention_vjp(const VjpContext& c) {
  // attention_grad recomputes the probabilities from q and k (the forward
  // keeps none) and reads the output for the softmax gradient's row term.
  const bool causal = attr_bool(c.node.attrs, "causal", "attention");
  const double scale = attr_float(c.node.attrs, "scale", "attention");
  std::vector<Tensor> grads(3);
  for (int i = 0; i < 3; ++i)
    if (wants(c, i))
      grads[i] = attention_grad(c.inputs[0], c.inputs[1], c.inputs[2], c.output, c.cotangent, i, causal, scale);
  return grads;
}

const VjpRegistrar r_embedding("embedding", embedding_vjp);
const VjpRegistrar r_softmax("softmax", softmax_vjp);
const VjpRegistrar r_log_softmax("log_softmax", log_softmax_vjp);
const VjpRegistrar r_layer_norm("layer_norm", [](const VjpContext& c) { return norm_vjp(c, false); });
const VjpRegistrar r_rms_norm("rms_norm", [](const VjpContext& c) { return norm_vjp(c, true); });
const VjpRegistrar r_logsumexp("logsumexp", logsumexp_vjp);
const VjpRegistrar r_cross_entropy("cross_entropy", cross_entropy_vjp);
const VjpRegistrar r_dropout("dropout", dropout_vjp);
const VjpRegistrar r_attention("attention", attention_vjp);

}  // namespace

void link_nn_vjps() {}

}  // namespace tessera
