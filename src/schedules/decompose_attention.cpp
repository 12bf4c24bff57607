// Attention and its gradient as products around a softmax (see decompose_attention.h).
#include "decompose_attention.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "graph_rewrite.h"
#include "op_registry.h"

namespace tessera {

namespace {

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

int emit_permute_last_two(GraphRewriter& rw, int x) {
  return rw.emit_op("permute", {x}, {{"dims", swap_last_two(rw.result().nodes[x].type.rank())}});
}

struct Attention {
  int q, k, v;  // in the rewrite
  int64_t seq;
  double scale;
  bool causal;
  DType dtype;
};

Attention attention_of(const GraphRewriter& rw, const Node& n) {
  Attention a;
  a.q = rw.mapped(n.inputs[0]);
  a.k = rw.mapped(n.inputs[1]);
  a.v = rw.mapped(n.inputs[2]);
  const TensorType& qt = rw.result().nodes[a.q].type;
  a.seq = qt.shape[qt.rank() - 2];
  a.dtype = qt.dtype;
  a.scale = attention_scale(n, qt.shape.back());
  a.causal = attr_bool(n.attrs, "causal", n.op);
  return a;
}

// P = softmax(where(mask, (q @ k^T) * scale, -inf)).
int emit_probs(GraphRewriter& rw, const Attention& a) {
  int s = rw.emit_op("matmul", {a.q, emit_permute_last_two(rw, a.k)});
  s = rw.emit_op("mul", {s, emit_constant(rw, {a.scale}, {}, a.dtype)});
  if (a.causal) {
    std::vector<double> mask(static_cast<size_t>(a.seq * a.seq));
    for (int64_t i = 0; i < a.seq; ++i)
      for (int64_t j = 0; j < a.seq; ++j) mask[static_cast<size_t>(i * a.seq + j)] = j <= i ? 1.0 : 0.0;
    // A finite "minus infinity" whose exp is exactly 0 (f16 overflows above 65504).
    const double off = a.dtype == DType::f16 ? -65504.0 : -1e30;
    s = rw.emit_op("where", {emit_constant(rw, std::move(mask), {a.seq, a.seq}, DType::boolean), s,
                              emit_constant(rw, {off}, {}, a.dtype)});
  }
  return rw.emit_op("softmax", {s}, {{"axis", int64_t{-1}}});
}

// Emits `op` for node n under n's own name (so the result keeps it).
void emit_as(GraphRewriter& rw, const Node& n, const std::string& op, std::vector<int> inputs) {
  Node out;
  out.op = op;
  out.name = n.name;
  out.inputs = std::move(inputs);
  out.type = n.type;
  rw.map(n.id, rw.emit(std::move(out)));
}

}  // namespace

Graph decompose_attention(const Graph& g, const std::function<bool(const Node&)>& keep) {
  auto decomposed = [&](const Node& n) {
    return (n.op == "attention" || n.op == "attention_grad") && !(keep && keep(n));
  };
  if (std::none_of(g.nodes.begin(), g.nodes.end(), decomposed)) return g;
  GraphRewriter rw(g);
  // P and dS of the attention_grad nodes seen so far, by their inputs (q, k,
  // v, out, grad in the rewrite), scale and causal flag.
  std::map<std::tuple<int, int, int, int, int, double, bool>, std::pair<int, int>> shared;
  for (const Node& n : g.nodes) {
    if (!decomposed(n)) {
      rw.copy(n.id);
      continue;
    }
    const Attention a = attention_of(rw, n);
    if (n.op == "attention") {
      emit_as(rw, n, "matmul", {emit_probs(rw, a), a.v});
      continue;
    }
    const int out = rw.mapped(n.inputs[3]), grad = rw.mapped(n.inputs[4]);
    const auto key = std::make_tuple(a.q, a.k, a.v, out, grad, a.scale, a.causal);
    auto it = shared.find(key);
    if (it == shared.end()) {
      const int p = emit_probs(rw, a);
      const int dp = rw.emit_op("matmul", {grad, emit_permute_last_two(rw, a.v)});
      const int rowdot = rw.emit_op("sum", {rw.emit_op("mul", {grad, out})},
                                 {{"axes", std::vector<int64_t>{-1}}, {"keepdim", true}});
      int ds = rw.emit_op("mul", {p, rw.emit_op("sub", {dp, rowdot})});
      ds = rw.emit_op("mul", {ds, emit_constant(rw, {a.scale}, {}, a.dtype)});
      it = shared.emplace(key, std::make_pair(p, ds)).first;
    }
    const auto [p, ds] = it->second;
    switch (attr_int(n.attrs, "wrt", n.op)) {
      case 0: emit_as(rw, n, "matmul", {ds, a.k}); break;
      case 1: emit_as(rw, n, "matmul", {emit_permute_last_two(rw, ds), a.q}); break;
      default: emit_as(rw, n, "matmul", {emit_permute_last_two(rw, p), grad}); break;
    }
  }
  return std::move(rw).finish();
}

Graph prepare_cpu_attention(const Graph& g) {
  return decompose_attention(g, [](const Node& n) { return n.op == "attention"; });
}

}  // namespace tessera
