// VJP rules for matmul (batch dims broadcast: each gradient is summed back to
// its operand's shape) and linear (with and without bias: x gets g . W, the
// weight gets g^T x over every leading dim, the bias the sum of g). The
// rule for attention lives in vjp_nn.cpp.
#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

using Grads = std::vector<Tensor>;

Tensor transpose_last(Tensor t) { return transpose(t, t.rank() - 2, t.rank() - 1); }

const bool registered = [] {
  register_vjp("matmul", [](const VjpContext& c) -> Grads {
    const Tensor &a = c.inputs[0], &b = c.inputs[1], &g = c.cotangent;
    const Shape sa = a.shape(), sb = b.shape();  // copies: adding nodes moves the graph's nodes
    Grads r(2);
    if (c.needs_grad[0]) r[0] = sum_to_shape(matmul(g, transpose_last(b)), sa);
    if (c.needs_grad[1]) r[1] = sum_to_shape(matmul(transpose_last(a), g), sb);
    return r;
  });
  register_vjp("linear", [](const VjpContext& c) -> Grads {
    const Tensor &x = c.inputs[0], &w = c.inputs[1], &g = c.cotangent;
    const int64_t out = w.shape()[0], in = w.shape()[1];
    Grads r(c.inputs.size());
    if (c.needs_grad[0]) r[0] = linear(g, transpose(w, 0, 1));  // g . W: [..., in]
    if (c.needs_grad[1]) {
      // Every leading dim of x and g is a batch dim: flatten them to rows.
      const int64_t rows = x.type().numel() / in;
      Tensor g2 = g.rank() == 2 ? g : reshape(g, {rows, out});
      Tensor x2 = x.rank() == 2 ? x : reshape(x, {rows, in});
      r[1] = matmul(transpose(g2, 0, 1), x2);
    }
    if (c.inputs.size() > 2 && c.needs_grad[2]) r[2] = sum_to_shape(g, Shape(c.inputs[2].shape()));
    return r;
  });
  return true;
}();

}  // namespace

void link_linalg_vjps() { (void)registered; }

}  // namespace tessera
