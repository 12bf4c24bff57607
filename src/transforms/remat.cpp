// The remat pass (include/tessera/remat.h): a minimum cut over the joint
// forward+backward graph decides what the backward saves and what it
// recomputes; a greedy search over which expensive ops may be recomputed
// meets a memory budget; the graph is rebuilt with clones of the recomputed
// nodes placed just before their first backward reader.
//
// Flow network: each forward node v is an edge v.in -> v.out of capacity
// save_cost(v) (arena bytes when v has a buffer; infinite when it has none
// because it is inlined, or lies in a checkpoint region; 0 for graph outputs).
// Leaves are edges of capacity 0 from the source. Each input u of v gives
// u.out -> v.in (infinite); a forward node a backward node reads gives
// v.out -> sink (infinite); an expensive op not yet released gives
// source -> v.in (infinite), which forces it into the forward. The source
// side of the minimum cut is computed in the forward; a forward node v with
// v.in on the source side and v.out on the sink side is saved; one with v.in
// on the sink side is recomputed when the backward needs it. Every
// source-to-sink path crosses a leaf (0) or a buffered node, so the flow is
// finite and equals the saved arena bytes; of the minimum cuts the pass takes
// the one closest to the sink, which recomputes the least. This pass decides
// nothing about schedules; it asks the partitioner (partition()) which nodes
// have buffers.
#include "tessera/remat.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <set>
#include <sstream>

#include "decompose_attention.h"
#include "graph_rewrite.h"
#include "max_flow.h"
#include "memory_plan.h"
#include "partition.h"
#include "remat_cost.h"
#include "tessera/error.h"

namespace tessera {

namespace {

size_t arena_bytes(const Node& n) {
  return std::max<size_t>(1, (n.type.bytes() + kArenaAlignment - 1) / kArenaAlignment) * kArenaAlignment;
}

// The arena a CPU plan of `g` needs, as compile() plans it (attention's
// gradient decomposed first).
size_t planned_peak(const Graph& g) {
  const Graph p = prepare_cpu_attention(g);
  return plan_memory(p, partition(p)).peak;
}

// What the arena holds at the step where the most bytes are live in `g`
// (the rematerialized graph) as compile() plans it: saved activations
// (forward nodes of `g`), recomputed clones and backward intermediates.
std::string peak_breakdown(const Graph& graph, const std::vector<bool>& forward_of_new) {
  const Graph g = prepare_cpu_attention(graph);
  std::vector<Kernel> kernels = partition(g);
  MemoryPlan plan = plan_memory(g, kernels);
  size_t most = 0;
  int at = 0;
  for (int s = 0; s < static_cast<int>(kernels.size()); ++s) {
    size_t live = 0;
    for (const MemoryPlan::Slot& slot : plan.slots)
      if (slot.first <= s && s <= slot.last) live += slot.bytes;
    if (live > most) {
      most = live;
      at = s;
    }
  }
  size_t saved = 0, recomputed = 0, backward = 0;
  for (const MemoryPlan::Slot& slot : plan.slots) {
    if (slot.first > at || at > slot.last) continue;
    const Node& node = g.nodes[slot.node];
    const int id = graph.find(node.name);  // -1: a node of a decomposed attention gradient
    (node.attrs.count("remat") ? recomputed : id >= 0 && forward_of_new[id] ? saved : backward) += slot.bytes;
  }
  std::ostringstream os;
  os << "at kernel " << at << " (" << kernel_name(g, kernels[at].roots) << ") " << most << " bytes are live: " << saved
     << " of saved activations, " << recomputed << " of recomputed tensors, " << backward
     << " of backward intermediates (remat does not move those)";
  return os.str();
}

// What the cut needs to know about the joint graph, computed once.
struct JointGraph {
  const Graph& g;
  int n = 0;
  std::vector<bool> forward;         // non-leaf ancestors of the loss (inclusive)
  std::vector<bool> buffered;        // a kernel root of partition(g): has an arena buffer (or is an output)
  std::vector<bool> is_output;
  std::vector<bool> in_region;       // inside a checkpoint region
  std::vector<bool> read_by_backward;
  std::vector<double> flops;

  JointGraph(const Graph& graph, const RematOptions& options) : g(graph), n(static_cast<int>(graph.nodes.size())) {
    int loss = -1;
    for (const GraphOutput& o : g.outputs)
      if (o.name == options.loss) loss = o.node;
    if (loss < 0) fail("remat: graph '", g.name, "' has no output '", options.loss, "' (the loss that marks the forward)");
    forward.assign(n, false);
    forward[loss] = true;
    for (int id = loss; id >= 0; --id)
      if (forward[id])
        for (int in : g.nodes[id].inputs) forward[in] = true;
    for (int id = 0; id < n; ++id)
      if (g.nodes[id].is_leaf()) forward[id] = false;

    is_output.assign(n, false);
    for (const GraphOutput& o : g.outputs) is_output[o.node] = true;
    // Exactly the partitioner's kernel roots, whatever its rules.
    buffered.assign(n, false);
    for (const Kernel& k : partition(g))
      for (int r : k.roots) buffered[r] = true;
    read_by_backward.assign(n, false);
    for (const Node& node : g.nodes)
      if (!node.is_leaf() && !forward[node.id])
        for (int in : node.inputs)
          if (forward[in]) read_by_backward[in] = true;
    flops.resize(n);
    for (const Node& node : g.nodes) flops[node.id] = op_flops(g, node);

    in_region.assign(n, false);
    for (size_t r = 0; r < options.checkpoint.size(); ++r) mark_region(options.checkpoint[r], r);
  }

  int checked_node(const std::string& name, size_t region, const char* role) const {
    int id = g.find(name);
    if (id < 0) fail("remat: checkpoint region ", region, " names ", role, " '", name, "', which is not a node of graph '", g.name, "'");
    if (!forward[id] && !g.nodes[id].is_leaf())
      fail("remat: checkpoint region ", region, " names ", role, " '", name,
           "', which is not in the forward (the loss does not depend on it)");
    return id;
  }

  void mark_region(const CheckpointRegion& region, size_t index) {
    if (region.inputs.empty() || region.outputs.empty())
      fail("remat: checkpoint region ", index, " needs at least one input and one output");
    std::vector<bool> from_inputs(n, false), to_outputs(n, false), boundary(n, false);
    for (const std::string& name : region.inputs) {
      int id = checked_node(name, index, "the input");
      boundary[id] = from_inputs[id] = true;
    }
    for (const std::string& name : region.outputs) {
      int id = checked_node(name, index, "the output");
      boundary[id] = to_outputs[id] = true;
    }
    for (const Node& node : g.nodes)
      for (int in : node.inputs) from_inputs[node.id] = from_inputs[node.id] || from_inputs[in];
    for (int id = n - 1; id >= 0; --id)
      if (to_outputs[id])
        for (int in : g.nodes[id].inputs) to_outputs[in] = true;
    bool any = false;
    for (int id = 0; id < n; ++id)
      if (forward[id] && from_inputs[id] && to_outputs[id] && !boundary[id]) in_region[id] = any = true;
    if (!any) fail("remat: checkpoint region ", index, " is empty: no forward node lies between its inputs and outputs");
  }

  int64_t save_cost(int id) const {
    if (!buffered[id] || (in_region[id] && !is_output[id])) return MaxFlow::kInfinite;
    return is_output[id] ? 0 : static_cast<int64_t>(arena_bytes(g.nodes[id]));
  }
  // Expensive ops forced into the forward, unless released or checkpointed.
  bool bannable(int id) const {
    return forward[id] && buffered[id] && !in_region[id] && expensive_to_recompute(g, g.nodes[id]);
  }
};

// One minimum cut: which forward nodes are saved and which are cloned.
struct Cut {
  int64_t saved_bytes = 0;
  std::vector<bool> saved;  // forward nodes the backward reads as they are
  std::vector<bool> clone;  // forward nodes the backward gets a clone of
  double added_flops = 0;
};

Cut solve(const JointGraph& j, const std::vector<bool>& released) {
  const int n = j.n;
  const int source = 2 * n, sink = 2 * n + 1;
  MaxFlow flow(2 * n + 2);
  for (const Node& node : j.g.nodes) {
    const int v = node.id;
    if (node.is_leaf()) {
      flow.add_edge(source, 2 * v, MaxFlow::kInfinite);
      flow.add_edge(2 * v, 2 * v + 1, 0);
      continue;
    }
    if (!j.forward[v]) continue;
    flow.add_edge(2 * v, 2 * v + 1, j.save_cost(v));
    if (j.bannable(v) && !released[v]) flow.add_edge(source, 2 * v, MaxFlow::kInfinite);
    for (int in : node.inputs) flow.add_edge(2 * in + 1, 2 * v, MaxFlow::kInfinite);
    if (j.read_by_backward[v]) flow.add_edge(2 * v + 1, sink, MaxFlow::kInfinite);
  }
  Cut cut;
  cut.saved_bytes = flow.run(source, sink);
  if (cut.saved_bytes >= MaxFlow::kInfinite)  // cannot happen: every path crosses a finite edge
    fail("remat: internal error: no finite cut in graph '", j.g.name, "'");
  // Of the minimum cuts (equal saved bytes), the one closest to the sink:
  // it recomputes the least. (The one closest to the source could, say,
  // save each block's branch output and recompute the whole residual
  // stream from them at the start of the backward, all of it live at once.)
  const std::vector<bool> sink_side = flow.sink_side(sink);
  cut.saved.assign(n, false);
  cut.clone.assign(n, false);
  // A forward node the backward needs is recomputed when its in-vertex is on
  // the sink side. Only nodes that are buffered, or read a clone, need a
  // clone: an inlined node over saved inputs is recomputed by inlining anyway.
  std::vector<int> state(n, 0);  // 0 unvisited, 1 uses the original, 2 cloned
  auto resolve = [&](auto&& self, int v) -> bool {
    if (!j.forward[v]) return false;
    if (state[v]) return state[v] == 2;
    bool recomputed = sink_side[2 * v];
    if (!recomputed) {
      if (j.buffered[v]) cut.saved[v] = true;
      state[v] = 1;
      return false;
    }
    bool any_input = false;
    for (int in : j.g.nodes[v].inputs) any_input = self(self, in) || any_input;
    bool c = j.buffered[v] || any_input;
    state[v] = c ? 2 : 1;
    if (c) {
      cut.clone[v] = true;
      cut.added_flops += j.flops[v];
    }
    return c;
  };
  for (int v = 0; v < n; ++v)
    if (j.read_by_backward[v]) resolve(resolve, v);
  return cut;
}

// Saved bytes without remat: the buffered forward nodes the backward reads,
// directly or through inlined forward nodes.
size_t save_everything_bytes(const JointGraph& j) {
  std::vector<bool> seen(j.n, false);
  size_t total = 0;
  std::vector<int> stack;
  for (int v = 0; v < j.n; ++v)
    if (j.read_by_backward[v]) stack.push_back(v);
  while (!stack.empty()) {
    int v = stack.back();
    stack.pop_back();
    if (seen[v] || !j.forward[v]) continue;
    seen[v] = true;
    if (j.buffered[v]) {
      if (!j.is_output[v]) total += arena_bytes(j.g.nodes[v]);
      continue;
    }
    for (int in : j.g.nodes[v].inputs) stack.push_back(in);
  }
  return total;
}

// Releases expensive ops one at a time, the most bytes per added FLOP
// first, until the cut fits the budget or no release lowers it.
Cut meet_budget(const JointGraph& j, int64_t budget) {
  std::vector<bool> released(j.n, false);
  Cut best = solve(j, released);
  while (best.saved_bytes > budget) {
    int pick = -1;
    double pick_score = -1;
    Cut pick_cut;
    for (int v = 0; v < j.n; ++v) {
      if (!j.bannable(v) || released[v]) continue;
      released[v] = true;
      Cut c = solve(j, released);
      released[v] = false;
      if (c.saved_bytes >= best.saved_bytes) continue;
      double score = static_cast<double>(best.saved_bytes - c.saved_bytes) /
                     (std::max(0.0, c.added_flops - best.added_flops) + 1.0);
      // Fitting the budget outright beats any ratio among those that do not.
      if (c.saved_bytes <= budget) score += 1e300 / (c.added_flops + 1.0);
      if (score > pick_score) {
        pick = v;
        pick_score = score;
        pick_cut = std::move(c);
      }
    }
    if (pick < 0) {
      // No single release helps: try releasing every expensive op together.
      std::vector<bool> all(j.n, true);
      Cut c = solve(j, all);
      if (c.saved_bytes < best.saved_bytes) best = std::move(c);
      break;
    }
    released[pick] = true;
    best = std::move(pick_cut);
  }
  return best;
}

std::string clone_name(const Graph& g, const std::set<std::string>& taken, const std::string& base) {
  std::string name = base + ".remat";
  for (int i = 1; g.find(name) >= 0 || taken.count(name); ++i) name = base + ".remat" + std::to_string(i);
  return name;
}

// The graph with each cloned node recomputed just before its first backward reader.
Graph rebuild(const JointGraph& j, const Cut& cut) {
  const Graph& g = j.g;
  GraphRewriter rw(g);
  std::vector<int> clone_id(j.n, -1);
  std::set<std::string> taken;
  auto value_for_backward = [&](auto&& self, int v) -> int {
    if (!cut.clone[v]) return rw.mapped(v);
    if (clone_id[v] >= 0) return clone_id[v];
    Node c = g.nodes[v];
    for (int& in : c.inputs) in = self(self, in);
    c.name = clone_name(g, taken, g.nodes[v].name);
    taken.insert(c.name);
    c.attrs["remat"] = g.nodes[v].name;  // the original (kernel_remat.h decides for both alike)
    return clone_id[v] = rw.emit(std::move(c));
  };
  for (const Node& node : g.nodes) {
    if (node.is_leaf() || j.forward[node.id]) {
      rw.copy(node.id);
      continue;
    }
    Node b = g.nodes[node.id];
    for (int& in : b.inputs) in = value_for_backward(value_for_backward, in);
    rw.map(node.id, rw.emit(std::move(b)));
  }
  return std::move(rw).finish();
}

}  // namespace

std::string RematReport::text() const {
  std::ostringstream os;
  os << "remat: saved for backward " << saved_bytes_before << " -> " << saved_bytes_after << " bytes (budget "
     << budget_bytes << (met ? ", met" : ", NOT met by " + std::to_string(shortfall_bytes) + " bytes") << ")\n"
     << "remat: planned peak " << planned_peak_before << " -> " << planned_peak_after << " bytes; added "
     << added_flops << " FLOPs\n";
  if (!peak_met) os << "remat: " << peak_note << "\n";
  os
     << "remat: recomputed " << recomputed.size() << ":";
  for (const std::string& r : recomputed) os << " " << r;
  os << "\n";
  return os.str();
}

RematResult rematerialize(const Graph& joint, const RematOptions& options) {
  if (!(options.budget >= 0 && options.budget <= 1))
    fail("remat: budget must be a fraction in [0, 1] of the save-everything bytes, got ", options.budget,
         " (use budget_bytes for an absolute figure)");
  if (options.budget_bytes < -1)
    fail("remat: budget_bytes must be >= 0 (or -1: use the fraction `budget`), got ", options.budget_bytes);
  JointGraph j(joint, options);
  RematResult result;
  RematReport& r = result.report;
  r.saved_bytes_before = save_everything_bytes(j);
  r.budget_bytes = options.budget_bytes >= 0
                       ? static_cast<size_t>(options.budget_bytes)
                       : static_cast<size_t>(std::floor(options.budget * static_cast<double>(r.saved_bytes_before)));
  Cut cut = meet_budget(j, static_cast<int64_t>(r.budget_bytes));
  r.saved_bytes_after = static_cast<size_t>(cut.saved_bytes);
  r.met = r.saved_bytes_after <= r.budget_bytes;
  r.shortfall_bytes = r.met ? 0 : r.saved_bytes_after - r.budget_bytes;
  r.added_flops = cut.added_flops;
  for (int v = 0; v < j.n; ++v) {
    if (cut.clone[v]) r.recomputed.push_back(joint.nodes[v].name);
    if (cut.saved[v] && !j.is_output[v]) r.saved.push_back(joint.nodes[v].name);
  }
  result.graph = rebuild(j, cut);
  r.planned_peak_before = planned_peak(joint);
  r.planned_peak_after = planned_peak(result.graph);
  r.peak_budget_bytes = r.budget_bytes + (r.planned_peak_before - std::min(r.planned_peak_before, r.saved_bytes_before));
  r.peak_met = r.planned_peak_after <= r.peak_budget_bytes;
  if (!r.peak_met) {
    std::vector<bool> forward_of_new(result.graph.nodes.size(), false);
    for (int v = 0; v < j.n; ++v)
      if (j.forward[v]) forward_of_new[result.graph.find(joint.nodes[v].name)] = true;
    r.peak_note = "the planned peak " + std::to_string(r.planned_peak_after) + " is over the " +
                  std::to_string(r.peak_budget_bytes) + " bytes the budget implies: " +
                  peak_breakdown(result.graph, forward_of_new);
  }
  if (options.strict && !r.met)
    fail("remat: cannot meet the budget of ", r.budget_bytes, " bytes for graph '", joint.name, "': the least found saves ",
         r.saved_bytes_after, " bytes (", r.shortfall_bytes, " over)");
  if (options.strict && !r.peak_met) fail("remat: graph '", joint.name, "': ", r.peak_note);
  if (options.print) std::cerr << r.text();
  return result;
}

Pass remat(RematOptions options) {
  return Pass{"remat", [options](const Graph& g) {
                RematResult result = rematerialize(g, options);
                if (options.report) *options.report = result.report;
                return std::move(result.graph);
              }};
}

}  // namespace tessera
