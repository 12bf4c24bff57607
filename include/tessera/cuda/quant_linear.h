// Weight-only quantized linears on CUDA that read the packed weight and
// never write its dequantized form to device memory (the layouts are
// tessera/quant_ops.h's, i.e. bitsandbytes' NF4 and per-row int8):
//   forward      out[m, n] = sum_k x[m, k] W[n, k] (+ bias[n])   x [rows, K], out [rows, N]
//   grad_input   out[m, k] = sum_n x[m, n] W[n, k]               x [rows, N] (the gradient), out [rows, K]
// with W [N, K] = deq(weight) and f32 x, bias and out, summed in f32.
//
// Two paths: GEMVs for a forward of at most 8 rows, and a tiled product for
// more rows.
//  - GEMVs: for 1 or 2 rows of NF4 or int8, blocks that each stream a
//    range of output features with x held in registers; for 3 to 8 rows,
//    tensor-core products of W
//    decoded into f16 (exact operands carried as two f16 each: 22
//    significant bits, within f32's tolerance; with tf32 one f16, as
//    precise as TF32); otherwise a block per four output features.
//  - tiled: each 128 x 128 output tile dequantizes its 16-deep slices of W
//    into shared memory, where f32 FMA loops read them (with tf32: TF32
//    tensor-core products).
// Results differ from the CPU's by the order of the f32 sums, and with tf32
// by the operands' rounding to TF32 (f16 in the tensor-core GEMV, whose x
// is scaled per 64 elements by a power of two, so that its range does not
// matter). An inf or NaN in a row of x makes that row's outputs inf or NaN.
//
// What it takes (quant_linear_supports): K a multiple of 64 (NF4: each row
// starts an absmax block; int8: rows of whole 16-byte vectors), the
// weight's storage 16-byte aligned, and for grad_input more than 8 rows;
// other shapes are tessera::Errors naming the shape (the plan leaves them
// to the Halide kernels). Nothing here allocates; launches are checked.
// Not done: f16/bf16 activations (tessera's quantized ops take f32 x), a
// GEMV for grad_input.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

namespace tessera::cuda {

enum class QuantLinearFormat {
  int8,        // weight i8 [N, K], scale f32 [N]
  nf4,         // weight u8 [N*K/2], absmax f32 [N*K/64]
  nf4_nested,  // weight u8 [N*K/2], absmax u8 codes [N*K/64], nested_absmax f32
               // [ceil(N*K/64/256)], nested_quant_map f32 [256], nested_offset f32 []
};

struct QuantLinearShape {
  QuantLinearFormat format = QuantLinearFormat::nf4;
  bool grad_input = false;  // out = x @ W instead of x @ W^T + bias
  int64_t rows = 0;         // rows of x and out (the product of x's leading dims)
  int64_t out_features = 0, in_features = 0;  // N, K: W is [N, K]
  bool bias = false;        // forward only
  // Tiled products and GEMVs of 3 to 8 rows on tensor cores: x and W
  // rounded to TF32 (10-bit mantissa, as cuBLASLt's FAST_TF32 and PyTorch's
  // allow_tf32; the GEMVs round to f16, which has as many bits), products
  // summed in f32.
  bool tf32 = false;
  std::string text() const;  // "nf4 forward [8192 x 768] -> [8192 x 3072], bias"
};

// Device pointers to the weight tensors of one format (unused ones null).
struct QuantWeight {
  const void* weight = nullptr;            // i8 or packed u8
  const void* scale = nullptr;             // int8: scale f32; NF4: absmax (f32, or u8 codes when nested)
  const float* nested_absmax = nullptr;    // nf4_nested only
  const float* nested_quant_map = nullptr;
  const float* nested_offset = nullptr;    // a device scalar
};

// Empty when the kernels take shape `s`, else why not.
std::string quant_linear_unsupported(const QuantLinearShape& s);
inline bool quant_linear_supports(const QuantLinearShape& s) { return quant_linear_unsupported(s).empty(); }

// Queues the product on `stream`. x, bias and out are f32 device pointers
// (bias null when !s.bias); out must not overlap x. `workspace` (device
// memory, or null) lets a tiled product whose 128 x 128 output tiles would
// leave SMs idle or unevenly loaded split its reduction: each part writes
// its partial sums there (parts x rows x out columns x 4 bytes, so only as
// many parts as fit) and a second kernel adds them in part order, so
// results never depend on timing. Nothing else may use the workspace until
// the product is done (stream order suffices).
void quant_linear(const QuantLinearShape& s, const float* x, const QuantWeight& w, const float* bias, float* out,
                  cudaStream_t stream, void* workspace = nullptr, size_t workspace_bytes = 0);

}  // namespace tessera::cuda
