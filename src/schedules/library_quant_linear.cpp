// Which quantized linears run in the CUDA kernels, and the call (see
// library_quant_linear.h).
#include "library_quant_linear.h"

#include <sstream>

namespace tessera {

namespace {

bool quantized_linear(const std::string& op) {
  return op == "linear_int8" || op == "linear_nf4" || op == "linear_int8_grad_input" || op == "linear_nf4_grad_input";
}

// The weight format of quantized linear `n` ("int8", "nf4", "nf4_nested"),
// or "" when its tensors are not one of those (tessera/quant_ops.h).
std::string format_of(const Graph& g, const Node& n) {
  auto dtype = [&](size_t i) { return i < n.inputs.size() ? g.nodes[n.inputs[i]].type.dtype : DType::f64; };
  if (n.op.rfind("linear_int8", 0) == 0)
    return dtype(1) == DType::i8 && g.nodes[n.inputs[1]].type.rank() == 2 && dtype(2) == DType::f32 ? "int8" : "";
  if (dtype(1) != DType::u8) return "";
  if (dtype(2) == DType::f32) return "nf4";
  const bool nested =
      dtype(2) == DType::u8 && dtype(3) == DType::f32 && dtype(4) == DType::f32 && dtype(5) == DType::f32;
  return nested ? "nf4_nested" : "";
}

// The node's call, whatever the kernels take; inputs are the node's input
// positions (the kernel's inputs when the node is a kernel's only computation).
LibraryQuantLinear call_of(const Graph& g, const Node& n) {
  LibraryQuantLinear q;
  q.format = format_of(g, n);
  q.grad_input = n.op.find("grad_input") != std::string::npos;
  const TensorType& x = g.nodes[n.inputs[0]].type;
  q.rows = x.rank() >= 1 && x.shape.back() > 0 ? x.numel() / x.shape.back() : 0;
  if (q.format == "int8") {
    const Shape& w = g.nodes[n.inputs[1]].type.shape;
    q.out_features = w[0];
    q.in_features = w[1];
  } else {
    q.out_features = attr_int(n.attrs, "out_features", n.op);
    q.in_features = attr_int(n.attrs, "in_features", n.op);
  }
  q.x = n.inputs[0];
  q.weight = n.inputs[1];
  q.scale = n.inputs[2];
  size_t next = 3;
  if (q.format == "nf4_nested") {
    q.nested_absmax = n.inputs[3];
    q.nested_quant_map = n.inputs[4];
    q.nested_offset = n.inputs[5];
    next = 6;
  }
  if (!q.grad_input && n.inputs.size() > next) q.bias = n.inputs[next];
  return q;
}

}  // namespace

bool quant_linear_kernel_takes(const Graph& g, const Node& n) {
  if (!quantized_linear(n.op) || n.inputs.size() < 3 || n.type.dtype != DType::f32 ||
      g.nodes[n.inputs[0]].type.dtype != DType::f32 || format_of(g, n).empty())
    return false;
  const LibraryQuantLinear q = call_of(g, n);
  if (q.bias >= 0 && g.nodes[q.bias].type.dtype != DType::f32) return false;
  // What the kernels take: quant_linear_unsupported in
  // include/tessera/cuda/quant_linear.h, which libtessera does not link.
  // K a multiple of 64 (NF4: each row starts an absmax block; int8: rows of
  // whole 16-byte vectors); grad_input only as the tiled product (no GEMV);
  // at most 65535 tiles of 128 rows (the grid's second dim).
  return q.rows >= 1 && q.out_features >= 1 && q.in_features >= 1 && q.in_features % 64 == 0 &&
         (!q.grad_input || q.rows > 8) && q.rows <= int64_t{65535} * 128;
}

std::optional<LibraryQuantLinear> match_library_quant_linear(const Kernel& kernel) {
  const Node* n = sole_computation(kernel);
  if (!n || !quant_linear_kernel_takes(kernel.graph, *n)) return std::nullopt;
  return call_of(kernel.graph, *n);  // kernel inputs are the kernel graph's first nodes, in order
}

std::string LibraryQuantLinear::text() const {
  const int64_t in = grad_input ? out_features : in_features, out = grad_input ? in_features : out_features;
  std::ostringstream o;
  o << format << (grad_input ? " linear input gradient [" : " linear [") << rows << " x " << in << "] -> [" << rows
    << " x " << out << "] from the packed weight" << (bias >= 0 ? ", bias" : "");
  return o.str();
}

}  // namespace tessera
