// Elementwise ops: unary math, binary arithmetic and comparisons with NumPy
// broadcasting, where, cast. Each is a pure Halide definition over the output
// index. f16 and bf16 math is computed in f32 and rounded back once.
#include <cmath>

#include "halide_util.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

using Halide::Expr;
using Halide::Func;

// Float math on a possibly half-precision value: widen, apply, round back.
Expr half_safe(DType t, const Expr& x, const std::function<Expr(Expr)>& f) {
  if (t == DType::f16 || t == DType::bf16) return Halide::cast(halide_type(t), f(Halide::cast<float>(x)));
  return f(x);
}

struct Unary {
  const char* name;
  bool float_only;
  std::function<Expr(Expr)> fn;  // on a float (f32/f64) or, if !float_only, any numeric value
};

const std::vector<Unary>& unary_ops() {
  static const std::vector<Unary> ops = {
      {"neg", false, [](Expr x) { return -x; }},
      {"abs", false, [](Expr x) { return Halide::select(x < 0, -x, x); }},
      {"relu", false, [](Expr x) { return Halide::max(x, Halide::Internal::make_zero(x.type())); }},
      {"exp", true, [](Expr x) { return exp_expr(x); }},
      {"log", true, [](Expr x) { return Halide::log(x); }},
      {"sqrt", true, [](Expr x) { return Halide::sqrt(x); }},
      {"rsqrt", true, [](Expr x) { return Halide::Internal::make_one(x.type()) / Halide::sqrt(x); }},
      {"tanh", true, [](Expr x) { return tanh_expr(x); }},
      {"sigmoid", true, [](Expr x) { return Halide::Internal::make_one(x.type()) / (Halide::Internal::make_one(x.type()) + exp_expr(-x)); }},
      {"silu", true, [](Expr x) { return x / (Halide::Internal::make_one(x.type()) + exp_expr(-x)); }},
  };
  return ops;
}

void register_unary(const Unary& u) {
  OpDef d;
  d.name = u.name;
  d.kind = OpKind::elementwise;
  bool float_only = u.float_only;
  std::string name = u.name;
  d.infer = [float_only, name](const std::vector<TensorType>& in, const Attrs&) {
    if (in[0].dtype == DType::boolean || (float_only && !is_float(in[0].dtype)))
      fail("needs a ", float_only ? "float" : "numeric", " input, got ", to_string(in[0]));
    return in[0];
  };
  auto fn = u.fn;
  d.define = [fn](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    DType t = c.node.type.dtype;
    Expr x = at(c.inputs[0], as_exprs(v));
    return Definition{make_func(c.node.name, v, is_float(t) ? half_safe(t, x, fn) : fn(x)), {}};
  };
  register_op(std::move(d));
}

}  // namespace

// erf: Halide's own for f32 (accurate to the last bits). Halide 14 has none
// for f64, so f64 uses Numerical Recipes' erfc Chebyshev fit, whose
// fractional error is below 1.2e-7: f64 gelu is accurate to about 1e-7.
Expr erf_expr(const Expr& x) {
  if (x.type() == Halide::Float(32)) return Halide::erf(x);
  Halide::Type t = x.type();
  auto c = [&](double v) { return Halide::cast(t, Expr(v)); };
  Expr z = Halide::abs(x);
  Expr tt = c(1.0) / (c(1.0) + c(0.5) * z);
  Expr poly = -z * z - c(1.26551223) +
              tt * (c(1.00002368) +
                    tt * (c(0.37409196) +
                          tt * (c(0.09678418) +
                                tt * (c(-0.18628806) +
                                      tt * (c(0.27886807) +
                                            tt * (c(-1.13520398) +
                                                  tt * (c(1.48851587) + tt * (c(-0.82215223) + tt * c(0.17087277)))))))));
  Expr erfc_z = tt * Halide::exp(poly);
  Expr r = c(1.0) - erfc_z;
  return Halide::select(x >= c(0.0), r, -r);
}

namespace {

Expr gelu_expr(const Expr& x, bool tanh_form) {
  Halide::Type t = x.type();
  auto c = [&](double v) { return Halide::cast(t, Expr(v)); };
  if (tanh_form) {
    // x/2 (1 + tanh(u)) == x / (1 + e^-2u): one exp and one division, and
    // accurate at both tails.
    Expr u = c(std::sqrt(2.0 / M_PI)) * (x + c(0.044715) * x * x * x);
    return x / (c(1.0) + exp_expr(c(-2.0) * u));
  }
  return c(0.5) * x * (c(1.0) + erf_expr(x * c(M_SQRT1_2)));
}

TensorType same_float(const std::vector<TensorType>& in) {
  if (!is_float(in[0].dtype)) fail("needs a float input, got ", to_string(in[0]));
  return in[0];
}

// f64 -> f32 rounding to odd, so that a further rounding to f16/bf16 equals
// rounding the f64 directly (through a plain f32 it would round twice).
Expr f64_to_f32_round_odd(const Expr& x) {
  Expr f = Halide::cast<float>(x);
  Expr back = Halide::cast<double>(f);
  Expr bits = Halide::reinterpret<uint32_t>(f);
  bits = Halide::select(Halide::abs(back) > Halide::abs(x), bits - 1, bits);  // truncate toward zero
  Expr odd = Halide::reinterpret<float>(bits | Halide::cast<uint32_t>(1));
  return Halide::select(back == x || Halide::abs(x) > Halide::Expr(3.4028234663852886e38), f, odd);
}

struct Binary {
  const char* name;
  bool comparison;
  bool float_only;
  std::function<Expr(Expr, Expr)> fn;
};

const std::vector<Binary>& binary_ops() {
  static const std::vector<Binary> ops = {
      {"add", false, false, [](Expr a, Expr b) { return a + b; }},
      {"sub", false, false, [](Expr a, Expr b) { return a - b; }},
      {"mul", false, false, [](Expr a, Expr b) { return a * b; }},
      {"div", false, false,
       [](Expr a, Expr b) {
         if (a.type().is_float()) return a / b;
         // Halide's integer division is Euclidean (the remainder is never
         // negative); PyTorch's rounds toward zero. They differ when a < 0
         // and the division is inexact: step q one toward zero.
         Expr q = a / b;
         Expr r = a - q * b;
         Halide::Expr zero = Halide::Internal::make_zero(a.type());
         Halide::Expr one = Halide::Internal::make_one(a.type());
         return Halide::select(r != zero && a < zero, q + Halide::select(b > zero, one, -one), q);
       }},
      {"pow", false, true, [](Expr a, Expr b) { return Halide::pow(a, b); }},
      {"maximum", false, false, [](Expr a, Expr b) { return Halide::max(a, b); }},
      {"minimum", false, false, [](Expr a, Expr b) { return Halide::min(a, b); }},
      {"eq", true, false, [](Expr a, Expr b) { return a == b; }},
      {"ne", true, false, [](Expr a, Expr b) { return a != b; }},
      {"lt", true, false, [](Expr a, Expr b) { return a < b; }},
      {"le", true, false, [](Expr a, Expr b) { return a <= b; }},
      {"gt", true, false, [](Expr a, Expr b) { return a > b; }},
      {"ge", true, false, [](Expr a, Expr b) { return a >= b; }},
  };
  return ops;
}

void register_binary(const Binary& op) {
  OpDef d;
  d.name = op.name;
  d.kind = OpKind::elementwise;
  d.min_inputs = d.max_inputs = 2;
  bool cmp = op.comparison, float_only = op.float_only;
  d.infer = [cmp, float_only](const std::vector<TensorType>& in, const Attrs&) {
    if (in[0].dtype != in[1].dtype)
      fail("dtypes differ: ", to_string(in[0]), " and ", to_string(in[1]), " (insert a cast)");
    if (float_only && !is_float(in[0].dtype)) fail("needs float inputs, got ", to_string(in[0]));
    if (!cmp && in[0].dtype == DType::boolean) fail("needs numeric inputs, got ", to_string(in[0]));
    return TensorType{cmp ? DType::boolean : in[0].dtype, broadcast_shapes(in[0].shape, in[1].shape)};
  };
  auto fn = op.fn;
  d.define = [fn, cmp](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    auto idx = as_exprs(v);
    const Shape& out = c.node.type.shape;
    Expr a = at(c.inputs[0], broadcast_index(c.input_types[0].shape, out, idx));
    Expr b = at(c.inputs[1], broadcast_index(c.input_types[1].shape, out, idx));
    DType t = c.input_types[0].dtype;
    Expr r;
    if (t == DType::f16 || t == DType::bf16) {
      r = fn(Halide::cast<float>(a), Halide::cast<float>(b));
      if (!cmp) r = Halide::cast(halide_type(t), r);
    } else {
      r = fn(a, b);
    }
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(d));
}

const bool registered = [] {
  for (const Unary& u : unary_ops()) register_unary(u);
  for (const Binary& b : binary_ops()) register_binary(b);

  OpDef gelu;
  gelu.name = "gelu";
  gelu.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    const std::string& form = attr_str(a, "approximate", "gelu");
    if (form != "none" && form != "tanh") fail("approximate must be \"none\" or \"tanh\", got \"", form, "\"");
    return same_float(in);
  };
  gelu.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    bool tanh_form = attr_str(c.node.attrs, "approximate", "gelu") == "tanh";
    Expr x = at(c.inputs[0], as_exprs(v));
    Expr r = half_safe(c.node.type.dtype, x, [&](Expr y) { return gelu_expr(y, tanh_form); });
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(gelu));

  OpDef cast;
  cast.name = "cast";
  cast.infer = [](const std::vector<TensorType>& in, const Attrs& a) {
    return TensorType{parse_dtype(attr_str(a, "dtype", "cast")), in[0].shape};
  };
  cast.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    Expr x = at(c.inputs[0], as_exprs(v));
    DType from = c.input_types[0].dtype, to = c.node.type.dtype;
    Expr r;
    if (to == DType::boolean) {
      r = x != Halide::Internal::make_zero(x.type());
    } else if (is_float(from) && !is_float(to)) {
      // Round toward zero through f64 so that every float type truncates alike.
      r = Halide::cast(halide_type(to), Halide::trunc(Halide::cast<double>(x)));
    } else if (from == DType::f64 && (to == DType::f16 || to == DType::bf16)) {
      r = Halide::cast(halide_type(to), f64_to_f32_round_odd(x));
    } else if ((from == DType::f16 || from == DType::bf16) && (to == DType::f16 || to == DType::bf16)) {
      r = Halide::cast(halide_type(to), Halide::cast<float>(x));
    } else {
      r = Halide::cast(halide_type(to), x);
    }
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(cast));

  OpDef where;
  where.name = "where";
  where.min_inputs = where.max_inputs = 3;
  where.infer = [](const std::vector<TensorType>& in, const Attrs&) {
    if (in[0].dtype != DType::boolean) fail("the condition must be bool, got ", to_string(in[0]));
    if (in[1].dtype != in[2].dtype) fail("dtypes differ: ", to_string(in[1]), " and ", to_string(in[2]));
    return TensorType{in[1].dtype, broadcast_shapes(in[0].shape, broadcast_shapes(in[1].shape, in[2].shape))};
  };
  where.define = [](const DefineContext& c) {
    auto v = make_vars(c.node.type.rank());
    auto idx = as_exprs(v);
    const Shape& out = c.node.type.shape;
    Expr r = Halide::select(at(c.inputs[0], broadcast_index(c.input_types[0].shape, out, idx)),
                            at(c.inputs[1], broadcast_index(c.input_types[1].shape, out, idx)),
                            at(c.inputs[2], broadcast_index(c.input_types[2].shape, out, idx)));
    return Definition{make_func(c.node.name, v, r), {}};
  };
  register_op(std::move(where));
  return true;
}();

Tensor unary(const char* op, Tensor x) { return x.builder()->add(op, {x}); }
Tensor binary(const char* op, Tensor a, Tensor b) {
  if (!a.defined() || !b.defined()) fail(op, ": an input is an undefined Tensor");
  return a.builder()->add(op, {a, b});
}
Tensor scalar_like(Tensor t, double v) {
  if (!t.defined()) fail("arithmetic with an undefined Tensor");
  return t.builder()->constant(v, t.dtype());
}

}  // namespace

void link_elementwise_ops() { (void)registered; }

Tensor neg(Tensor x) { return unary("neg", x); }
Tensor abs(Tensor x) { return unary("abs", x); }
Tensor exp(Tensor x) { return unary("exp", x); }
Tensor log(Tensor x) { return unary("log", x); }
Tensor sqrt(Tensor x) { return unary("sqrt", x); }
Tensor rsqrt(Tensor x) { return unary("rsqrt", x); }
Tensor tanh(Tensor x) { return unary("tanh", x); }
Tensor sigmoid(Tensor x) { return unary("sigmoid", x); }
Tensor relu(Tensor x) { return unary("relu", x); }
Tensor silu(Tensor x) { return unary("silu", x); }
Tensor gelu(Tensor x, const std::string& approximate) {
  return x.builder()->add("gelu", {x}, {{"approximate", approximate}});
}
Tensor cast(Tensor x, DType dtype) { return x.builder()->add("cast", {x}, {{"dtype", std::string(dtype_name(dtype))}}); }

Tensor add(Tensor a, Tensor b) { return binary("add", a, b); }
Tensor sub(Tensor a, Tensor b) { return binary("sub", a, b); }
Tensor mul(Tensor a, Tensor b) { return binary("mul", a, b); }
Tensor div(Tensor a, Tensor b) { return binary("div", a, b); }
Tensor pow(Tensor a, Tensor b) { return binary("pow", a, b); }
Tensor maximum(Tensor a, Tensor b) { return binary("maximum", a, b); }
Tensor minimum(Tensor a, Tensor b) { return binary("minimum", a, b); }
Tensor eq(Tensor a, Tensor b) { return binary("eq", a, b); }
Tensor ne(Tensor a, Tensor b) { return binary("ne", a, b); }
Tensor lt(Tensor a, Tensor b) { return binary("lt", a, b); }
Tensor le(Tensor a, Tensor b) { return binary("le", a, b); }
Tensor gt(Tensor a, Tensor b) { return binary("gt", a, b); }
Tensor ge(Tensor a, Tensor b) { return binary("ge", a, b); }
Tensor where(Tensor cond, Tensor a, Tensor b) { return cond.builder()->add("where", {cond, a, b}); }

Tensor operator+(Tensor a, Tensor b) { return add(a, b); }
Tensor operator-(Tensor a, Tensor b) { return sub(a, b); }
Tensor operator*(Tensor a, Tensor b) { return mul(a, b); }
Tensor operator/(Tensor a, Tensor b) { return div(a, b); }
Tensor operator-(Tensor a) { return neg(a); }
Tensor operator+(Tensor a, double b) { return add(a, scalar_like(a, b)); }
Tensor operator-(Tensor a, double b) { return sub(a, scalar_like(a, b)); }
Tensor operator*(Tensor a, double b) { return mul(a, scalar_like(a, b)); }
Tensor operator/(Tensor a, double b) { return div(a, scalar_like(a, b)); }
Tensor operator+(double a, Tensor b) { return add(scalar_like(b, a), b); }
Tensor operator-(double a, Tensor b) { return sub(scalar_like(b, a), b); }
Tensor operator*(double a, Tensor b) { return mul(scalar_like(b, a), b); }
Tensor operator/(double a, Tensor b) { return div(scalar_like(b, a), b); }

}  // namespace tessera
