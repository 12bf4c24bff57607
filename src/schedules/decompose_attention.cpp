// Attention as two products around a softmax (see decompose_attention.h).
#include "decompose_attention.h"

#include <cmath>

#include "graph_rewrite.h"
#include "op_registry.h"

namespace tessera {

namespace {

// Appends a node of `op` (type inferred from its inputs) to the rewrite.
int emit_op(GraphRewriter& rw, const std::string& op, const std::vector<int>& inputs, Attrs attrs = {}) {
  Node n;
  n.op = op;
  n.inputs = inputs;
  std::vector<TensorType> types;
  for (int i : inputs) types.push_back(rw.result().nodes[i].type);
  n.type = op_def(op).infer(types, attrs);
  n.attrs = std::move(attrs);
  return rw.emit(std::move(n));
}

int emit_constant(GraphRewriter& rw, std::vector<double> values, Shape shape, DType dtype) {
  Node n;
  n.op = "constant";
  n.type = {dtype, std::move(shape)};
  n.values = std::move(values);
  return rw.emit(std::move(n));
}

std::vector<int64_t> swap_last_two(int64_t rank) {
  std::vector<int64_t> dims(rank);
  for (int64_t i = 0; i < rank; ++i) dims[i] = i;
  std::swap(dims[rank - 2], dims[rank - 1]);
  return dims;
}

}  // namespace

Graph decompose_attention(const Graph& g) {
  bool any = false;
  for (const Node& n : g.nodes) any = any || n.op == "attention";
  if (!any) return g;
  GraphRewriter rw(g);
  for (const Node& n : g.nodes) {
    if (n.op != "attention") {
      rw.copy(n.id);
      continue;
    }
    const int q = rw.mapped(n.inputs[0]), k = rw.mapped(n.inputs[1]), v = rw.mapped(n.inputs[2]);
    const TensorType& qt = rw.result().nodes[q].type;
    const int64_t rank = qt.rank(), seq = qt.shape[rank - 2], dim = qt.shape.back();
    double scale = attr_float(n.attrs, "scale", "attention");
    if (scale <= 0.0) scale = 1.0 / std::sqrt(static_cast<double>(dim));
    const int kt = emit_op(rw, "permute", {k}, {{"dims", swap_last_two(rank)}});
    int s = emit_op(rw, "matmul", {q, kt});
    s = emit_op(rw, "mul", {s, emit_constant(rw, {scale}, {}, qt.dtype)});
    if (attr_bool(n.attrs, "causal", "attention")) {
      std::vector<double> mask(static_cast<size_t>(seq * seq));
      for (int64_t i = 0; i < seq; ++i)
        for (int64_t j = 0; j < seq; ++j) mask[static_cast<size_t>(i * seq + j)] = j <= i ? 1.0 : 0.0;
      // As the gradient's recompute: a finite "minus infinity" whose exp is exactly 0.
      const double off = qt.dtype == DType::f16 ? -65504.0 : -1e30;
      s = emit_op(rw, "where", {emit_constant(rw, std::move(mask), {seq, seq}, DType::boolean), s,
                                emit_constant(rw, {off}, {}, qt.dtype)});
    }
    const int p = emit_op(rw, "softmax", {s}, {{"axis", int64_t{-1}}});
    Node out;
    out.op = "matmul";
    out.name = n.name;  // the attention's result keeps its name
    out.inputs = {p, v};
    out.type = n.type;
    rw.map(n.id, rw.emit(std::move(out)));
  }
  return std::move(rw).finish();
}

}  // namespace tessera
