// cost_model: the figures the auto-scheduler weighs, per target: memory
// bandwidth, arithmetic rate and the fixed cost of running one kernel, and
// a per-op estimate of arithmetic per output element. The figures for each
// target live in its schedule file (cpu_x86.cpp, cuda_sm80.cpp,
// cuda_sm90.cpp); this file only gathers them. Estimates, not measurements:
// they rank alternatives, they do not predict times.
#pragma once

#include <string>

#include "tessera/graph.h"
#include "tessera/runtime.h"

namespace tessera {

struct CostModel {
  std::string name;        // "cpu_x86", "cuda_sm90", ...
  double dram_gbps = 0;    // bytes moved to and from memory, GB/s
  double gflops = 0;       // floating-point operations, GFLOP/s
  double launch_us = 0;    // fixed cost of one kernel (launch, or a thread-pool dispatch)

  double memory_us(double bytes) const { return bytes / (dram_gbps * 1e3); }
  double compute_us(double flops) const { return flops / (gflops * 1e3); }
};

// The model of `target`'s schedule set.
CostModel cost_model(const Target& target);
// The CPU's (cpu_x86.cpp) for this machine's vector width and core count.
CostModel cpu_x86_cost_model();

// Arithmetic per output element of a node when it is computed inline
// (elementwise, shape, gather and random ops): 0 for pure data movement,
// 1 for an add, about 20 for a transcendental, ... Materialized ops
// (reductions, contractions) are never inlined and are not estimated here.
double flops_per_element(const Node& node);

}  // namespace tessera
