// The op registry: a name -> OpDef table filled at static-initialization time.
#include "op_registry.h"

#include <algorithm>
#include <map>

#include "define_grad.h"
#include "halide_util.h"
#include "tessera/error.h"
#include "user_def.h"

namespace tessera {

namespace {
std::map<std::string, OpDef>& table() {
  static std::map<std::string, OpDef> t;
  return t;
}
}  // namespace

void register_op(OpDef def) {
  std::string name = def.name;
  table()[name] = std::move(def);
}

const OpDef* find_op(const std::string& name) {
  link_all_ops();
  auto it = table().find(name);
  return it == table().end() ? nullptr : &it->second;
}

const OpDef& op_def(const std::string& name) {
  if (const OpDef* d = find_op(name)) return *d;
  fail("unknown op '", name, "'");
}

std::vector<std::string> registered_ops() {
  link_all_ops();
  std::vector<std::string> names;
  for (const auto& [name, def] : table()) names.push_back(name);
  return names;
}

TensorType infer_node_type(const Graph& g, const Node& node) {
  const OpDef& def = op_def(node.op);
  std::vector<TensorType> in;
  for (int i : node.inputs) in.push_back(g.node(i).type);
  const int n = static_cast<int>(in.size());
  auto describe = [&] {
    std::string s;
    for (size_t i = 0; i < in.size(); ++i) s += (i ? ", " : "") + to_string(in[i]);
    return s;
  };
  if (n < def.min_inputs || (def.max_inputs >= 0 && n > def.max_inputs)) {
    std::string want = def.max_inputs == def.min_inputs ? std::to_string(def.min_inputs)
                       : def.max_inputs < 0 ? "at least " + std::to_string(def.min_inputs)
                                            : std::to_string(def.min_inputs) + " to " + std::to_string(def.max_inputs);
    fail(node.op, " '", node.name, "': takes ", want, " inputs, got ", n, " (", describe(), ")");
  }
  if (node.op == "define") {
    if (!node.user) fail("define '", node.name, "': has no definition");
    const Shape& shape = attr_ints(node.attrs, "shape", "define '" + node.name + "'");
    for (int64_t d : shape)
      if (d < 1) fail("define '", node.name, "': shape ", to_string(shape), " has a dimension below 1");
    return TensorType{dtype_of(node.user->body.type()), shape};
  }
  if (node.op == "define_grad") return define_grad_type(node, in);
  if (def.kind == OpKind::leaf) return node.type;
  try {
    return def.infer(in, node.attrs);
  } catch (const Error& e) {
    fail(node.op, " '", node.name, "': ", e.what(), " (inputs: ", describe(), ")");
  }
}

}  // namespace tessera

namespace tessera {

// Each ops_*.cpp defines one of these; calling them keeps the linker from
// dropping the files whose only job is to register ops.
void link_elementwise_ops();
void link_reduction_ops();
void link_shape_ops();
void link_linalg_ops();
void link_nn_ops();
void link_grad_nn_ops();
void link_leaf_ops();
void link_grad_ops();
void link_define_grad_ops();
void link_quant_ops();

void link_all_ops() {
  link_leaf_ops();
  link_elementwise_ops();
  link_reduction_ops();
  link_shape_ops();
  link_linalg_ops();
  link_nn_ops();
  link_grad_nn_ops();
  link_grad_ops();
  link_define_grad_ops();
  link_quant_ops();
}

}  // namespace tessera
