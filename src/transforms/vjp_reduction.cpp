// VJP rules for the reductions sum, mean and max {axes, keepdim}: the
// cotangent is reshaped to the kept-dims shape and broadcast back over the
// reduced axes (divided by the count for mean). max sends it to the arg-max
// positions, split evenly among ties (as PyTorch's amax). The norms, softmax
// and losses (reductions too) have their rules in vjp_nn.cpp.
#include <algorithm>

#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

using Grads = std::vector<Tensor>;

struct Reduced {
  std::vector<int64_t> axes;  // normalized, sorted
  Shape in;                   // the input shape (a copy: adding nodes moves the graph's nodes)
  Shape kept;                 // the input shape with the reduced dims set to 1
  int64_t count = 1;          // elements per reduced group
};

Reduced reduced(const VjpContext& c) {
  const Shape& in = c.inputs[0].shape();
  const int64_t rank = static_cast<int64_t>(in.size());
  Reduced r;
  for (int64_t a : attr_ints(c.node.attrs, "axes", c.node.op)) r.axes.push_back(a < 0 ? a + rank : a);
  if (r.axes.empty())
    for (int64_t d = 0; d < rank; ++d) r.axes.push_back(d);
  std::sort(r.axes.begin(), r.axes.end());
  r.in = in;
  r.kept = in;
  for (int64_t a : r.axes) {
    r.count *= in[a];
    r.kept[a] = 1;
  }
  return r;
}

Tensor reshape_if(Tensor t, const Shape& s) { return t.shape() == s ? t : reshape(t, s); }
Tensor broadcast_if(Tensor t, const Shape& s) { return t.shape() == s ? t : broadcast_to(t, s); }

const bool registered = [] {
  register_vjp("sum", [](const VjpContext& c) -> Grads {
    Reduced r = reduced(c);
    return {broadcast_if(reshape_if(c.cotangent, r.kept), r.in)};
  });
  register_vjp("mean", [](const VjpContext& c) -> Grads {
    Reduced r = reduced(c);
    Tensor g = reshape_if(c.cotangent, r.kept);
    if (r.count != 1) g = g / static_cast<double>(r.count);
    return {broadcast_if(g, r.in)};
  });
  register_vjp("max", [](const VjpContext& c) -> Grads {
    Reduced r = reduced(c);
    const Tensor& x = c.inputs[0];
    Tensor mask = cast(eq(x, reshape_if(c.output, r.kept)), x.dtype());  // 1 at every maximum
    Tensor count = sum(mask, r.axes, /*keepdim=*/true);
    return {mask * (reshape_if(c.cotangent, r.kept) / count)};
  });
  return true;
}();

}  // namespace

void link_reduction_vjps() { (void)registered; }

}  // namespace tessera
