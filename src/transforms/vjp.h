// VJP rules: how each differentiable op passes a cotangent to its inputs.
//
// A rule gets the forward node (already in the joint graph being built), its
// inputs and output as Tensors of that graph, and the cotangent of its
// output; it returns one gradient per input (an undefined Tensor where the
// input gets none: integer inputs, conditions, indices). Rules build the
// backward with the op library itself, so the backward is an ordinary graph
// that prints, passes and lowers like any other. Rules live in
// vjp_<family>.cpp and register with TESSERA_REGISTER_VJP-style static
// objects; autodiff.cpp walks the graph and accumulates.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tessera/builder.h"
#include "tessera/graph.h"

namespace tessera {

struct VjpContext {
  GraphBuilder& b;                // the joint graph being built
  const Node& node;               // the forward node
  std::vector<Tensor> inputs;     // its inputs
  Tensor output;                  // its output
  Tensor cotangent;               // d loss / d output: same type as output
  std::vector<bool> needs_grad;   // which inputs need a gradient (others may be left undefined)
};

using VjpRule = std::function<std::vector<Tensor>(const VjpContext&)>;

void register_vjp(const std::string& op, VjpRule rule);
const VjpRule* find_vjp(const std::string& op);
// Every op with a rule, sorted (the gradient-check coverage test uses it).
std::vector<std::string> differentiable_ops();

struct VjpRegistrar {
  VjpRegistrar(const std::string& op, VjpRule rule) { register_vjp(op, std::move(rule)); }
};

// Inputs that never get a gradient whatever their dtype: the f32 scales of a
// quantized weight (vjp_quant.cpp). A float param read only through such
// inputs is frozen, as if listed in AutodiffOptions::frozen, so that no
// optimizer touches it. `frozen(node, i)` says whether input i of `node` is one.
using FrozenInputs = std::function<bool(const Node& node, size_t input)>;
void register_frozen_inputs(const std::string& op, FrozenInputs frozen);
bool is_frozen_input(const Node& node, size_t input);

// Forces the vjp_*.cpp registration objects to be linked from the static library.
void link_all_vjps();

// Sums `grad` down to `shape` over the dims NumPy broadcasting added or
// stretched (the gradient of a broadcast).
Tensor sum_to_shape(Tensor grad, const Shape& shape);

}  // namespace tessera
