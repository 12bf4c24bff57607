// Reverse-mode automatic differentiation as a Graph -> Graph transform.
//
// differentiate() builds the joint forward+backward graph: the input graph's
// outputs, plus one output "grad.<param>" (same type as the param) for each
// trainable param. split_forward_backward() cuts the joint graph into a
// forward graph (the original outputs plus the tensors the backward reads)
// and a backward graph (those saved tensors and the loss cotangent in, the
// gradients out). Frozen params and integer inputs get no gradient and cost
// nothing in the backward; so do float params read only as a quantized
// weight's scales (quant_ops.h), which are frozen like integer ones. User ops (`define`) are differentiated too: each
// float input on a path gets a define_grad node, which Halide's
// propagate_adjoints lowers (src/frontend/define_grad.h says what it refuses).
// This header does not update params (optimizer.h).
#pragma once

#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/passes.h"

namespace tessera {

struct AutodiffOptions {
  std::string loss = "loss";        // the output to differentiate: a float scalar (shape [])
  std::vector<std::string> params;  // trainable params by name; empty: every float param
  std::vector<std::string> frozen;  // params that get no gradient (wins over `params`)
};

// The name of the joint graph's gradient output for `param`.
inline std::string grad_name(const std::string& param) { return "grad." + param; }

// Throws Error naming the problem: a loss that is not a float scalar output,
// a param that does not exist, a non-differentiable op on the path from a
// trainable param to the loss, a user op whose gradient cannot be computed
// correctly (the reason named).
Graph differentiate(const Graph& g, const AutodiffOptions& options = {});
Pass autodiff(AutodiffOptions options = {});

struct SplitGraphs {
  // Inputs and params as in the joint graph; outputs: the joint graph's
  // non-gradient outputs, then one output per saved tensor, named as the
  // forward node it holds.
  Graph forward;
  // Inputs: each saved tensor (named as its forward node) and the loss
  // cotangent "grad.<loss>" (f32[]); outputs: the "grad.<param>" outputs.
  Graph backward;
  // The forward nodes the backward reads, by name: exactly what it reads.
  std::vector<std::string> saved;
};
SplitGraphs split_forward_backward(const Graph& joint, const std::string& loss = "loss");

}  // namespace tessera
