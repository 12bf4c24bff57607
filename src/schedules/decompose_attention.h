// decompose_attention: rewrites attention and attention_grad nodes as the
// products, softmax and elementwise ops they stand for: for GPU plans whose
// matrix products run in a GEMM library (cuBLASLt) where no fused attention
// kernel takes them (library_attention.h says which it takes), and for the
// gradient on the CPU, whose GEMM schedules the products then get:
//
//   S = (q @ k^T) * scale;  S = where(causal mask, S, -inf);  P = softmax(S);  out = P @ v
//   dv = P^T @ g;  dS = P * (g @ v^T - sum(g * out, -1)) * scale;  dq = dS @ k;  dk = dS^T @ q
//
// The attention_grad nodes of one attention (same inputs) share P and dS.
// The results differ from the ops' own definitions only by float
// reassociation. The products become cuBLASLt GEMMs (library_gemm.h) and
// the score matrices are materialized: B*H*T*T elements each. Nodes for
// which `keep` returns true stay as they are; nothing else changes.
#pragma once

#include <functional>

#include "tessera/graph.h"

namespace tessera {

Graph decompose_attention(const Graph& g, const std::function<bool(const Node&)>& keep = nullptr);

// The graph a CPU plan partitions: attention kept (its own Halide kernel),
// attention_grad decomposed, so that its products get the CPU's GEMM
// schedules (the op's own definition computes its stages at root, which
// made the GPT step's backward slower).
Graph prepare_cpu_attention(const Graph& g);

}  // namespace tessera
