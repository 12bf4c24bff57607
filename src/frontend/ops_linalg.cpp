// Linear algebra: matmul and linear.
//
// Convention the schedules rely on: stages[0] is the accumulator Func, defined
// over the row-major output vars [batch..., m, n] (Halide order n, m, batch
// innermost-first), with a pure init of 0 (f32 for f16/bf16 inputs, else the
// dtype) and exactly one update `acc(...) += a(..., m, k) * b(..., k, n)` over
// an RDom named "k". `func` is the output stage, reading acc (cast back to the
// dtype, plus the bias for linear). linear reads weight[out, in] directly.
#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;
using namespace opsutil;

void need_numeric(const TensorType& t) {
  if (t.dtype == DType::boolean) fail("needs numeric inputs, got ", to_string(t));
}

void same_dtype(const TensorType& a, const TensorType& b) {
  if (a.dtype != b.dtype) fail("dtypes differ: ", to_string(a), " and ", to_string(b), " (insert a cast)");
}

Shape batch_of(const Shape& s, size_t keep) { return Shape(s.begin(), s.end() - keep); }

TensorType matmul_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType &a = in[0], &b = in[1];
  same_dtype(a, b);
  need_numeric(a);
  if (a.rank() < 2 || b.rank() < 2)
    fail("both operands need rank >= 2, got ", to_string(a.shape), " and ", to_string(b.shape));
  int64_t m = a.shape[a.rank() - 2], k = a.shape[a.rank() - 1];
  int64_t kb = b.shape[b.rank() - 2], n = b.shape[b.rank() - 1];
  if (k != kb)
    fail("inner dims differ: ", to_string(a.shape), " x ", to_string(b.shape), " (", k, " vs ", kb, ")");
  Shape batch;
  try {
    batch = broadcast_shapes(batch_of(a.shape, 2), batch_of(b.shape, 2));
  } catch (const Error&) {
    fail("batch dims of ", to_string(a.shape), " and ", to_string(b.shape), " do not broadcast");
  }
  batch.push_back(m);
  batch.push_back(n);
  return TensorType{a.dtype, batch};
}

Definition matmul_define(const DefineContext& c) {
  const Shape& out = c.node.type.shape;
  const Shape &as = c.input_types[0].shape, &bs = c.input_types[1].shape;
  const int rank = static_cast<int>(out.size());
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  std::vector<Expr> batch_idx(idx.begin(), idx.end() - 2);
  Shape batch_out = batch_of(out, 2);
  Expr m = idx[rank - 2], n = idx[rank - 1];
  Halide::RDom k(0, static_cast<int>(as.back()), "k");

  std::vector<Expr> ai = broadcast_index(batch_of(as, 2), batch_out, batch_idx);
  ai.push_back(m);
  ai.push_back(k);
  std::vector<Expr> bi = broadcast_index(batch_of(bs, 2), batch_out, batch_idx);
  bi.push_back(k);
  bi.push_back(n);

  Func acc(c.node.name + "_acc");
  define_pure(acc, v, konst(ct, 0.0));
  ref(acc, idx) += Halide::cast(ct, at(c.inputs[0], ai)) * Halide::cast(ct, at(c.inputs[1], bi));
  Func f = make_func(c.node.name, v, Halide::cast(halide_type(t), at(acc, idx)));
  return Definition{f, {acc}};
}

TensorType linear_infer(const std::vector<TensorType>& in, const Attrs&) {
  const TensorType &x = in[0], &w = in[1];
  same_dtype(x, w);
  need_numeric(x);
  if (x.rank() < 1) fail("the input needs rank >= 1, got ", to_string(x.shape));
  if (w.rank() != 2 || w.shape[1] != x.shape.back())
    fail("weight must be [out, ", x.shape.back(), "] for input ", to_string(x.shape), ", got ",
         to_string(w.shape));
  if (in.size() == 3) {
    same_dtype(x, in[2]);
    if (in[2].shape != Shape{w.shape[0]})
      fail("bias must be [", w.shape[0], "] for weight ", to_string(w.shape), ", got ", to_string(in[2].shape));
  }
  Shape out = x.shape;
  out.back() = w.shape[0];
  return TensorType{x.dtype, out};
}

Definition linear_define(const DefineContext& c) {
  const Shape& out = c.node.type.shape;
  const int rank = static_cast<int>(out.size());
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  auto v = make_vars(rank);
  std::vector<Expr> idx = as_exprs(v);
  Expr n = idx[rank - 1];
  Halide::RDom k(0, static_cast<int>(c.input_types[0].shape.back()), "k");

  std::vector<Expr> xi(idx.begin(), idx.end() - 1);
  xi.push_back(k);

  Func acc(c.node.name + "_acc");
  define_pure(acc, v, konst(ct, 0.0));
  ref(acc, idx) += Halide::cast(ct, at(c.inputs[0], xi)) * Halide::cast(ct, at(c.inputs[1], {n, k}));
  Expr r = at(acc, idx);
  if (c.inputs.size() == 3) r = r + Halide::cast(ct, at(c.inputs[2], {n}));
  Func f = make_func(c.node.name, v, Halide::cast(halide_type(t), r));
  return Definition{f, {acc}};
}

const bool registered = [] {
  OpDef matmul;
  matmul.name = "matmul";
  matmul.kind = OpKind::contraction;
  matmul.min_inputs = matmul.max_inputs = 2;
  matmul.infer = matmul_infer;
  matmul.define = matmul_define;
  register_op(std::move(matmul));

  OpDef linear;
  linear.name = "linear";
  linear.kind = OpKind::contraction;
  linear.min_inputs = 2;
  linear.max_inputs = 3;
  linear.infer = linear_infer;
  linear.define = linear_define;
  register_op(std::move(linear));
  return true;
}();

}  // namespace

void link_linalg_ops() { (void)registered; }

Tensor matmul(Tensor a, Tensor b) {
  builder_of(b, "matmul");
  return builder_of(a, "matmul")->add("matmul", {a, b});
}

Tensor linear(Tensor x, Tensor weight) {
  builder_of(weight, "linear");
  return builder_of(x, "linear")->add("linear", {x, weight});
}

Tensor linear(Tensor x, Tensor weight, Tensor bias) {
  builder_of(weight, "linear");
  builder_of(bias, "linear");
  return builder_of(x, "linear")->add("linear", {x, weight, bias});
}

}  // namespace tessera
