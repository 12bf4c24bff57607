// Constant folding: evaluates the nodes whose inputs are all constants.
//
// A node folds when it is not a leaf, not random (dropout), has at most
// 65536 elements and reads only constants and other folding nodes (a
// `define` that reads no tensor folds too). The folding nodes that something
// else still needs (a graph output, or a live node that does not fold) are
// evaluated together: they and the constants they depend on become one small
// graph, compiled and run once with compile(graph).run() (runtime.h), at most
// one compile per invocation. Each is replaced by a constant node of the same
// name and type holding its values (one value when all are equal, else numel
// values, stored as doubles: i64 results beyond 2^53 lose precision).
// Constants and folding nodes this leaves unused are removed; dead code that
// was already there is left for dce.
#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"

namespace tessera {

namespace {

constexpr int64_t kMaxFoldElements = 65536;

Graph run_fold(const Graph& g) {
  const int n = static_cast<int>(g.nodes.size());
  std::vector<bool> folds(n, false);
  for (const Node& node : g.nodes) {
    if (node.is_leaf()) continue;
    const OpDef* def = find_op(node.op);
    if (!def || def->kind == OpKind::random || def->kind == OpKind::leaf) continue;
    if (node.type.numel() > kMaxFoldElements) continue;
    bool all_constant = true;
    for (int in : node.inputs) all_constant = all_constant && (g.nodes[in].op == "constant" || folds[in]);
    folds[node.id] = all_constant;
  }

  // Folding nodes still needed: outputs, or read by a live node that does not fold.
  std::vector<bool> live = live_nodes(g);
  std::vector<bool> needed(n, false);
  for (const GraphOutput& o : g.outputs) needed[o.node] = folds[o.node];
  for (const Node& node : g.nodes)
    if (live[node.id] && !folds[node.id])
      for (int in : node.inputs) needed[in] = needed[in] || folds[in];
  bool any = false;
  for (bool b : needed) any = any || b;
  if (!any) return g;

  // The small graph: the needed nodes and everything they depend on (constants and folding nodes).
  std::vector<bool> include = needed;
  for (int id = n - 1; id >= 0; --id)
    if (include[id])
      for (int in : g.nodes[id].inputs) include[in] = true;
  Graph whole = g;
  whole.outputs.clear();
  Graph sub = keep_only(whole, include);
  sub.name = g.name + "_fold";
  for (const Node& node : g.nodes)
    if (needed[node.id]) sub.outputs.push_back({node.name, sub.find(node.name)});

  std::map<std::string, Buffer> results;
  try {
    results = compile(sub).run({});
  } catch (const Error& e) {
    fail("fold: evaluating the constant nodes of graph '", g.name, "' failed: ", e.what());
  }

  GraphRewriter rw(g);
  for (const Node& node : g.nodes) {
    if (!needed[node.id]) {
      rw.copy(node.id);
      continue;
    }
    auto it = results.find(node.name);
    if (it == results.end()) fail("fold: the evaluation of graph '", g.name, "' gave no value for '", node.name, "'");
    std::vector<double> values = it->second.to_f64();
    if (static_cast<int64_t>(values.size()) != node.type.numel())
      fail("fold: '", node.name, "' evaluated to ", values.size(), " values for type ", to_string(node.type));
    bool splat = true;
    for (double v : values) splat = splat && same_value(v, values[0]);
    if (splat) values.resize(1);
    Node c;
    c.name = node.name;
    c.op = "constant";
    c.type = node.type;
    c.values = std::move(values);
    rw.map(node.id, rw.emit(std::move(c)));
  }
  return remove_orphans(g, std::move(rw).finish());
}

}  // namespace

Pass fold() { return Pass{"fold", run_fold}; }

}  // namespace tessera
