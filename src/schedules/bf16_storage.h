// bf16 storage as uint16: a Halide lowering pass for code generators that
// cannot handle BFloat(16).
//
// Halide 14's PTX backend crashes on BFloat(16) (DESIGN.md), so CUDA
// pipelines keep every bf16 value in a uint16 and convert with integer
// operations: bf16 -> f32 shifts the bits left by 16; f32 -> bf16 rounds to
// nearest even on the bits (NaN stays a quiet NaN). Arithmetic or comparisons
// that Halide left on bf16 values run in f32 and round back. The result is
// bitwise what Halide's own bf16 code computes on the CPU (tested there).
//
// Buffers keep their bf16 type at the pipeline's boundary (callers pass
// bfloat buffers as before); only loads, stores, allocations and values
// inside the pipeline change type. This does not touch f16 (Float(16) works
// in CUDA pipelines) and does not change what is computed.
#pragma once

#include <Halide.h>

namespace tessera {

// Adds the pass to `pipeline` (run at the end of lowering, before code generation).
void store_bf16_as_u16(Halide::Pipeline& pipeline);

}  // namespace tessera
