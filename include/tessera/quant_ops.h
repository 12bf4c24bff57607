// Weight-only quantized ops: int8 (per-output-channel symmetric absmax) and
// NF4 (bitsandbytes' 4-bit NormalFloat, optionally double-quantized), as
// dequantize ops and as fused linear ops that read the packed weight through
// an inline dequantize (the f32 weight is never materialized), plus the ops
// autodiff builds for the gradient with respect to x. The packed weights and
// their scales are frozen: they get no gradient.
//
// Formats (a weight W of logical shape [N, K] = [out_features, in_features]):
//  int8   weight i8[N, K], scale f32[N]: W[n, k] = weight[n, k] * scale[n]
//         (scale = max_k |W[n, k]| / 127).
//  NF4    the bitsandbytes Linear4bit layout. W is flattened row-major
//         (e = n*K + k) and cut into blocks of 64 (the last block may be
//         partial). weight u8[ceil(N*K/2), 1] holds two 4-bit codes per byte,
//         element 2i in the HIGH nibble of byte i, 2i+1 in the low nibble (a
//         final odd nibble is 0); absmax f32[ceil(N*K/64)] holds each block's
//         max |W|; W[e] = nf4_code_book()[code(e)] * absmax[e / 64].
//         Double quantization ("nested"): absmax is u8[nblocks] codes of the
//         signed dynamic map, blockwise in 256s: with offset = the mean of the
//         f32 absmax values, absmax_f32[b] = nested_quant_map[absmax[b]] *
//         nested_absmax[b / 256] + nested_offset, nested_absmax
//         f32[ceil(nblocks/256)], nested_quant_map f32[256] (=
//         dynamic_map_signed()), nested_offset f32[].
//  Any N, K >= 1 is legal for both formats (NF4 pads the last byte and block).
//
// Param names (what quantize() in quantize.h creates for module "<m>" whose
// linear read param "<m>.weight"; the names Hugging Face's bitsandbytes
// serialization uses, so a safetensors loader maps them one to one):
//   int8:  "<m>.weight" i8[N, K], "<m>.weight.scale" f32[N]
//   NF4:   "<m>.weight" u8[ceil(N*K/2), 1], "<m>.weight.absmax" f32[nblocks]
//   NF4 with double quantization: "<m>.weight" u8[..., 1],
//          "<m>.weight.absmax" u8[nblocks], "<m>.weight.nested_absmax"
//          f32[ceil(nblocks/256)], "<m>.weight.nested_quant_map" f32[256],
//          "<m>.weight.nested_offset" f32[] (Hugging Face keeps the offset in
//          the "weight.quant_state.bitsandbytes__nf4" JSON as "nested_offset";
//          its "weight.quant_map" must equal nf4_code_book()).
// The packed "<m>.weight" is always the SECOND input of the linear_int8 /
// linear_nf4 node, whose first input is x.
//
// Node ops, inputs and attributes (x is f32[..., K]; bias optional, f32[N]):
//   dequantize_int8(weight, scale) -> f32[N, K]
//   dequantize_nf4{out_features, in_features}(weight, absmax
//       [, nested_absmax, nested_quant_map, nested_offset]) -> f32[N, K]
//   linear_int8(x, weight, scale [, bias]) -> f32[..., N]
//   linear_nf4{out_features, in_features}(x, weight, absmax
//       [, nested_absmax, nested_quant_map, nested_offset] [, bias]) -> f32[..., N]
//   linear_int8_grad_input(g, weight, scale) -> f32[..., K]      (g @ W)
//   linear_nf4_grad_input{out_features, in_features}(g, weight, absmax
//       [, nested_absmax, nested_quant_map, nested_offset]) -> f32[..., K]
// Double quantization is recognized by absmax being u8.
//
// CPU schedules (src/schedules/cpu_x86.cpp): linear_* with at most 8 rows of
// x, rank <= 2, and K a multiple of the vector width (int8) or of twice it
// (NF4) runs as a GEMV streaming the packed weight once; with more rows and
// N >= 3 vector widths, as a register-tiled product that dequantizes the
// weight into each tile; other shapes dequantize inline in a plain
// vectorized loop. grad_input streams the packed rows for <= 8 rows, else is
// tiled likewise. On CUDA every one is one thread per output element. Bad shapes or dtypes
// throw tessera::Error naming the op, the tensor and the shapes.
#pragma once

#include <array>
#include <cstdint>

#include "tessera/builder.h"

namespace tessera {

constexpr int64_t kNF4BlockSize = 64;      // elements per absmax
constexpr int64_t kNestedBlockSize = 256;  // absmax values per nested_absmax

// The 16 NF4 values of the QLoRA paper as bitsandbytes stores them (f32),
// sorted ascending: index 0 is -1, index 7 is 0, index 15 is 1.
const std::array<float, 16>& nf4_code_book();
// bitsandbytes' create_dynamic_map(signed=True) (7 exponent bits, 8 bits in
// all), computed in f32 as bitsandbytes does; sorted ascending, index 127 is
// 0 and index 255 is 1.
const std::array<float, 256>& dynamic_map_signed();

// The graph tensors of one NF4 weight. nested_* are undefined without
// double quantization.
struct NF4Tensors {
  Tensor weight;            // u8[ceil(N*K/2), 1]
  Tensor absmax;            // f32[nblocks], or u8[nblocks] codes when nested
  Tensor nested_absmax;     // f32[ceil(nblocks/256)]
  Tensor nested_quant_map;  // f32[256]
  Tensor nested_offset;     // f32[]
  int64_t out_features = 0, in_features = 0;
};

Tensor dequantize_int8(Tensor weight, Tensor scale);
Tensor dequantize_nf4(const NF4Tensors& w);
// y = x @ W^T (+ bias); `bias` may be undefined.
Tensor linear_int8(Tensor x, Tensor weight, Tensor scale, Tensor bias = {});
Tensor linear_nf4(Tensor x, const NF4Tensors& w, Tensor bias = {});
// dx = g @ W for g f32[..., N].
Tensor linear_int8_grad_input(Tensor g, Tensor weight, Tensor scale);
Tensor linear_nf4_grad_input(Tensor g, const NF4Tensors& w);

}  // namespace tessera
