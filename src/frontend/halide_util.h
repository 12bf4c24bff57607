// Helpers for writing op definitions as Halide Funcs in row-major terms.
//
// Tessera shapes are row-major (last dim contiguous); Halide's first dim is
// the innermost. Op definitions index in row-major order through these
// helpers, which reverse the order at the Func boundary, so no definition
// has to think about Halide's dimension order.
#pragma once

#include <Halide.h>

#include <string>
#include <vector>

#include "tessera/dtype.h"

namespace tessera {

Halide::Type halide_type(DType t);
// The DType of a Halide type, or throws Error naming it.
DType dtype_of(const Halide::Type& t);

// Math with the semantics op definitions need, vectorizable on every target.
// exp: Halide's f32 exp returns 0 for +inf; this returns +inf above the f32
// range. tanh: Halide's f32 tanh is a scalar libm call (8x slower than the
// rest of a fused kernel); f32 uses an odd polynomial below |x| < 0.1 and
// (1 - e^-2|x|) / (1 + e^-2|x|) above, within 2 ulp. f64 uses Halide's own.
// Note that Halide compiles float code with fast-math flags: NaN inputs are
// not guaranteed to propagate through these.
Halide::Expr exp_expr(const Halide::Expr& x);
Halide::Expr tanh_expr(const Halide::Expr& x);

// `rank` fresh Vars in row-major order, named d0, d1, ...
std::vector<Halide::Var> make_vars(int rank);
std::vector<Halide::Expr> as_exprs(const std::vector<Halide::Var>& v);

// f at a row-major index.
Halide::Expr at(const Halide::Func& f, const std::vector<Halide::Expr>& index);
// f(index) = value, index row-major.
void define_pure(Halide::Func& f, const std::vector<Halide::Var>& index, const Halide::Expr& value);
// A new Func named `name` defined as value over the row-major vars.
Halide::Func make_func(const std::string& name, const std::vector<Halide::Var>& index,
                       const Halide::Expr& value);

// The index into a tensor of shape `in` that NumPy broadcasting to `out` reads at `index`.
std::vector<Halide::Expr> broadcast_index(const Shape& in, const Shape& out,
                                          const std::vector<Halide::Expr>& index);
// Output shape of NumPy broadcasting; throws Error naming both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b);
// Normalizes a possibly negative axis against `rank`; throws Error if out of range.
int64_t normalize_axis(int64_t axis, int rank);

}  // namespace tessera
