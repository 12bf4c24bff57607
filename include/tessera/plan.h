// The plan of a graph for a target, as text, for tools (tessera-opt) and
// for reading: which kernels it becomes, the schedule each node gets, and
// where every intermediate lives in the arena. Nothing is run.
//
// For the CPU the graph is compiled (JIT, cached) and the figures are the
// Executable's; for a CUDA target its kernels are compiled to PTX (no GPU
// needed) and the kernel text is compile_cuda's (launches, PTX size, the
// architecture's cost estimate). The memory plan does not depend on the target.
#pragma once

#include <cstddef>
#include <string>

#include "tessera/graph.h"
#include "tessera/runtime.h"

namespace tessera {

struct PlanReport {
  Target target;
  std::string kernels;       // each kernel, its inputs and outputs, each node's schedule
  std::string memory;        // each intermediate's arena slot and live range, and the peak
  size_t peak_bytes = 0;     // the arena the plan needs
  size_t without_reuse = 0;  // every intermediate in a buffer of its own
};

// Throws Error as compile() / compile_cuda do (an invalid graph, a failure of Halide's).
PlanReport plan_report(const Graph& graph, const Target& target);

}  // namespace tessera
