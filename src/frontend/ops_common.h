// Small helpers shared by the op-library files (ops_reduction, ops_shape,
// ops_linalg, ops_nn): compute types, row-major update references and RDoms.
#pragma once

#include <Halide.h>

#include <algorithm>
#include <string>
#include <vector>

#include "halide_util.h"
#include "tessera/builder.h"
#include "tessera/error.h"

namespace tessera {
// erf for f32 (Halide's) and f64 (a Chebyshev fit, fractional error < 1.2e-7);
// defined in ops_elementwise.cpp, shared with gelu_grad (ops_grad.cpp).
Halide::Expr erf_expr(const Halide::Expr& x);
}  // namespace tessera

namespace tessera::opsutil {

// A slice node's attributes resolved against its input's shape (PyTorch
// semantics: negative start and end count from the end, both clamped);
// fails on an empty result. Defined in ops_shape.cpp.
struct SliceSpec {
  int64_t axis, start, step, length;
};
SliceSpec resolve_slice(const Shape& in, const Attrs& a);

inline bool is_half(DType t) { return t == DType::f16 || t == DType::bf16; }

// The type arithmetic runs in for a tensor of dtype t: f32 for f16/bf16
// (rounded back once at the end), else t itself.
inline Halide::Type compute_type(DType t) { return is_half(t) ? Halide::Float(32) : halide_type(t); }

// A constant of Halide type t.
inline Halide::Expr konst(const Halide::Type& t, double v) { return Halide::Internal::make_const(t, v); }

// f at a row-major index, as a reference that can be the target of an update.
inline Halide::FuncRef ref(Halide::Func& f, const std::vector<Halide::Expr>& index) {
  std::vector<Halide::Expr> rev(index.rbegin(), index.rend());
  return f(rev);
}

// An RDom over row-major `extents` (its first Halide dimension is the last,
// innermost, extent, so that reductions walk memory in order), and its RVars
// as Exprs in row-major order.
struct RowMajorRDom {
  Halide::RDom r;
  std::vector<Halide::Expr> vars;
};
inline RowMajorRDom row_major_rdom(const std::vector<int64_t>& extents, const std::string& name) {
  Halide::Region region;
  for (auto it = extents.rbegin(); it != extents.rend(); ++it)
    region.emplace_back(Halide::Expr(0), Halide::Expr(static_cast<int>(*it)));
  RowMajorRDom out{Halide::RDom(region, name), {}};
  const int n = static_cast<int>(extents.size());
  for (int d = 0; d < n; ++d) out.vars.push_back(out.r[n - 1 - d]);
  return out;
}

// The builder of `t`, or Error if it is undefined.
inline GraphBuilder* builder_of(const Tensor& t, const char* op) {
  if (!t.defined()) fail(op, ": an input is an undefined Tensor");
  return t.builder();
}

// `axis` of a tensor of `shape`, negative ones counted from the end; Error
// naming the shape when it is out of range.
inline int64_t normalize_axis_of(int64_t axis, const Shape& shape) {
  try {
    return normalize_axis(axis, static_cast<int>(shape.size()));
  } catch (const Error&) {
    fail("axis ", axis, " is out of range for shape ", to_string(shape));
  }
}

// Sorted, normalized axes; Error on an out-of-range or repeated axis.
inline std::vector<int64_t> normalize_axes(const std::vector<int64_t>& axes, const Shape& shape) {
  std::vector<int64_t> out;
  for (int64_t a : axes) {
    const int64_t n = normalize_axis_of(a, shape);
    if (std::find(out.begin(), out.end(), n) != out.end())
      fail("axis ", a, " is repeated in the axes for shape ", to_string(shape));
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Error unless `t` has a float dtype.
inline void need_float(const TensorType& t, const char* what = "input") {
  if (!is_float(t.dtype)) fail("needs a float ", what, ", got ", to_string(t));
}

}  // namespace tessera::opsutil
