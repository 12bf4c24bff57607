// Internal helpers shared by the reference interpreter's files: shape
// arithmetic (strides, NumPy broadcasting, axis normalization) and the node
// evaluators (library ops, `define` Exprs and their gradients). Not for use by tests; nothing
// here comes from, or is shared with, src/frontend or src/schedules.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "reference/reference.h"
#include "tessera/error.h"
#include "tessera/graph.h"

namespace Halide {
struct Expr;
}

namespace tessera::ref::detail {

// Row-major strides of `s`.
std::vector<int64_t> strides_of(const Shape& s);
// Multi-index of flat position `flat` in shape `s`.
std::vector<int64_t> unravel(int64_t flat, const Shape& s);
// NumPy broadcasting of two shapes; throws Error naming both.
Shape broadcast(const Shape& a, const Shape& b);
// For each element of `out` (row-major), the flat index of `in` that NumPy
// broadcasting reads there. `in` must broadcast to `out`.
std::vector<int64_t> broadcast_map(const Shape& in, const Shape& out);
// A possibly negative axis normalized against `rank`; throws Error if out of range.
int64_t norm_axis(int64_t axis, int64_t rank, const std::string& what);
std::string shape_str(const Shape& s);

// Evaluates library op node `n` (not a leaf, not `define`) on its input values.
// Returns the result with its independently inferred shape and dtype; the
// caller rounds the values to the dtype and checks the type against the graph.
RefTensor eval_library_op(const Node& n, const std::vector<const RefTensor*>& in);
// The library ops' evaluators by op name: the table of reference_ops.cpp
// gets the weight-only quantized ops (quant_ops.h) from reference_quant.cpp.
using LibraryOpFn = std::function<RefTensor(const Node&, const std::vector<const RefTensor*>&)>;
void add_quant_ops(std::map<std::string, LibraryOpFn>& table);

// Evaluates a `define` node by interpreting its Halide Expr.
RefTensor eval_define(const Node& n, const std::vector<const RefTensor*>& in);

// Evaluates Exprs of a definition (sub-expressions of its body) with the
// semantics of eval_define, with its Vars and RVars bound by the caller
// (reference_expr.cpp). The define_grad reference uses it for the values its
// derivatives need.
class DefineEvaluator {
 public:
  // `in`: the tensors the definition's placeholders read, in order.
  DefineEvaluator(const UserDef& def, std::vector<const RefTensor*> in);
  ~DefineEvaluator();
  void bind(const std::string& var, int64_t value);
  void unbind(const std::string& var);
  bool bound(const std::string& var) const;
  // The value of `e` as a double (integers and bools exactly, below 2^53).
  double eval(const Halide::Expr& e);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Evaluates a `define_grad` node: the gradient of its definition for one
// input, by a reverse-mode walk over the body (reference_define_grad.cpp).
RefTensor eval_define_grad(const Node& n, const std::vector<const RefTensor*>& in);

}  // namespace tessera::ref::detail
