// dequantize_for_gemm: for GPU plans, rewrites weight-only quantized linears
// of more than 8 rows (linear_int8, linear_nf4 and their grad_input ops) as
// a dequantize node feeding the plain product that cuBLASLt runs, unless the
// CUDA quantized-linear kernels take them (library_quant_linear.h: f32,
// in_features a multiple of 64), which read the packed weight directly:
//
//   linear_nf4(x, weight, absmax...[, bias])  ->  linear(x, W[, bias])
//   linear_nf4_grad_input(g, weight, absmax...) ->  matmul(g, W)
//   with W = dequantize_nf4(weight, absmax...) (int8 likewise)
//
// Every rewritten node gets a dequantize of its own, so each f32 weight
// lives in the arena only from its dequantize kernel to its GEMM (one
// layer's weight at a time, as bitsandbytes dequantizes before its matmul
// for batches above one); it is never saved from the forward for the
// backward. At 8 rows or fewer, where streaming the packed weight wins, a
// forward the CUDA kernels take runs in their GEMV, and the others stay the
// Halide CUDA kernels of the fused ops (one thread per output element).
// Results differ only by the GEMM's summation order.
//
// This does not dequantize into GEMM tiles (cuBLASLt reads dense operands)
// or change CPU plans, whose schedules dequantize into their own tiles.
#pragma once

#include "tessera/graph.h"

namespace tessera {

Graph dequantize_for_gemm(const Graph& g);

// The graph a GPU plan partitions: attention the fused kernels do not take
// decomposed (library_attention.h), then dequantize_for_gemm.
Graph prepare_gpu_graph(const Graph& g);

}  // namespace tessera
