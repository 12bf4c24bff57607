// Kernel-level rematerialization decisions (kernel_remat.h).
#include "kernel_remat.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <variant>

namespace tessera {

namespace {

double bytes_of(const TensorType& t) { return static_cast<double>(numel(t.shape)) * dtype_size(t.dtype); }

// How much slower than recomputing a node read across the loss may
// materializing it be estimated, when that frees more memory than it takes.
constexpr double kMemoryTrade = 1.5;

}  // namespace

std::vector<RematDecision> decide_kernel_remat(const Graph& g, std::vector<bool>& root, const CostModel& cost) {
  const int n = static_cast<int>(g.nodes.size());
  // A remat clone (remat.h: attribute remat = its original's name) is decided
  // with its original, as one node whose readers are both's: the decision,
  // and so the arithmetic, is then the one the graph had without remat.
  std::vector<int> canon(n);
  for (const Node& node : g.nodes) {
    canon[node.id] = node.id;
    auto it = node.attrs.find("remat");
    if (it != node.attrs.end())
      if (const std::string* original = std::get_if<std::string>(&it->second))
        if (int o = g.find(*original); o >= 0 && o < node.id) canon[node.id] = canon[o];
  }
  std::vector<std::vector<int>> consumers(n);
  for (const Node& node : g.nodes)
    for (int in : node.inputs) consumers[canon[in]].push_back(canon[node.id]);
  std::vector<bool> is_output(n, false);
  int loss = -1;  // the training step's loss: kernels after it are the backward
  for (const GraphOutput& o : g.outputs) {
    is_output[canon[o.node]] = true;
    if (o.name == "loss") loss = o.node;
  }

  // The kernels (named by a root they compute) whose computation includes each node.
  std::vector<std::set<int>> kernels_of(n);
  std::vector<RematDecision> decisions;
  for (int id = n - 1; id >= 0; --id) {
    if (canon[id] != id) continue;
    const Node& node = g.nodes[id];
    if (root[id] || node.is_leaf()) {
      kernels_of[id] = {id};
      continue;
    }
    std::set<int> readers;
    for (int c : consumers[id]) readers.insert(kernels_of[c].begin(), kernels_of[c].end());
    // A reader that broadcasts the node (more elements than it) recomputes
    // it per element of its own.
    const double elements = static_cast<double>(numel(node.type.shape));
    double broadcast = 1;
    for (int c : consumers[id])
      broadcast = std::max(broadcast, static_cast<double>(numel(g.nodes[c].type.shape)) / std::max(elements, 1.0));
    if ((readers.size() < 2 && broadcast <= 1) || readers.empty() || node.type.rank() == 0) {
      kernels_of[id] = readers;
      continue;
    }
    // The subtree each reader would inline: id and its inlined inputs, and
    // what it reads (the intermediates among them, and the inlined nodes, as
    // canonical ids: those `consumers` and `kernels_of` use).
    double flops = 0, reads = 0;
    std::vector<int> stack{id};
    std::set<int> seen{id}, inlined{id}, read_intermediates;
    while (!stack.empty()) {
      const Node& m = g.nodes[stack.back()];
      stack.pop_back();
      flops += static_cast<double>(numel(m.type.shape)) * flops_per_element(m);
      for (int in : m.inputs) {
        if (!seen.insert(in).second) continue;
        const Node& x = g.nodes[in];
        if (root[in] || x.op == "input" || x.op == "param") {
          reads += std::min(bytes_of(x.type), elements * dtype_size(x.type.dtype));
          if (!x.is_leaf()) read_intermediates.insert(canon[in]);
        } else if (!x.is_leaf()) {
          stack.push_back(in);
          inlined.insert(canon[in]);
        }
      }
    }
    const double k = static_cast<double>(readers.size()), own = bytes_of(node.type);
    RematDecision d;
    d.node = id;
    d.readers = static_cast<int>(readers.size());
    d.recompute_us = k * (cost.memory_us(reads) + cost.compute_us(flops * broadcast));
    d.materialize_us = cost.launch_us + cost.memory_us(reads + own + k * own) + cost.compute_us(flops);
    d.materialize = d.materialize_us < d.recompute_us;
    if (!d.materialize && loss >= 0 && *readers.begin() < loss && *readers.rbegin() > loss &&
        d.materialize_us <= kMemoryTrade * d.recompute_us) {
      // Read on both sides of the loss: recomputed, it keeps what its subtree
      // reads alive into the backward. Count what nothing else keeps there:
      // intermediates whose other readers all run before the loss (a reader
      // not yet decided, earlier in the graph, is assumed to run after it).
      // Only for a subtree of its own: a node inlined into it that others
      // read too would keep the subtree's reads alive itself.
      bool own_subtree = true;
      for (int m : inlined)
        for (int c : consumers[m]) own_subtree = own_subtree && (m == id || inlined.count(c) > 0);
      if (own_subtree) {
        for (int x : read_intermediates) {
          bool dies_before_loss = !is_output[x];
          for (int c : consumers[x])
            if (!inlined.count(c) && (c < id || kernels_of[c].empty() || *kernels_of[c].rbegin() > loss))
              dies_before_loss = false;
          if (dies_before_loss) d.frees_bytes += bytes_of(g.nodes[x].type);
        }
      }
      d.materialize = d.frees_bytes > own;
    }
    if (d.materialize) {
      root[id] = true;
      kernels_of[id] = {id};
    } else {
      kernels_of[id] = readers;
    }
    decisions.push_back(d);
  }
  for (int id = 0; id < n; ++id)
    if (canon[id] != id && root[canon[id]]) root[id] = true;
  std::reverse(decisions.begin(), decisions.end());
  return decisions;
}

std::string remat_decisions_text(const Graph& g, const std::vector<RematDecision>& decisions, const CostModel& cost) {
  int kept = 0;
  for (const RematDecision& d : decisions) kept += d.materialize;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "kernel-level remat (%s cost model: %.0f GB/s, %.0f GFLOP/s, launch %.2f us): %zu shared "
                "intermediates, %d materialized\n",
                cost.name.c_str(), cost.dram_gbps, cost.gflops, cost.launch_us, decisions.size(), kept);
  std::string s = buf;
  for (const RematDecision& d : decisions) {
    const Node& n = g.nodes[d.node];
    std::snprintf(buf, sizeof buf, "  %s (%s) %s: %d readers, recompute %.2f us vs materialize %.2f us -> %s",
                  n.name.c_str(), n.op.c_str(), to_string(n.type).c_str(), d.readers, d.recompute_us,
                  d.materialize_us, d.materialize ? "materialize" : "recompute");
    s += buf;
    if (d.frees_bytes > 0) {
      const double kib = d.frees_bytes / 1024;
      std::snprintf(buf, sizeof buf, " (read across the loss: materializing it frees %.1f %s there)",
                    kib >= 1024 ? kib / 1024 : kib, kib >= 1024 ? "MiB" : "KiB");
      s += buf;
    }
    s += "\n";
  }
  return s;
}

}  // namespace tessera
