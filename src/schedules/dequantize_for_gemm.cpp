// Quantized linears as dequantize + GEMM for GPU plans (see dequantize_for_gemm.h).
#include "dequantize_for_gemm.h"

#include "graph_rewrite.h"
#include "library_attention.h"
#include "library_quant_linear.h"

namespace tessera {

namespace {

bool rewritten(const Graph& g, const Node& n) {
  const bool quantized = n.op == "linear_int8" || n.op == "linear_nf4" || n.op == "linear_int8_grad_input" ||
                         n.op == "linear_nf4_grad_input";
  if (!quantized || quant_linear_kernel_takes(g, n)) return false;  // the CUDA kernels read the packed weight
  const TensorType& x = g.nodes[n.inputs[0]].type;
  return x.numel() / x.shape.back() > 8;  // rows of x (or of the gradient)
}

// The weight tensors of node n: int8 (weight, scale); NF4 (weight, absmax)
// or, when absmax is u8 (double quantization), three nested tensors more.
size_t weight_inputs(const Graph& g, const Node& n) {
  if (n.op.find("int8") != std::string::npos) return 2;
  return g.nodes[n.inputs[2]].type.dtype == DType::u8 ? 5 : 2;
}

}  // namespace

Graph dequantize_for_gemm(const Graph& g) {
  bool any = false;
  for (const Node& n : g.nodes) any = any || rewritten(g, n);
  if (!any) return g;
  GraphRewriter rw(g);
  for (const Node& n : g.nodes) {
    if (!rewritten(g, n)) {
      rw.copy(n.id);
      continue;
    }
    const bool nf4 = n.op.find("nf4") != std::string::npos;
    const size_t w = weight_inputs(g, n);
    std::vector<int> weight;
    for (size_t i = 1; i <= w; ++i) weight.push_back(rw.mapped(n.inputs[i]));
    const int dense = rw.emit_op(nf4 ? "dequantize_nf4" : "dequantize_int8", weight, nf4 ? n.attrs : Attrs{});
    const int x = rw.mapped(n.inputs[0]);
    int product;
    if (n.op.find("grad_input") != std::string::npos) {
      product = rw.emit_op("matmul", {x, dense}, {}, n.name);
    } else {
      std::vector<int> in = {x, dense};
      if (n.inputs.size() > 1 + w) in.push_back(rw.mapped(n.inputs[1 + w]));  // the bias
      product = rw.emit_op("linear", in, {}, n.name);
    }
    rw.map(n.id, product);
  }
  return std::move(rw).finish();
}

Graph prepare_gpu_graph(const Graph& g) { return dequantize_for_gemm(prepare_gpu_attention(g)); }

}  // namespace tessera
