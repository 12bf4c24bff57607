// The op registry: every library op's type rule and algorithm, by name.
//
// An OpDef says how many inputs an op takes, how its output type follows from
// its inputs and attributes (`infer`, which throws Error on bad input), and
// what it computes (`define`, a Halide-style pure definition over index Vars,
// written once for every target). Schedules (src/schedules) decide how the
// Funcs run; nothing here schedules. Ops register themselves from the
// ops_*.cpp files through TESSERA_REGISTER_OP.
#pragma once

#include <Halide.h>

#include <functional>
#include <string>
#include <vector>

#include "tessera/graph.h"

namespace tessera {

// How an op's output element depends on its inputs; the schedules and the
// passes use this to decide fusion and what may be rewritten.
enum class OpKind {
  leaf,         // input, param, constant
  elementwise,  // output[i] reads inputs at i (after broadcasting)
  shape,        // pure data movement: reshape, permute, slice, concat, ...
  reduction,    // reduces over axes (sum, mean, max, softmax, norms, losses)
  contraction,  // matmul, linear, attention
  gather,       // embedding
  random,       // dropout: never merged by CSE
  user,         // `define`, and `define_grad` (its gradient, define_grad.h)
};

// What `define` gets: the node, its input Funcs and input types.
struct DefineContext {
  const Node& node;
  const std::vector<Halide::Func>& inputs;
  const std::vector<TensorType>& input_types;
};

// What `define` returns: the node's Func, plus the internal stages it made
// (e.g. the row max and sum of a softmax) that a schedule must place.
struct Definition {
  Halide::Func func;
  std::vector<Halide::Func> stages;
};

struct OpDef {
  std::string name;
  OpKind kind = OpKind::elementwise;
  int min_inputs = 1;
  int max_inputs = 1;  // -1: any number
  // Output type from input types and attributes. Throws Error with a message
  // naming the shapes at fault; the caller prefixes the op and node name.
  std::function<TensorType(const std::vector<TensorType>&, const Attrs&)> infer;
  // The algorithm. Leaves have none.
  std::function<Definition(const DefineContext&)> define;
};

void register_op(OpDef def);

// The scale an attention or attention_grad node applies to q k^T: its
// attribute, or 1/sqrt(dim) (the key dim) where that is <= 0.
double attention_scale(const Node& node, int64_t dim);
// Throws Error "unknown op 'x'" if absent.
const OpDef& op_def(const std::string& name);
const OpDef* find_op(const std::string& name);
// Every registered op name, sorted (tests use this to check coverage).
std::vector<std::string> registered_ops();

// Infers `node`'s type from its inputs in `g`, prefixing errors with the op and node name.
TensorType infer_node_type(const Graph& g, const Node& node);

struct OpRegistrar {
  explicit OpRegistrar(OpDef def) { register_op(std::move(def)); }
};

// Forces the ops_*.cpp registration objects to be linked from a static library.
void link_all_ops();

}  // namespace tessera
