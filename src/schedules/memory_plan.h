// MemoryPlan: where every intermediate result of a partitioned graph lives
// in one arena, so that a run allocates nothing and reuses dead buffers.
//
// An intermediate is a kernel output that is not a graph output (those go
// to the caller's Buffers). Its lifetime runs from the step that writes it to
// the last step that reads it; two intermediates whose lifetimes overlap get
// disjoint byte ranges, others may share. A single-output kernel writes in
// place over an input of as many bytes and elements that dies there when it
// reads that input only through elementwise ops and reshapes (each output
// element reads it at its own row-major index only, whatever the kernel
// computes from its other inputs): the cross-entropy gradient over the
// logits, say. Kernels with a product (library calls on GPUs) never do.
// Offsets come from a greedy first fit, largest buffers first; `peak` is the
// arena's size.
//
// Optimizer updates in place: a graph output "new.X" (optimizer.h) may be
// written over input or param X itself when X dies where new.X is written:
// no later kernel reads X, X is not a graph output, the two have one type,
// and the kernel reads X only through elementwise ops (and reshapes) that lead to new.X or
// to outputs after it in the kernel (its fused loop computes the outputs
// last to first, element by element: cpu_x86.cpp, cuda_common.cpp). `updates`
// lists those pairs; a runtime that passes X's storage as new.X's saves the
// second copy of the params and moments and the copy back after each step.
// This does not plan graph inputs, params or outputs otherwise, and it does
// not reorder steps to lower the peak.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "partition.h"

namespace tessera {

// Arena offsets and sizes are multiples of this (cache lines; Halide's vector loads).
inline constexpr size_t kArenaAlignment = 64;

struct MemoryPlan {
  struct Slot {
    int node = -1;            // full-graph node id
    size_t offset = 0;        // bytes from the arena's start
    size_t bytes = 0;         // the node's size, rounded up to kArenaAlignment
    int first = 0, last = 0;  // steps (kernel indices) that write it and last read it
    int in_place_of = -1;     // node whose bytes it reuses in place, or -1
  };
  std::vector<Slot> slots;        // by first step, then node id
  std::vector<int> slot_of_node;  // node id -> index in slots, or -1
  size_t peak = 0;                // arena bytes
  size_t total = 0;               // sum of slot sizes (the arena without reuse)

  struct InPlaceUpdate {
    int output = -1;  // index into the graph's outputs ("new.X")
    int input = -1;   // node id of the input or param X it may overwrite
  };
  std::vector<InPlaceUpdate> updates;  // in output order

  // Steps after which each slot is dead: dead_after[s] lists slots whose last reader is step s.
  std::vector<std::vector<int>> dead_after;

  // One line per slot plus a summary, for reading.
  std::string text(const Graph& g) const;
};

// Plans the intermediates of `g` run as `kernels` (in order). Graph outputs
// are not planned.
MemoryPlan plan_memory(const Graph& g, const std::vector<Kernel>& kernels);

}  // namespace tessera
