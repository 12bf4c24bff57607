// Dead-code elimination: removes the nodes no graph output depends on.
//
// Inputs and params always stay (they are the graph's interface), even when
// nothing reads them any more; constants stay only when used. Names are kept; ids are renumbered.
// This pass does not merge, fold or rewrite anything.
#include "graph_rewrite.h"
#include "tessera/passes.h"

namespace tessera {

Pass dce() {
  return Pass{"dce", [](const Graph& g) { return keep_only(g, live_nodes(g)); }};
}

}  // namespace tessera
