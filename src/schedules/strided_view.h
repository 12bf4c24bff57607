// strided_view: where the elements of a view node lie in the dense buffer of
// another node. A chain of reshape, permute and slice nodes over a
// materialized tensor reads that tensor's buffer at an offset and with
// strides; a chain of permute, reshape and concat nodes from a node to the
// one materialized tensor it feeds says where that node's elements would be
// written in it. Library calls (the fused attention kernels) use this to read
// and write such views in place instead of copying them to dense buffers.
//
// A reshape is a view when it only splits or merges dims that are
// contiguous in memory (PyTorch's rule for Tensor.view); other reshapes, and
// any other op, end the chain. This decides nothing about whether a call
// takes a given view.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tessera/graph.h"

namespace tessera {

struct StridedView {
  int base = -1;                 // the node whose dense (row-major) buffer holds the elements
  int64_t offset = 0;            // elements from the buffer's start
  Shape shape;                   // of the viewed node
  std::vector<int64_t> strides;  // elements, one per dim of `shape`

  // The view of a node's own dense buffer.
  static StridedView dense(int base, const Shape& shape);
  bool is_dense() const;  // offset 0 and row-major strides
  std::string text() const;  // "t3 + 768 [8, 12, 1024, 64] strides [2359296, 64, 2304, 1]"
};

// The view of node `id` read from the first node, going down through its
// reshape, permute and slice inputs, for which `stop` holds (that node may be
// `id` itself: a dense view). Nothing when the chain meets another op, or a
// reshape that is not a view, before `stop` holds.
std::optional<StridedView> read_view(const Graph& g, int id, const std::function<bool(int)>& stop);

// Where node `id`'s elements lie in the buffer of `target`, when `target` is
// reached from `id` through permute, reshape and concat nodes each read only
// by the next (`readers`: Graph::use_counts); `id` may be `target` itself.
// Nothing otherwise.
std::optional<StridedView> write_view(const Graph& g, int id, int target, const std::vector<int>& readers);
// The same along a given path: path[0] the node, path.back() the target,
// each node an input of the next (the caller checked who else reads them).
std::optional<StridedView> write_view(const Graph& g, const std::vector<int>& path);

}  // namespace tessera
