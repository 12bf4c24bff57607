// Graph transforms and the PassManager that runs them.
//
// A Pass is a pure Graph -> Graph function with a name. The PassManager runs
// an ordered list of passes, verifies the graph after each, records each
// pass's wall time and node counts, and, when the environment variable
// TESSERA_DUMP names a folder, writes each pass's output graph there as text
// ("00-input.txt", "01-dce.txt", ...). The passes themselves live in
// src/transforms, one per file.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tessera/graph.h"

namespace tessera {

struct Pass {
  std::string name;
  std::function<Graph(const Graph&)> run;
};

struct VerifyOptions {
  // A graph input or param that nothing reads is an error in a graph a user
  // builds (GraphBuilder::build), where it is almost always a mistake; after
  // transforms (dce, autodiff's split) it is normal, so passes allow it.
  bool allow_unused_args = false;
};

// Throws tessera::Error listing every problem found: a node whose stored type
// disagrees with its op's inference, an input that is not an earlier node
// (SSA order) or does not exist, a duplicate name, an unknown op, an output
// naming no node, and (unless allowed) a graph input or param nothing uses.
void verify(const Graph& g, const VerifyOptions& options = {});

Pass dce();       // removes nodes no output depends on (inputs and params stay)
Pass cse();       // merges structurally equal nodes; never merges random ops
Pass fold();      // evaluates nodes whose inputs are all constants
Pass simplify();  // x*1, x+0, permute of permute, reshape/cast chains, scalar broadcasts
Pass verifier();  // verify() as a pass (returns the graph unchanged)

struct PassRecord {
  std::string name;
  double seconds = 0;
  size_t nodes_before = 0;
  size_t nodes_after = 0;
};

class PassManager {
 public:
  PassManager() = default;
  PassManager(std::initializer_list<Pass> passes) : passes_(passes) {}
  PassManager& add(Pass p) {
    passes_.push_back(std::move(p));
    return *this;
  }
  Graph run(const Graph& g);
  const std::vector<PassRecord>& records() const { return records_; }
  // A table of the records, one line per pass.
  std::string report() const;

 private:
  std::vector<Pass> passes_;
  std::vector<PassRecord> records_;
};

}  // namespace tessera
