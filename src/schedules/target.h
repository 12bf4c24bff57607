// The Halide target a tessera::Target compiles for.
#pragma once

#include <Halide.h>

#include "tessera/runtime.h"

namespace tessera {

Halide::Target halide_target(const Target& t);

}  // namespace tessera
