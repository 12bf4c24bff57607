// Graph: the tensor program, an SSA list of nodes in topological order.
//
// Each Node names its op, its inputs (earlier node ids), its attributes and
// its output TensorType. What the op computes (its algorithm, a Halide-style
// pure definition) is looked up by op name in the op registry
// (src/frontend/op_registry.h); a user-defined `define` node carries its own
// definition in `user`. A Graph is a value: transforms copy and rebuild it.
// This header does not build graphs (see builder.h) or run them (runtime.h).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tessera/dtype.h"

namespace tessera {

// An attribute value. Integer lists hold axes, shapes and permutations.
using AttrValue = std::variant<int64_t, double, bool, std::string, std::vector<int64_t>>;
// Ordered, so that printing and hashing are deterministic.
using Attrs = std::map<std::string, AttrValue>;

// Attribute readers that throw Error naming the op and attribute when missing or mistyped.
int64_t attr_int(const Attrs& a, const std::string& key, const std::string& op);
double attr_float(const Attrs& a, const std::string& key, const std::string& op);  // accepts ints
bool attr_bool(const Attrs& a, const std::string& key, const std::string& op);
const std::string& attr_str(const Attrs& a, const std::string& key, const std::string& op);
const std::vector<int64_t>& attr_ints(const Attrs& a, const std::string& key, const std::string& op);

struct UserDef;  // a `define` node's Halide-style definition (src/frontend/user_def.h)

struct Node {
  int id = -1;
  std::string name;  // unique within the graph: "x", "fc1.weight", "t5"
  std::string op;    // "input", "param", "constant", "add", "matmul", "define", ...
  std::vector<int> inputs;
  Attrs attrs;
  TensorType type;
  std::vector<double> values;              // op == "constant": 1 value (splat) or numel values
  std::shared_ptr<const UserDef> user;      // op == "define" or "define_grad"

  bool is_leaf() const { return op == "input" || op == "param" || op == "constant"; }
};

struct GraphOutput {
  std::string name;
  int node = -1;
};

class Graph {
 public:
  std::string name = "graph";
  std::vector<Node> nodes;            // nodes[i].id == i; inputs of a node precede it
  std::vector<GraphOutput> outputs;   // named results

  const Node& node(int id) const;
  const Node& node(const std::string& name) const;  // throws Error if absent
  int find(const std::string& name) const;          // -1 if absent
  std::vector<int> inputs() const;                  // ids of "input" nodes, in order
  std::vector<int> params() const;                  // ids of "param" nodes, in order
  // Number of uses of every node (as an input or a graph output).
  std::vector<int> use_counts() const;
};

}  // namespace tessera
