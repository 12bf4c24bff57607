// GraphBuilder and Tensor: how user code writes a tensor program.
//
// A Tensor is a handle to one node of the graph being built. Library ops
// (ops.h) add nodes; `define` adds a user op written Halide-style, as a pure
// function of index Vars that reads other tensors by (row-major) index and may
// use Halide's inline reductions (sum, maximum, minimum, product) over RDoms:
//
//   Tensor s = g.define("swish", {B, H}, [&](Var i, Var j) {
//     Expr v = h(i, j);
//     return v / (1 + exp(-v));
//   });
//
// Every node's type is inferred and checked as it is added; a mismatch throws
// tessera::Error naming the op, the node and the shapes. build() verifies and
// returns the Graph. Nothing here compiles or runs anything.
#pragma once

#include <Halide.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tessera/error.h"
#include "tessera/graph.h"

namespace tessera {

using Halide::Expr;
using Halide::RDom;
using Halide::Var;

class GraphBuilder;

class Tensor {
 public:
  Tensor() = default;
  Tensor(GraphBuilder* b, int id) : b_(b), id_(id) {}

  bool defined() const { return b_ != nullptr; }
  GraphBuilder* builder() const { return b_; }
  int id() const { return id_; }
  // The node, valid until the next node is added to the builder. The
  // accessors below return copies, which stay valid.
  const Node& node() const;
  TensorType type() const { return node().type; }
  DType dtype() const { return node().type.dtype; }
  Shape shape() const { return node().type.shape; }
  int rank() const { return node().type.rank(); }
  std::string name() const { return node().name; }

  // Inside a `define`: the element at a row-major index, as a Halide Expr.
  Expr at(const std::vector<Expr>& index) const;
  template <typename... Args>
  Expr operator()(Args&&... index) const {
    return at(std::vector<Expr>{Expr(std::forward<Args>(index))...});
  }

 private:
  GraphBuilder* b_ = nullptr;
  int id_ = -1;
};

class GraphBuilder {
 public:
  explicit GraphBuilder(std::string name = "graph");
  // Continues an existing graph: its nodes and outputs are kept, new nodes
  // are appended (transforms such as autodiff build on their input this way).
  explicit GraphBuilder(const Graph& g);
  GraphBuilder(const GraphBuilder&) = delete;
  GraphBuilder& operator=(const GraphBuilder&) = delete;

  // Graph inputs (data fed at every run) and params (named state such as
  // "layers.0.attn.q_proj.weight"). Names must be unique.
  Tensor input(const std::string& name, Shape shape, DType dtype = DType::f32);
  Tensor param(const std::string& name, Shape shape, DType dtype = DType::f32);
  // A scalar constant, or a tensor constant from row-major values.
  Tensor constant(double value, DType dtype = DType::f32);
  Tensor constant(std::vector<double> values, Shape shape, DType dtype = DType::f32);

  // A user op: `fn` takes one Var per output dimension (row-major) and returns
  // the element's value. The output dtype is the Expr's type.
  template <typename Fn>
  Tensor define(const std::string& name, Shape shape, Fn&& fn);

  // Names a result of the graph.
  void output(const std::string& name, Tensor t);

  // Adds a node of a registered op after checking its inputs and attributes.
  // The op library (ops.h) is written with this.
  Tensor add(const std::string& op, const std::vector<Tensor>& inputs, Attrs attrs = {});
  // Internal: the same for an op whose node also carries a UserDef
  // (define_grad, which autodiff makes from a `define` node).
  Tensor add(const std::string& op, const std::vector<Tensor>& inputs, Attrs attrs,
             std::shared_ptr<const UserDef> def);

  // The tensor of an existing node, by id or name (Error if absent).
  Tensor tensor(int id);
  Tensor tensor(const std::string& name);

  // The graph so far, and the verified result.
  const Graph& graph() const { return g_; }
  Graph build() const;

  // Internal: the placeholder read of node `id` used inside `define`.
  Expr access(int id, const std::vector<Expr>& index);

 private:
  Tensor argument(const std::string& op, const std::string& name, Shape shape, DType dtype);
  Tensor define_impl(const std::string& name, Shape shape, const std::vector<Var>& vars, Expr body);
  int append(Node n);
  std::string fresh_name();

  Graph g_;
  std::map<int, std::string> placeholders_;  // node id -> its placeholder's name in defines
  int counter_ = 0;
};

namespace detail {
template <size_t>
using VarArg = Var;
template <typename Fn, size_t... I>
constexpr bool takes_vars(std::index_sequence<I...>) {
  return std::is_invocable_v<Fn&, VarArg<I>...>;
}
template <typename Fn, size_t... I>
Expr apply_vars(Fn& fn, const std::vector<Var>& v, std::index_sequence<I...>) {
  return Expr(fn(v[I]...));
}
// Calls `fn` with as many Vars as it takes, checking that this is the rank.
template <typename Fn, size_t N = 0>
Expr define_call(Fn& fn, const std::vector<Var>& v, const std::string& name) {
  if constexpr (N > 8) {
    fail("define '", name, "': the definition must take one Var per output dimension (at most 8)");
  } else if constexpr (takes_vars<Fn>(std::make_index_sequence<N>{})) {
    if (v.size() != N)
      fail("define '", name, "': the definition takes ", N, " Vars but the shape has rank ", v.size());
    return apply_vars(fn, v, std::make_index_sequence<N>{});
  } else {
    return define_call<Fn, N + 1>(fn, v, name);
  }
}
}  // namespace detail

template <typename Fn>
Tensor GraphBuilder::define(const std::string& name, Shape shape, Fn&& fn) {
  std::vector<Var> vars;
  const char* names[] = {"i", "j", "k", "l", "m", "n", "o", "p"};
  if (shape.size() > 8) fail("define '", name, "': rank ", shape.size(), " is above the limit of 8");
  for (size_t d = 0; d < shape.size(); ++d) vars.emplace_back(names[d]);
  Expr body;
  try {
    body = detail::define_call(fn, vars, name);
  } catch (const Halide::Error& e) {
    fail("define '", name, "': Halide rejected the definition: ", e.what());
  } catch (const Error& e) {
    if (std::string(e.what()).rfind("define '", 0) == 0) throw;
    fail("define '", name, "': ", e.what());
  }
  return define_impl(name, std::move(shape), vars, body);
}

}  // namespace tessera
