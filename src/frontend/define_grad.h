// define_grad: the gradient of a user `define` with respect to one of its
// inputs, computed by Halide's propagate_adjoints (no hand-written rule).
//
//   g = define_grad(x0, ..., xn-1, ct, index=k, vars=[...], rdoms=[...], body="...")
//
// carries the forward define's UserDef (its body reads x0 .. xn-1, as the
// define's does) and reads one more input, ct: the cotangent of the define's
// output, whose shape is the define's shape. g has input k's type and holds,
// at every element of x_k, the sum over the define's output points p of
// ct[p] * d body(p) / d x_k. autodiff's rule for `define` (vjp_define.cpp)
// emits one per input that needs a gradient.
//
// What propagate_adjoints cannot do is handled before it runs (see
// ops_define_grad.cpp): values of integer or bool type (conditions, indices
// read from tensors, casts to integers) carry no gradient and are hidden from
// it; maximum/minimum reductions pass their gradient to the first argmax
// (argmin) in iteration order (the RDom's first dimension innermost); binary
// max/min split it in halves on a tie and abs'(0) = 0, as for the library's
// ops; a product reduction, an index variable used in two indices of one read
// (x(i, i): Halide issue 7385 gives wrong gradients there) and math without a
// known derivative are refused with an Error. Nothing here schedules the
// Funcs (cpu_x86.cpp does) or differentiates library ops (vjp_*.cpp).
#pragma once

#include <vector>

#include "op_registry.h"
#include "tessera/builder.h"
#include "tessera/graph.h"

namespace tessera {

// The type of a define_grad node (input k's), after checking its inputs, its
// `index` attribute and its UserDef. Throws Error naming the node.
TensorType define_grad_type(const Node& node, const std::vector<TensorType>& input_types);

// Appends define_grad(inputs..., cotangent, index=k) for the define node
// `fwd`, whose inputs in b's graph are `inputs` and whose output's cotangent
// is `cotangent`.
Tensor define_grad(GraphBuilder& b, const Node& fwd, const std::vector<Tensor>& inputs, int k,
                   const Tensor& cotangent);

// Builds (without compiling) the Halide gradient of input k of define node
// `fwd`, whose inputs have `input_types`, and throws Error saying why when it
// cannot be computed or would be wrong. autodiff calls this before it emits a
// define_grad, so that problems surface where the gradient is asked for.
void check_define_grad(const Node& fwd, const std::vector<TensorType>& input_types, int k);

}  // namespace tessera
