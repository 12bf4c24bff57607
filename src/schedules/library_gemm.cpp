// Which kernels run as one cuBLASLt GEMM (see library_gemm.h).
#include "library_gemm.h"

#include <sstream>

#include "tessera/error.h"

namespace tessera {

namespace {

// A permute that swaps the last two dimensions and keeps the others: a transpose to cuBLASLt.
bool is_swap_of_last_two(const Node& n) {
  const int64_t r = n.type.rank();
  if (n.op != "permute" || r < 2) return false;
  std::vector<int64_t> swap(r);
  for (int64_t i = 0; i < r; ++i) swap[i] = i;
  std::swap(swap[r - 2], swap[r - 1]);
  return attr_ints(n.attrs, "dims", "permute") == swap;
}

bool is_tensor_leaf(const Node& n) { return n.op == "input" || n.op == "param"; }

int64_t product(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// An operand of the kernel's product: which kernel input it reads, and
// whether through a transpose.
struct Operand {
  int input = -1;  // position in the kernel's inputs
  bool transposed = false;
};

std::optional<Operand> operand(const Graph& kg, int id) {
  Operand o;
  if (is_swap_of_last_two(kg.nodes[id])) {
    o.transposed = true;
    id = kg.nodes[id].inputs[0];
  }
  while (kg.nodes[id].op == "reshape") id = kg.nodes[id].inputs[0];  // views, however many
  if (kg.nodes[id].op != "input") return std::nullopt;
  o.input = id;  // kernel graphs put their inputs first, in order
  return o;
}

// A gelu or gelu_grad node of the tanh form (the form cuBLASLt's epilogues compute).
bool tanh_form(const Node& node, const std::string& op) {
  return node.op == op && node.attrs.count("approximate") && attr_str(node.attrs, "approximate", op) == "tanh";
}

// What cuBLASLt's aux matrix takes here: f32 or bf16 (f16 is refused:
// tessera::cuda::GemmEpilogue), rows of a multiple of 8 elements.
bool aux_epilogue_type(const TensorType& t) {
  return (t.dtype == DType::f32 || t.dtype == DType::bf16) && t.shape.back() % 8 == 0;
}

}  // namespace

bool library_gemm_dtype(DType d) { return d == DType::f32 || d == DType::f16 || d == DType::bf16; }

int gemm_operand_to_materialize(const Graph& g, int id, const std::vector<bool>& root) {
  if (is_swap_of_last_two(g.nodes[id]) && !root[id]) id = g.nodes[id].inputs[0];
  while (g.nodes[id].op == "reshape" && !root[id]) id = g.nodes[id].inputs[0];
  return is_tensor_leaf(g.nodes[id]) || root[id] ? -1 : id;
}

bool gemm_takes_gelu_epilogue(const Graph& g, const Node& node) {
  if (!tanh_form(node, "gelu")) return false;
  const Node& p = g.nodes[node.inputs[0]];
  return p.op == "linear" && p.type.dtype == node.type.dtype && aux_epilogue_type(p.type);
}

bool gemm_takes_relu_epilogue(const Graph& g, const Node& node) {
  if (node.op != "relu") return false;
  const Node& p = g.nodes[node.inputs[0]];
  return p.op == "linear" && p.type.dtype == node.type.dtype && library_gemm_dtype(p.type.dtype);
}

bool gemm_takes_dgelu_epilogue(const Graph& g, const Node& node) {
  if (!tanh_form(node, "gelu_grad")) return false;
  const Node& p = g.nodes[node.inputs[1]];
  const bool product = p.op == "matmul" || (p.op == "linear" && p.inputs.size() == 2);
  return product && p.type == node.type && g.nodes[node.inputs[0]].type == node.type && aux_epilogue_type(p.type);
}

std::optional<LibraryGemm> match_library_gemm(const Kernel& kernel) {
  const Graph& kg = kernel.graph;
  if (kernel.roots.size() != kg.outputs.size()) return std::nullopt;
  bool gelu = false, relu = false;
  int dgelu = -1;
  int product_id = kg.outputs[0].node;
  if (kg.outputs.size() == 2) {  // [product, gelu(product)]
    const Node& act = kg.node(kg.outputs[1].node);
    gelu = act.inputs.size() == 1 && act.inputs[0] == kg.outputs[0].node && gemm_takes_gelu_epilogue(kg, act);
    if (!gelu) return std::nullopt;
  } else if (kg.outputs.size() != 1) {
    return std::nullopt;
  } else if (const Node& act = kg.node(product_id); act.op == "gelu_grad") {  // gelu_grad(x, product)
    if (!gemm_takes_dgelu_epilogue(kg, act) || kg.nodes[act.inputs[0]].op != "input") return std::nullopt;
    dgelu = act.inputs[0];  // kernel graphs put their inputs first, in order
    product_id = act.inputs[1];
  } else if (gemm_takes_relu_epilogue(kg, act)) {  // relu(product)
    relu = true;
    product_id = act.inputs[0];
  }
  const Node& p = kg.node(product_id);
  if (p.op != "matmul" && p.op != "linear") return std::nullopt;
  if (!library_gemm_dtype(p.type.dtype)) return std::nullopt;
  std::optional<Operand> a = operand(kg, p.inputs[0]), b = operand(kg, p.inputs[1]);
  if (!a || !b) return std::nullopt;
  LibraryGemm m;
  m.gelu = gelu;
  m.dgelu = dgelu;
  m.relu = relu;
  m.dtype = p.type.dtype;
  m.a = a->input;
  m.b = b->input;
  m.trans_a = a->transposed;
  const Shape& as = kg.nodes[p.inputs[0]].type.shape;
  const Shape& bs = kg.nodes[p.inputs[1]].type.shape;
  const Shape& out = p.type.shape;
  if (p.op == "linear") {  // x[.., k] @ W[n, k]^T (+ bias[n])
    if (a->transposed && as.size() != 2) return std::nullopt;
    m.k = as.back();
    m.m = product(as, 0, as.size() - 1);
    m.n = bs[0];
    m.trans_b = !b->transposed;  // W is stored [n, k]; a permuted W is stored [k, n]
    if (p.inputs.size() == 3) {
      std::optional<Operand> bias = operand(kg, p.inputs[2]);
      if (!bias || bias->transposed) return std::nullopt;
      m.bias = bias->input;
    }
    return m;
  }
  // matmul: A[.., m, k] @ B[.., k, n]
  m.trans_b = b->transposed;
  m.m = as[as.size() - 2];
  m.k = as.back();
  m.n = bs.back();
  const size_t ra = as.size(), rb = bs.size(), ro = out.size();
  const int64_t batch = product(out, 0, ro - 2);
  if (ra == 2 && rb == 2) return m;
  if (rb == 2 && !a->transposed && Shape(as.begin(), as.end() - 2) == Shape(out.begin(), out.end() - 2)) {
    m.m *= batch;  // one product: A's batches are consecutive rows
    return m;
  }
  m.batch = batch;
  auto stride = [&](const Shape& s, size_t r) -> std::optional<int64_t> {
    if (r == 2) return 0;  // shared by every batch
    if (Shape(s.begin(), s.end() - 2) == Shape(out.begin(), out.end() - 2)) return -1;
    return std::nullopt;
  };
  std::optional<int64_t> sa = stride(as, ra), sb = stride(bs, rb);
  if (!sa || !sb) return std::nullopt;
  m.stride_a = *sa;
  m.stride_b = *sb;
  return m;
}

std::string LibraryGemm::text() const {
  std::ostringstream s;
  s << "cuBLASLt gemm " << dtype_name(dtype) << " ";
  if (batch > 1) s << batch << " x ";
  s << "[" << m << " x " << k << "]" << (trans_a ? "^T" : "") << " @ [" << k << " x " << n << "]"
    << (trans_b ? "^T" : "") << (bias >= 0 ? " + bias" : "") << (gelu ? ", then gelu (tanh; the product kept)" : "")
    << (dgelu >= 0 ? ", times gelu'(in" + std::to_string(dgelu) + ") (tanh)" : "")
    << (relu ? ", then relu" : "");
  if (stride_a == 0) s << " (A shared by every batch)";
  if (stride_b == 0) s << " (B shared by every batch)";
  return s.str();
}

}  // namespace tessera
