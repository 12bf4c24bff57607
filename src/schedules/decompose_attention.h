// decompose_attention: rewrites each attention node as the products and the
// softmax it stands for, for targets whose matrix products run in a GEMM
// library (CUDA with cuBLASLt):
//
//   S = (q @ k^T) * scale;  S = where(causal mask, S, -inf);  P = softmax(S);  out = P @ v
//
// the same expressions the attention gradient recomputes (vjp_nn.cpp), so
// the result differs from the fused CPU kernel only by float reassociation.
// The two products become cuBLASLt GEMMs (library_gemm.h) and the score
// matrix is materialized: B*H*T*T elements per attention. This is not a
// fused attention kernel (which keeps S out of device memory); it trades
// that memory for tensor-core-capable products instead of Halide's CUDA-core
// loop nest. Nothing else in the graph changes.
#pragma once

#include "tessera/graph.h"

namespace tessera {

Graph decompose_attention(const Graph& g);

}  // namespace tessera
