// Fused attention as library calls of GPU plans (see library_attention.h).
#include "library_attention.h"

#include <sstream>

#include "decompose_attention.h"
#include "op_registry.h"

namespace tessera {

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

Graph prepare_gpu_attention(const Graph& g) {
  return decompose_attention(g, [&](const Node& n) { return fused_attention_takes(g, n); });
}

std::optional<LibraryAttention> match_library_attention(const Kernel& kernel) {
  const Graph& kg = kernel.graph;
  LibraryAttention a;
  const Node* first = nullptr;
  for (const Node& n : kg.nodes) {
    if (n.op == "input") continue;
    if (!fused_attention_takes(kg, n)) return std::nullopt;
    for (int in : n.inputs)
      if (kg.nodes[in].op != "input") return std::nullopt;
    if (!first) first = &n;
    else if (!one_backward_call(kg, *first, n)) return std::nullopt;
  }
  if (!first) return std::nullopt;
  const TensorType& q = kg.nodes[first->inputs[0]].type;
  a.dtype = q.dtype;
  a.backward = first->op == "attention_grad";
  a.seq = q.shape[q.rank() - 2];
  a.dim = q.shape.back();
  a.batch = q.numel() / (a.seq * a.dim);
  a.causal = attr_bool(first->attrs, "causal", first->op);
  a.scale = attention_scale(*first, a.dim);
  // Kernel inputs are the kernel graph's first nodes, in order.
  a.q = first->inputs[0];
  a.k = first->inputs[1];
  a.v = first->inputs[2];
  if (a.backward) {
    a.out = first->inputs[3];
    a.grad = first->inputs[4];
    for (size_t r = 0; r < kg.outputs.size(); ++r) {  // every output is one of the nodes checked above
      const int64_t wrt = attr_int(kg.nodes[kg.outputs[r].node].attrs, "wrt", "attention_grad");
      int& slot = wrt == 0 ? a.dq : wrt == 1 ? a.dk : a.dv;
      if (slot >= 0) return std::nullopt;
      slot = static_cast<int>(r);
    }
  } else if (kg.outputs.size() != 1) {
    return std::nullopt;
  }
  return a;
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
  return o.str();
}

}  // namespace tessera
