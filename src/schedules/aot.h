// aot: ahead-of-time compilation of a graph into a static library that
// runs without libHalide (what generators/tessera_generator drives).
//
// The graph is partitioned (partition.h) and its intermediates planned
// (memory_plan.h) once; for every target (a variant) each kernel is lowered,
// scheduled for that target (cpu_x86, cuda_sm80, cuda_sm90) and compiled by
// Halide into one library per variant, without a Halide runtime. One
// standalone runtime object serves all variants (with CUDA support if any
// variant uses the GPU). A generated C++ source runs the kernels in order
// over caller-owned inputs and outputs and one arena, and picks its variant
// at first use: a CUDA variant for the GPU's compute capability when a GPU
// is present (found through the driver, loaded with dlopen), else the first
// CPU variant whose features this CPU has; it prints its choice once.
// The generated header has a class with typed Inputs and Outputs structs.
//
// Files written to `out_dir`: <name>.h, <name>.cpp, <name>_<variant>.a per
// target (one object per kernel), <name>_runtime.o. This does not build the library (CMake does).
#pragma once

#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/runtime.h"

namespace tessera {

struct AotVariant {
  std::string target;     // as given: "host", "host-cuda-sm90", ...
  std::string id;         // its C identifier: "host", "host_cuda_sm90"
  std::string object;     // the file written
  double seconds = 0;     // scheduling and code generation
  std::string schedule;   // the plan as printed for this variant
};

struct AotResult {
  std::vector<AotVariant> variants;
  std::vector<std::string> files;  // every file written
  int kernels = 0;
  size_t arena_bytes = 0;
  double seconds = 0;
};

// The C identifier of a target's variant ("host-cuda-sm90" -> "host_cuda_sm90").
std::string aot_variant_id(const std::string& target);

// Compiles `graph` for each of `targets` into `out_dir` (which must exist).
// `name` is the generated class and file name (a C identifier); `origin`
// is said in the generated files' header comment. Throws Error on a bad
// name, target or graph, or a failure of Halide's (naming the kernel).
AotResult compile_aot(const Graph& graph, const std::string& name, const std::vector<std::string>& targets,
                      const std::string& out_dir, const std::string& origin = "");

}  // namespace tessera
