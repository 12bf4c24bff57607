// UserDef: the Halide-style definition carried by a `define` node.
//
// `body` is a Halide Expr over `vars` (row-major, one per output dim). It
// reads input k of the node through Halide Image calls whose name is
// placeholders[k], with row-major arguments. Inline reductions are kept in a
// canonical form: a PureExtern call named "tessera.sum", "tessera.maximum",
// "tessera.minimum" or "tessera.product" whose one argument is the reduced
// expression; the RDom is the one its RVars belong to. The lowering, the
// printer, the parser and the reference interpreter read this form.
#pragma once

#include <Halide.h>

#include <string>
#include <vector>

#include "tessera/dtype.h"

namespace tessera {

struct UserDef {
  std::vector<Halide::Var> vars;
  Halide::Expr body;
  std::vector<std::string> placeholders;
};

// The prefix of canonical reduction calls.
inline constexpr const char* kReducePrefix = "tessera.";

// Replaces Halide inline-reduction Funcs (sum, maximum, minimum, product)
// with canonical reduction calls and removes Lets. Throws Error for other
// Func calls, which a definition may not contain.
Halide::Expr canonicalize_user_expr(const Halide::Expr& e, const std::string& op_name);

// A read of a tensor inside a definition: an Image call to the placeholder
// `name` (a buffer Parameter of `type`), with row-major int32 arguments.
// (Halide's ImageParam reads go through a wrapper Func, which a definition
// must not contain; this builds the plain Image call directly.)
Halide::Expr placeholder_read(const std::string& name, const Halide::Type& type, const std::vector<Halide::Expr>& index);

// The names of the Image calls (tensor reads) in `e`, in order of first appearance.
std::vector<std::string> image_reads(const Halide::Expr& e);

// Whether `e` contains a canonical reduction call.
bool uses_reduction(const Halide::Expr& e);

// `e` (a definition's body, or part of it) over real Funcs: a read of
// placeholder k becomes a call of inputs[k] at its row-major index, canonical
// reductions become Halide's inline reductions. With `clamp_shapes`, every
// read's index is clamped into shapes[k] (for gradient code, which may
// evaluate a body just outside the points the forward computes). Throws
// Error on a read of a tensor that is not a placeholder of `def`.
Halide::Expr bind_user_expr(const Halide::Expr& e, const UserDef& def, const std::vector<Halide::Func>& inputs,
                            const std::vector<Shape>* clamp_shapes = nullptr);

}  // namespace tessera
