// The Halide target a tessera::Target compiles for: the CPU part ("host", or
// an explicit Halide CPU target string), plus, for host-cuda-sm80 and
// host-cuda-sm90, Halide's cuda and cuda_capability_86 features (Halide 14's
// highest; the per-architecture difference lives in the schedules).
#pragma once

#include <Halide.h>

#include "tessera/runtime.h"

namespace tessera {

Halide::Target halide_target(const Target& t);

}  // namespace tessera
