// The VJP rule table and the frozen-input table (see vjp.h), and sum_to_shape.
#include <map>

#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {
std::map<std::string, VjpRule>& table() {
  static std::map<std::string, VjpRule> t;
  return t;
}
std::map<std::string, FrozenInputs>& frozen_table() {
  static std::map<std::string, FrozenInputs> t;
  return t;
}
}  // namespace

void register_frozen_inputs(const std::string& op, FrozenInputs frozen) { frozen_table()[op] = std::move(frozen); }

bool is_frozen_input(const Node& node, size_t input) {
  link_all_vjps();
  auto it = frozen_table().find(node.op);
  return it != frozen_table().end() && it->second(node, input);
}

void register_vjp(const std::string& op, VjpRule rule) { table()[op] = std::move(rule); }

const VjpRule* find_vjp(const std::string& op) {
  link_all_vjps();
  auto it = table().find(op);
  return it == table().end() ? nullptr : &it->second;
}

std::vector<std::string> differentiable_ops() {
  link_all_vjps();
  std::vector<std::string> names;
  for (const auto& [name, rule] : table()) names.push_back(name);
  return names;
}

Tensor sum_to_shape(Tensor grad, const Shape& target) {
  const Shape shape = target;  // a copy: `target` may live in the graph that sum() grows
  const Shape& gs = grad.shape();
  if (gs == shape) return grad;
  if (gs.size() < shape.size())
    fail("sum_to_shape: gradient of shape ", to_string(gs), " cannot reduce to ", to_string(shape));
  const size_t lead = gs.size() - shape.size();
  std::vector<int64_t> axes;
  for (size_t d = 0; d < gs.size(); ++d)
    if (d < lead || (shape[d - lead] == 1 && gs[d] != 1)) axes.push_back(static_cast<int64_t>(d));
  Tensor r = axes.empty() ? grad : sum(grad, axes, /*keepdim=*/true);
  return r.shape() == shape ? r : reshape(r, shape);
}

// Each vjp_*.cpp defines one of these.
void link_nn_vjps();
void link_elementwise_vjps();
void link_reduction_vjps();
void link_shape_vjps();
void link_linalg_vjps();
void link_define_vjps();
void link_quant_vjps();
void link_all_vjps() {
  link_quant_vjps();
  link_nn_vjps();
  link_elementwise_vjps();
  link_reduction_vjps();
  link_shape_vjps();
  link_linalg_vjps();
  link_define_vjps();
}

}  // namespace tessera
