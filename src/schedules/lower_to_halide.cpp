// Graph -> Halide Funcs (see lower_to_halide.h).
#include "lower_to_halide.h"

#include <cctype>
#include <map>
#include <sstream>

#include "halide_util.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "user_def.h"

namespace tessera {

namespace {

using namespace Halide;
using namespace Halide::Internal;

Func lower_constant(const Node& n) {
  auto v = make_vars(n.type.rank());
  Type t = halide_type(n.type.dtype);
  if (n.values.size() == 1) return make_func(func_name(n), v, cast(t, Expr(n.values[0])));
  // A tensor constant: embed its values as a Halide buffer, of the
  // constant's own type where C++ has it (a kernel reading a table per
  // element then loads 4 bytes for i32/f32, not 8, and converts nothing;
  // the values convert as Halide's cast would), else of double.
  std::vector<int> sizes(n.type.shape.rbegin(), n.type.shape.rend());
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Expr> rev(idx.rbegin(), idx.rend());
  auto table = [&](auto element) {
    using E = decltype(element);
    Halide::Buffer<E> data(sizes);
    for (int64_t i = 0; i < n.type.numel(); ++i) data.data()[i] = static_cast<E>(n.values[i]);
    return make_func(func_name(n), v, cast(t, data(rev)));
  };
  switch (n.type.dtype) {
    case DType::f32: return table(float{});
    case DType::i32: return table(int32_t{});
    case DType::i64: return table(int64_t{});
    default: return table(double{});
  }
}

}  // namespace

std::string func_name(const Node& n) {
  std::string s = "n" + std::to_string(n.id) + "_";
  for (char c : n.name) s += (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return s;
}

LoweredGraph lower_to_halide(const Graph& g) {
  LoweredGraph L;
  const size_t n = g.nodes.size();
  L.funcs.resize(n);
  L.stages.resize(n);
  for (const Node& node : g.nodes) {
    if (node.op == "input" || node.op == "param") {
      ImageParam p(halide_type(node.type.dtype), node.type.rank(), func_name(node) + "_arg");
      auto v = make_vars(node.type.rank());
      std::vector<Expr> idx = as_exprs(v);
      std::vector<Expr> rev(idx.rbegin(), idx.rend());
      L.funcs[node.id] = make_func(func_name(node), v, p(rev));
      L.args.push_back(p);
      L.arg_nodes.push_back(node.id);
      continue;
    }
    if (node.op == "constant") {
      L.funcs[node.id] = lower_constant(node);
      continue;
    }
    std::vector<Func> ins;
    std::vector<TensorType> types;
    for (int i : node.inputs) {
      ins.push_back(L.funcs[i]);
      types.push_back(g.node(i).type);
    }
    if (node.op == "define") {
      Expr body = bind_user_expr(node.user->body, *node.user, ins);
      Func f(func_name(node));
      define_pure(f, node.user->vars, body);
      L.funcs[node.id] = f;
      continue;
    }
    Node named = node;
    named.name = func_name(node);
    Definition d = op_def(node.op).define(DefineContext{named, ins, types});
    if (d.func.output_types()[0] != halide_type(node.type.dtype)) {
      std::ostringstream os;
      os << d.func.output_types()[0];
      fail(node.op, " '", node.name, "': its definition computes ", os.str(), " but the node is ",
           to_string(node.type));
    }
    L.funcs[node.id] = d.func;
    L.stages[node.id] = d.stages;
  }
  // Outputs: the node's own Func, unless it is a leaf or already an output,
  // in which case a copy (a pipeline output must be a distinct computed Func).
  std::vector<bool> taken(n, false);
  for (const GraphOutput& o : g.outputs) {
    const Node& node = g.node(o.node);
    Func f = L.funcs[o.node];
    if (node.is_leaf() || taken[o.node]) {
      auto v = make_vars(node.type.rank());
      f = make_func("out_" + func_name(node) + "_" + std::to_string(L.outputs.size()), v, at(f, as_exprs(v)));
    }
    taken[o.node] = true;
    L.outputs.push_back(f);
    L.output_nodes.push_back(o.node);
  }
  return L;
}

void copy_outputs(LoweredGraph& L) {
  for (size_t i = 0; i < L.outputs.size(); ++i) {
    Halide::Func node = L.funcs[L.output_nodes[i]];
    Halide::Func out(node.name() + "_out");
    out(node.args()) = node(node.args());
    L.outputs[i] = out;
  }
}

}  // namespace tessera
