// Dinic's maximum flow (see max_flow.h): BFS levels, then blocking flows by
// DFS with per-vertex edge pointers. Iterative DFS is not needed at the graph
// sizes remat sees (a training step's nodes), but the recursion depth is
// bounded by the number of levels, i.e. the longest shortest path.
#include "max_flow.h"

#include <algorithm>
#include <queue>

namespace tessera {

MaxFlow::MaxFlow(int vertices) : out_(vertices), level_(vertices), next_(vertices) {}

void MaxFlow::add_edge(int from, int to, int64_t capacity) {
  out_[from].push_back(static_cast<int>(edges_.size()));
  edges_.push_back({to, std::min(capacity, kInfinite)});
  out_[to].push_back(static_cast<int>(edges_.size()));
  edges_.push_back({from, 0});
}

bool MaxFlow::levels(int source, int sink) {
  std::fill(level_.begin(), level_.end(), -1);
  std::queue<int> q;
  level_[source] = 0;
  q.push(source);
  while (!q.empty()) {
    int v = q.front();
    q.pop();
    for (int e : out_[v])
      if (edges_[e].capacity > 0 && level_[edges_[e].to] < 0) {
        level_[edges_[e].to] = level_[v] + 1;
        q.push(edges_[e].to);
      }
  }
  return level_[sink] >= 0;
}

int64_t MaxFlow::push(int v, int sink, int64_t limit) {
  if (v == sink) return limit;
  for (int& i = next_[v]; i < static_cast<int>(out_[v].size()); ++i) {
    int e = out_[v][i];
    Edge& edge = edges_[e];
    if (edge.capacity <= 0 || level_[edge.to] != level_[v] + 1) continue;
    int64_t got = push(edge.to, sink, std::min(limit, edge.capacity));
    if (got > 0) {
      edge.capacity -= got;
      edges_[e ^ 1].capacity += got;
      return got;
    }
  }
  return 0;
}

int64_t MaxFlow::run(int source, int sink) {
  int64_t flow = 0;
  while (levels(source, sink)) {
    std::fill(next_.begin(), next_.end(), 0);
    while (int64_t f = push(source, sink, kInfinite)) {
      flow += f;
      if (flow >= kInfinite) return flow;
    }
  }
  return flow;
}

std::vector<bool> MaxFlow::reachable(int from, bool against_edges) const {
  std::vector<bool> seen(out_.size(), false);
  std::vector<int> stack{from};
  seen[from] = true;
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    // Edge e leaves v; its pair e ^ 1 enters v from edges_[e].to.
    for (int e : out_[v])
      if (edges_[against_edges ? e ^ 1 : e].capacity > 0 && !seen[edges_[e].to]) {
        seen[edges_[e].to] = true;
        stack.push_back(edges_[e].to);
      }
  }
  return seen;
}

std::vector<bool> MaxFlow::source_side(int source) const { return reachable(source, false); }

std::vector<bool> MaxFlow::sink_side(int sink) const { return reachable(sink, true); }

}  // namespace tessera
