// library_gemm: which kernels of a partitioned graph a GPU target runs as one
// cuBLASLt GEMM instead of a Halide pipeline, and the GEMM's shape.
//
// A kernel is a library GEMM when it computes one matmul or linear node of
// dtype f32, f16 or bf16 whose operands are kernel inputs read directly, through a
// reshape (a view of a dense tensor), or through a permute that swaps the
// last two dimensions (cuBLASLt's transpose). Batched matmuls must have
// equal batch dimensions, or one operand of rank 2 (its stride is 0: shared
// by every batch); a batched left operand times a matrix is folded into the
// rows. A linear's input may be transposed only when it has rank 2.
// partition() makes such kernels likely on GPU targets by materializing the
// other operands of matrix products (partition.h).
//
// A kernel whose outputs are a linear node and the tanh-form gelu of it
// (partition() puts them together: gemm_takes_gelu_epilogue) is one GEMM
// with cuBLASLt's GELU_AUX epilogue: the gelu is C, the product (which the
// gelu's gradient reads) the aux output.
//
// A kernel computing gelu_grad (tanh form) of an input x and of a product
// that nothing else reads (partition() keeps that product inside the
// kernel: gemm_takes_dgelu_epilogue) is one GEMM with cuBLASLt's DGELU
// epilogue: C = product * gelu'(x), x the aux input.
//
// A kernel computing the relu of a linear node that nothing else reads
// (partition() keeps the product inside the kernel; relu's gradient reads
// the relu, not the product) is one GEMM with cuBLASLt's RELU or RELU_BIAS
// epilogue. cuBLASLt's DRELU is not used for relu's gradient: its bit-mask
// passes the gradient where the product is exactly 0 (H200, CUDA 13.0;
// test_cuda_gemm), where tessera's relu'(0) is 0, as PyTorch's.
//
// This decides nothing about speed (every matching kernel goes to the
// library) and runs nothing: runtime/cuda's PlanExecutor does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "partition.h"
#include "tessera/dtype.h"

namespace tessera {

// The element types cuBLASLt takes here (f32, f16, bf16; f32 accumulation).
bool library_gemm_dtype(DType d);

struct LibraryGemm {
  // Operands, as positions in Kernel::inputs (bias -1 when there is none).
  int a = -1, b = -1, bias = -1;
  // Row-major GEMM, as tessera::cuda::GemmShape: C[m, n] = op(A) @ op(B) (+ bias[n]).
  DType dtype = DType::f32;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  int64_t stride_a = -1, stride_b = -1;  // elements between batches; 0 broadcasts; -1 packed
  // GELU epilogue: the kernel's outputs are [product, gelu(product)], C the
  // second and cuBLASLt's aux output the first.
  bool gelu = false;
  // DGELU epilogue: the kernel's input (position) whose gelu' scales the
  // product; C is the gelu_grad. -1: none.
  int dgelu = -1;
  // RELU epilogue: the kernel's output is relu of the product (+ bias).
  bool relu = false;

  std::string text() const;  // "cuBLASLt gemm f32 [64 x 784] @ [784 x 256]^T + bias"
};

// Whether `node` is a gelu (tanh form) that the GEMM computing its input can
// apply as its epilogue: the input is a linear node of the gelu's dtype
// (f32 or bf16: tessera::cuda::GemmEpilogue::gelu_aux) whose rows are a
// multiple of 8 elements (cuBLASLt's aux output needs that). partition()
// then computes both in one kernel.
bool gemm_takes_gelu_epilogue(const Graph& g, const Node& node);

// Whether `node` is a gelu_grad (tanh form) that the GEMM computing its
// gradient input can apply as its epilogue: that input is a matmul or linear
// (without bias) of the node's dtype, f32 or bf16, whose rows are a multiple
// of 8 elements, and x has the product's shape. partition() then computes
// the product inside the gelu_grad's kernel when nothing else reads it.
bool gemm_takes_dgelu_epilogue(const Graph& g, const Node& node);

// Whether `node` is a relu that the GEMM computing its input can apply as
// its epilogue: the input is a linear node of the relu's dtype (f32, f16
// or bf16). partition() then computes the product inside the relu's kernel
// when nothing else reads it.
bool gemm_takes_relu_epilogue(const Graph& g, const Node& node);

// The GEMM that `kernel` is, or nothing.
std::optional<LibraryGemm> match_library_gemm(const Kernel& kernel);

// On a GPU target, the node partition() materializes for operand `id` of a
// matrix product so that the product can be a library GEMM: -1 when the
// operand is already a kernel input or a view of one (a permute that swaps
// the last two dimensions, of reshapes, of an input or materialized node),
// else the node under those views. `root` marks the materialized nodes.
int gemm_operand_to_materialize(const Graph& g, int id, const std::vector<bool>& root);

}  // namespace tessera
