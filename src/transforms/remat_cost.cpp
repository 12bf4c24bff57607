// FLOPs per op for remat's recompute cost (see remat_cost.h).
//
// The table (out = output elements, in = elements of the first input):
//   matmul, linear            2 * out * K   (K: the first input's last dimension)
//   attention                 4 * B*H*Tq*D * Tk (QK^T and PV; causal masking not discounted)
//   attention_grad            8 * B*H*Tq*D * Tk (QK^T, dP and the product; dv: 4)
//   layer_norm, rms_norm      8 * in        softmax, log_softmax 5 * in
//   layer_norm_grad, rms_norm_grad 14 * in (the statistics again, then dx)
//   logsumexp                 4 * in        sum, mean, max       1 * in
//   cross_entropy             5 * in (with its lse input: 1 * in)
//   exp, log, tanh, erf, gelu, sigmoid, pow, sqrt, rsqrt and their grads: 10 * out
//   dropout                   10 * out      (a Philox draw per element)
//   define, define_grad       10 * out      (unknown bodies; banned anyway)
//   other elementwise ops     1 * out       shape ops, gather, leaves: 0
// The CPU target has no cost parameters in src/schedules and the CUDA
// architectures' (cuda_common.h) are one FP32 rate per GPU, so FLOPs order
// ops as time would at any fixed rate. The figures are estimates, used
// only to rank choices and to report added work.
#include "remat_cost.h"

#include <set>

#include "op_registry.h"

namespace tessera {

double op_flops(const Graph& g, const Node& n) {
  if (n.is_leaf()) return 0;
  const double out = static_cast<double>(n.type.numel());
  const TensorType& first = g.nodes[n.inputs.at(0)].type;
  const double in = static_cast<double>(first.numel());
  if (n.op == "matmul" || n.op == "linear") return 2 * out * static_cast<double>(first.shape.back());
  if (n.op == "attention") {
    const TensorType& k = g.nodes[n.inputs.at(1)].type;
    return 4 * in * static_cast<double>(k.shape[k.rank() - 2]);
  }
  if (n.op == "attention_grad") {  // the probabilities again, then two products (dv: one)
    const TensorType& k = g.nodes[n.inputs.at(1)].type;
    const int64_t wrt = attr_int(n.attrs, "wrt", n.op);
    return (wrt == 2 ? 4 : 8) * in * static_cast<double>(k.shape[k.rank() - 2]);
  }
  if (n.op == "layer_norm" || n.op == "rms_norm") return 8 * in;
  if (n.op == "layer_norm_grad" || n.op == "rms_norm_grad") return 14 * in;
  if (n.op == "softmax" || n.op == "log_softmax" || (n.op == "cross_entropy" && n.inputs.size() == 2)) return 5 * in;
  if (n.op == "logsumexp") return 4 * in;
  static const std::set<std::string> transcendental = {"exp",  "log",   "tanh",    "erf",   "gelu",    "sigmoid",
                                                       "pow",  "sqrt",  "rsqrt",   "gelu_grad", "dropout",
                                                       "define", "define_grad"};
  if (transcendental.count(n.op)) return 10 * out;
  switch (op_def(n.op).kind) {
    case OpKind::reduction: return in;
    case OpKind::elementwise: return out;
    default: return 0;  // shape, gather
  }
}

bool expensive_to_recompute(const Graph& g, const Node& n) {
  if (n.op == "define" || n.op == "define_grad") return true;
  const OpDef* def = find_op(n.op);
  if (!def || n.is_leaf()) return false;
  if (def->kind == OpKind::contraction) return true;
  return def->kind == OpKind::reduction && 8 * n.type.numel() <= g.nodes[n.inputs.at(0)].type.numel();
}

}  // namespace tessera
