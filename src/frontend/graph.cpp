// Graph lookups and attribute readers.
#include "tessera/graph.h"

#include "tessera/error.h"

namespace tessera {

namespace {
template <typename T>
const T& get_attr(const Attrs& a, const std::string& key, const std::string& op, const char* what) {
  auto it = a.find(key);
  if (it == a.end()) fail(op, ": missing attribute '", key, "'");
  if (const T* v = std::get_if<T>(&it->second)) return *v;
  fail(op, ": attribute '", key, "' must be ", what);
}
}  // namespace

int64_t attr_int(const Attrs& a, const std::string& key, const std::string& op) {
  return get_attr<int64_t>(a, key, op, "an integer");
}
double attr_float(const Attrs& a, const std::string& key, const std::string& op) {
  auto it = a.find(key);
  if (it != a.end())
    if (const int64_t* v = std::get_if<int64_t>(&it->second)) return static_cast<double>(*v);
  return get_attr<double>(a, key, op, "a number");
}
bool attr_bool(const Attrs& a, const std::string& key, const std::string& op) {
  return get_attr<bool>(a, key, op, "true or false");
}
const std::string& attr_str(const Attrs& a, const std::string& key, const std::string& op) {
  return get_attr<std::string>(a, key, op, "a string");
}
const std::vector<int64_t>& attr_ints(const Attrs& a, const std::string& key, const std::string& op) {
  return get_attr<std::vector<int64_t>>(a, key, op, "a list of integers");
}

const Node& Graph::node(int id) const {
  if (id < 0 || id >= static_cast<int>(nodes.size()))
    fail("graph '", name, "': no node with id ", id, " (it has ", nodes.size(), ")");
  return nodes[id];
}

const Node& Graph::node(const std::string& n) const {
  int id = find(n);
  if (id < 0) fail("graph '", name, "': no node named '", n, "'");
  return nodes[id];
}

int Graph::find(const std::string& n) const {
  for (const Node& x : nodes)
    if (x.name == n) return x.id;
  return -1;
}

std::vector<int> Graph::inputs() const {
  std::vector<int> r;
  for (const Node& n : nodes)
    if (n.op == "input") r.push_back(n.id);
  return r;
}

std::vector<int> Graph::params() const {
  std::vector<int> r;
  for (const Node& n : nodes)
    if (n.op == "param") r.push_back(n.id);
  return r;
}

std::vector<int> Graph::use_counts() const {
  std::vector<int> uses(nodes.size(), 0);
  for (const Node& n : nodes)
    for (int i : n.inputs)
      if (i >= 0 && i < static_cast<int>(nodes.size())) ++uses[i];
  for (const GraphOutput& o : outputs)
    if (o.node >= 0 && o.node < static_cast<int>(nodes.size())) ++uses[o.node];
  return uses;
}

}  // namespace tessera
