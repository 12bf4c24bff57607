// kernel_remat: the auto-scheduler's choice, for every intermediate that
// several kernels would compute, between recomputing it inside each of them
// and materializing it once in a kernel of its own.
//
// The partitioner (partition.h) inlines cheap nodes (elementwise, shape,
// gather, random) into the kernels that read them. When k > 1 kernels read
// such a node N (directly or through other inlined nodes), inlining
// recomputes N's inlined subtree k times; materializing it costs a kernel of
// its own, a write of N and k reads of it. With the target's cost model
// (cost_model.h):
//   recompute    k * (bytes N's subtree reads + its FLOPs)
//   materialize  launch + bytes it reads + its FLOPs + write N + k * read N
// (bytes at the model's bandwidth, FLOPs at its rate). The cheaper wins.
// A reader that broadcasts N (a row statistic [rows, 1] read by a
// [rows, cols] kernel) recomputes N's subtree per element of its own, so
// its FLOPs count that many times, and such a node is decided even when one
// kernel reads it (a logsumexp read by GPT-2's 50304-wide LM head gradient
// costs a log per logit inlined, one kernel of 8192 logs materialized).
// Memory: a node read both before and after the loss (e.g. a LoRA linear's
// base + adapter sum, read by the forward's next kernel and by the
// backward), recomputed, keeps every intermediate its subtree reads alive
// until the backward; materialized, only itself. When the intermediates it
// would free (those no other reader keeps past the loss) outweigh it and
// the time estimate for materializing is within 1.5x of recomputing, it is
// materialized; the printed decision says how much it frees.
// Nodes are decided from the last to the first, so a node's readers are
// final when it is decided. A clone made by the remat pass (attribute remat =
// its original's name) is decided together with its original, so remat
// changes no decision and no result. This never changes results: a materialized node
// holds exactly the values its readers would have computed.
// It decides; it does not build kernels (partition.cpp does).
#pragma once

#include <string>
#include <vector>

#include "cost_model.h"
#include "tessera/graph.h"

namespace tessera {

struct RematDecision {
  int node = -1;
  int readers = 0;            // kernels that read it
  double recompute_us = 0;    // the estimate for inlining it into each
  double materialize_us = 0;  // the estimate for one kernel of its own
  double frees_bytes = 0;      // read across the loss: what materializing it frees (see above)
  bool materialize = false;
};

// Updates `root` (node id -> materialized) with the nodes the model says to
// materialize, and returns a decision for every node read by several kernels
// or broadcast by one.
std::vector<RematDecision> decide_kernel_remat(const Graph& g, std::vector<bool>& root, const CostModel& cost);

// One line per decision, for the printed plan:
//   "  t12 (gelu) f32[8, 256]: 3 readers, recompute 2.10 us vs materialize 4.50 us -> recompute"
// after a summary line "kernel-level remat (<cost model>): N shared intermediates, M materialized".
std::string remat_decisions_text(const Graph& g, const std::vector<RematDecision>& decisions, const CostModel& cost);

}  // namespace tessera
