// MaxFlow: a maximum s-t flow (Dinic's algorithm) and the minimum cut it gives.
//
// Capacities are integers; kInfinite marks an edge that a cut may not cross.
// Used by remat (remat.cpp) to pick the forward tensors the backward saves.
// This knows nothing about graphs of tensors.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera {

class MaxFlow {
 public:
  static constexpr int64_t kInfinite = int64_t(1) << 60;

  explicit MaxFlow(int vertices);
  void add_edge(int from, int to, int64_t capacity);
  // The maximum flow from `source` to `sink` (at least kInfinite when an
  // uncuttable path exists). Call once.
  int64_t run(int source, int sink);
  // After run(): the vertices still reachable from the source in the
  // residual graph (the source side of a minimum cut).
  std::vector<bool> source_side(int source) const;
  // After run(): the vertices that still reach the sink in the residual
  // graph. Their complement is the source side of the minimum cut closest
  // to the sink (of all minimum cuts, the one with the largest source side).
  std::vector<bool> sink_side(int sink) const;

 private:
  struct Edge {
    int to;
    int64_t capacity;
  };
  bool levels(int source, int sink);
  // The vertices reachable from `from` over edges with residual capacity,
  // or (against_edges) the vertices that reach `from` over such edges.
  std::vector<bool> reachable(int from, bool against_edges) const;
  int64_t push(int v, int sink, int64_t limit);

  std::vector<Edge> edges_;             // edge e and its reverse e ^ 1
  std::vector<std::vector<int>> out_;   // vertex -> its edge indices
  std::vector<int> level_, next_;
};

}  // namespace tessera
