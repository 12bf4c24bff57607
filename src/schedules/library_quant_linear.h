// library_quant_linear: which weight-only quantized linears (linear_int8,
// linear_nf4 and their grad_input ops: tessera/quant_ops.h) a GPU plan runs
// in the CUDA quantized-linear kernels (include/tessera/cuda/quant_linear.h),
// which read the packed weight and never write its f32 form, and the call
// each such kernel is. The others are dequantized before a cuBLASLt GEMM
// (dequantize_for_gemm.h) or, at 8 rows or fewer, stay Halide kernels.
//
// The kernels take f32 x and result, the int8, NF4 and double-quantized NF4
// formats, K (in_features) a multiple of 64, and for grad_input more than 8
// rows (the rule of quant_linear_unsupported, repeated here: libtessera
// does not link the CUDA runtime). partition() materializes the operands of
// the nodes they take and gives each node a kernel of its own. This decides
// nothing about speed and runs nothing: the PlanExecutor does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "partition.h"

namespace tessera {

// Whether linear_int8 / linear_nf4 / *_grad_input node `n` of `g` runs in the CUDA kernels.
bool quant_linear_kernel_takes(const Graph& g, const Node& n);

struct LibraryQuantLinear {
  std::string format;       // "int8", "nf4" or "nf4_nested" (absmax u8: double quantization)
  bool grad_input = false;  // out [rows, K] = x [rows, N] @ W; else out [rows, N] = x [rows, K] @ W^T (+ bias)
  int64_t rows = 0;         // the product of x's leading dims
  int64_t out_features = 0, in_features = 0;  // N, K: W is [N, K]
  // Positions in Kernel::inputs, -1 when absent: x (the gradient for
  // grad_input), the packed weight, its scale (int8) or absmax (NF4), the
  // nested tensors (nf4_nested only) and the bias (forward only).
  int x = -1, weight = -1, scale = -1, nested_absmax = -1, nested_quant_map = -1, nested_offset = -1, bias = -1;

  // "nf4 linear [8192 x 768] -> [8192 x 3072] from the packed weight, bias",
  // "int8 linear input gradient [8192 x 3072] -> [8192 x 768] from the packed weight"
  std::string text() const;
};

// The quantized-linear call that `kernel` is, or nothing.
std::optional<LibraryQuantLinear> match_library_quant_linear(const Kernel& kernel);

}  // namespace tessera
