// Overriding the schedule of one kernel by name, without touching the
// algorithm. This header is for schedule authors: unlike the rest of the
// public API it exposes Halide (Funcs, Vars, Targets).
//
//   CompileOptions options;
//   options.schedules["t0"] = [](KernelSchedule& k) {
//     Halide::Func out = k.outputs[0];
//     out.compute_root().parallel(out.args()[1]);   // any Halide schedule
//     for (auto& stages : k.stages) for (Halide::Func s : stages) s.compute_root();
//     return std::string("naive: root, rows in parallel");
//   };
//   Executable exe = compile(graph, Target::host(), options);
//
// A kernel's name is the name of the node it materializes (the last one for
// a kernel with several outputs), as Executable::schedule_text() prints it
// after "kernel". The override replaces the default schedule of that kernel
// only; it must leave every Func's definition alone (a schedule never changes
// results beyond float reassociation). compile() throws Error if an override
// names no kernel, and wraps Halide's errors from it with the kernel's name.
// Executables compiled with overrides (or kernel_remat off) are not cached.
#pragma once

#include <Halide.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/runtime.h"

namespace tessera {

// What an override sees: the kernel's own graph (inputs in0.., nodes k0..,
// outputs "out" or "out0"..) and one unscheduled Halide Func per node.
struct KernelSchedule {
  const Graph& graph;
  std::vector<Halide::Func>& funcs;                // by node id of `graph`
  std::vector<std::vector<Halide::Func>>& stages;  // internal stages per node (e.g. a matmul's accumulator)
  std::vector<Halide::Func>& outputs;              // the pipeline's outputs, in graph output order
  std::vector<Halide::ImageParam>& args;           // the kernel's input buffers (for estimates)
  const Halide::Target& target;
};

// Returns a one-line description for Executable::schedule_text().
using ScheduleOverride = std::function<std::string(KernelSchedule&)>;

struct CompileOptions {
  std::map<std::string, ScheduleOverride> schedules;  // kernel name -> its schedule
  // The auto-scheduler's kernel-level remat: cheap intermediates that several
  // kernels read are recomputed in each or materialized once, whichever the
  // target's cost model says is cheaper (the plan prints each decision and
  // its estimates). false: always recomputed (the partitioner's fallback).
  bool kernel_remat = true;
  // Keep bf16 values in uint16 storage with integer conversions, as CUDA
  // targets always do (Halide 14 cannot generate PTX for bf16). Bitwise the
  // same results; for checking that path on the CPU.
  bool bf16_as_u16 = false;
};

// compile() with overrides (see above).
Executable compile(const Graph& graph, const Target& target, const CompileOptions& options);

// Halide's lowered statement of the kernel named `kernel` (loops, vectors,
// parallelism, allocations), for reading what a schedule produced.
std::string kernel_stmt(const Executable& exe, const std::string& kernel);

}  // namespace tessera
