// partition: splits a graph into kernels, each compiled as its own Halide pipeline.
//
// A kernel materializes one node (a reduction, a contraction, a user op with
// a reduction, a user op's gradient (define_grad), a graph output, or a
// computed scalar that a tensor op reads)
// together with the cheap nodes it reads
// (elementwise, shape and gather ops), which are inlined into it and so
// recomputed by every kernel that reads them. Kernel inputs are the graph's
// inputs and params and other kernels' results. Each kernel's graph uses
// canonical names (in0.., k0.., out) so that identical kernels, such as the
// same block in every layer, print alike and compile once.
//
// Pointwise nodes materialized only because they are graph outputs (an
// optimizer's new param and moments) join one kernel when they have the same
// shape and read common inputs or each other, provided no kernel between
// them reads the earlier ones: the kernel then has several outputs, and the
// schedule computes them in one fused loop, so shared inputs are read once.
// Unrelated groups of one shape join too when the joined kernel would still
// move fewer bytes than the target's cost model moves in one launch (the
// AdamW updates of a model's many bias and norm vectors: a few kernels
// instead of one each). A joined group runs where its last member is, so
// these joins delay the earlier members; a node that reads only inputs and
// params (a param's cast to bf16, read by a kernel before the next such
// cast) may instead join, within the same budget, the first earlier group
// of its shape and run there. No join makes a kernel of more than 64 buffers, or
// adds an optimizer output "new.X" to members that read X: the schedules
// compute a kernel's outputs last to first, so it could not be written over
// X (memory_plan.h's in-place updates).
//
// With library products (below), a row-wise op (row_wise) read only by one
// materialized elementwise op of its shape is computed inside that op's
// kernel, row by row, and its own result is never written (row_epilogue_of):
// a layer_norm converted to bf16 for a product, a layer_norm_grad added to
// the residual stream's gradient. Such a kernel may take more outputs of
// that shape (the residual sum and its cast to bf16), one row-wise op each.
// A row epilogue (or a reader of one) may also join an earlier kernel led by
// a row-wise op of its shape that it shares an argument with, and run there
// when all it reads is ready there: the norm a backward recomputes for its
// weight's gradient then shares a kernel with that norm's gradient (the
// CUDA schedule reads the gradient's row statistics for both).
//
// A widening cast that is materialized (a graph output such as the f32
// logits of a bf16 product) is read by other kernels through its narrower
// input, converted again in each reader.
//
// Which shared cheap nodes are recomputed by each reader and which are
// materialized once is the auto-scheduler's decision by the target's cost
// model (kernel_remat.h); partition() applies it.
//
// Compiling kernels separately keeps Halide's compile time linear in the
// graph size (one pipeline for a whole training step grows much faster).
// This does not plan memory or fuse across reductions and contractions.
#pragma once

#include <string>
#include <vector>

#include "cost_model.h"
#include "kernel_remat.h"
#include "tessera/graph.h"

namespace tessera {

// Whether `node` is computed at root (materialized) rather than inlined into
// its consumers. The CPU schedule and the partitioner agree through this.
bool is_materialized(const Node& node);

// Whether `node` is computed row by row along its last dim: softmax and
// log_softmax over the last axis, layer_norm, rms_norm.
bool row_wise(const Node& node);

// The row-wise input that `node`, an elementwise op, computes inside its own
// kernel (a row epilogue): the one input that is row-wise, of the node's
// shape, and read by nothing else (`readers`: Graph::use_counts); -1 if none.
int row_epilogue_of(const Graph& g, const Node& node, const std::vector<int>& readers);

// In a kernel's graph with these output nodes: the row-wise node computed
// inside the kernel rather than written (a row epilogue's input), whose rows
// the CUDA schedule gives the outputs; -1 if none.
int row_epilogue_input(const Graph& kernel, const std::vector<int>& outputs);

struct Kernel {
  std::vector<int> roots;   // the nodes it materializes (ids of the full graph), one per output
  std::vector<int> inputs;  // full-graph ids of its inputs, in the order of `graph`'s inputs
  Graph graph;              // inputs in0, in1, ...; outputs "out" (one root) or "out0", "out1", ...
};

// The node a kernel computes when it computes exactly one (its one output;
// every other node of its graph an input), as a library call takes it; else
// nullptr.
const Node* sole_computation(const Kernel& kernel);

// Kernels in topological order, covering every materialized or output node.
// Graph outputs that are graph inputs or params need no kernel (they are copied).
// `cost`: the model for the kernel-level remat decisions (kernel_remat.h); with
// nullptr every shared cheap node is recomputed by each reader. `decisions`,
// when given, receives the decisions. `library_gemm` (GPU targets that run
// matrix products in cuBLASLt): the operands of f32 and f16 matmul and linear
// nodes are materialized unless they are inputs or views of kernel results,
// so that those products become kernels of their own (library_gemm.h); the
// attention nodes the fused CUDA kernels take read their operands from
// materialized buffers, through views where the kernels take those, and may
// write their results into the tensor their views feed; the attention_grad
// nodes of one attention share a kernel (library_attention.h); embedding
// gradients and quantized linears that the CUDA kernels take get a kernel of
// their own over materialized operands (library_embedding_grad.h,
// library_quant_linear.h);
// a materialized tanh-form gelu of such a linear shares its kernel, a
// product read only by a materialized tanh-form gelu_grad is computed inside
// the gelu_grad's kernel, and a linear read only by a materialized relu
// inside the relu's kernel (cuBLASLt's GELU, DGELU and RELU epilogues:
// library_gemm.h).
std::vector<Kernel> partition(const Graph& g, const CostModel* cost, std::vector<RematDecision>* decisions = nullptr,
                              bool library_gemm = false);
// With this CPU's cost model.
std::vector<Kernel> partition(const Graph& g);

// "t3 (sum)", or "t60+t75 (add, sub)" for a kernel with several outputs.
std::string kernel_name(const Graph& g, const std::vector<int>& roots);

// "node 't3' (sum) of graph 'mlp'", or "nodes t60+t75 (add, sub) of graph
// 'mlp'", for error messages.
std::string describe_kernel(const Graph& g, const std::vector<int>& roots);

}  // namespace tessera
