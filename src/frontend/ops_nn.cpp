// Neural-network ops: embedding, softmax, log_softmax, logsumexp, layer_norm,
// rms_norm, cross_entropy, dropout, attention, and the gradient ops that
// recompute what the forward computed: attention_grad (the probabilities) and
// layer_norm_grad / rms_norm_grad (the row statistics).
//
// Each reduction inside an op (a row max, a row sum, ...) is its own stage
// Func, listed in Definition::stages so that a schedule can place it; the
// output Func reads them. Float math on f16/bf16 runs in f32 and is rounded
// back once at the end. Softmax-like ops subtract the row max first.
#include <cmath>
#include <functional>

#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "philox.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;
using Halide::Var;
using namespace opsutil;

std::vector<Var> without(const std::vector<Var>& v, size_t drop) {
  std::vector<Var> r;
  for (size_t i = 0; i < v.size(); ++i)
    if (i != drop) r.push_back(v[i]);
  return r;
}

std::vector<Expr> with_at(std::vector<Expr> idx, size_t pos, const Expr& e) {
  idx[pos] = e;
  return idx;
}

// stage(rv) = init; stage(rv) = combine(stage(rv), value) over value's RDom.
Func reduce_stage(const std::string& name, const std::vector<Var>& rv, const Expr& init,
                  const std::function<Expr(Expr)>& update) {
  Func f(name);
  define_pure(f, rv, init);
  std::vector<Expr> idx = as_exprs(rv);
  ref(f, idx) = update(ref(f, idx));
  return f;
}

// The two stages of a numerically stable log-sum-exp along a row of `len`
// elements x(0..len-1), indexed by the row vars `rv`: the row max, then the
// sum of exp(x - max). Softmax, logsumexp and cross_entropy share them.
std::pair<Func, Func> row_max_and_sum(const std::string& name, const std::vector<Var>& rv, int64_t len,
                                      Halide::Type ct, const std::function<Expr(const Expr&)>& x) {
  std::vector<Expr> row = as_exprs(rv);
  Halide::RDom rm(0, static_cast<int>(len), name + "_rmax");
  Func mx = reduce_stage(name + "_max", rv, ct.min(), [&](Expr cur) { return Halide::max(cur, x(rm)); });
  Halide::RDom rs(0, static_cast<int>(len), name + "_rsum");
  Func se = reduce_stage(name + "_sum", rv, konst(ct, 0.0),
                         [&](Expr cur) { return cur + Halide::exp(x(rs) - at(mx, row)); });
  return {mx, se};
}

// ---- embedding -------------------------------------------------------------

TensorType embedding_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType &ix = in[0], &w = in[1];
  if (!is_integer(ix.dtype)) fail("indices must have an integer dtype, got ", to_string(ix));
  if (w.rank() != 2) fail("weight must be [V, D], got ", to_string(w));
  Shape out = ix.shape;
  out.push_back(w.shape[1]);
  return TensorType{w.dtype, out};
}

Definition embedding_define(const DefineContext& c) {
  const int rank = c.node.type.rank();
  const int64_t vocab = c.input_types[1].shape[0];
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Expr> ii(idx.begin(), idx.end() - 1);
  Expr row = Halide::cast(Halide::Int(64), at(c.inputs[0], ii));
  row = Halide::cast(Halide::Int(32), Halide::clamp(row, Halide::Expr(int64_t{0}), Halide::Expr(int64_t{vocab - 1})));
  return Definition{make_func(c.node.name, v, at(c.inputs[1], {row, idx.back()})), {}};
}

// ---- softmax, log_softmax ----------------------------------------------------

TensorType softmax_infer(const std::vector<TensorType>& in, const Attrs& a, const std::string& op) {
  need_float(in[0]);
  normalize_axis_of(attr_int(a, "axis", op), in[0].shape);
  return in[0];
}

Definition softmax_define(const DefineContext& c, bool log_form) {
  const std::string& op = c.node.op;
  const Shape& s = c.node.type.shape;
  const int rank = static_cast<int>(s.size());
  const size_t axis = static_cast<size_t>(normalize_axis(attr_int(c.node.attrs, "axis", op), rank));
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Var> rv = without(v, axis);
  std::vector<Expr> row = as_exprs(rv);
  auto x = [&](const Expr& along) { return Halide::cast(ct, at(c.inputs[0], with_at(idx, axis, along))); };

  auto [mx, se] = row_max_and_sum(c.node.name, rv, s[axis], ct, x);
  Expr shifted = x(idx[axis]) - at(mx, row);
  Expr r = log_form ? shifted - Halide::log(at(se, row)) : Halide::exp(shifted) / at(se, row);
  return Definition{make_func(c.node.name, v, Halide::cast(halide_type(t), r)), {mx, se}};
}

// ---- logsumexp -----------------------------------------------------------------

TensorType logsumexp_infer(const std::vector<TensorType>& in, const Attrs&) {
  need_float(in[0]);
  if (in[0].rank() < 1) fail("needs rank >= 1, got ", to_string(in[0]));
  return TensorType{in[0].dtype, Shape(in[0].shape.begin(), in[0].shape.end() - 1)};
}

Definition logsumexp_define(const DefineContext& c) {
  const Shape& in = c.input_types[0].shape;
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  auto v = make_vars(c.node.type.rank());
  std::vector<Expr> row = as_exprs(v);
  auto x = [&](const Expr& along) {
    std::vector<Expr> idx = row;
    idx.push_back(along);
    return Halide::cast(ct, at(c.inputs[0], idx));
  };
  auto [mx, se] = row_max_and_sum(c.node.name, v, in.back(), ct, x);
  Expr r = at(mx, row) + Halide::log(at(se, row));
  return Definition{make_func(c.node.name, v, Halide::cast(halide_type(t), r)), {mx, se}};
}

// ---- layer_norm, rms_norm ------------------------------------------------------

TensorType norm_infer(const std::vector<TensorType>& in) {
  const TensorType& x = in[0];
  need_float(x);
  if (x.rank() < 1) fail("needs rank >= 1, got ", to_string(x));
  for (size_t i = 1; i < in.size(); ++i) {
    if (in[i].dtype != x.dtype) fail("dtypes differ: ", to_string(x), " and ", to_string(in[i]));
    if (in[i].shape != Shape{x.shape.back()})
      fail(i == 1 ? "weight" : "bias", " must be [", x.shape.back(), "] for input ", to_string(x.shape), ", got ",
           to_string(in[i].shape));
  }
  return x;
}

// The row statistics of a normalization along the last dim of x: the stages
// (rms: the sum of squares; layer_norm: the sum, then the sum of squared
// deviations, two passes that stay stable for large means) and, per element,
// xhat = (x - mean) * rstd with rstd = 1 / sqrt(var + eps).
struct NormRows {
  std::vector<Var> v;         // the element's vars
  std::vector<Expr> idx;      // as Exprs
  std::vector<Var> rv;        // the row vars (all but the last)
  std::vector<Expr> row;      // as Exprs
  std::vector<Func> stages;   // the row reductions, in order
  Expr rstd, xhat;            // at idx's row and element
  Expr inv_d;                 // 1 / row length
  Halide::Type ct;            // compute type
  size_t last = 0;
};

NormRows norm_rows(const DefineContext& c, bool rms) {
  NormRows n;
  const Shape& s = c.input_types[0].shape;
  const int rank = static_cast<int>(s.size());
  n.last = static_cast<size_t>(rank - 1);
  const int64_t dim = s.back();
  n.ct = compute_type(c.input_types[0].dtype);
  const Expr eps = konst(n.ct, attr_float(c.node.attrs, "eps", c.node.op));
  n.inv_d = konst(n.ct, 1.0 / static_cast<double>(dim));
  n.v = make_vars(rank);
  n.idx = as_exprs(n.v);
  n.rv = without(n.v, n.last);
  n.row = as_exprs(n.rv);
  auto x = [&](const Expr& along) { return Halide::cast(n.ct, at(c.inputs[0], with_at(n.idx, n.last, along))); };
  Expr xc = x(n.idx[n.last]);
  Func sq;
  if (rms) {
    Halide::RDom rd(0, static_cast<int>(dim), c.node.name + "_rsq");
    sq = reduce_stage(c.node.name + "_sumsq", n.rv, konst(n.ct, 0.0), [&](Expr cur) { return cur + x(rd) * x(rd); });
  } else {
    Halide::RDom rd(0, static_cast<int>(dim), c.node.name + "_rsum");
    Func sm = reduce_stage(c.node.name + "_sum", n.rv, konst(n.ct, 0.0), [&](Expr cur) { return cur + x(rd); });
    Expr mu = at(sm, n.row) * n.inv_d;
    Halide::RDom rq(0, static_cast<int>(dim), c.node.name + "_rvar");
    sq = reduce_stage(c.node.name + "_sumsq", n.rv, konst(n.ct, 0.0), [&](Expr cur) {
      Expr e = x(rq) - mu;
      return cur + e * e;
    });
    n.stages.push_back(sm);
    xc = xc - mu;
  }
  n.stages.push_back(sq);
  n.rstd = konst(n.ct, 1.0) / Halide::sqrt(at(sq, n.row) * n.inv_d + eps);
  n.xhat = xc * n.rstd;
  return n;
}

Definition norm_define(const DefineContext& c, bool rms) {
  NormRows n = norm_rows(c, rms);
  Expr r = n.xhat;
  if (c.inputs.size() >= 2) r = r * Halide::cast(n.ct, at(c.inputs[1], {n.idx[n.last]}));
  if (c.inputs.size() >= 3) r = r + Halide::cast(n.ct, at(c.inputs[2], {n.idx[n.last]}));
  return Definition{make_func(c.node.name, n.v, Halide::cast(halide_type(c.node.type.dtype), r)), n.stages};
}

// ---- layer_norm_grad, rms_norm_grad ----------------------------------------------

TensorType norm_grad_infer(const std::vector<TensorType>& in) {
  if (in[1] != in[0])
    fail("grad must have x's type ", to_string(in[0]), ", got ", to_string(in[1]));
  std::vector<TensorType> norm_in{in[0]};
  if (in.size() == 3) norm_in.push_back(in[2]);
  return norm_infer(norm_in);
}

// dx of a normalization from x, the cotangent g and the weight: with
// gn = g (* weight), dx = rstd (gn - xhat mean(gn xhat) [- mean(gn)]). The
// row statistics are recomputed from x and the two row means of gn are
// two more stages, so the whole gradient is one pass over rows.
Definition norm_grad_define(const DefineContext& c, bool rms) {
  NormRows n = norm_rows(c, rms);
  const int64_t dim = c.input_types[0].shape.back();
  auto gn = [&](const Expr& along) {
    Expr e = Halide::cast(n.ct, at(c.inputs[1], with_at(n.idx, n.last, along)));
    return c.inputs.size() == 3 ? e * Halide::cast(n.ct, at(c.inputs[2], {along})) : e;
  };
  // xhat at another element of the row: the row statistics are per row.
  auto xhat_at = [&](const Expr& along) {
    return Halide::Internal::substitute(n.v[n.last].name(), along, n.xhat);
  };
  Halide::RDom rx(0, static_cast<int>(dim), c.node.name + "_rgx");
  Func sgx = reduce_stage(c.node.name + "_sumgx", n.rv, konst(n.ct, 0.0),
                          [&](Expr cur) { return cur + gn(rx) * xhat_at(rx); });
  n.stages.push_back(sgx);
  Expr inner = gn(n.idx[n.last]) - n.xhat * at(sgx, n.row) * n.inv_d;
  if (!rms) {
    Halide::RDom rg(0, static_cast<int>(dim), c.node.name + "_rg");
    Func sg = reduce_stage(c.node.name + "_sumg", n.rv, konst(n.ct, 0.0), [&](Expr cur) { return cur + gn(rg); });
    n.stages.push_back(sg);
    inner = inner - at(sg, n.row) * n.inv_d;
  }
  Expr r = n.rstd * inner;
  return Definition{make_func(c.node.name, n.v, Halide::cast(halide_type(c.node.type.dtype), r)), n.stages};
}

// ---- cross_entropy ---------------------------------------------------------------

TensorType cross_entropy_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const TensorType &logits = in[0], &target = in[1];
  attr_int(a, "ignore_index", "cross_entropy");
  need_float(logits, "logits tensor");
  if (logits.rank() != 2) fail("logits must be [N, C], got ", to_string(logits));
  if (target.dtype != DType::i32 && target.dtype != DType::i64)
    fail("target must be i32 or i64, got ", to_string(target));
  if (target.shape != Shape{logits.shape[0]})
    fail("target must be [", logits.shape[0], "] for logits ", to_string(logits.shape), ", got ",
         to_string(target.shape));
  const TensorType row_type{logits.dtype, {logits.shape[0]}};
  if (in.size() == 3 && in[2] != row_type)
    fail("lse must be ", to_string(row_type), " (logsumexp of the logits ", to_string(logits), "), got ",
         to_string(in[2]));
  return TensorType{logits.dtype, {}};
}

Definition cross_entropy_define(const DefineContext& c) {
  const Shape& ls = c.input_types[0].shape;
  const int64_t classes = ls[1];
  const int64_t ignore = attr_int(c.node.attrs, "ignore_index", "cross_entropy");
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  const std::string& name = c.node.name;
  Var n("d0");
  auto logit = [&](const Expr& row, const Expr& cls) { return Halide::cast(ct, at(c.inputs[0], {row, cls})); };

  // The row log-sum-exp: the third input, or two row stages of this op's own.
  std::vector<Func> stages;
  std::function<Expr(const Expr&)> lse;
  if (c.inputs.size() == 3) {
    lse = [&](const Expr& row) { return Halide::cast(ct, at(c.inputs[2], {row})); };
  } else {
    auto [mx, se] = row_max_and_sum(name, {n}, classes, ct, [&](const Expr& cls) { return logit(n, cls); });
    stages = {mx, se};
    lse = [mx = mx, se = se](const Expr& row) { return at(mx, {row}) + Halide::log(at(se, {row})); };
  }

  // Per-row loss, summed with the count of rows that are not ignored.
  Halide::RDom rn(0, static_cast<int>(ls[0]), name + "_rrow");
  Expr tgt = Halide::cast(Halide::Int(64), at(c.inputs[1], {rn}));
  Expr valid = tgt != Halide::Expr(ignore);
  Expr cls = Halide::cast(Halide::Int(32), Halide::clamp(tgt, Expr(int64_t{0}), Expr(int64_t{classes - 1})));
  Expr row_loss = lse(rn) - logit(rn, cls);
  // Ignored rows are multiplied by 0, not selected away: behind a select,
  // Halide would compute the row stages only where the row is valid, and with
  // one row that test reads the target on the host (no host memory on the GPU).
  Func total = reduce_stage(name + "_total", {}, konst(ct, 0.0), [&](Expr cur) {
    return cur + Halide::select(valid, konst(ct, 1.0), konst(ct, 0.0)) * row_loss;
  });
  Func count = reduce_stage(name + "_count", {}, konst(ct, 0.0),
                            [&](Expr cur) { return cur + Halide::select(valid, konst(ct, 1.0), konst(ct, 0.0)); });
  Expr cnt = at(count, {});
  Expr r = Halide::select(cnt > konst(ct, 0.0), at(total, {}) / Halide::max(cnt, konst(ct, 1.0)), konst(ct, 0.0));
  stages.push_back(total);
  stages.push_back(count);
  return Definition{make_func(name, {}, Halide::cast(halide_type(t), r)), stages};
}

// ---- dropout -------------------------------------------------------------------

double dropout_p(const Attrs& a) {
  double p = attr_float(a, "p", "dropout");
  if (!(p >= 0.0 && p < 1.0)) fail("p must be in [0, 1), got ", p);
  attr_int(a, "seed", "dropout");
  attr_int(a, "offset", "dropout");
  return p;
}

TensorType dropout_infer(const std::vector<TensorType>& in, const Attrs& a) {
  need_float(in[0]);
  dropout_p(a);
  return in[0];
}

Definition dropout_define(const DefineContext& c) {
  const Shape& s = c.node.type.shape;
  const int rank = static_cast<int>(s.size());
  const double p = dropout_p(c.node.attrs);
  const uint64_t seed = static_cast<uint64_t>(attr_int(c.node.attrs, "seed", "dropout"));
  const uint64_t offset = static_cast<uint64_t>(attr_int(c.node.attrs, "offset", "dropout"));
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  auto v = make_vars(rank);
  Expr x = at(c.inputs[0], as_exprs(v));
  if (p == 0.0) return Definition{make_func(c.node.name, v, x), {}};

  const Halide::Type u32 = Halide::UInt(32), u64 = Halide::UInt(64);
  // e = row-major flat index; the counter is the 64-bit e + offset.
  Expr e = Halide::Internal::make_const(u64, offset);
  uint64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    e = e + Halide::cast(u64, v[d]) * Halide::Internal::make_const(u64, stride);
    stride *= static_cast<uint64_t>(s[d]);
  }
  std::array<Expr, 4> words = philox4x32_10(
      {Halide::cast(u32, e), Halide::cast(u32, e >> 32), Halide::Internal::make_zero(u32), Halide::Internal::make_zero(u32)},
      {Halide::Internal::make_const(u32, static_cast<uint32_t>(seed)),
       Halide::Internal::make_const(u32, static_cast<uint32_t>(seed >> 32))});
  Expr keep = Halide::cast(u64, words[0]) >= Halide::Internal::make_const(u64, dropout_threshold(p));
  Expr scaled = Halide::cast(ct, x) * konst(ct, 1.0 / (1.0 - p));
  Expr r = Halide::select(keep, scaled, konst(ct, 0.0));
  return Definition{make_func(c.node.name, v, Halide::cast(halide_type(t), r)), {}};
}

// ---- attention -------------------------------------------------------------------

TensorType attention_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const TensorType &q = in[0], &k = in[1], &v = in[2];
  attr_bool(a, "causal", "attention");
  attr_float(a, "scale", "attention");
  need_float(q);
  if (k.dtype != q.dtype || v.dtype != q.dtype)
    fail("dtypes differ: ", to_string(q), ", ", to_string(k), " and ", to_string(v));
  if (q.rank() < 2) fail("q, k, v must be [..., T, D], got ", to_string(q.shape));
  bool ok = k.shape == q.shape && v.rank() == q.rank();
  for (int i = 0; ok && i < q.rank() - 1; ++i) ok = v.shape[i] == q.shape[i];
  if (!ok)
    fail("q, k, v must be [..., T, D], [..., T, D], [..., T, Dv] with equal leading dims, got ", to_string(q.shape),
         ", ", to_string(k.shape), " and ", to_string(v.shape));
  Shape out = q.shape;
  out.back() = v.shape.back();
  return TensorType{q.dtype, out};
}

// The softmax rows of attention as stages: scores[b.., i, j] = q_i . k_j,
// the row max of the scaled (masked) scores, probs = exp(scaled - max)
// (0 where masked, not yet normalized) and their row sum. Shared by the
// forward and its gradient, which recomputes them.
struct AttentionRows {
  Halide::Type ct;                 // compute type
  double scale = 1;
  std::vector<Var> row;            // [batch..., i]: the row stages' vars
  Var j{"j"};
  Func scores, mx, probs, se;
  // An input (0 q, 1 k, 2 v, 3 out, 4 grad) at (batch of `batch`, a, b), in ct.
  std::function<Expr(int, const std::vector<Expr>&, const Expr&, const Expr&)> read;
  // The normalized probability at (batch, i, jj).
  Expr prob(std::vector<Expr> batch, const Expr& i, const Expr& jj) const {
    std::vector<Expr> r = batch;
    r.push_back(i);
    batch.push_back(i);
    batch.push_back(jj);
    return at(probs, batch) / at(se, r);
  }
};

AttentionRows attention_rows(const DefineContext& c) {
  const Shape& qs = c.input_types[0].shape;
  const int rank = static_cast<int>(qs.size());
  const int64_t seq = qs[rank - 2], dim = qs[rank - 1];
  const bool causal = attr_bool(c.node.attrs, "causal", c.node.op);
  AttentionRows a;
  a.scale = attention_scale(c.node, dim);
  a.ct = compute_type(c.input_types[0].dtype);
  const std::string& name = c.node.name;
  const Halide::Type ct = a.ct;
  a.read = [&c, ct](int input, const std::vector<Expr>& batch, const Expr& x, const Expr& y) {
    std::vector<Expr> ix = batch;
    ix.push_back(x);
    ix.push_back(y);
    return Halide::cast(ct, at(c.inputs[input], ix));
  };
  a.row = make_vars(rank - 1);  // [batch..., i]
  std::vector<Expr> row = as_exprs(a.row);
  std::vector<Expr> batch(row.begin(), row.end() - 1);
  Expr i = row.back();
  std::vector<Var> sv = a.row;
  sv.push_back(a.j);  // [batch..., i, j]

  Halide::RDom rd(0, static_cast<int>(dim), name + "_rd");
  auto read = a.read;
  Var j = a.j;
  a.scores = reduce_stage(name + "_scores", sv, konst(ct, 0.0),
                          [&](Expr cur) { return cur + read(0, batch, i, rd) * read(1, batch, j, rd); });
  auto logit = [&](const Expr& jj) {
    std::vector<Expr> ix = row;
    ix.push_back(jj);
    return at(a.scores, ix) * konst(ct, a.scale);
  };
  auto masked = [&](const Expr& jj, const Expr& val, const Expr& off) {
    return causal ? Halide::select(jj <= i, val, off) : val;
  };
  Halide::RDom rm(0, static_cast<int>(seq), name + "_rmax");
  a.mx = reduce_stage(name + "_max", a.row, ct.min(),
                      [&](Expr cur) { return Halide::max(cur, masked(rm, logit(rm), ct.min())); });
  // probs[b, i, j] = exp(logit - max), 0 where masked (not yet normalized).
  a.probs = Func(name + "_probs");
  define_pure(a.probs, sv, masked(j, Halide::exp(logit(j) - at(a.mx, row)), konst(ct, 0.0)));
  Halide::RDom rs(0, static_cast<int>(seq), name + "_rsum");
  a.se = reduce_stage(name + "_sum", a.row, konst(ct, 0.0), [&](Expr cur) {
    std::vector<Expr> ix = row;
    ix.push_back(rs);
    return cur + at(a.probs, ix);
  });
  return a;
}

Definition attention_define(const DefineContext& c) {
  const Shape& qs = c.input_types[0].shape;
  const int rank = static_cast<int>(qs.size());
  const int64_t seq = qs[rank - 2];
  AttentionRows a = attention_rows(c);
  auto v = make_vars(rank);  // [batch..., i, e]
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Expr> batch(idx.begin(), idx.end() - 2);
  const Expr i = idx[rank - 2], e = idx[rank - 1];
  Halide::RDom ra(0, static_cast<int>(seq), c.node.name + "_racc");
  Func acc = reduce_stage(c.node.name + "_acc", v, konst(a.ct, 0.0), [&](Expr cur) {
    std::vector<Expr> pi = batch;
    pi.push_back(i);
    pi.push_back(ra);
    return cur + at(a.probs, pi) * a.read(2, batch, ra, e);
  });
  std::vector<Expr> row(idx.begin(), idx.end() - 1);
  Expr r = at(acc, idx) / at(a.se, row);
  return Definition{make_func(c.node.name, v, Halide::cast(halide_type(c.node.type.dtype), r)),
                    {a.scores, a.mx, a.probs, a.se, acc}};
}

// ---- attention_grad ----------------------------------------------------------------

TensorType attention_grad_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const int64_t wrt = attr_int(a, "wrt", "attention_grad");
  if (wrt < 0 || wrt > 2) fail("wrt must be 0 (q), 1 (k) or 2 (v), got ", wrt);
  const TensorType out = attention_infer({in[0], in[1], in[2]}, a);
  for (int t : {3, 4})
    if (in[t] != out)
      fail(t == 3 ? "out" : "grad", " must be ", to_string(out), " (the attention of q, k, v), got ", to_string(in[t]));
  return in[static_cast<size_t>(wrt)];
}

// With P the probabilities, G the cotangent and O the output:
//   dv = P^T G;  dS = P * (G V^T - rowsum(G * O)) * scale;  dq = dS K;  dk = dS^T Q.
// (rowsum(G * O) equals rowsum(P * G V^T), the softmax gradient's row term.)
Definition attention_grad_define(const DefineContext& c) {
  const Shape& qs = c.input_types[0].shape;
  const int rank = static_cast<int>(qs.size());
  const int64_t seq = qs[rank - 2], dv = c.input_types[2].shape.back();
  const int64_t wrt = attr_int(c.node.attrs, "wrt", "attention_grad");
  const std::string& name = c.node.name;
  AttentionRows a = attention_rows(c);
  const Halide::Type ct = a.ct;
  auto v = make_vars(rank);  // [batch..., row, col] of the output
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Expr> batch(idx.begin(), idx.end() - 2);
  const Expr x = idx[rank - 2], y = idx[rank - 1];
  Halide::RDom rt(0, static_cast<int>(seq), name + "_rt");
  std::vector<Func> stages = {a.scores, a.mx, a.probs, a.se};
  Func acc;
  if (wrt == 2) {  // dv[b, j, e] = sum_i P[b, i, j] G[b, i, e]
    acc = reduce_stage(name + "_acc", v, konst(ct, 0.0),
                       [&](Expr cur) { return cur + a.prob(batch, rt, x) * a.read(4, batch, rt, y); });
  } else {
    std::vector<Expr> row = as_exprs(a.row);
    std::vector<Expr> rb(row.begin(), row.end() - 1);
    const Expr i = row.back();
    std::vector<Var> sv = a.row;
    sv.push_back(a.j);
    Halide::RDom re(0, static_cast<int>(dv), name + "_re");
    Func dp = reduce_stage(name + "_dp", sv, konst(ct, 0.0),
                           [&](Expr cur) { return cur + a.read(4, rb, i, re) * a.read(2, rb, a.j, re); });
    Halide::RDom ro(0, static_cast<int>(dv), name + "_ro");
    Func rowdot = reduce_stage(name + "_rowdot", a.row, konst(ct, 0.0),
                               [&](Expr cur) { return cur + a.read(4, rb, i, ro) * a.read(3, rb, i, ro); });
    Func ds(name + "_ds");
    std::vector<Expr> sidx = row;
    sidx.push_back(a.j);
    define_pure(ds, sv, a.prob(rb, i, a.j) * (at(dp, sidx) - at(rowdot, row)) * konst(ct, a.scale));
    auto ds_at = [&](const Expr& ii, const Expr& jj) {
      std::vector<Expr> ix = batch;
      ix.push_back(ii);
      ix.push_back(jj);
      return at(ds, ix);
    };
    stages.insert(stages.end(), {dp, rowdot, ds});
    if (wrt == 0)  // dq[b, i, d] = sum_j dS[b, i, j] K[b, j, d]
      acc = reduce_stage(name + "_acc", v, konst(ct, 0.0),
                         [&](Expr cur) { return cur + ds_at(x, rt) * a.read(1, batch, rt, y); });
    else  // dk[b, j, d] = sum_i dS[b, i, j] Q[b, i, d]
      acc = reduce_stage(name + "_acc", v, konst(ct, 0.0),
                         [&](Expr cur) { return cur + ds_at(rt, x) * a.read(0, batch, rt, y); });
  }
  stages.push_back(acc);
  return Definition{make_func(name, v, Halide::cast(halide_type(c.node.type.dtype), at(acc, idx))), stages};
}

const bool registered = [] {
  OpDef emb;
  emb.name = "embedding";
  emb.kind = OpKind::gather;
  emb.min_inputs = emb.max_inputs = 2;
  emb.infer = embedding_infer;
  emb.define = embedding_define;
  register_op(std::move(emb));

  for (bool log_form : {false, true}) {
    OpDef sm;
    sm.name = log_form ? "log_softmax" : "softmax";
    sm.kind = OpKind::reduction;
    std::string op = sm.name;
    sm.infer = [op](const std::vector<TensorType>& in, const Attrs& a) { return softmax_infer(in, a, op); };
    sm.define = [log_form](const DefineContext& c) { return softmax_define(c, log_form); };
    register_op(std::move(sm));
  }

  OpDef ln;
  ln.name = "layer_norm";
  ln.kind = OpKind::reduction;
  ln.min_inputs = 1;
  ln.max_inputs = 3;
  ln.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    attr_float(a, "eps", "layer_norm");
    if (in.size() == 2) fail("takes 1 input (x) or 3 (x, weight, bias), got 2");
    return norm_infer(in);
  };
  ln.define = [](const DefineContext& c) { return norm_define(c, false); };
  register_op(std::move(ln));

  OpDef rms;
  rms.name = "rms_norm";
  rms.kind = OpKind::reduction;
  rms.min_inputs = 1;
  rms.max_inputs = 2;
  rms.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    attr_float(a, "eps", "rms_norm");
    return norm_infer(in);
  };
  rms.define = [](const DefineContext& c) { return norm_define(c, true); };
  register_op(std::move(rms));

  for (bool rms_form : {false, true}) {
    OpDef ng;
    ng.name = rms_form ? "rms_norm_grad" : "layer_norm_grad";
    ng.kind = OpKind::reduction;
    ng.min_inputs = 2;
    ng.max_inputs = 3;
    std::string op = ng.name;
    ng.infer = [op](const std::vector<TensorType>& in, const Attrs& a) {
      attr_float(a, "eps", op.c_str());
      return norm_grad_infer(in);
    };
    ng.define = [rms_form](const DefineContext& c) { return norm_grad_define(c, rms_form); };
    register_op(std::move(ng));
  }

  OpDef ce;
  ce.name = "cross_entropy";
  ce.kind = OpKind::reduction;
  ce.min_inputs = 2;
  ce.max_inputs = 3;
  ce.infer = cross_entropy_infer;
  ce.define = cross_entropy_define;
  register_op(std::move(ce));

  OpDef lse;
  lse.name = "logsumexp";
  lse.kind = OpKind::reduction;
  lse.infer = logsumexp_infer;
  lse.define = logsumexp_define;
  register_op(std::move(lse));

  OpDef drop;
  drop.name = "dropout";
  drop.kind = OpKind::random;
  drop.infer = dropout_infer;
  drop.define = dropout_define;
  register_op(std::move(drop));

  OpDef att;
  att.name = "attention";
  att.kind = OpKind::contraction;
  att.min_inputs = att.max_inputs = 3;
  att.infer = attention_infer;
  att.define = attention_define;
  register_op(std::move(att));

  OpDef attg;
  attg.name = "attention_grad";
  attg.kind = OpKind::contraction;
  attg.min_inputs = attg.max_inputs = 5;
  attg.infer = attention_grad_infer;
  attg.define = attention_grad_define;
  register_op(std::move(attg));
  return true;
}();

}  // namespace

void link_nn_ops() { (void)registered; }

double attention_scale(const Node& node, int64_t dim) {
  const double scale = attr_float(node.attrs, "scale", node.op);
  return scale > 0.0 ? scale : 1.0 / std::sqrt(static_cast<double>(dim));
}

Tensor embedding(Tensor indices, Tensor weight) {
  builder_of(weight, "embedding");
  return builder_of(indices, "embedding")->add("embedding", {indices, weight});
}

Tensor softmax(Tensor x, int64_t axis) { return builder_of(x, "softmax")->add("softmax", {x}, {{"axis", axis}}); }

Tensor log_softmax(Tensor x, int64_t axis) {
  return builder_of(x, "log_softmax")->add("log_softmax", {x}, {{"axis", axis}});
}

Tensor layer_norm(Tensor x, double eps) { return builder_of(x, "layer_norm")->add("layer_norm", {x}, {{"eps", eps}}); }

Tensor layer_norm(Tensor x, Tensor weight, Tensor bias, double eps) {
  builder_of(weight, "layer_norm");
  builder_of(bias, "layer_norm");
  return builder_of(x, "layer_norm")->add("layer_norm", {x, weight, bias}, {{"eps", eps}});
}

Tensor rms_norm(Tensor x, double eps) { return builder_of(x, "rms_norm")->add("rms_norm", {x}, {{"eps", eps}}); }

Tensor rms_norm(Tensor x, Tensor weight, double eps) {
  builder_of(weight, "rms_norm");
  return builder_of(x, "rms_norm")->add("rms_norm", {x, weight}, {{"eps", eps}});
}

namespace {

// layer_norm_grad or rms_norm_grad (op) of x and grad, with the weight when defined.
Tensor norm_grad(const char* op, Tensor x, Tensor grad, Tensor weight, double eps) {
  builder_of(grad, op);
  std::vector<Tensor> in{x, grad};
  if (weight.defined()) in.push_back(weight);
  return builder_of(x, op)->add(op, in, {{"eps", eps}});
}

}  // namespace

Tensor layer_norm_grad(Tensor x, Tensor grad, Tensor weight, double eps) {
  return norm_grad("layer_norm_grad", x, grad, weight, eps);
}

Tensor rms_norm_grad(Tensor x, Tensor grad, Tensor weight, double eps) {
  return norm_grad("rms_norm_grad", x, grad, weight, eps);
}

Tensor logsumexp(Tensor x) { return builder_of(x, "logsumexp")->add("logsumexp", {x}); }

Tensor cross_entropy(Tensor logits, Tensor target, int64_t ignore_index) {
  builder_of(target, "cross_entropy");
  GraphBuilder* b = builder_of(logits, "cross_entropy");
  // The row log-sum-exp is a node of its own, so that the gradient reads the
  // forward's instead of reducing the logits again (vjp_nn.cpp). Logits the op
  // refuses go in alone, for its error message.
  if (logits.shape().size() != 2 || !is_float(logits.dtype()))
    return b->add("cross_entropy", {logits, target}, {{"ignore_index", ignore_index}});
  return b->add("cross_entropy", {logits, target, logsumexp(logits)}, {{"ignore_index", ignore_index}});
}

Tensor dropout(Tensor x, double p, uint64_t seed, uint64_t offset) {
  return builder_of(x, "dropout")
      ->add("dropout", {x},
            {{"p", p}, {"seed", static_cast<int64_t>(seed)}, {"offset", static_cast<int64_t>(offset)}});
}

Tensor attention(Tensor q, Tensor k, Tensor v, bool causal, double scale) {
  builder_of(k, "attention");
  builder_of(v, "attention");
  return builder_of(q, "attention")->add("attention", {q, k, v}, {{"causal", causal}, {"scale", scale}});
}

Tensor attention_grad(Tensor q, Tensor k, Tensor v, Tensor out, Tensor grad, int wrt, bool causal, double scale) {
  for (const Tensor* t : {&k, &v, &out, &grad}) builder_of(*t, "attention_grad");
  return builder_of(q, "attention_grad")
      ->add("attention_grad", {q, k, v, out, grad},
            {{"wrt", static_cast<int64_t>(wrt)}, {"causal", causal}, {"scale", scale}});
}

}  // namespace tessera
