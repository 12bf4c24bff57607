// VJP rules for the quantized linear ops (quant_ops.h): x gets g @ W through
// linear_*_grad_input (the dequantized weight is never materialized), the
// bias the sum of g; the packed weight and its scales get nothing, and are
// registered as frozen inputs (vjp.h) so that autodiff never trains an f32
// scale. dequantize_* and the grad_input ops have no rule (their inputs are
// frozen too), so autodiff refuses a trainable path through them.
#include "tessera/error.h"
#include "tessera/ops.h"
#include "tessera/quant_ops.h"
#include "vjp.h"

namespace tessera {

namespace {

using Grads = std::vector<Tensor>;

// Inputs 1.. of linear_nf4 that belong to the weight (2, or 5 when absmax is u8).
size_t nf4_group(const Node& node) { return node.inputs.size() >= 6 ? 5 : 2; }

bool has_bias(const Node& node) {
  if (node.op == "linear_int8") return node.inputs.size() == 4;
  if (node.op == "linear_nf4") return node.inputs.size() == 1 + nf4_group(node) + 1;
  return false;
}

NF4Tensors nf4_of(const VjpContext& c) {
  NF4Tensors w;
  w.weight = c.inputs[1];
  w.absmax = c.inputs[2];
  if (nf4_group(c.node) == 5) {
    w.nested_absmax = c.inputs[3];
    w.nested_quant_map = c.inputs[4];
    w.nested_offset = c.inputs[5];
  }
  w.out_features = attr_int(c.node.attrs, "out_features", c.node.op);
  w.in_features = attr_int(c.node.attrs, "in_features", c.node.op);
  return w;
}

const bool registered = [] {
  register_vjp("linear_int8", [](const VjpContext& c) -> Grads {
    Grads r(c.inputs.size());
    if (c.needs_grad[0]) r[0] = linear_int8_grad_input(c.cotangent, c.inputs[1], c.inputs[2]);
    if (has_bias(c.node) && c.needs_grad[3]) r[3] = sum_to_shape(c.cotangent, Shape(c.inputs[3].shape()));
    return r;
  });
  register_vjp("linear_nf4", [](const VjpContext& c) -> Grads {
    Grads r(c.inputs.size());
    if (c.needs_grad[0]) r[0] = linear_nf4_grad_input(c.cotangent, nf4_of(c));
    const size_t b = c.inputs.size() - 1;
    if (has_bias(c.node) && c.needs_grad[b]) r[b] = sum_to_shape(c.cotangent, Shape(c.inputs[b].shape()));
    return r;
  });
  // Everything but x (input 0) and the bias is the frozen weight.
  auto weight_inputs = [](const Node& node, size_t i) {
    return i > 0 && !(has_bias(node) && i + 1 == node.inputs.size());
  };
  for (const char* op : {"linear_int8", "linear_nf4", "linear_int8_grad_input", "linear_nf4_grad_input"})
    register_frozen_inputs(op, weight_inputs);
  for (const char* op : {"dequantize_int8", "dequantize_nf4"})
    register_frozen_inputs(op, [](const Node&, size_t) { return true; });
  return true;
}();

}  // namespace

void link_quant_vjps() { (void)registered; }

}  // namespace tessera
