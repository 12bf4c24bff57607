// The VJP rule of `define` (user ops): for every float input on a path to the
// loss, a define_grad node (src/frontend/define_grad.h) that Halide's
// propagate_adjoints differentiates when the graph is lowered. The gradient is
// first built without compiling (check_define_grad), so that a body Halide
// cannot differentiate, or would differentiate wrongly, is an Error here,
// naming the node, the input and the reason. Integer and bool inputs get no
// gradient. This file has no rules for library ops.
#include "define_grad.h"
#include "tessera/error.h"
#include "vjp.h"

namespace tessera {

namespace {

std::vector<Tensor> define_vjp(const VjpContext& c) {
  std::vector<TensorType> types;
  for (const Tensor& t : c.inputs) types.push_back(t.type());
  std::vector<Tensor> grads(c.inputs.size());
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    if (!c.needs_grad[k] || !is_float(types[k].dtype)) continue;
    try {
      check_define_grad(c.node, types, static_cast<int>(k));
    } catch (const Error& e) {
      fail("define '", c.node.name, "': no gradient for input ", k, " ('", c.inputs[k].name(), "', ",
           to_string(types[k]), "): ", e.what());
    }
    grads[k] = define_grad(c.b, c.node, c.inputs, static_cast<int>(k), c.cotangent);
  }
  return grads;
}

const VjpRegistrar define_rule("define", define_vjp);

}  // namespace

void link_define_vjps() { (void)define_rule; }

}  // namespace tessera
