// Helpers the passes share for rebuilding a Graph: a GraphRewriter that
// copies nodes into a new graph with remapped inputs and dense ids, liveness
// (which nodes the outputs need, keeping the graph interface in use), pruning,
// and small constant and attribute readers.
//
// Nothing here decides what a pass rewrites; it only keeps the invariants
// (SSA order, node ids == positions, unique names) while a pass rebuilds.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "tessera/graph.h"

namespace tessera {

// Builds a new graph from `src` in one forward sweep. Each source node is
// either copied (its inputs remapped) or mapped to a node already in the new
// graph; passes may also emit nodes of their own.
class GraphRewriter {
 public:
  explicit GraphRewriter(const Graph& src);

  const Graph& source() const { return src_; }
  const Graph& result() const { return out_; }
  // The source node as it would be copied: inputs remapped to new ids, id unset.
  Node remapped(int old_id) const;
  // Appends `n` (its inputs already new ids), sets its id and returns it.
  // A node with an empty name gets a fresh one.
  int emit(Node n);
  // Appends a node of library op `op` (inputs already new ids), its type
  // inferred (errors name the op and its inputs); `name` empty: a fresh one.
  int emit_op(const std::string& op, std::vector<int> inputs, Attrs attrs = {}, std::string name = "");
  // Copies source node `old_id` (inputs remapped) and maps it to the copy.
  int copy(int old_id);
  // Records that source node `old_id` is now node `new_id` of the result.
  void map(int old_id, int new_id) { map_.at(old_id) = new_id; }
  int mapped(int old_id) const { return map_.at(old_id); }
  // A name "t<N>" used by neither the source nor the result.
  std::string fresh_name();
  // The result, with the source's name and outputs remapped. Every source
  // node an output names must have been mapped.
  Graph finish() &&;

 private:
  const Graph& src_;
  Graph out_;
  std::vector<int> map_;
  std::set<std::string> used_names_;
  int counter_ = 0;
};

// The nodes to keep when removing dead code: everything some output depends
// on, every input and param, the nodes `roots` marks (if not empty), and
// everything those depend on. So that every input and param stays in use (the
// verifier requires it), an input or param that no kept node reads keeps its
// first reader and what that reader depends on.
std::vector<bool> live_nodes(const Graph& g, const std::vector<bool>& roots = {});

// `g` without the nodes `keep` leaves out; ids renumbered, names kept,
// outputs remapped. Every kept node's inputs must be kept.
Graph keep_only(const Graph& g, const std::vector<bool>& keep);

// Removes the nodes that a rewrite orphaned: nodes dead in `after` whose name
// did not belong to a dead node of `before` (dead code the rewrite found is
// left for dce).
Graph remove_orphans(const Graph& before, const Graph& after);

// Element i of a constant node (a splat constant has one value).
inline double constant_value(const Node& n, int64_t i) { return n.values.size() == 1 ? n.values[0] : n.values[i]; }
// True when `n` is a constant whose elements all equal `v` (numerically).
bool is_splat_constant(const Node& n, double v);
// Same bits, or both NaN: the equality constants are merged and split by.
bool same_value(double a, double b);

// Normalizes a possibly negative axis; returns -1 when out of range.
int64_t norm_axis(int64_t axis, int64_t rank);

}  // namespace tessera
