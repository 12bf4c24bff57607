// cuda_fast_math: a Halide lowering pass for CUDA pipelines that computes f32
// exp on the GPU's special-function unit and f32 division approximately,
// as Triton (and so torch.compile) does by default.
//
// Halide 14 expands exp into a polynomial with a floor and an exact
// reconstruction (about 20 instructions an element): the LM head's loss and
// its gradient, exp per logit over 8192 x 50304 logits for GPT-2, ran at a
// third of copy bandwidth, bound by those instructions. Inside GPU loops,
// the pass replaces each f32 exp with libdevice's __nv_fast_expf
// (ex2.approx.ftz of x * log2(e): a relative error of about 2^-22 plus
// |x| * 2^-24, results below 2^-126 flushed to 0).
//
// f32 division compiles to PTX's IEEE div.rn (a Newton iteration with a
// slow path for extreme operands), and GELU's tanh form, x / (1 + e^-2u),
// divides once per element. Inside GPU loops the pass computes a / b as
// libdevice's __nv_fast_fdividef (div.approx.ftz.f32: at most 2 ulp of
// error for |b| in [2^-126, 2^126], subnormals flushed to 0), the
// approximate division Triton also emits by default.
//
// f32 vectors of vectorized GPU loops get the same, lane by lane (Halide
// calls the scalar function per lane). Host code, f64 and other functions
// are untouched; CPU pipelines never get this pass.
#pragma once

#include <Halide.h>

namespace tessera {

// Adds the pass to `pipeline` (run at the end of lowering, before code generation).
void use_fast_math_on_gpu(Halide::Pipeline& pipeline);

}  // namespace tessera
