// Rematerialization: which forward tensors a training step keeps for the
// backward and which the backward recomputes, under a memory budget.
//
// Input: a joint forward+backward graph (autodiff.h's differentiate(), with
// or without an optimizer step). The forward is everything the loss output
// depends on; every other non-leaf node is the backward. A forward tensor is
// "saved" when the backward reads it: in a graph run as one step (compile()),
// that means its arena buffer stays live from the forward to the backward.
// Only the partitioner's kernel roots (reductions, contractions, graph
// outputs; src/schedules/partition.h) have buffers, and remat asks
// partition() which they are: elementwise, shape and random ops (dropout:
// its mask comes from the seed and offset) are inlined into every kernel
// that reads them and never stored, so their value is always recomputed by
// construction. A tensor's save cost is its arena bytes
// (elements x dtype size; 0 for graph outputs, inputs and params, which are
// the caller's Buffers).
//
// The decision is a minimum s-t cut over the joint graph (functorch's min-cut
// partitioner): each forward node is an edge of its save cost; leaves are tied
// to the source, the backward's readers to the sink; matrix products,
// attention, user ops and reductions to at most 1/8 of their input (a row
// log-sum-exp, a total) are tied to the source ("banned" from recompute).
// Of the minimum cuts the pass takes the one closest to the sink: equal
// saved bytes, the least recompute.
// When the cut exceeds the budget, banned ops are released one at a time,
// greedily by bytes saved per FLOP of added recompute, until it fits or
// nothing more helps. Recompute cost is FLOPs per op from the table in
// src/transforms/remat_cost.cpp (the CPU target has no cost parameters in
// src/schedules; FLOPs rank ops the same way at any fixed rate).
//
// Output: the same graph where each recomputed forward node the backward
// needs gets a clone, named "<node>.remat" and carrying the attribute
// remat = "<node>" (its original), placed just before its first backward
// reader. The attribute keeps cse from merging a clone back into its
// original, and makes the auto-scheduler's kernel-level decisions treat the
// two alike (src/schedules/kernel_remat.h); so cse may run before or
// after remat; the partitioner runs kernels in node order and never fuses a
// reduction or contraction with another root, so the clone runs in the
// backward and the memory planner's peak goes down. Results are unchanged:
// a clone computes exactly what its original did (bitwise, same schedule).
// This pass changes no schedule and does not reorder the forward.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/passes.h"

namespace tessera {

// A region to checkpoint, as torch.utils.checkpoint(fn, *inputs): the nodes
// that depend on `inputs` and that `outputs` depend on, by node name, not
// counting the inputs and outputs themselves. The backward never reads a
// node inside: each one it needs is recomputed, matrix products included.
struct CheckpointRegion {
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
};

struct RematReport {
  size_t saved_bytes_before = 0;  // the save-everything figure
  size_t saved_bytes_after = 0;
  size_t budget_bytes = 0;        // the budget in bytes
  bool met = true;
  size_t shortfall_bytes = 0;     // saved_bytes_after - budget_bytes when not met
  double added_flops = 0;         // FLOPs of the clones (cost table of remat_cost.cpp)
  std::vector<std::string> recomputed;  // forward nodes cloned into the backward, in graph order
  std::vector<std::string> saved;       // forward nodes the backward still reads (materialized ones)
  // The memory planner's arena peak (src/schedules/memory_plan.h, the figure
  // compile()'s memory_stats().planned_peak gives) before and after.
  size_t planned_peak_before = 0;
  size_t planned_peak_after = 0;
  // The peak the budget implies when only the saved activations change:
  // budget_bytes + (planned_peak_before - saved_bytes_before). When the new
  // peak is above it (peak_met false), peak_note says what the arena holds
  // at the new peak: saved activations, recomputed tensors and backward
  // intermediates (which remat does not move).
  size_t peak_budget_bytes = 0;
  bool peak_met = true;
  std::string peak_note;
  std::string text() const;  // a few lines for reading
};

struct RematOptions {
  // The budget for saved bytes as a fraction of the save-everything figure
  // (what the backward reads without remat): 1 gives the plain min-cut, 0
  // asks to save nothing but inputs and params. Must be in [0, 1].
  double budget = 1.0;
  // An absolute budget in bytes; when >= 0 it replaces `budget`.
  int64_t budget_bytes = -1;
  std::vector<CheckpointRegion> checkpoint = {};
  std::string loss = "loss";  // the output that marks the forward
  // When the budget cannot be met (saved bytes over it: met false, with
  // shortfall_bytes; or the planned peak over what it implies: peak_met
  // false, with peak_note), false records it in the report and returns the
  // least-memory graph found; true throws tessera::Error saying by how much.
  // With every op recomputable, saving nothing is always possible, so in
  // practice only the peak can miss.
  bool strict = false;
  // Where the pass stores its report (may be null), and whether it prints
  // the report to stderr.
  RematReport* report = nullptr;
  bool print = false;
};

struct RematResult {
  Graph graph;
  RematReport report;
};

// Throws Error for a budget outside [0, 1], a graph without the loss output,
// a checkpoint region naming a node that does not exist or lies outside the
// forward (or an empty region), or (strict) a budget it cannot meet.
RematResult rematerialize(const Graph& joint, const RematOptions& options = {});
Pass remat(RematOptions options = {});

}  // namespace tessera
