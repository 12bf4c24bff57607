// VJP rules for the shape ops: reshape, squeeze and unsqueeze (reshape the
// cotangent back), permute (the inverse permutation), broadcast_to
// (sum_to_shape), slice (the cotangent scattered into zeros: interleaved with
// zeros for step > 1, then padded with zeros by concat) and concat (a slice
// of the cotangent per input). Pure data movement: no arithmetic besides the
// sums of broadcast_to.
#include <algorithm>

#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

using Grads = std::vector<Tensor>;

Tensor zeros(GraphBuilder& b, const Shape& shape, DType t) {
  Tensor z = b.constant(0.0, t);
  return shape.empty() ? z : broadcast_to(z, shape);
}

Grads reshape_back(const VjpContext& c) {
  const Shape s = c.inputs[0].shape();
  return {c.cotangent.shape() == s ? c.cotangent : reshape(c.cotangent, s)};
}

// PyTorch's slice bound: negative counts from the end, clamped to [0, size].
int64_t slice_bound(int64_t v, int64_t size) {
  if (v < 0) v += size;
  return std::clamp<int64_t>(v, 0, size);
}

const bool registered = [] {
  register_vjp("reshape", reshape_back);
  register_vjp("squeeze", reshape_back);
  register_vjp("unsqueeze", reshape_back);
  register_vjp("permute", [](const VjpContext& c) -> Grads {
    const auto& dims = attr_ints(c.node.attrs, "dims", "permute");
    const int64_t rank = static_cast<int64_t>(dims.size());
    std::vector<int64_t> inv(dims.size());
    for (int64_t d = 0; d < rank; ++d) inv[dims[d] < 0 ? dims[d] + rank : dims[d]] = d;
    return {permute(c.cotangent, inv)};
  });
  register_vjp("broadcast_to", [](const VjpContext& c) -> Grads {
    return {sum_to_shape(c.cotangent, c.inputs[0].shape())};
  });
  register_vjp("slice", [](const VjpContext& c) -> Grads {
    const Attrs& a = c.node.attrs;
    const Shape in = c.inputs[0].shape();  // a copy: adding nodes moves the graph's nodes
    const int64_t rank = static_cast<int64_t>(in.size());
    int64_t axis = attr_int(a, "axis", "slice");
    if (axis < 0) axis += rank;
    const int64_t size = in[axis];
    const int64_t start = slice_bound(attr_int(a, "start", "slice"), size);
    const int64_t step = attr_int(a, "step", "slice");
    Tensor g = c.cotangent;
    const int64_t n = g.shape()[axis];
    DType t = g.dtype();
    if (step > 1 && n > 1) {
      // [.., n, ..] -> [.., n, step, ..] with the cotangent at position 0 of
      // each step, flattened, cut after the last element taken.
      Shape zs = g.shape();
      zs.insert(zs.begin() + axis + 1, step - 1);
      Tensor inter = concat({unsqueeze(g, axis + 1), zeros(c.b, zs, t)}, axis + 1);
      Shape flat = g.shape();
      flat[axis] = n * step;
      g = slice(reshape(inter, flat), axis, 0, (n - 1) * step + 1);
    }
    const int64_t len = g.shape()[axis];
    std::vector<Tensor> parts;
    auto pad = [&](int64_t width) {
      Shape s = in;
      s[axis] = width;
      parts.push_back(zeros(c.b, s, t));
    };
    if (start > 0) pad(start);
    parts.push_back(g);
    if (size - start - len > 0) pad(size - start - len);
    return {parts.size() == 1 ? g : concat(parts, axis)};
  });
  register_vjp("concat", [](const VjpContext& c) -> Grads {
    const int64_t rank = c.output.rank();
    int64_t axis = attr_int(c.node.attrs, "axis", "concat");
    if (axis < 0) axis += rank;
    Grads r;
    int64_t off = 0;
    for (size_t i = 0; i < c.inputs.size(); ++i) {
      const int64_t w = c.inputs[i].shape()[axis];
      if (c.needs_grad[i])
        r.push_back(w == c.output.shape()[axis] ? c.cotangent : slice(c.cotangent, axis, off, off + w));
      else
        r.emplace_back();
      off += w;
    }
    return r;
  });
  return true;
}();

}  // namespace

void link_shape_vjps() { (void)registered; }

}  // namespace tessera
