// The cost model remat (remat.cpp) weighs recomputation with: FLOPs per node,
// and which ops are too expensive to recompute unless nothing else fits.
// This neither decides nor rewrites anything.
#pragma once

#include "tessera/graph.h"

namespace tessera {

// Floating-point operations to compute node `n` of `g` once (table in remat_cost.cpp).
double op_flops(const Graph& g, const Node& n);

// Matrix products, attention, user ops (define, define_grad) and reductions
// whose output is at most 1/8 of their input (a row log-sum-exp, a row mean,
// a total: saving them costs little, recomputing them rereads the input;
// torch's min-cut partitioner likewise bans recomputing reductions):
// recomputed only when the budget cannot be met otherwise.
bool expensive_to_recompute(const Graph& g, const Node& n);

}  // namespace tessera
