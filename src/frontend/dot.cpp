// Graphviz export: to_dot() (see tessera/text.h).
//
// One node per graph node labelled "name\nop\ntype" (leaves as rounded
// boxes, computed nodes as ellipses), one edge per input use, and one box per
// graph output with an edge from the node it names. Labels are quoted with
// Graphviz escapes. It draws what it is given: dangling ids are skipped, not checked.
#include <string>
#include <vector>

#include "tessera/text.h"

namespace tessera {

namespace {

// A Graphviz double-quoted string.
std::string dot_quote(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    switch (c) {
      case '"': r += "\\\""; break;
      case '\\': r += "\\\\"; break;
      case '\n': r += "\\n"; break;
      case '\r': break;
      default: r += c;
    }
  }
  return r + "\"";
}

// A label of several lines: escaped pieces joined by Graphviz's "\n".
std::string dot_label(const std::vector<std::string>& lines) {
  std::string joined;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string q = dot_quote(lines[i]);
    joined += (i ? "\\n" : "") + q.substr(1, q.size() - 2);
  }
  return "\"" + joined + "\"";
}

}  // namespace

std::string to_dot(const Graph& g) {
  std::string s = "digraph " + dot_quote(g.name) + " {\n";
  s += "  node [fontname=\"monospace\"];\n";
  const int n = static_cast<int>(g.nodes.size());
  for (int id = 0; id < n; ++id) {
    const Node& node = g.nodes[id];
    const char* shape = node.is_leaf() ? "box, style=rounded" : "ellipse";
    s += "  n" + std::to_string(id) + " [shape=" + shape + ", label=" +
         dot_label({node.name, node.op, to_string(node.type)}) + "];\n";
  }
  for (int id = 0; id < n; ++id)
    for (int in : g.nodes[id].inputs)
      if (in >= 0 && in < n) s += "  n" + std::to_string(in) + " -> n" + std::to_string(id) + ";\n";
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    const GraphOutput& o = g.outputs[i];
    std::string out = "out" + std::to_string(i);
    s += "  " + out + " [shape=box, label=" + dot_label({"output", o.name}) + "];\n";
    if (o.node >= 0 && o.node < n) s += "  n" + std::to_string(o.node) + " -> " + out + ";\n";
  }
  return s + "}\n";
}

}  // namespace tessera
