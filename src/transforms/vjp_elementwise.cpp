// VJP rules for the elementwise ops: unary math (neg abs exp log sqrt rsqrt
// tanh sigmoid relu silu gelu), float casts, binary arithmetic (add sub mul div
// pow maximum minimum) with broadcasting, and where.
//
// Each gradient is built at the output's shape and reduced back to the
// input's with sum_to_shape. Conventions follow PyTorch where the derivative
// is undefined: relu'(0) = 0, abs'(0) = 0, ties of maximum/minimum split the
// cotangent in halves, pow's gradients are 0 where PyTorch masks them.
// Comparisons, integer casts and where's condition get no gradient. The
// rules for nn ops live in vjp_nn.cpp.
#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

using Grads = std::vector<Tensor>;

Tensor scalar(const Tensor& like, double v) { return like.builder()->constant(v, like.dtype()); }
// A comparison result as 0/1 in `like`'s dtype.
Tensor as_mask(const Tensor& cmp, const Tensor& like) { return cast(cmp, like.dtype()); }

// A unary rule from the derivative expressed with (x, y, g).
void unary(const std::string& op, std::function<Tensor(Tensor x, Tensor y, Tensor g)> grad) {
  register_vjp(op, [grad](const VjpContext& c) -> Grads { return {grad(c.inputs[0], c.output, c.cotangent)}; });
}

const bool registered = [] {
  unary("neg", [](Tensor, Tensor, Tensor g) { return neg(g); });
  unary("abs", [](Tensor x, Tensor, Tensor g) {
    Tensor zero = scalar(x, 0);
    return g * (as_mask(gt(x, zero), x) - as_mask(lt(x, zero), x));  // sign(x); 0 at 0
  });
  unary("exp", [](Tensor, Tensor y, Tensor g) { return g * y; });
  unary("log", [](Tensor x, Tensor, Tensor g) { return g / x; });
  unary("sqrt", [](Tensor, Tensor y, Tensor g) { return g / (y * 2.0); });
  unary("rsqrt", [](Tensor, Tensor y, Tensor g) { return g * (y * y * y * -0.5); });
  unary("tanh", [](Tensor, Tensor y, Tensor g) { return g * (1.0 - y * y); });
  unary("sigmoid", [](Tensor, Tensor y, Tensor g) { return g * (y * (1.0 - y)); });
  // From the output: relu(x) > 0 exactly where x > 0, and x need not be kept
  // (a GPU plan computes relu as its product's epilogue, library_gemm.h).
  unary("relu", [](Tensor, Tensor y, Tensor g) { return g * as_mask(gt(y, scalar(y, 0)), y); });
  unary("silu", [](Tensor x, Tensor, Tensor g) {
    Tensor s = sigmoid(x);
    return g * (s * (1.0 + x * (1.0 - s)));
  });
  register_vjp("gelu", [](const VjpContext& c) -> Grads {
    return {gelu_grad(c.inputs[0], c.cotangent, attr_str(c.node.attrs, "approximate", "gelu"))};
  });
  register_vjp("cast", [](const VjpContext& c) -> Grads {
    // Float to float: the cotangent cast back. From or to an integer or bool: none.
    const Tensor& x = c.inputs[0];
    if (!is_float(x.dtype()) || !is_float(c.output.dtype())) return {Tensor()};
    return {cast(c.cotangent, x.dtype())};
  });

  // Binary ops: gradients at the output shape, then summed to each input's shape.
  auto binary = [](const std::string& op, std::function<Grads(Tensor a, Tensor b, Tensor y, Tensor g,
                                                              const std::vector<bool>& need)> grad) {
    register_vjp(op, [grad](const VjpContext& c) -> Grads {
      Grads gs = grad(c.inputs[0], c.inputs[1], c.output, c.cotangent, c.needs_grad);
      for (size_t i = 0; i < 2; ++i) {
        const Shape shape = c.inputs[i].shape();  // copied: adding nodes moves the graph's nodes
        gs[i] = c.needs_grad[i] && gs[i].defined() ? sum_to_shape(gs[i], shape) : Tensor();
      }
      return gs;
    });
  };
  binary("add", [](Tensor, Tensor, Tensor, Tensor g, const std::vector<bool>&) -> Grads { return {g, g}; });
  binary("sub", [](Tensor, Tensor, Tensor, Tensor g, const std::vector<bool>& need) -> Grads {
    return {g, need[1] ? neg(g) : Tensor()};
  });
  binary("mul", [](Tensor a, Tensor b, Tensor, Tensor g, const std::vector<bool>& need) -> Grads {
    return {need[0] ? g * b : Tensor(), need[1] ? g * a : Tensor()};
  });
  binary("div", [](Tensor, Tensor b, Tensor y, Tensor g, const std::vector<bool>& need) -> Grads {
    Tensor ga = g / b;                                     // d(a/b)/da = 1/b
    return {need[0] ? ga : Tensor(), need[1] ? neg(ga * y) : Tensor()};  // d/db = -a/b^2 = -y/b
  });
  binary("pow", [](Tensor a, Tensor b, Tensor y, Tensor g, const std::vector<bool>& need) -> Grads {
    Tensor zero = scalar(a, 0);
    Grads r(2);
    // As PyTorch: d/da = b a^(b-1), 0 where b == 0; d/db = y log a, 0 where a == 0 and b >= 0.
    if (need[0]) r[0] = where(eq(b, zero), zero, g * (b * pow(a, b - 1.0)));
    if (need[1]) {
      Tensor gb = g * (y * log(a));
      r[1] = where(eq(a, zero), where(ge(b, zero), zero, gb), gb);
    }
    return r;
  });
  // maximum/minimum: the cotangent goes to the selected input; on ties half to each (as PyTorch).
  auto select_rule = [](bool is_max) {
    return [is_max](Tensor a, Tensor b, Tensor, Tensor g, const std::vector<bool>&) -> Grads {
      // Selects rather than 0/1 masks: Halide 14 miscompiles f64(bool) * 0.5
      // on x86 (a widening_mul of uint16 that fails codegen).
      Tensor zero = scalar(g, 0);
      Tensor tie = where(eq(a, b), g * 0.5, zero);
      return {where(is_max ? gt(a, b) : lt(a, b), g, tie), where(is_max ? lt(a, b) : gt(a, b), g, tie)};
    };
  };
  binary("maximum", select_rule(true));
  binary("minimum", select_rule(false));
  register_vjp("where", [](const VjpContext& c) -> Grads {
    const Tensor &cond = c.inputs[0], &g = c.cotangent;
    Tensor zero = scalar(g, 0);
    Grads r(3);
    const Shape sa = c.inputs[1].shape(), sb = c.inputs[2].shape();  // copies (see binary)
    if (c.needs_grad[1]) r[1] = sum_to_shape(where(cond, g, zero), sa);
    if (c.needs_grad[2]) r[2] = sum_to_shape(where(cond, zero, g), sb);
    return r;
  });
  return true;
}();

}  // namespace

void link_elementwise_vjps() { (void)registered; }

}  // namespace tessera
