// The verifier: checks a Graph's invariants and reports every problem found.
#include <set>
#include <sstream>

#include "op_registry.h"
#include "tessera/error.h"
#include "tessera/passes.h"

namespace tessera {

void verify(const Graph& g, const VerifyOptions& options) {
  std::vector<std::string> problems;
  auto problem = [&](const auto&... parts) {
    std::ostringstream os;
    (os << ... << parts);
    problems.push_back(os.str());
  };
  std::set<std::string> names;
  const int n = static_cast<int>(g.nodes.size());
  for (int id = 0; id < n; ++id) {
    const Node& node = g.nodes[id];
    const std::string where = node.op + " '" + node.name + "'";
    if (node.id != id) problem(where, ": stored id ", node.id, " but it is node ", id);
    if (node.name.empty()) problem("node ", id, " (", node.op, ") has no name");
    if (!names.insert(node.name).second) problem(where, ": the name is used by an earlier node");
    if (!find_op(node.op)) {
      problem("node '", node.name, "': unknown op '", node.op, "'");
      continue;
    }
    bool inputs_ok = true;
    for (int in : node.inputs) {
      if (in < 0 || in >= n) {
        problem(where, ": input id ", in, " names no node (dangling)");
        inputs_ok = false;
      } else if (in >= id) {
        problem(where, ": input '", g.nodes[in].name, "' is defined later (node ", in, "), breaking SSA order");
        inputs_ok = false;
      }
    }
    if (node.is_leaf()) {
      if (!node.inputs.empty()) problem(where, ": a leaf takes no inputs");
      if (node.op == "constant" && node.values.size() != 1 &&
          static_cast<int64_t>(node.values.size()) != node.type.numel())
        problem(where, ": holds ", node.values.size(), " values for type ", to_string(node.type));
      continue;
    }
    if (!inputs_ok) continue;
    try {
      TensorType t = infer_node_type(g, node);
      if (t != node.type)
        problem(where, ": stored type ", to_string(node.type), " but its inputs give ", to_string(t));
    } catch (const Error& e) {
      problem(e.what());
    }
  }
  std::set<std::string> out_names;
  for (const GraphOutput& o : g.outputs) {
    if (o.node < 0 || o.node >= n) problem("output '", o.name, "' names no node (id ", o.node, ")");
    if (!out_names.insert(o.name).second) problem("output '", o.name, "' is named twice");
  }
  if (!options.allow_unused_args) {
    std::vector<int> uses = g.use_counts();
    for (const Node& node : g.nodes)
      if ((node.op == "input" || node.op == "param") && uses[node.id] == 0)
        problem(node.op, " '", node.name, "' is never used");
  }
  if (!problems.empty()) {
    std::ostringstream os;
    os << "graph '" << g.name << "' failed verification:";
    for (const std::string& p : problems) os << "\n  " << p;
    throw Error(os.str());
  }
}

Pass verifier() {
  return Pass{"verify", [](const Graph& g) {
                verify(g, {true});
                return g;
              }};
}

}  // namespace tessera
