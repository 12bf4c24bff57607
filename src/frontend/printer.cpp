// The graph printer: print() and print_node() (see tessera/text.h).
//
// One node per line, `name = op(inputs, key=value, ...)  # type`, attributes
// in Attrs (sorted) order; constants carry value= or values=, define and
// define_grad nodes their UserDef as vars=, rdoms= and body= (expr_text.h;
// a define_grad's body reads its inputs but the last, the cotangent).
// Numbers print in the shortest form that reads back to the same bits. The
// printer does not check the graph (verify() does); it prints a dangling
// input as a quoted placeholder name so that dumps of broken graphs still
// print. Parsing is in parser.cpp.
#include <sstream>

#include "expr_text.h"
#include "tessera/text.h"
#include "user_def.h"

namespace tessera {

namespace {

std::string node_ref(const Graph& g, int id) {
  if (id < 0 || id >= static_cast<int>(g.nodes.size()))
    return text::quote("<no node " + std::to_string(id) + ">");
  return text::name_text(g.nodes[id].name);
}

std::string attr_text(const AttrValue& v) {
  if (const int64_t* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const double* d = std::get_if<double>(&v)) return text::format_double(*d, true);
  if (const bool* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const std::string* s = std::get_if<std::string>(&v)) return text::quote(*s);
  const auto& list = std::get<std::vector<int64_t>>(v);
  std::string s = "[";
  for (size_t i = 0; i < list.size(); ++i) s += (i ? ", " : "") + std::to_string(list[i]);
  return s + "]";
}

}  // namespace

std::string print_node(const Graph& g, const Node& n) {
  std::vector<std::string> args;
  for (int in : n.inputs) args.push_back(node_ref(g, in));
  if (n.op == "constant") {
    if (n.values.size() == 1) {
      args.push_back("value=" + text::format_double(n.values[0], false));
    } else {
      std::string s = "values=[";
      for (size_t i = 0; i < n.values.size(); ++i) s += (i ? ", " : "") + text::format_double(n.values[i], false);
      args.push_back(s + "]");
    }
  }
  const bool is_define = n.op == "define";
  const bool has_def = is_define || n.op == "define_grad";  // the node carries a UserDef
  for (const auto& [key, value] : n.attrs) {
    if (is_define && key == "shape") continue;  // the type comment gives it
    if (has_def && (key == "vars" || key == "rdoms" || key == "body"))
      fail(n.op, " '", n.name, "': has an attribute '", key, "', which the text form reserves for the definition");
    if (n.op == "constant" && (key == "value" || key == "values"))
      fail("constant '", n.name, "': has an attribute '", key, "', which the text form reserves for its values");
    args.push_back(text::name_text(key) + "=" + attr_text(value));
  }
  if (has_def) {
    if (!n.user) fail(n.op, " '", n.name, "': has no definition to print");
    std::vector<std::string> names;
    std::vector<TensorType> types;
    // The body reads the inputs but a define_grad's last one (its cotangent).
    std::vector<int> read = n.inputs;
    if (!is_define && !read.empty()) read.pop_back();
    for (int in : read) {
      bool ok = in >= 0 && in < static_cast<int>(g.nodes.size());
      names.push_back(ok ? g.nodes[in].name : "<no node " + std::to_string(in) + ">");
      types.push_back(ok ? g.nodes[in].type : TensorType{});
    }
    text::UserDefText t;
    try {
      t = text::print_user_def(*n.user, names, types);
    } catch (const Error& e) {
      fail(n.op, " '", n.name, "': ", e.what());
    }
    args.push_back("vars=" + text::format_vars(t.vars));
    args.push_back("rdoms=" + text::format_rdoms(t.rdoms));
    args.push_back("body=" + text::quote(t.body));
  }
  std::string s = text::name_text(n.name) + " = " + text::name_text(n.op) + "(";
  for (size_t i = 0; i < args.size(); ++i) s += (i ? ", " : "") + args[i];
  return s + ")  # " + to_string(n.type);
}

std::string print(const Graph& g) {
  std::string s = "graph " + text::name_text(g.name) + " {\n";
  for (const Node& n : g.nodes) s += "  " + print_node(g, n) + "\n";
  for (const GraphOutput& o : g.outputs) s += "  output " + text::name_text(o.name) + " = " + node_ref(g, o.node) + "\n";
  return s + "}\n";
}

}  // namespace tessera
