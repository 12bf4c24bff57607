// Splitting a graph into kernels (see partition.h).
#include "partition.h"

#include <map>

#include "op_registry.h"
#include "user_def.h"

namespace tessera {

bool is_materialized(const Node& node) {
  if (node.is_leaf()) return false;
  if (node.op == "define") return node.user && uses_reduction(node.user->body);
  const OpKind kind = op_def(node.op).kind;
  return kind == OpKind::reduction || kind == OpKind::contraction;
}

std::vector<Kernel> partition(const Graph& g) {
  const int n = static_cast<int>(g.nodes.size());
  std::vector<bool> root(n, false);
  for (const Node& node : g.nodes) root[node.id] = is_materialized(node);
  // A computed scalar read by a tensor op is computed once, not per element
  // (optimizer bias corrections, loss scales, norms).
  for (const Node& node : g.nodes)
    if (node.type.rank() > 0)
      for (int in : node.inputs)
        if (g.nodes[in].type.rank() == 0 && !g.nodes[in].is_leaf()) root[in] = true;
  for (const GraphOutput& o : g.outputs) {
    const Node& out = g.node(o.node);
    if (out.op != "input" && out.op != "param") root[o.node] = true;  // constants too
  }

  std::vector<Kernel> kernels;
  for (int r = 0; r < n; ++r) {
    if (!root[r]) continue;
    // The nodes inlined into this kernel: r and, transitively, the non-root,
    // non-argument nodes it reads. Inputs precede readers, so one backward sweep.
    std::vector<bool> inside(r + 1, false);
    inside[r] = true;
    for (int id = r; id >= 0; --id) {
      if (!inside[id]) continue;
      const Node& node = g.nodes[id];
      if (id != r && (root[id] || node.op == "input" || node.op == "param")) continue;
      for (int in : node.inputs) inside[in] = true;
    }
    Kernel k;
    k.root = r;
    k.graph.name = "kernel";
    std::map<int, int> local;  // full id -> kernel id
    auto add = [&](Node node) {
      node.id = static_cast<int>(k.graph.nodes.size());
      k.graph.nodes.push_back(std::move(node));
      return k.graph.nodes.back().id;
    };
    // Arguments first (graph inputs, params and other kernels' results), then the computation.
    for (int id = 0; id < r; ++id) {
      if (!inside[id]) continue;
      const Node& node = g.nodes[id];
      if (!(root[id] || node.op == "input" || node.op == "param")) continue;
      Node arg;
      arg.name = "in" + std::to_string(k.inputs.size());
      arg.op = "input";
      arg.type = node.type;
      local[id] = add(std::move(arg));
      k.inputs.push_back(id);
    }
    int counter = 0;
    for (int id = 0; id <= r; ++id) {
      if (!inside[id] || local.count(id)) continue;
      Node node = g.nodes[id];
      node.name = id == r ? "out" : "k" + std::to_string(counter++);
      for (int& in : node.inputs) in = local.at(in);
      local[id] = add(std::move(node));
    }
    k.graph.outputs.push_back({"out", local.at(r)});
    kernels.push_back(std::move(k));
  }
  return kernels;
}

}  // namespace tessera
