// The reference semantics of every library op of include/tessera/ops.h, in
// double precision: elementwise math, reductions, shape ops, matmul/linear
// (Eigen), embedding, softmax, norms, cross-entropy, dropout (own Philox) and
// attention. Each op re-derives its output shape and dtype from its inputs
// and attributes (the driver checks them against the graph) and returns
// unrounded values; the driver rounds them to the dtype. Written from the
// spec alone: it shares no code with src/frontend/ops_*.cpp or the lowering,
// and it does not handle `define` nodes (reference_expr.cpp does).
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>

#include "reference/reference_internal.h"

namespace tessera::ref::detail {

namespace {

using Ins = std::vector<const RefTensor*>;
using OpFn = std::function<RefTensor(const Node&, const Ins&)>;
using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr double kInf = std::numeric_limits<double>::infinity();

void need_inputs(const Ins& in, size_t lo, size_t hi) {
  if (in.size() < lo || in.size() > hi) {
    if (lo == hi) fail("takes ", lo, " inputs, got ", in.size());
    fail("takes ", lo, " to ", hi, " inputs, got ", in.size());
  }
}

std::string type_str(const RefTensor& t) { return to_string(TensorType{t.dtype, t.shape}); }

void need_float(const RefTensor& t) {
  if (!is_float(t.dtype)) fail("needs a float input, got ", type_str(t));
}
void need_numeric(const RefTensor& t) {
  if (t.dtype == DType::boolean) fail("needs a numeric input, got ", type_str(t));
}
void need_same_dtype(const RefTensor& a, const RefTensor& b) {
  if (a.dtype != b.dtype) fail("dtypes differ: ", type_str(a), " and ", type_str(b));
}

RefTensor make(Shape shape, DType dtype) {
  RefTensor r;
  r.data.assign(static_cast<size_t>(numel(shape)), 0.0);
  r.shape = std::move(shape);
  r.dtype = dtype;
  return r;
}

// Integer arithmetic modulo 2^64 (the driver wraps to the dtype's width).
int64_t wrapping(uint64_t v) { return static_cast<int64_t>(v); }
int64_t as_int(double v) { return static_cast<int64_t>(v); }

// ---- Elementwise ------------------------------------------------------------

struct UnarySpec {
  bool float_only;
  double (*f)(double);       // float math
  int64_t (*i)(int64_t);     // integer form (when !float_only)
};

RefTensor unary(const Node&, const Ins& in, const UnarySpec& s) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  if (s.float_only) need_float(x);
  else need_numeric(x);
  RefTensor r = make(x.shape, x.dtype);
  for (size_t k = 0; k < r.data.size(); ++k)
    r.data[k] = is_float(x.dtype) ? s.f(x.data[k]) : static_cast<double>(wrap_int(x.dtype, s.i(as_int(x.data[k]))));
  return r;
}

double gelu_exact(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh(double x) {
  const double c = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

enum class Bin { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };

bool is_comparison(Bin b) { return b >= Bin::eq; }

double bin_float(Bin op, double a, double b) {
  switch (op) {
    case Bin::add: return a + b;
    case Bin::sub: return a - b;
    case Bin::mul: return a * b;
    case Bin::div: return a / b;
    case Bin::pow: return std::pow(a, b);
    case Bin::maximum: return std::max(a, b);
    case Bin::minimum: return std::min(a, b);
    case Bin::eq: return a == b;
    case Bin::ne: return a != b;
    case Bin::lt: return a < b;
    case Bin::le: return a <= b;
    case Bin::gt: return a > b;
    case Bin::ge: return a >= b;
  }
  return 0;
}

int64_t bin_int(Bin op, int64_t a, int64_t b) {
  const uint64_t ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  switch (op) {
    case Bin::add: return wrapping(ua + ub);
    case Bin::sub: return wrapping(ua - ub);
    case Bin::mul: return wrapping(ua * ub);
    case Bin::div:  // truncating, as C++ and PyTorch; x / 0 is unspecified: 0 here
      if (b == 0) return 0;
      if (b == -1) return wrapping(uint64_t{0} - ua);
      return a / b;
    case Bin::pow: fail("pow needs float inputs");
    case Bin::maximum: return std::max(a, b);
    case Bin::minimum: return std::min(a, b);
    case Bin::eq: return a == b;
    case Bin::ne: return a != b;
    case Bin::lt: return a < b;
    case Bin::le: return a <= b;
    case Bin::gt: return a > b;
    case Bin::ge: return a >= b;
  }
  return 0;
}

RefTensor binary(const Node&, const Ins& in, Bin op) {
  need_inputs(in, 2, 2);
  const RefTensor &a = *in[0], &b = *in[1];
  need_same_dtype(a, b);
  if (op == Bin::pow) need_float(a);
  if (!is_comparison(op)) need_numeric(a);
  Shape out = broadcast(a.shape, b.shape);
  RefTensor r = make(out, is_comparison(op) ? DType::boolean : a.dtype);
  std::vector<int64_t> ma = broadcast_map(a.shape, out), mb = broadcast_map(b.shape, out);
  for (size_t k = 0; k < r.data.size(); ++k) {
    double va = a.data[ma[k]], vb = b.data[mb[k]];
    if (is_float(a.dtype)) r.data[k] = bin_float(op, va, vb);
    else r.data[k] = static_cast<double>(bin_int(op, as_int(va), as_int(vb)));
  }
  return r;
}

RefTensor where_op(const Node&, const Ins& in) {
  need_inputs(in, 3, 3);
  const RefTensor &c = *in[0], &a = *in[1], &b = *in[2];
  if (c.dtype != DType::boolean) fail("the condition must be bool, got ", type_str(c));
  need_same_dtype(a, b);
  Shape out = broadcast(c.shape, broadcast(a.shape, b.shape));
  RefTensor r = make(out, a.dtype);
  std::vector<int64_t> mc = broadcast_map(c.shape, out), ma = broadcast_map(a.shape, out),
                       mb = broadcast_map(b.shape, out);
  for (size_t k = 0; k < r.data.size(); ++k) r.data[k] = c.data[mc[k]] != 0 ? a.data[ma[k]] : b.data[mb[k]];
  return r;
}

RefTensor cast_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  DType to = parse_dtype(attr_str(n.attrs, "dtype", n.op));
  RefTensor r = make(in[0]->shape, to);
  for (size_t k = 0; k < r.data.size(); ++k) r.data[k] = to_dtype(to, in[0]->data[k]);
  return r;
}

// ---- Reductions -------------------------------------------------------------

enum class Red { sum, mean, max };

RefTensor reduce(const Node& n, const Ins& in, Red kind) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  if (kind == Red::mean) need_float(x);
  else need_numeric(x);
  const std::vector<int64_t>& axes = attr_ints(n.attrs, "axes", n.op);
  const bool keepdim = attr_bool(n.attrs, "keepdim", n.op);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty());
  for (int64_t a : axes) {
    int64_t d = norm_axis(a, rank, "axis");
    if (reduced[d]) fail("axis ", a, " is listed twice in axes");
    reduced[d] = true;
  }
  Shape out;
  for (int64_t d = 0; d < rank; ++d) {
    if (!reduced[d]) out.push_back(x.shape[d]);
    else if (keepdim) out.push_back(1);
  }
  // The output index of every input element: the non-reduced coordinates.
  Shape kept;
  for (int64_t d = 0; d < rank; ++d)
    if (!reduced[d]) kept.push_back(x.shape[d]);
  std::vector<int64_t> kept_st = strides_of(kept);
  RefTensor r = make(out, x.dtype);
  std::vector<double> acc(r.data.size(), kind == Red::max ? -kInf : 0.0);
  std::vector<int64_t> count(r.data.size(), 0);
  for (int64_t k = 0; k < x.numel(); ++k) {
    std::vector<int64_t> idx = unravel(k, x.shape);
    int64_t o = 0;
    for (int64_t d = 0, j = 0; d < rank; ++d)
      if (!reduced[d]) o += idx[d] * kept_st[j++];
    if (kind == Red::max) acc[o] = std::max(acc[o], x.data[k]);
    else acc[o] += x.data[k];
    ++count[o];
  }
  for (size_t o = 0; o < acc.size(); ++o) r.data[o] = kind == Red::mean ? acc[o] / count[o] : acc[o];
  return r;
}

// ---- Shape ops --------------------------------------------------------------

RefTensor reshape_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  Shape s = attr_ints(n.attrs, "shape", n.op);
  int infer = -1;
  int64_t known = 1;
  for (size_t d = 0; d < s.size(); ++d) {
    if (s[d] == -1) {
      if (infer >= 0) fail("shape ", shape_str(s), " has more than one -1");
      infer = static_cast<int>(d);
    } else if (s[d] < 1) {
      fail("shape ", shape_str(s), " has a dimension below 1");
    } else {
      known *= s[d];
    }
  }
  if (infer >= 0) {
    if (x.numel() % known != 0) fail("cannot reshape ", shape_str(x.shape), " to ", shape_str(s));
    s[infer] = x.numel() / known;
  }
  if (numel(s) != x.numel())
    fail("cannot reshape ", shape_str(x.shape), " (", x.numel(), " elements) to ", shape_str(s));
  RefTensor r = x;
  r.shape = s;
  return r;
}

RefTensor permute_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  const std::vector<int64_t>& dims = attr_ints(n.attrs, "dims", n.op);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (static_cast<int64_t>(dims.size()) != rank) fail("dims has ", dims.size(), " entries for rank ", rank);
  std::vector<int64_t> perm;
  std::vector<bool> seen(static_cast<size_t>(rank), false);
  for (int64_t d : dims) {
    int64_t a = norm_axis(d, rank, "dim");
    if (seen[a]) fail("dims is not a permutation");
    seen[a] = true;
    perm.push_back(a);
  }
  Shape out;
  for (int64_t a : perm) out.push_back(x.shape[a]);
  std::vector<int64_t> in_st = strides_of(x.shape);
  RefTensor r = make(out, x.dtype);
  for (int64_t k = 0; k < r.numel(); ++k) {
    std::vector<int64_t> o = unravel(k, out);
    int64_t src = 0;
    for (int64_t d = 0; d < rank; ++d) src += o[d] * in_st[perm[d]];
    r.data[k] = x.data[src];
  }
  return r;
}

RefTensor broadcast_to_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  Shape out = attr_ints(n.attrs, "shape", n.op);
  for (int64_t d : out)
    if (d < 1) fail("shape ", shape_str(out), " has a dimension below 1");
  std::vector<int64_t> m = broadcast_map(x.shape, out);
  RefTensor r = make(out, x.dtype);
  for (size_t k = 0; k < m.size(); ++k) r.data[k] = x.data[m[k]];
  return r;
}

RefTensor slice_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(n.attrs, "axis", n.op), rank, "axis");
  int64_t start = attr_int(n.attrs, "start", n.op), end = attr_int(n.attrs, "end", n.op);
  const int64_t step = attr_int(n.attrs, "step", n.op);
  if (step < 1) fail("step ", step, " must be at least 1");
  const int64_t dim = x.shape[axis];
  // PyTorch: negative positions count from the end; both are clamped to [0, dim].
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  start = std::clamp<int64_t>(start, 0, dim);
  end = std::clamp<int64_t>(end, 0, dim);
  const int64_t len = end > start ? (end - start + step - 1) / step : 0;
  if (len < 1) fail("the slice of dim ", axis, " (size ", dim, ") is empty");
  Shape out = x.shape;
  out[axis] = len;
  std::vector<int64_t> in_st = strides_of(x.shape);
  RefTensor r = make(out, x.dtype);
  for (int64_t k = 0; k < r.numel(); ++k) {
    std::vector<int64_t> o = unravel(k, out);
    o[axis] = start + o[axis] * step;
    int64_t src = 0;
    for (int64_t d = 0; d < rank; ++d) src += o[d] * in_st[d];
    r.data[k] = x.data[src];
  }
  return r;
}

RefTensor concat_op(const Node& n, const Ins& in) {
  if (in.empty()) fail("needs at least one input");
  const RefTensor& x0 = *in[0];
  const int64_t rank = static_cast<int64_t>(x0.shape.size());
  const int64_t axis = norm_axis(attr_int(n.attrs, "axis", n.op), rank, "axis");
  Shape out = x0.shape;
  out[axis] = 0;
  for (const RefTensor* t : in) {
    need_same_dtype(x0, *t);
    if (static_cast<int64_t>(t->shape.size()) != rank) fail("ranks differ: ", type_str(x0), " and ", type_str(*t));
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && t->shape[d] != x0.shape[d])
        fail("shapes ", shape_str(x0.shape), " and ", shape_str(t->shape), " differ outside axis ", axis);
    out[axis] += t->shape[axis];
  }
  RefTensor r = make(out, x0.dtype);
  std::vector<int64_t> out_st = strides_of(out);
  int64_t offset = 0;
  for (const RefTensor* t : in) {
    for (int64_t k = 0; k < t->numel(); ++k) {
      std::vector<int64_t> idx = unravel(k, t->shape);
      idx[axis] += offset;
      int64_t dst = 0;
      for (int64_t d = 0; d < rank; ++d) dst += idx[d] * out_st[d];
      r.data[dst] = t->data[k];
    }
    offset += t->shape[axis];
  }
  return r;
}

RefTensor squeeze_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  const std::vector<int64_t>& axes = attr_ints(n.attrs, "axes", n.op);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  std::vector<bool> drop(static_cast<size_t>(rank), false);
  if (axes.empty()) {  // PyTorch's squeeze(): every size-1 dim (the spec does not say)
    for (int64_t d = 0; d < rank; ++d) drop[d] = x.shape[d] == 1;
  }
  for (int64_t a : axes) {
    int64_t d = norm_axis(a, rank, "axis");
    if (x.shape[d] != 1) fail("axis ", a, " of ", shape_str(x.shape), " has size ", x.shape[d], ", not 1");
    drop[d] = true;
  }
  RefTensor r = x;
  r.shape.clear();
  for (int64_t d = 0; d < rank; ++d)
    if (!drop[d]) r.shape.push_back(x.shape[d]);
  return r;
}

RefTensor unsqueeze_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  const int64_t axis = norm_axis(attr_int(n.attrs, "axis", n.op), rank + 1, "axis");
  RefTensor r = x;
  r.shape.insert(r.shape.begin() + axis, 1);
  return r;
}

// ---- Linear algebra -----------------------------------------------------------

RefTensor matmul_op(const Node&, const Ins& in) {
  need_inputs(in, 2, 2);
  const RefTensor &a = *in[0], &b = *in[1];
  need_same_dtype(a, b);
  need_numeric(a);
  if (a.shape.size() < 2 || b.shape.size() < 2)
    fail("needs operands of rank >= 2, got ", shape_str(a.shape), " and ", shape_str(b.shape));
  const int64_t M = a.shape[a.shape.size() - 2], K = a.shape.back();
  const int64_t K2 = b.shape[b.shape.size() - 2], N = b.shape.back();
  if (K != K2) fail("inner dimensions differ: ", shape_str(a.shape), " x ", shape_str(b.shape));
  Shape ba(a.shape.begin(), a.shape.end() - 2), bb(b.shape.begin(), b.shape.end() - 2);
  Shape batch = broadcast(ba, bb);
  std::vector<int64_t> ma = broadcast_map(ba, batch), mb = broadcast_map(bb, batch);
  Shape out = batch;
  out.push_back(M);
  out.push_back(N);
  RefTensor r = make(out, a.dtype);
  for (size_t t = 0; t < ma.size(); ++t) {
    Eigen::Map<const RowMat> A(a.data.data() + ma[t] * M * K, M, K);
    Eigen::Map<const RowMat> B(b.data.data() + mb[t] * K * N, K, N);
    Eigen::Map<RowMat> C(r.data.data() + t * M * N, M, N);
    C.noalias() = A * B;
  }
  return r;
}

RefTensor linear_op(const Node&, const Ins& in) {
  need_inputs(in, 2, 3);
  const RefTensor &x = *in[0], &w = *in[1];
  need_same_dtype(x, w);
  need_numeric(x);
  if (x.shape.empty()) fail("x must have rank >= 1, got ", type_str(x));
  if (w.shape.size() != 2) fail("weight must be [out, in], got ", type_str(w));
  const int64_t I = x.shape.back(), O = w.shape[0];
  if (w.shape[1] != I) fail("x ", shape_str(x.shape), " has ", I, " features but weight is ", shape_str(w.shape));
  const int64_t rows = x.numel() / I;
  Shape out = x.shape;
  out.back() = O;
  RefTensor r = make(out, x.dtype);
  Eigen::Map<const RowMat> X(x.data.data(), rows, I);
  Eigen::Map<const RowMat> W(w.data.data(), O, I);
  Eigen::Map<RowMat> Y(r.data.data(), rows, O);
  Y.noalias() = X * W.transpose();
  if (in.size() == 3) {
    const RefTensor& bias = *in[2];
    need_same_dtype(x, bias);
    if (bias.shape != Shape{O}) fail("bias must be [", O, "], got ", shape_str(bias.shape));
    Eigen::Map<const Eigen::RowVectorXd> B(bias.data.data(), O);
    Y.rowwise() += B;
  }
  return r;
}

// ---- Neural-network ops ---------------------------------------------------------

RefTensor embedding_op(const Node&, const Ins& in) {
  need_inputs(in, 2, 2);
  const RefTensor &idx = *in[0], &w = *in[1];
  if (!is_integer(idx.dtype)) fail("indices must be an integer tensor, got ", type_str(idx));
  if (w.shape.size() != 2) fail("weight must be [V, D], got ", type_str(w));
  const int64_t V = w.shape[0], D = w.shape[1];
  Shape out = idx.shape;
  out.push_back(D);
  RefTensor r = make(out, w.dtype);
  for (int64_t k = 0; k < idx.numel(); ++k) {
    const int64_t row = std::clamp<int64_t>(as_int(idx.data[k]), 0, V - 1);
    std::copy_n(w.data.begin() + row * D, D, r.data.begin() + k * D);
  }
  return r;
}

// embedding_grad: row k of grad (one per index position) added into row
// clamp(index k, 0, V-1) of a zero [V, D] table.
RefTensor embedding_grad_op(const Node& n, const Ins& in) {
  need_inputs(in, 2, 2);
  const RefTensor &idx = *in[0], &g = *in[1];
  if (!is_integer(idx.dtype)) fail("indices must be an integer tensor, got ", type_str(idx));
  need_float(g);
  const int64_t V = attr_int(n.attrs, "num_embeddings", n.op);
  if (V < 1) fail("num_embeddings must be >= 1, got ", V);
  if (g.shape.size() != idx.shape.size() + 1 || !std::equal(idx.shape.begin(), idx.shape.end(), g.shape.begin()))
    fail("grad must be [indices..., D] for indices ", shape_str(idx.shape), ", got ", shape_str(g.shape));
  const int64_t D = g.shape.back();
  RefTensor r = make({V, D}, g.dtype);
  for (int64_t k = 0; k < idx.numel(); ++k) {
    const int64_t row = std::clamp<int64_t>(as_int(idx.data[k]), 0, V - 1);
    for (int64_t d = 0; d < D; ++d) r.data[row * D + d] += g.data[k * D + d];
  }
  return r;
}

// Calls fn(base, stride, len) for every line along `axis` of `shape`.
template <typename Fn>
void for_each_line(const Shape& shape, int64_t axis, Fn&& fn) {
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t len = shape[axis];
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) fn(o * len * inner + i, inner, len);
}

RefTensor softmax_op(const Node& n, const Ins& in, bool log_form) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  need_float(x);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  if (rank == 0) fail("needs rank >= 1, got ", type_str(x));
  const int64_t axis = norm_axis(attr_int(n.attrs, "axis", n.op), rank, "axis");
  RefTensor r = make(x.shape, x.dtype);
  for_each_line(x.shape, axis, [&](int64_t base, int64_t stride, int64_t len) {
    double m = -kInf;
    for (int64_t l = 0; l < len; ++l) m = std::max(m, x.data[base + l * stride]);
    double s = 0;
    for (int64_t l = 0; l < len; ++l) s += std::exp(x.data[base + l * stride] - m);
    for (int64_t l = 0; l < len; ++l) {
      const double v = x.data[base + l * stride] - m;
      r.data[base + l * stride] = log_form ? v - std::log(s) : std::exp(v) / s;
    }
  });
  return r;
}

// Checks an optional per-feature parameter [D] of the same dtype as x.
void need_feature_param(const RefTensor& x, const RefTensor& p, const char* what) {
  need_same_dtype(x, p);
  if (p.shape != Shape{x.shape.back()})
    fail(what, " must be [", x.shape.back(), "], got ", shape_str(p.shape), " for x ", shape_str(x.shape));
}

RefTensor layer_norm_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 3);
  const RefTensor& x = *in[0];
  need_float(x);
  if (x.shape.empty()) fail("needs rank >= 1, got ", type_str(x));
  const double eps = attr_float(n.attrs, "eps", n.op);
  if (in.size() >= 2) need_feature_param(x, *in[1], "weight");
  if (in.size() >= 3) need_feature_param(x, *in[2], "bias");
  const int64_t D = x.shape.back();
  RefTensor r = make(x.shape, x.dtype);
  for (int64_t row = 0; row < x.numel() / D; ++row) {
    const double* v = x.data.data() + row * D;
    double mean = 0, var = 0;
    for (int64_t j = 0; j < D; ++j) mean += v[j];
    mean /= D;
    for (int64_t j = 0; j < D; ++j) var += (v[j] - mean) * (v[j] - mean);
    var /= D;  // biased, as PyTorch
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < D; ++j) {
      double y = (v[j] - mean) * inv;
      if (in.size() >= 2) y *= in[1]->data[j];
      if (in.size() >= 3) y += in[2]->data[j];
      r.data[row * D + j] = y;
    }
  }
  return r;
}

RefTensor rms_norm_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 2);
  const RefTensor& x = *in[0];
  need_float(x);
  if (x.shape.empty()) fail("needs rank >= 1, got ", type_str(x));
  const double eps = attr_float(n.attrs, "eps", n.op);
  if (in.size() == 2) need_feature_param(x, *in[1], "weight");
  const int64_t D = x.shape.back();
  RefTensor r = make(x.shape, x.dtype);
  for (int64_t row = 0; row < x.numel() / D; ++row) {
    const double* v = x.data.data() + row * D;
    double ms = 0;
    for (int64_t j = 0; j < D; ++j) ms += v[j] * v[j];
    ms /= D;
    const double inv = 1.0 / std::sqrt(ms + eps);
    for (int64_t j = 0; j < D; ++j) r.data[row * D + j] = v[j] * inv * (in.size() == 2 ? in[1]->data[j] : 1.0);
  }
  return r;
}

// layer_norm_grad / rms_norm_grad(x, g[, weight]): dx_j = sum_k g_k w_k
// dxhat_k/dx_j, summed over the explicit Jacobian of the row (O(D^2) per
// row, not the factored formula the op computes): dxhat_k/dx_j = rstd
// (delta_kj [- 1/D] - xhat_k xhat_j / D).
RefTensor norm_grad_op(const Node& n, const Ins& in) {
  need_inputs(in, 2, 3);
  const RefTensor &x = *in[0], &g = *in[1];
  need_float(x);
  if (x.shape.empty()) fail("needs rank >= 1, got ", type_str(x));
  need_same_dtype(x, g);
  if (g.shape != x.shape) fail("grad must be ", shape_str(x.shape), ", got ", shape_str(g.shape));
  if (in.size() == 3) need_feature_param(x, *in[2], "weight");
  const bool rms = n.op == "rms_norm_grad";
  const double eps = attr_float(n.attrs, "eps", n.op);
  const int64_t D = x.shape.back();
  RefTensor r = make(x.shape, x.dtype);
  std::vector<double> xhat(static_cast<size_t>(D));
  for (int64_t row = 0; row < x.numel() / D; ++row) {
    const double* v = x.data.data() + row * D;
    const double* gr = g.data.data() + row * D;
    double mean = 0, var = 0;
    if (!rms) {
      for (int64_t j = 0; j < D; ++j) mean += v[j];
      mean /= D;
    }
    for (int64_t j = 0; j < D; ++j) var += (v[j] - mean) * (v[j] - mean);
    var /= D;
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t j = 0; j < D; ++j) xhat[j] = (v[j] - mean) * rstd;
    for (int64_t j = 0; j < D; ++j) {
      double dx = 0;
      for (int64_t k = 0; k < D; ++k) {
        const double jac = rstd * ((k == j ? 1.0 : 0.0) - (rms ? 0.0 : 1.0 / D) - xhat[k] * xhat[j] / D);
        dx += gr[k] * (in.size() == 3 ? in[2]->data[k] : 1.0) * jac;
      }
      r.data[row * D + j] = dx;
    }
  }
  return r;
}

RefTensor logsumexp_op(const Node&, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  need_float(x);
  if (x.shape.empty()) fail("needs rank >= 1, got ", type_str(x));
  const int64_t C = x.shape.back();
  RefTensor r = make(Shape(x.shape.begin(), x.shape.end() - 1), x.dtype);
  for (int64_t i = 0; i < r.numel(); ++i) {
    const double* row = x.data.data() + i * C;
    const double m = *std::max_element(row, row + C);
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += std::exp(row[c] - m);
    r.data[i] = m + std::log(s);
  }
  return r;
}

RefTensor cross_entropy_op(const Node& n, const Ins& in) {
  need_inputs(in, 2, 3);
  const RefTensor &logits = *in[0], &target = *in[1];
  need_float(logits);
  if (logits.shape.size() != 2) fail("logits must be [N, C], got ", type_str(logits));
  if (target.dtype != DType::i32 && target.dtype != DType::i64) fail("target must be i32 or i64, got ", type_str(target));
  const int64_t N = logits.shape[0], C = logits.shape[1];
  if (target.shape != Shape{N}) fail("target must be [", N, "], got ", shape_str(target.shape));
  const int64_t ignore = attr_int(n.attrs, "ignore_index", n.op);
  RefTensor r = make({}, logits.dtype);
  double total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = as_int(target.data[i]);
    if (t == ignore) continue;
    const int64_t cls = std::clamp<int64_t>(t, 0, C - 1);  // the spec: out-of-range targets are clamped
    const double* row = logits.data.data() + i * C;
    double lse = 0;
    if (in.size() == 3) {
      lse = in[2]->data[i];  // the node's lse input (logsumexp(logits) in every graph the library builds)
    } else {
      const double m = *std::max_element(row, row + C);
      double s = 0;
      for (int64_t c = 0; c < C; ++c) s += std::exp(row[c] - m);
      lse = m + std::log(s);
    }
    total += lse - row[cls];
    ++count;
  }
  r.data[0] = count ? total / count : 0.0;
  return r;
}

RefTensor dropout_op(const Node& n, const Ins& in) {
  need_inputs(in, 1, 1);
  const RefTensor& x = *in[0];
  need_float(x);
  const double p = attr_float(n.attrs, "p", n.op);
  if (!(p >= 0 && p < 1)) fail("p = ", p, " is outside [0, 1)");
  const uint64_t seed = static_cast<uint64_t>(attr_int(n.attrs, "seed", n.op));
  const uint64_t offset = static_cast<uint64_t>(attr_int(n.attrs, "offset", n.op));
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const double scale = 1.0 / (1.0 - p);
  RefTensor r = make(x.shape, x.dtype);
  for (int64_t e = 0; e < x.numel(); ++e) {
    const uint64_t c = static_cast<uint64_t>(e) + offset;
    const auto bits = philox4x32_10({static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0, 0}, key);
    const double u = std::ldexp(static_cast<double>(bits[0]), -32);
    r.data[e] = u >= p ? x.data[e] * scale : 0.0;
  }
  return r;
}

RefTensor attention_op(const Node& n, const Ins& in) {
  need_inputs(in, 3, 3);
  const RefTensor &q = *in[0], &k = *in[1], &v = *in[2];
  need_float(q);
  need_same_dtype(q, k);
  need_same_dtype(q, v);
  if (q.shape.size() < 2 || k.shape.size() < 2 || v.shape.size() < 2)
    fail("q, k, v need rank >= 2, got ", shape_str(q.shape), ", ", shape_str(k.shape), ", ", shape_str(v.shape));
  const bool causal = attr_bool(n.attrs, "causal", n.op);
  double scale = attr_float(n.attrs, "scale", n.op);
  const int64_t Tq = q.shape[q.shape.size() - 2], D = q.shape.back();
  const int64_t Tk = k.shape[k.shape.size() - 2], Dv = v.shape.back();
  if (k.shape.back() != D) fail("q ", shape_str(q.shape), " and k ", shape_str(k.shape), " differ in the last dim");
  if (Tk != Tq) fail("q ", shape_str(q.shape), " and k ", shape_str(k.shape), " differ in sequence length");
  if (v.shape[v.shape.size() - 2] != Tk)
    fail("k ", shape_str(k.shape), " and v ", shape_str(v.shape), " differ in sequence length");
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(D));
  Shape bq(q.shape.begin(), q.shape.end() - 2), bk(k.shape.begin(), k.shape.end() - 2),
      bv(v.shape.begin(), v.shape.end() - 2);
  Shape batch = broadcast(bq, broadcast(bk, bv));
  std::vector<int64_t> mq = broadcast_map(bq, batch), mk = broadcast_map(bk, batch), mv = broadcast_map(bv, batch);
  Shape out = batch;
  out.push_back(Tq);
  out.push_back(Dv);
  RefTensor r = make(out, q.dtype);
  for (size_t t = 0; t < mq.size(); ++t) {
    Eigen::Map<const RowMat> Q(q.data.data() + mq[t] * Tq * D, Tq, D);
    Eigen::Map<const RowMat> K(k.data.data() + mk[t] * Tk * D, Tk, D);
    Eigen::Map<const RowMat> V(v.data.data() + mv[t] * Tk * Dv, Tk, Dv);
    RowMat S = (Q * K.transpose()) * scale;
    for (int64_t i = 0; i < Tq; ++i) {
      if (causal)  // PyTorch's is_causal: query i sees keys 0..i (top-left aligned)
        for (int64_t j = i + 1; j < Tk; ++j) S(i, j) = -kInf;
      const double m = S.row(i).maxCoeff();
      S.row(i) = (S.row(i).array() - m).exp();
      S.row(i) /= S.row(i).sum();
    }
    Eigen::Map<RowMat> O(r.data.data() + t * Tq * Dv, Tq, Dv);
    O.noalias() = S * V;
  }
  return r;
}

// The gradient of attention by the textbook formulas, in float64: with
// P = softmax(S), dv = P^T G, dP = G V^T, dS = P * (dP - rowsum(P * dP)) * scale,
// dq = dS K, dk = dS^T Q. The output input (3) is not read: the row term
// comes from P and dP, not from the output the op is given.
RefTensor attention_grad_op(const Node& n, const Ins& in) {
  need_inputs(in, 5, 5);
  const RefTensor &q = *in[0], &k = *in[1], &v = *in[2], &g = *in[4];
  const int64_t wrt = attr_int(n.attrs, "wrt", n.op);
  if (q.shape != k.shape || q.shape.size() < 2) fail("q ", shape_str(q.shape), " and k ", shape_str(k.shape));
  const bool causal = attr_bool(n.attrs, "causal", n.op);
  double scale = attr_float(n.attrs, "scale", n.op);
  const int64_t T = q.shape[q.shape.size() - 2], D = q.shape.back(), Dv = v.shape.back();
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(D));
  const int64_t batches = q.numel() / (T * D);
  RefTensor r = make(wrt == 0 ? q.shape : wrt == 1 ? k.shape : v.shape, q.dtype);
  const int64_t rd = wrt == 2 ? Dv : D;
  for (int64_t t = 0; t < batches; ++t) {
    Eigen::Map<const RowMat> Q(q.data.data() + t * T * D, T, D), K(k.data.data() + t * T * D, T, D);
    Eigen::Map<const RowMat> V(v.data.data() + t * T * Dv, T, Dv), G(g.data.data() + t * T * Dv, T, Dv);
    RowMat P = (Q * K.transpose()) * scale;
    for (int64_t i = 0; i < T; ++i) {
      if (causal)
        for (int64_t j = i + 1; j < T; ++j) P(i, j) = -kInf;
      const double m = P.row(i).maxCoeff();
      P.row(i) = (P.row(i).array() - m).exp();
      P.row(i) /= P.row(i).sum();
    }
    Eigen::Map<RowMat> R(r.data.data() + t * T * rd, T, rd);
    if (wrt == 2) {
      R.noalias() = P.transpose() * G;
      continue;
    }
    const RowMat dP = G * V.transpose();
    RowMat dS = P.cwiseProduct(dP);
    const Eigen::VectorXd row = dS.rowwise().sum();
    dS = (P.array() * (dP.array().colwise() - row.array())).matrix() * scale;
    if (wrt == 0) R.noalias() = dS * K;
    else R.noalias() = dS.transpose() * Q;
  }
  return r;
}

// gelu_grad{approximate}(x, g) = g * gelu'(x): Phi(x) + x phi(x), or the
// derivative of the tanh form.
RefTensor gelu_grad_op(const Node& n, const Ins& in) {
  need_inputs(in, 2, 2);
  const RefTensor &x = *in[0], &g = *in[1];
  need_float(x);
  need_same_dtype(x, g);
  if (x.shape != g.shape) fail("x and grad shapes differ: ", type_str(x), " and ", type_str(g));
  const std::string& form = attr_str(n.attrs, "approximate", n.op);
  if (form != "none" && form != "tanh") fail("approximate must be none or tanh, got ", form);
  RefTensor r = make(x.shape, x.dtype);
  const double k = std::sqrt(2.0 / M_PI);
  for (size_t i = 0; i < r.data.size(); ++i) {
    const double v = x.data[i];
    double d;
    if (form == "tanh") {
      const double t = std::tanh(k * (v + 0.044715 * v * v * v));
      d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v);
    } else {
      d = 0.5 * (1 + std::erf(v / std::sqrt(2.0))) + v * std::exp(-0.5 * v * v) / std::sqrt(2 * M_PI);
    }
    r.data[i] = g.data[i] * d;
  }
  return r;
}

// ---- The table ------------------------------------------------------------------

const std::map<std::string, OpFn>& table() {
  static const std::map<std::string, OpFn> t = [] {
    std::map<std::string, OpFn> m;
    auto un = [&](const char* name, UnarySpec s) {
      m[name] = [s](const Node& n, const Ins& in) { return unary(n, in, s); };
    };
    un("neg", {false, [](double x) { return -x; }, [](int64_t x) { return wrapping(uint64_t{0} - static_cast<uint64_t>(x)); }});
    un("abs", {false, [](double x) { return std::fabs(x); },
               [](int64_t x) { return x < 0 ? wrapping(uint64_t{0} - static_cast<uint64_t>(x)) : x; }});
    un("relu", {false, [](double x) { return x > 0 ? x : 0.0; }, [](int64_t x) { return x > 0 ? x : int64_t{0}; }});
    un("exp", {true, [](double x) { return std::exp(x); }, nullptr});
    un("log", {true, [](double x) { return std::log(x); }, nullptr});
    un("sqrt", {true, [](double x) { return std::sqrt(x); }, nullptr});
    un("rsqrt", {true, [](double x) { return 1.0 / std::sqrt(x); }, nullptr});
    un("tanh", {true, [](double x) { return std::tanh(x); }, nullptr});
    un("sigmoid", {true, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, nullptr});
    un("silu", {true, [](double x) { return x / (1.0 + std::exp(-x)); }, nullptr});
    m["gelu"] = [](const Node& n, const Ins& in) {
      const std::string& form = attr_str(n.attrs, "approximate", n.op);
      if (form != "none" && form != "tanh") fail("approximate must be none or tanh, got ", form);
      return unary(n, in, {true, form == "tanh" ? gelu_tanh : gelu_exact, nullptr});
    };
    m["gelu_grad"] = gelu_grad_op;
    m["cast"] = cast_op;
    const std::pair<const char*, Bin> bins[] = {
        {"add", Bin::add},         {"sub", Bin::sub},         {"mul", Bin::mul}, {"div", Bin::div},
        {"pow", Bin::pow},         {"maximum", Bin::maximum}, {"minimum", Bin::minimum},
        {"eq", Bin::eq},           {"ne", Bin::ne},           {"lt", Bin::lt},   {"le", Bin::le},
        {"gt", Bin::gt},           {"ge", Bin::ge}};
    for (const auto& [name, op] : bins) {
      Bin b = op;
      m[name] = [b](const Node& n, const Ins& in) { return binary(n, in, b); };
    }
    m["where"] = where_op;
    m["sum"] = [](const Node& n, const Ins& in) { return reduce(n, in, Red::sum); };
    m["mean"] = [](const Node& n, const Ins& in) { return reduce(n, in, Red::mean); };
    m["max"] = [](const Node& n, const Ins& in) { return reduce(n, in, Red::max); };
    m["reshape"] = reshape_op;
    m["permute"] = permute_op;
    m["broadcast_to"] = broadcast_to_op;
    m["slice"] = slice_op;
    m["concat"] = concat_op;
    m["squeeze"] = squeeze_op;
    m["unsqueeze"] = unsqueeze_op;
    m["matmul"] = matmul_op;
    m["linear"] = linear_op;
    m["embedding"] = embedding_op;
    m["embedding_grad"] = embedding_grad_op;
    m["softmax"] = [](const Node& n, const Ins& in) { return softmax_op(n, in, false); };
    m["log_softmax"] = [](const Node& n, const Ins& in) { return softmax_op(n, in, true); };
    m["layer_norm"] = layer_norm_op;
    m["rms_norm"] = rms_norm_op;
    m["layer_norm_grad"] = norm_grad_op;
    m["rms_norm_grad"] = norm_grad_op;
    m["logsumexp"] = logsumexp_op;
    m["cross_entropy"] = cross_entropy_op;
    m["dropout"] = dropout_op;
    m["attention"] = attention_op;
    m["attention_grad"] = attention_grad_op;
    add_quant_ops(m);
    return m;
  }();
  return t;
}

}  // namespace

RefTensor eval_library_op(const Node& n, const std::vector<const RefTensor*>& in) {
  auto it = table().find(n.op);
  if (it == table().end()) fail("the reference interpreter has no semantics for op '", n.op, "'");
  return it->second(n, in);
}

}  // namespace tessera::ref::detail
