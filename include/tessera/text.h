// The text form of a Graph: a printer, a parser and Graphviz export.
//
// The printed form reads like a short program, one node per line:
//
//   graph mlp {
//     x = input()  # f32[64, 784]
//     fc1.weight = param()  # f32[256, 784]
//     t5 = linear(x, fc1.weight, fc1.bias)  # f32[64, 256]
//     t6 = sum(t5, axes=[1], keepdim=true)  # f32[64, 1]
//     output logits = t6
//   }
//
// parse(print(g)) rebuilds g exactly (same nodes, names, attrs and types).
// Parse errors throw tessera::Error with the line and column.
#pragma once

#include <string>

#include "tessera/graph.h"

namespace tessera {

std::string print(const Graph& g);
// One node as its line, without indentation or newline.
std::string print_node(const Graph& g, const Node& n);
Graph parse(const std::string& text);
std::string to_dot(const Graph& g);

}  // namespace tessera
