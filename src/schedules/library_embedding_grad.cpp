// Which embedding gradients run in the CUDA kernel, and the call (see
// library_embedding_grad.h).
#include "library_embedding_grad.h"

#include <sstream>

#include "op_registry.h"

namespace tessera {

bool embedding_grad_kernel_takes(const Graph& g, const Node& n) {
  if (n.op != "embedding_grad" || n.inputs.size() != 2) return false;
  const DType index = g.nodes[n.inputs[0]].type.dtype;
  return (n.type.dtype == DType::f32 || n.type.dtype == DType::bf16) &&
         g.nodes[n.inputs[1]].type.dtype == n.type.dtype && (index == DType::i32 || index == DType::i64);
}

std::optional<LibraryEmbeddingGrad> match_library_embedding_grad(const Kernel& kernel) {
  const Graph& kg = kernel.graph;
  const Node* only = sole_computation(kernel);
  if (!only || !embedding_grad_kernel_takes(kg, *only)) return std::nullopt;
  const Node& n = *only;
  LibraryEmbeddingGrad e;
  e.dtype = n.type.dtype;
  e.index = kg.nodes[n.inputs[0]].type.dtype;
  e.positions = kg.nodes[n.inputs[0]].type.numel();
  e.vocab = n.type.shape[0];
  e.dim = n.type.shape[1];
  e.indices = n.inputs[0];  // kernel inputs are the kernel graph's first nodes, in order
  e.grad = n.inputs[1];
  return e;
}

std::string LibraryEmbeddingGrad::text() const {
  std::ostringstream o;
  o << "embedding gradient " << dtype_name(dtype) << " [" << positions << " x " << dim << "] -> [" << vocab << " x "
    << dim << "], " << dtype_name(index) << " indices";
  return o.str();
}

}  // namespace tessera
