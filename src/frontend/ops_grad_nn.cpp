// Library ops that only the backward of neural-network ops needs:
// embedding_grad(indices, grad){num_embeddings} -> [V, D], the scatter-add of
// the cotangent rows into a zeroed table (the gradient of embedding's weight).
//
// The scatter is a Halide update with a data-dependent row index; the table is
// a stage (Definition::stages) that the CPU schedule places specially
// (src/schedules/cpu_x86.cpp: its scattered dim is never split or
// parallelized). The VJP rules that use these ops live in
// src/transforms/vjp_nn.cpp; nothing here differentiates anything.
#include <algorithm>

#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;
using Halide::Var;
using namespace opsutil;

// ---- embedding_grad -----------------------------------------------------------

TensorType embedding_grad_infer(const std::vector<TensorType>& in, const Attrs& a) {
  const TensorType &ix = in[0], &g = in[1];
  const int64_t vocab = attr_int(a, "num_embeddings", "embedding_grad");
  if (vocab < 1) fail("num_embeddings must be >= 1, got ", vocab);
  if (!is_integer(ix.dtype)) fail("indices must have an integer dtype, got ", to_string(ix));
  need_float(g, "grad");
  Shape want = ix.shape;
  if (g.rank() != ix.rank() + 1 || !std::equal(want.begin(), want.end(), g.shape.begin()))
    fail("grad must be [indices..., D] for indices ", to_string(ix.shape), ", got ", to_string(g.shape));
  return TensorType{g.dtype, {vocab, g.shape.back()}};
}

Definition embedding_grad_define(const DefineContext& c) {
  const Shape& is = c.input_types[0].shape;
  const int64_t vocab = attr_int(c.node.attrs, "num_embeddings", "embedding_grad");
  const int64_t positions = numel(is);
  DType t = c.node.type.dtype;
  Halide::Type ct = compute_type(t);
  const std::string& name = c.node.name;
  auto v = make_vars(2);  // [row, d]
  Func table(name + "_table");
  define_pure(table, v, konst(ct, 0.0));
  // One RVar over every index position (row-major flat), unflattened to the
  // indices' multi-index.
  Halide::RDom r(0, static_cast<int>(positions), name + "_rpos");
  std::vector<Expr> pos(is.size());
  Expr rest = r;
  for (int k = static_cast<int>(is.size()) - 1; k >= 1; --k) {
    pos[k] = rest % static_cast<int>(is[k]);
    rest = rest / static_cast<int>(is[k]);
  }
  if (!is.empty()) pos[0] = rest;
  Expr row = Halide::cast(Halide::Int(64), at(c.inputs[0], pos));
  row = Halide::cast(Halide::Int(32), Halide::clamp(row, Expr(int64_t{0}), Expr(int64_t{vocab - 1})));
  std::vector<Expr> gix = pos;
  gix.push_back(v[1]);
  ref(table, {row, v[1]}) += Halide::cast(ct, at(c.inputs[1], gix));
  Func out = make_func(name, v, Halide::cast(halide_type(t), at(table, as_exprs(v))));
  return Definition{out, {table}};
}

const bool registered = [] {
  OpDef eg;
  eg.name = "embedding_grad";
  eg.kind = OpKind::gather;
  eg.min_inputs = eg.max_inputs = 2;
  eg.infer = embedding_grad_infer;
  eg.define = embedding_grad_define;
  register_op(std::move(eg));
  return true;
}();

}  // namespace

void link_grad_nn_ops() {
  (void)registered;
}

Tensor embedding_grad(Tensor indices, Tensor grad, int64_t num_embeddings) {
  builder_of(grad, "embedding_grad");
  return builder_of(indices, "embedding_grad")
      ->add("embedding_grad", {indices, grad}, {{"num_embeddings", num_embeddings}});
}

}  // namespace tessera
