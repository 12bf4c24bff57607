// lower_to_halide: a Graph becomes Halide Funcs, one per node, unscheduled.
//
// Inputs and params become ImageParams (wrapped in a Func each); constants
// become Funcs over their values; every other node calls its op's definition
// (src/frontend/op_registry.h), and `define` nodes substitute the real input
// Funcs into their Halide-style body. Nothing here decides where anything is
// computed: that is the schedule's job (cpu_x86.h).
#pragma once

#include <Halide.h>

#include <vector>

#include "tessera/graph.h"

namespace tessera {

struct LoweredGraph {
  std::vector<Halide::ImageParam> args;  // one per input/param node
  std::vector<int> arg_nodes;            // the node id of each arg
  std::vector<Halide::Func> funcs;       // one per node
  std::vector<std::vector<Halide::Func>> stages;  // internal stages per node (see Definition)
  std::vector<Halide::Func> outputs;     // one per graph output, in order
  std::vector<int> output_nodes;
};

// A Halide-safe Func name for a node: "n<id>_" + its name with other characters as '_'.
std::string func_name(const Node& n);

LoweredGraph lower_to_halide(const Graph& g);

// Replaces each of L's output Funcs by a copy named "<func>_out" reading it,
// so that a schedule can compute several outputs in one loop nest
// (compute_with) while the nodes themselves stay inlined. Schedules nothing.
void copy_outputs(LoweredGraph& L);

}  // namespace tessera
