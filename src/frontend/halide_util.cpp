// Row-major helpers for op definitions (see halide_util.h).
#include "halide_util.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "tessera/error.h"

namespace tessera {

Halide::Type halide_type(DType t) {
  switch (t) {
    case DType::f64: return Halide::Float(64);
    case DType::f32: return Halide::Float(32);
    case DType::f16: return Halide::Float(16);
    case DType::bf16: return Halide::BFloat(16);
    case DType::i64: return Halide::Int(64);
    case DType::i32: return Halide::Int(32);
    case DType::i8: return Halide::Int(8);
    case DType::u8: return Halide::UInt(8);
    case DType::boolean: return Halide::Bool();
  }
  return Halide::Float(32);
}

DType dtype_of(const Halide::Type& t) {
  for (DType d : all_dtypes)
    if (halide_type(d) == t) return d;
  std::ostringstream os;
  os << t;
  fail("Halide type ", os.str(), " has no tessera dtype");
}

Halide::Expr exp_expr(const Halide::Expr& x) {
  if (x.type() != Halide::Float(32)) return Halide::exp(x);
  return Halide::select(x > 88.7228394f, Halide::Expr(std::numeric_limits<float>::infinity()), Halide::exp(x));
}

Halide::Expr tanh_expr(const Halide::Expr& x) {
  if (x.type() != Halide::Float(32)) return Halide::tanh(x);
  Halide::Expr a = Halide::abs(x), x2 = x * x;
  // Taylor series of tanh to x^9: the x^11 term is below 1e-13 for |x| < 0.1.
  Halide::Expr small =
      x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835)))));
  Halide::Expr e = Halide::exp(-2.0f * a);
  Halide::Expr big = (1.0f - e) / (1.0f + e);
  return Halide::select(a < 0.1f, small, Halide::select(x < 0.0f, -big, big));
}

std::vector<Halide::Var> make_vars(int rank) {
  std::vector<Halide::Var> v;
  for (int d = 0; d < rank; ++d) v.emplace_back("d" + std::to_string(d));
  return v;
}

std::vector<Halide::Expr> as_exprs(const std::vector<Halide::Var>& v) { return {v.begin(), v.end()}; }

Halide::Expr at(const Halide::Func& f, const std::vector<Halide::Expr>& index) {
  std::vector<Halide::Expr> rev(index.rbegin(), index.rend());
  return const_cast<Halide::Func&>(f)(rev);
}

void define_pure(Halide::Func& f, const std::vector<Halide::Var>& index, const Halide::Expr& value) {
  std::vector<Halide::Var> rev(index.rbegin(), index.rend());
  f(rev) = value;
}

Halide::Func make_func(const std::string& name, const std::vector<Halide::Var>& index,
                       const Halide::Expr& value) {
  Halide::Func f(name);
  define_pure(f, index, value);
  return f;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes ", to_string(a), " and ", to_string(b), " do not broadcast (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<Halide::Expr> broadcast_index(const Shape& in, const Shape& out,
                                          const std::vector<Halide::Expr>& index) {
  std::vector<Halide::Expr> r;
  size_t lead = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) r.push_back(in[i] == 1 ? Halide::Expr(0) : index[lead + i]);
  return r;
}

int64_t normalize_axis(int64_t axis, int rank) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail("axis ", axis, " is out of range for rank ", rank);
  return a;
}

}  // namespace tessera
