// Fused attention as library calls of GPU plans (see library_attention.h).
#include "library_attention.h"

#include <algorithm>
#include <sstream>

#include "decompose_attention.h"
#include "graph_rewrite.h"
#include "op_registry.h"

namespace tessera {

namespace {

// The names of LibraryAttention::placement's entries.
constexpr const char* kTensorNames[8] = {"q", "k", "v", "out", "grad", "dq", "dk", "dv"};

// The permute that undoes `dims`.
std::vector<int64_t> inverse(const std::vector<int64_t>& dims) {
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) inv[dims[i]] = static_cast<int64_t>(i);
  return inv;
}

// Whether the fused kernels write attention node `a` in place at view `v`.
bool writes_in_place(const std::optional<StridedView>& v, const Graph& g, const Node& a) {
  if (!v) return false;
  const auto p = attention_placement(*v);
  return p && in_place_takes(g, a, p->first, p->second);
}

// ... into `target`, which reads it through views (write_view).
bool writes_in_place(const Graph& g, const Node& a, int target, const std::vector<int>& readers) {
  return writes_in_place(write_view(g, a.id, target, readers), g, a);
}

}  // namespace

bool fused_attention_takes(const Graph& g, const Node& n) {
  if (n.op != "attention" && n.op != "attention_grad") return false;
  const TensorType &q = g.nodes[n.inputs[0]].type, &v = g.nodes[n.inputs[2]].type;
  if (q.dtype != DType::f32 && q.dtype != DType::bf16) return false;
  for (int in : n.inputs)
    if (g.nodes[in].type.dtype != q.dtype) return false;
  return n.type.dtype == q.dtype && q.rank() >= 2 && q.shape.back() >= 1 && q.shape.back() <= 64 &&
         v.shape.back() == q.shape.back();
}

bool one_backward_call(const Graph& g, const Node& x, const Node& y) {
  return x.op == "attention_grad" && y.op == "attention_grad" && x.inputs == y.inputs && fused_attention_takes(g, x) &&
         attr_bool(x.attrs, "causal", x.op) == attr_bool(y.attrs, "causal", y.op) &&
         attr_float(x.attrs, "scale", x.op) == attr_float(y.attrs, "scale", y.op);
}

std::optional<std::pair<AttentionPlacement, int64_t>> attention_placement(const StridedView& v) {
  const int r = static_cast<int>(v.shape.size());
  if (r < 2 || v.strides.back() != 1) return std::nullopt;
  const int64_t seq = v.shape[r - 2], dim = v.shape[r - 1], heads = r >= 3 ? v.shape[r - 3] : 1;
  // The dims before the heads, of extent > 1, must merge into one.
  int64_t outer_stride = -1;
  for (int d = 0; d < r - 3; ++d) {
    if (v.shape[d] == 1) continue;
    if (outer_stride >= 0 && outer_stride != v.strides[d] * v.shape[d]) return std::nullopt;
    outer_stride = v.strides[d];
  }
  AttentionPlacement p;
  p.offset = v.offset;
  p.row = seq > 1 ? v.strides[r - 2] : dim;
  p.head = heads > 1 ? v.strides[r - 3] : seq * dim;
  p.batch = outer_stride >= 0 ? outer_stride : heads * seq * dim;
  return std::make_pair(p, heads);
}

AttentionPlacement dense_attention_placement(const Shape& shape, int64_t heads) {
  const int64_t seq = shape[shape.size() - 2], dim = shape.back();
  return {0, heads * seq * dim, seq * dim, dim};
}

bool in_place_takes(const Graph& g, const Node& n, const AttentionPlacement& p, int64_t heads) {
  const TensorType& q = g.nodes[n.inputs[0]].type;
  if (p == dense_attention_placement(q.shape, heads)) return true;
  const int64_t dim = q.shape.back();
  return q.dtype == DType::bf16 && (dim == 16 || dim == 32 || dim == 64) && p.offset % 8 == 0 && p.batch % 8 == 0 &&
         p.head % 8 == 0 && p.row % 8 == 0;
}

Graph prepare_gpu_attention(const Graph& graph) {
  // Without dead code, whose reads of the attention nodes would count.
  const Graph live = keep_only(graph, live_nodes(graph));
  const Graph g = decompose_attention(live, [&](const Node& n) { return fused_attention_takes(live, n); });
  // The permute P through which each other reader of attention node A reads
  // it: through[P] = A.
  const std::vector<int> readers = g.use_counts();
  std::vector<int> through(g.nodes.size(), -1);
  std::vector<bool> output(g.nodes.size(), false), rerouted(g.nodes.size(), false);
  for (const GraphOutput& o : g.outputs) output[o.node] = true;
  for (const Node& p : g.nodes) {
    if (p.op != "permute") continue;
    const Node& a = g.nodes[p.inputs[0]];
    if (a.op != "attention" || !fused_attention_takes(g, a) || readers[a.id] < 2 || output[a.id] || rerouted[a.id])
      continue;
    bool later = true;  // every other reader runs after P
    for (int r = a.id + 1; r < p.id; ++r)
      later = later && std::find(g.nodes[r].inputs.begin(), g.nodes[r].inputs.end(), a.id) == g.nodes[r].inputs.end();
    if (later && writes_in_place(write_view(g, {a.id, p.id}), g, a)) {
      through[p.id] = a.id;
      rerouted[a.id] = true;
    }
  }
  if (std::none_of(rerouted.begin(), rerouted.end(), [](bool b) { return b; })) return g;
  GraphRewriter rw(g);
  for (const Node& n : g.nodes) {
    const int copied = rw.copy(n.id);
    if (through[n.id] >= 0)
      rw.map(through[n.id], rw.emit_op("permute", {copied}, {{"dims", inverse(attr_ints(n.attrs, "dims", "permute"))}}));
  }
  return std::move(rw).finish();
}

std::optional<LibraryAttention> match_library_attention(const Kernel& kernel) {
  const Graph& kg = kernel.graph;
  LibraryAttention a;
  std::vector<int> calls;  // the attention nodes: one forward, or the gradients of one
  for (const Node& n : kg.nodes) {
    if (n.op == "input") continue;
    if (n.op == "attention" || n.op == "attention_grad") {
      if (!fused_attention_takes(kg, n)) return std::nullopt;
      if (!calls.empty() && !one_backward_call(kg, kg.nodes[calls[0]], n)) return std::nullopt;
      calls.push_back(n.id);
    } else if (n.op != "reshape" && n.op != "permute" && n.op != "slice" && n.op != "concat") {
      return std::nullopt;  // views only
    }
  }
  if (calls.empty()) return std::nullopt;
  const Node& first = kg.nodes[calls[0]];
  const TensorType& q = kg.nodes[first.inputs[0]].type;
  a.dtype = q.dtype;
  a.backward = first.op == "attention_grad";
  a.seq = q.shape[q.rank() - 2];
  a.dim = q.shape.back();
  a.batch = q.numel() / (a.seq * a.dim);
  a.causal = attr_bool(first.attrs, "causal", first.op);
  a.scale = attention_scale(first, a.dim);
  bool placed = true;
  auto place = [&](int slot, const std::optional<StridedView>& v) {
    const auto p = v ? attention_placement(*v) : std::nullopt;
    placed = placed && p && in_place_takes(kg, first, p->first, p->second) && (slot == 0 || p->second == a.heads);
    if (placed) {
      a.placement[slot] = p->first;
      a.heads = p->second;
    }
  };
  // Operands: views of kernel inputs, which are the kernel graph's first nodes, in order.
  const auto is_input = [&](int id) { return kg.nodes[id].op == "input"; };
  int* operand[5] = {&a.q, &a.k, &a.v, &a.out, &a.grad};
  for (int i = 0; i < (a.backward ? 5 : 3); ++i) {
    const std::optional<StridedView> v = read_view(kg, first.inputs[i], is_input);
    place(i, v);
    if (placed) *operand[i] = v->base;
  }
  // Results: each output is an attention node or a view it writes in place.
  const std::vector<int> readers = kg.use_counts();
  std::vector<bool> written(kg.outputs.size(), false);
  for (int id : calls) {
    const int slot = a.backward ? 5 + static_cast<int>(attr_int(kg.nodes[id].attrs, "wrt", "attention_grad")) : 3;
    int* root = a.backward ? (slot == 5 ? &a.dq : slot == 6 ? &a.dk : &a.dv) : nullptr;
    bool found = false;
    for (size_t r = 0; r < kg.outputs.size() && !found; ++r)
      if (std::optional<StridedView> v = write_view(kg, id, kg.outputs[r].node, readers)) {
        if (root && *root >= 0) return std::nullopt;  // two nodes of one gradient
        if (root) *root = static_cast<int>(r);
        else if (r != 0) return std::nullopt;
        place(slot, v);
        found = written[r] = true;
      }
    if (!found) return std::nullopt;
  }
  if (!placed || std::find(written.begin(), written.end(), false) != written.end()) return std::nullopt;
  return a;
}

bool LibraryAttention::in_place() const {
  const AttentionPlacement dense = dense_attention_placement({seq, dim}, heads);
  return std::any_of(std::begin(placement), std::end(placement), [&](const AttentionPlacement& p) {
    return !(p == AttentionPlacement{}) && !(p == dense);
  });
}

std::vector<bool> place_attention_results(const Graph& g, const std::vector<int>& readers, std::vector<bool>& root) {
  std::vector<bool> writes(g.nodes.size(), false);
  for (const Node& node : g.nodes) {
    // A forward read only by a permute writes the permute's buffer.
    if (node.op == "permute") {
      const Node& a = g.nodes[node.inputs[0]];
      if (a.op == "attention" && fused_attention_takes(g, a) && readers[a.id] == 1 &&
          writes_in_place(g, a, node.id, readers)) {
        root[a.id] = false;
        root[node.id] = writes[node.id] = true;
      }
    }
    if (node.op != "concat") continue;
    // A concat of (permuted, reshaped) gradients of one backward call, all of
    // them, is written by the call.
    std::vector<int> grads;
    bool all = true;
    for (int in : node.inputs) {
      int d = in;
      while (g.nodes[d].op == "reshape" || g.nodes[d].op == "permute") d = g.nodes[d].inputs[0];
      const Node& grad = g.nodes[d];
      all = all && grad.op == "attention_grad" && fused_attention_takes(g, grad) && root[d] &&
            (grads.empty() || one_backward_call(g, g.nodes[grads[0]], grad)) &&
            writes_in_place(g, grad, node.id, readers);
      if (!all) break;
      grads.push_back(d);
    }
    for (const Node& other : g.nodes)  // no gradient of the call elsewhere
      all = all && !grads.empty() && (std::find(grads.begin(), grads.end(), other.id) != grads.end() ||
                                      !one_backward_call(g, g.nodes[grads[0]], other));
    if (!all) continue;
    for (int d : grads) root[d] = false;
    root[node.id] = writes[node.id] = true;
  }
  return writes;
}

void place_attention_operands(const Graph& g, std::vector<bool>& root) {
  const auto buffer = [&](int id) { return root[id] || g.nodes[id].is_leaf(); };
  for (const Node& node : g.nodes) {
    if (!fused_attention_takes(g, node)) continue;
    for (int in : node.inputs) {
      const std::optional<StridedView> v = read_view(g, in, buffer);
      const auto p = v ? attention_placement(*v) : std::nullopt;
      const bool in_place = p && g.nodes[v->base].op != "constant" && in_place_takes(g, node, p->first, p->second);
      if (!in_place && (!g.nodes[in].is_leaf() || g.nodes[in].op == "constant")) root[in] = true;
    }
  }
}

std::string LibraryAttention::text() const {
  std::ostringstream o;
  o << "fused attention " << (backward ? "backward " : "forward ") << dtype_name(dtype) << " [" << batch << " x " << seq << " x " << dim
    << "]" << (causal ? " causal" : "") << " scale " << scale;
  if (backward) {
    std::string what;
    for (auto [slot, name] : {std::pair{dq, "dq"}, {dk, "dk"}, {dv, "dv"}})
      if (slot >= 0) what += (what.empty() ? "" : ", ") + std::string(name);
    o << " (" << what << ")";
  }
  if (in_place()) {
    const AttentionPlacement dense = dense_attention_placement({seq, dim}, heads);
    o << ", in place:";
    std::string sep = " ";
    for (int t = 0; t < 8; ++t) {
      const AttentionPlacement& p = placement[t];
      if (p == AttentionPlacement{} || p == dense) continue;
      o << sep << kTensorNames[t] << " at +" << p.offset << " (row stride " << p.row << ", head stride " << p.head << ")";
      sep = ", ";
    }
  }
  return o.str();
}

}  // namespace tessera
