// Views of dense buffers through reshape, permute, slice and concat nodes (see strided_view.h).
#include "strided_view.h"

#include <algorithm>
#include <sstream>

#include "halide_util.h"
#include "ops_common.h"

namespace tessera {

namespace {

std::vector<int64_t> row_major(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

// `v` reshaped to `shape` (of as many elements): PyTorch's rule for views
// (computeStride). The old dims fall into chunks that are contiguous in
// memory; each chunk's elements must be exactly some run of the new dims.
bool reshape(StridedView& v, const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 0);
  int nd = static_cast<int>(shape.size()) - 1;
  if (v.shape.empty()) return false;
  int64_t chunk_stride = v.strides.back(), chunk = 1, covered = 1;
  for (int d = static_cast<int>(v.shape.size()) - 1; d >= 0; --d) {
    chunk *= v.shape[d];
    const bool chunk_ends = d == 0 || (v.shape[d - 1] != 1 && v.strides[d - 1] != chunk * chunk_stride);
    if (!chunk_ends) continue;
    while (nd >= 0 && (covered < chunk || shape[nd] == 1)) {
      strides[nd] = covered * chunk_stride;
      covered *= shape[nd];
      --nd;
    }
    if (covered != chunk) return false;
    if (d > 0) {
      chunk_stride = v.strides[d - 1];
      chunk = covered = 1;
    }
  }
  if (nd != -1) return false;
  v.shape = shape;
  v.strides = std::move(strides);
  return true;
}

bool is_view_op(const Node& n) { return n.op == "reshape" || n.op == "permute" || n.op == "slice"; }

// The one node that reads `id` (readers[id] == 1), or -1.
int only_reader(const Graph& g, int id, const std::vector<int>& readers) {
  if (readers[id] != 1) return -1;
  for (size_t r = id + 1; r < g.nodes.size(); ++r)
    if (std::find(g.nodes[r].inputs.begin(), g.nodes[r].inputs.end(), id) != g.nodes[r].inputs.end())
      return static_cast<int>(r);
  return -1;  // read by a graph output
}

}  // namespace

StridedView StridedView::dense(int base, const Shape& shape) { return {base, 0, shape, row_major(shape)}; }

bool StridedView::is_dense() const { return offset == 0 && strides == row_major(shape); }

std::string StridedView::text() const {
  std::ostringstream o;
  o << "t" << base << " + " << offset << " " << to_string(shape) << " strides [";
  for (size_t i = 0; i < strides.size(); ++i) o << (i ? ", " : "") << strides[i];
  o << "]";
  return o.str();
}

std::optional<StridedView> read_view(const Graph& g, int id, const std::function<bool(int)>& stop) {
  std::vector<int> chain;  // from `id` down
  int at = id;
  while (!stop(at)) {
    if (!is_view_op(g.nodes[at])) return std::nullopt;
    chain.push_back(at);
    at = g.nodes[at].inputs[0];
  }
  StridedView v = StridedView::dense(at, g.nodes[at].type.shape);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& n = g.nodes[*it];
    if (n.op == "reshape") {
      if (!reshape(v, n.type.shape)) return std::nullopt;
    } else if (n.op == "permute") {  // out dim i is in dim dims[i]
      const std::vector<int64_t>& dims = attr_ints(n.attrs, "dims", "permute");
      StridedView p = v;
      for (size_t i = 0; i < dims.size(); ++i) {
        p.shape[i] = v.shape[dims[i]];
        p.strides[i] = v.strides[dims[i]];
      }
      v = std::move(p);
    } else {  // slice
      const opsutil::SliceSpec s = opsutil::resolve_slice(v.shape, n.attrs);
      v.offset += s.start * v.strides[s.axis];
      v.strides[s.axis] *= s.step;
      v.shape[s.axis] = s.length;
    }
  }
  return v;
}

std::optional<StridedView> write_view(const Graph& g, int id, int target, const std::vector<int>& readers) {
  std::vector<int> path = {id};  // from `id` up to `target`
  while (path.back() != target) {
    const int r = only_reader(g, path.back(), readers);
    if (r < 0 || r > target) return std::nullopt;
    path.push_back(r);
  }
  return write_view(g, path);
}

std::optional<StridedView> write_view(const Graph& g, const std::vector<int>& path) {
  const int target = path.back();
  StridedView v = StridedView::dense(target, g.nodes[target].type.shape);
  for (size_t i = path.size() - 1; i > 0; --i) {
    const Node& n = g.nodes[path[i]];
    const Shape& in = g.nodes[path[i - 1]].type.shape;
    if (n.op == "reshape") {
      if (!reshape(v, in)) return std::nullopt;
    } else if (n.op == "permute") {  // in dim dims[i] is out dim i
      const std::vector<int64_t>& dims = attr_ints(n.attrs, "dims", "permute");
      StridedView p = v;
      for (size_t d = 0; d < dims.size(); ++d) {
        p.shape[dims[d]] = v.shape[d];
        p.strides[dims[d]] = v.strides[d];
      }
      v = std::move(p);
    } else if (n.op == "concat") {  // the piece that path[i - 1] is
      const int64_t axis = normalize_axis(attr_int(n.attrs, "axis", "concat"), static_cast<int>(in.size()));
      int64_t start = 0;
      for (int x : n.inputs) {
        if (x == path[i - 1]) break;
        start += g.nodes[x].type.shape[axis];
      }
      v.offset += start * v.strides[axis];
      v.shape[axis] = in[axis];
    } else {
      return std::nullopt;
    }
  }
  return v;
}

}  // namespace tessera
