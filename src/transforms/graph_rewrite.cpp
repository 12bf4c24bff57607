// GraphRewriter, liveness and pruning shared by the passes (see graph_rewrite.h).
// No pass logic lives here.
#include "graph_rewrite.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "op_registry.h"
#include "tessera/error.h"

namespace tessera {

GraphRewriter::GraphRewriter(const Graph& src) : src_(src), map_(src.nodes.size(), -1) {
  out_.name = src.name;
  for (const Node& n : src.nodes) {
    used_names_.insert(n.name);
    // Fresh names continue after the largest "t<N>" so that new nodes read as new.
    if (n.name.size() > 1 && n.name[0] == 't' && n.name.size() < 10 &&
        n.name.find_first_not_of("0123456789", 1) == std::string::npos)
      counter_ = std::max(counter_, std::stoi(n.name.substr(1)) + 1);
  }
}

Node GraphRewriter::remapped(int old_id) const {
  Node n = src_.node(old_id);
  n.id = -1;
  for (int& in : n.inputs) {
    int m = map_.at(in);
    if (m < 0) fail("graph rewrite: node '", n.name, "' reads '", src_.node(in).name, "', which was not rebuilt");
    in = m;
  }
  return n;
}

int GraphRewriter::emit(Node n) {
  if (n.name.empty()) n.name = fresh_name();
  used_names_.insert(n.name);
  n.id = static_cast<int>(out_.nodes.size());
  out_.nodes.push_back(std::move(n));
  return out_.nodes.back().id;
}

int GraphRewriter::emit_op(const std::string& op, std::vector<int> inputs, Attrs attrs, std::string name) {
  Node n;
  n.op = op;
  n.name = std::move(name);
  n.inputs = std::move(inputs);
  n.attrs = std::move(attrs);
  n.type = infer_node_type(out_, n);
  return emit(std::move(n));
}

int GraphRewriter::copy(int old_id) {
  int id = emit(remapped(old_id));
  map(old_id, id);
  return id;
}

std::string GraphRewriter::fresh_name() {
  std::string n;
  do n = "t" + std::to_string(counter_++);
  while (used_names_.count(n));
  used_names_.insert(n);
  return n;
}

Graph GraphRewriter::finish() && {
  for (const GraphOutput& o : src_.outputs) {
    int m = o.node >= 0 && o.node < static_cast<int>(map_.size()) ? map_[o.node] : -1;
    if (m < 0) fail("graph rewrite: output '", o.name, "' names a node that was not rebuilt");
    out_.outputs.push_back({o.name, m});
  }
  return std::move(out_);
}

std::vector<bool> live_nodes(const Graph& g, const std::vector<bool>& roots) {
  const int n = static_cast<int>(g.nodes.size());
  std::vector<bool> live(n, false);
  // Marks `id` and its ancestors (inputs precede their readers, so one backward sweep).
  auto mark_from = [&](int top) {
    for (int id = top; id >= 0; --id) {
      if (!live[id]) continue;
      for (int in : g.nodes[id].inputs) live[in] = true;
    }
  };
  for (const GraphOutput& o : g.outputs)
    if (o.node >= 0 && o.node < n) live[o.node] = true;
  for (int id = 0; id < n; ++id) {
    const Node& node = g.nodes[id];
    if (node.op == "input" || node.op == "param" || (id < static_cast<int>(roots.size()) && roots[id]))
      live[id] = true;
  }
  mark_from(n - 1);
  return live;
}

Graph keep_only(const Graph& g, const std::vector<bool>& keep) {
  Graph out;
  out.name = g.name;
  std::vector<int> map(g.nodes.size(), -1);
  for (const Node& n : g.nodes) {
    if (!keep[n.id]) continue;
    Node c = n;
    for (int& in : c.inputs) {
      if (map[in] < 0) fail("keep_only: node '", n.name, "' is kept but its input '", g.nodes[in].name, "' is not");
      in = map[in];
    }
    c.id = static_cast<int>(out.nodes.size());
    map[n.id] = c.id;
    out.nodes.push_back(std::move(c));
  }
  for (const GraphOutput& o : g.outputs) {
    if (map.at(o.node) < 0) fail("keep_only: output '", o.name, "' names a node that is not kept");
    out.outputs.push_back({o.name, map[o.node]});
  }
  return out;
}

Graph remove_orphans(const Graph& before, const Graph& after) {
  std::vector<bool> was_live = live_nodes(before);
  std::set<std::string> dead_before;
  for (const Node& n : before.nodes)
    if (!was_live[n.id]) dead_before.insert(n.name);
  std::vector<bool> roots(after.nodes.size(), false);
  for (const Node& n : after.nodes) roots[n.id] = dead_before.count(n.name) > 0;
  std::vector<bool> keep = live_nodes(after, roots);
  for (bool k : keep)
    if (!k) return keep_only(after, keep);
  return after;
}

bool is_splat_constant(const Node& n, double v) {
  if (n.op != "constant" || n.values.empty()) return false;
  for (double x : n.values)
    if (x != v) return false;
  return true;
}

bool same_value(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

int64_t norm_axis(int64_t axis, int64_t rank) {
  if (axis < 0) axis += rank;
  return axis < 0 || axis >= rank ? -1 : axis;
}

}  // namespace tessera
