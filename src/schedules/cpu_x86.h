// The default CPU schedule (x86-64: AVX2 here, AVX-512 where the CPU has it).
//
// Pointwise, shape and gather nodes are inlined into their consumers;
// reductions, contractions, user ops with reductions and graph outputs are
// computed at root, vectorized along the innermost dimension and parallel
// over the outermost. Matrix products get a register-tiled schedule. Internal
// stages whose updates scatter (the adjoints of a define_grad) are computed at
// root on one thread. The schedule never changes results beyond float
// reassociation in reductions.
#pragma once

#include <Halide.h>

#include <string>

#include "lower_to_halide.h"
#include "tessera/graph.h"

namespace tessera {

// Schedules every Func of `L` for `target`; returns one readable line per
// node saying what it got.
std::string schedule_cpu_x86(LoweredGraph& L, const Graph& g, const Halide::Target& target);

}  // namespace tessera
