// Library ops that only the backward of elementwise ops needs:
// gelu_grad{approximate}(x, grad) -> grad * gelu'(x), elementwise, for both
// forms of gelu (exact erf form and tanh approximation). A dedicated op
// because gelu'(x) needs erf, which the op library has no op for.
//
// f16/bf16 compute in f32 and round once. The VJP rule that uses it is in
// src/transforms/vjp_elementwise.cpp; nothing here differentiates anything
// (gelu_grad itself has no VJP rule: no second derivatives of gelu).
#include <cmath>

#include "halide_util.h"
#include "op_registry.h"
#include "ops_common.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;

// gelu'(x), in the (f32 or f64) type of x.
Expr gelu_derivative(const Expr& x, bool tanh_form) {
  Halide::Type t = x.type();
  auto c = [&](double v) { return Halide::cast(t, Expr(v)); };
  if (tanh_form) {
    // gelu = x/2 (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3):
    // gelu' = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) u'.
    const double k = std::sqrt(2.0 / M_PI);
    Expr u = c(k) * (x + c(0.044715) * x * x * x);
    Expr th = tanh_expr(u);
    Expr du = c(k) * (c(1.0) + c(3 * 0.044715) * x * x);
    return c(0.5) * (c(1.0) + th) + c(0.5) * x * (c(1.0) - th * th) * du;
  }
  // gelu = x Phi(x): gelu' = Phi(x) + x phi(x).
  Expr cdf = c(0.5) * (c(1.0) + erf_expr(x * c(M_SQRT1_2)));
  Expr pdf = c(1.0 / std::sqrt(2.0 * M_PI)) * Halide::exp(c(-0.5) * x * x);
  return cdf + x * pdf;
}

const bool registered = [] {
  OpDef d;
  d.name = "gelu_grad";
  d.kind = OpKind::elementwise;
  d.min_inputs = d.max_inputs = 2;
  d.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const std::string& form = attr_str(a, "approximate", "gelu_grad");
    if (form != "none" && form != "tanh") fail("approximate must be \"none\" or \"tanh\", got \"", form, "\"");
    if (!is_float(in[0].dtype)) fail("needs a float input, got ", to_string(in[0]));
    if (in[0] != in[1]) fail("x and grad must have the same type, got ", to_string(in[0]), " and ", to_string(in[1]));
    return in[0];
  };
  d.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    bool tanh_form = attr_str(c.node.attrs, "approximate", "gelu_grad") == "tanh";
    DType t = c.node.type.dtype;
    Halide::Type ct = opsutil::compute_type(t);
    Expr x = Halide::cast(ct, at(c.inputs[0], as_exprs(v)));
    Expr g = Halide::cast(ct, at(c.inputs[1], as_exprs(v)));
    Expr r = Halide::cast(halide_type(t), g * gelu_derivative(x, tanh_form));
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(d));
  return true;
}();

}  // namespace

void link_grad_ops() { (void)registered; }

Tensor gelu_grad(Tensor x, Tensor grad, const std::string& approximate) {
  if (!x.defined() || !grad.defined()) fail("gelu_grad: an input is an undefined Tensor");
  return x.builder()->add("gelu_grad", {x, grad}, {{"approximate", approximate}});
}

}  // namespace tessera
