// The reference semantics of `define` nodes: a recursive interpreter over the
// Halide Expr a UserDef carries (src/frontend/user_def.h), evaluated once per
// output element with the output Vars bound to the element's row-major index.
//
// Floats are computed in double (a Cast rounds to its target type); integers
// exactly, wrapped to their width after every operation, with Halide's
// semantics: division rounds down (Euclidean for negative divisors), mod is
// Euclidean, x / 0 == x % 0 == 0. Image calls read input k of the node
// (placeholders[k]) at row-major arguments. Canonical reductions
// "tessera.sum|maximum|minimum|product" iterate the RDom of the unbound RVars
// in their argument (respecting RDom::where). It does not lower, compile or
// simplify anything, and handles only the scalar IR a definition can contain.
#include <Halide.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "../../src/frontend/user_def.h"
#include "reference/reference_internal.h"

namespace tessera::ref::detail {

namespace {

using namespace Halide::Internal;
using Halide::Expr;
using Halide::Type;

struct Val {
  Type t;
  double f = 0;   // float types
  int64_t i = 0;  // int, uint and bool types
  bool truthy() const { return t.is_float() ? f != 0 : i != 0; }
  double as_double() const {
    if (t.is_float()) return f;
    if (t.is_uint() && t.bits() == 64) return static_cast<double>(static_cast<uint64_t>(i));
    return static_cast<double>(i);
  }
};

std::string type_name(const Type& t) {
  std::ostringstream os;
  os << t;
  return os.str();
}

int64_t wrap_bits(uint64_t x, int bits, bool is_signed) {
  if (bits >= 64) return static_cast<int64_t>(x);
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t u = x & mask;
  if (is_signed && (u >> (bits - 1)) != 0) u |= ~mask;
  return static_cast<int64_t>(u);
}

Val int_val(const Type& t, uint64_t x) {
  Val v{t};
  v.i = t.is_bool() ? (x != 0) : wrap_bits(x, t.bits(), t.is_int());
  return v;
}

double round_to_float_type(const Type& t, double x) {
  if (t.is_bfloat()) return round_float(x, 7, -126, std::ldexp(255.0, 120));
  switch (t.bits()) {
    case 16: return round_float(x, 10, -14, 65504.0);
    case 32: return static_cast<double>(static_cast<float>(x));
    default: return x;
  }
}

Val float_val(const Type& t, double x) {
  Val v{t};
  v.f = x;
  return v;
}

Val cast_to(const Type& t, const Val& x) {
  if (t.is_bool()) return int_val(t, x.truthy());
  if (t.is_float()) return float_val(t, round_to_float_type(t, x.as_double()));
  if (!x.t.is_float()) return int_val(t, static_cast<uint64_t>(x.i));
  // float -> int: truncate toward zero, then wrap (Halide leaves overflow undefined).
  double tr = std::trunc(x.f);
  if (!std::isfinite(tr)) return int_val(t, 0);
  constexpr double two64 = 18446744073709551616.0;
  double m = std::fmod(tr, two64);
  uint64_t u = m >= 0 ? static_cast<uint64_t>(m) : uint64_t{0} - static_cast<uint64_t>(-m);
  return int_val(t, u);
}

DType dtype_for(const Type& t) {
  if (t.is_bfloat() && t.bits() == 16) return DType::bf16;
  if (t.is_float() && t.bits() == 64) return DType::f64;
  if (t.is_float() && t.bits() == 32) return DType::f32;
  if (t.is_float() && t.bits() == 16) return DType::f16;
  if (t.is_bool()) return DType::boolean;
  if (t.is_int() && t.bits() == 64) return DType::i64;
  if (t.is_int() && t.bits() == 32) return DType::i32;
  if (t.is_int() && t.bits() == 8) return DType::i8;
  if (t.is_uint() && t.bits() == 8) return DType::u8;
  fail("the definition's type ", type_name(t), " has no tessera dtype");
}

bool is_reduction_call(const Call* c) {
  return c->call_type == Call::PureExtern && c->name.rfind(kReducePrefix, 0) == 0;
}

// The first RVar (in pre-order) that `env` does not bind, optionally not
// looking inside nested canonical reductions.
class FindUnboundRVar : public IRVisitor {
 public:
  FindUnboundRVar(const std::unordered_map<std::string, Val>& env, bool skip_nested)
      : env_(env), skip_nested_(skip_nested) {}
  ReductionDomain found;

 protected:
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (!found.defined() && v->reduction_domain.defined() && !env_.count(v->name)) found = v->reduction_domain;
  }
  void visit(const Call* c) override {
    if (skip_nested_ && is_reduction_call(c)) return;
    IRVisitor::visit(c);
  }

 private:
  const std::unordered_map<std::string, Val>& env_;
  bool skip_nested_;
};

class Interpreter {
 public:
  Interpreter(const UserDef& def, const std::vector<const RefTensor*>& in) : def_(def), in_(in) {}

  std::unordered_map<std::string, Val> env;

  Val eval(const Expr& e) {
    switch (e->node_type) {
      case IRNodeType::IntImm: return int_val(e.type(), static_cast<uint64_t>(e.as<IntImm>()->value));
      case IRNodeType::UIntImm: return int_val(e.type(), e.as<UIntImm>()->value);
      case IRNodeType::FloatImm: return float_val(e.type(), e.as<FloatImm>()->value);
      case IRNodeType::Cast: return cast_to(e.type(), eval(e.as<Cast>()->value));
      case IRNodeType::Variable: {
        const Variable* v = e.as<Variable>();
        auto it = env.find(v->name);
        if (it == env.end()) fail("the definition uses variable '", v->name, "', which is not bound");
        return it->second;
      }
      case IRNodeType::Add: return arith(e, e.as<Add>()->a, e.as<Add>()->b);
      case IRNodeType::Sub: return arith(e, e.as<Sub>()->a, e.as<Sub>()->b);
      case IRNodeType::Mul: return arith(e, e.as<Mul>()->a, e.as<Mul>()->b);
      case IRNodeType::Div: return arith(e, e.as<Div>()->a, e.as<Div>()->b);
      case IRNodeType::Mod: return arith(e, e.as<Mod>()->a, e.as<Mod>()->b);
      case IRNodeType::Min: return arith(e, e.as<Min>()->a, e.as<Min>()->b);
      case IRNodeType::Max: return arith(e, e.as<Max>()->a, e.as<Max>()->b);
      case IRNodeType::EQ: return compare(e, e.as<EQ>()->a, e.as<EQ>()->b);
      case IRNodeType::NE: return compare(e, e.as<NE>()->a, e.as<NE>()->b);
      case IRNodeType::LT: return compare(e, e.as<LT>()->a, e.as<LT>()->b);
      case IRNodeType::LE: return compare(e, e.as<LE>()->a, e.as<LE>()->b);
      case IRNodeType::GT: return compare(e, e.as<GT>()->a, e.as<GT>()->b);
      case IRNodeType::GE: return compare(e, e.as<GE>()->a, e.as<GE>()->b);
      case IRNodeType::And: {
        const And* n = e.as<And>();
        return int_val(e.type(), eval(n->a).truthy() && eval(n->b).truthy());
      }
      case IRNodeType::Or: {
        const Or* n = e.as<Or>();
        return int_val(e.type(), eval(n->a).truthy() || eval(n->b).truthy());
      }
      case IRNodeType::Not: return int_val(e.type(), !eval(e.as<Not>()->a).truthy());
      case IRNodeType::Select: {
        const Select* s = e.as<Select>();
        return eval(s->condition).truthy() ? eval(s->true_value) : eval(s->false_value);
      }
      case IRNodeType::Let: {
        const Let* l = e.as<Let>();
        Val v = eval(l->value);
        return with_binding(l->name, v, [&] { return eval(l->body); });
      }
      case IRNodeType::Call: return call(e.as<Call>());
      default: {
        std::ostringstream os;
        os << e;
        fail("the reference cannot interpret the Expr ", os.str());
      }
    }
  }

 private:
  template <typename Fn>
  Val with_binding(const std::string& name, const Val& v, Fn&& fn) {
    auto it = env.find(name);
    bool had = it != env.end();
    Val old = had ? it->second : Val{};
    env[name] = v;
    Val r = fn();
    if (had) env[name] = old;
    else env.erase(name);
    return r;
  }

  Val arith(const Expr& e, const Expr& ea, const Expr& eb) {
    const Val a = eval(ea), b = eval(eb);
    const Type t = e.type();
    const IRNodeType op = e->node_type;
    if (t.is_float()) {
      double x = a.f, y = b.f, r = 0;
      switch (op) {
        case IRNodeType::Add: r = x + y; break;
        case IRNodeType::Sub: r = x - y; break;
        case IRNodeType::Mul: r = x * y; break;
        case IRNodeType::Div: r = x / y; break;
        case IRNodeType::Mod: r = x - y * std::floor(x / y); break;  // Halide: sign of the divisor
        case IRNodeType::Min: r = std::min(x, y); break;
        case IRNodeType::Max: r = std::max(x, y); break;
        default: break;
      }
      return float_val(t, r);
    }
    const int64_t x = a.i, y = b.i;
    const uint64_t ux = static_cast<uint64_t>(x), uy = static_cast<uint64_t>(y);
    const bool u64 = t.is_uint() && t.bits() == 64;
    switch (op) {
      case IRNodeType::Add: return int_val(t, ux + uy);
      case IRNodeType::Sub: return int_val(t, ux - uy);
      case IRNodeType::Mul: return int_val(t, ux * uy);
      case IRNodeType::Div: {
        if (y == 0) return int_val(t, 0);
        if (t.is_uint()) return int_val(t, u64 ? ux / uy : static_cast<uint64_t>(x / y));
        if (y == -1) return int_val(t, uint64_t{0} - ux);
        int64_t q = x / y, r = x - q * y;
        if (r < 0) q = y > 0 ? q - 1 : q + 1;  // Euclidean: the remainder is never negative
        return int_val(t, static_cast<uint64_t>(q));
      }
      case IRNodeType::Mod: {
        if (y == 0) return int_val(t, 0);
        if (t.is_uint()) return int_val(t, u64 ? ux % uy : static_cast<uint64_t>(x % y));
        if (y == -1) return int_val(t, 0);
        int64_t r = x % y;
        if (r < 0) r += y < 0 ? -y : y;
        return int_val(t, static_cast<uint64_t>(r));
      }
      case IRNodeType::Min: return int_val(t, static_cast<uint64_t>(u64 ? std::min(ux, uy) : std::min(x, y)));
      case IRNodeType::Max: return int_val(t, static_cast<uint64_t>(u64 ? std::max(ux, uy) : std::max(x, y)));
      default: break;
    }
    fail("unexpected arithmetic node");
  }

  Val compare(const Expr& e, const Expr& ea, const Expr& eb) {
    const Val a = eval(ea), b = eval(eb);
    bool r = false;
    const IRNodeType op = e->node_type;
    auto cmp = [&](auto x, auto y) {
      switch (op) {
        case IRNodeType::EQ: return x == y;
        case IRNodeType::NE: return x != y;
        case IRNodeType::LT: return x < y;
        case IRNodeType::LE: return x <= y;
        case IRNodeType::GT: return x > y;
        case IRNodeType::GE: return x >= y;
        default: return false;
      }
    };
    if (a.t.is_float()) r = cmp(a.f, b.f);
    else if (a.t.is_uint() && a.t.bits() == 64) r = cmp(static_cast<uint64_t>(a.i), static_cast<uint64_t>(b.i));
    else r = cmp(a.i, b.i);
    return int_val(e.type(), r);
  }

  Val read_input(const Call* c) {
    size_t k = 0;
    while (k < def_.placeholders.size() && def_.placeholders[k] != c->name) ++k;
    if (k == def_.placeholders.size() || k >= in_.size())
      fail("the definition reads '", c->name, "', which is not one of its inputs");
    const RefTensor& t = *in_[k];
    if (c->args.size() != t.shape.size())
      fail("input ", k, " of shape ", shape_str(t.shape), " is read with ", c->args.size(), " indices");
    int64_t flat = 0;
    std::vector<int64_t> idx;
    for (size_t d = 0; d < c->args.size(); ++d) {
      Val v = eval(c->args[d]);
      int64_t i = v.t.is_float() ? static_cast<int64_t>(v.f) : v.i;
      idx.push_back(i);
      if (i < 0 || i >= t.shape[d]) {
        std::string s;
        for (size_t j = 0; j < idx.size(); ++j) s += (j ? ", " : "") + std::to_string(idx[j]);
        fail("reads input ", k, " of shape ", shape_str(t.shape), " out of bounds at dim ", d, " (index ", s, "...)");
      }
      flat = flat * t.shape[d] + i;
    }
    const double x = t.data[static_cast<size_t>(flat)];
    if (c->type.is_float()) return float_val(c->type, x);
    return int_val(c->type, static_cast<uint64_t>(static_cast<int64_t>(x)));
  }

  Val math(const Call* c) {
    std::string name = c->name;
    for (const char* suffix : {"_f16", "_f32", "_f64"})
      if (name.size() > 4 && name.compare(name.size() - 4, 4, suffix) == 0) name.resize(name.size() - 4);
    std::vector<double> a;
    for (const Expr& e : c->args) a.push_back(eval(e).as_double());
    auto arg = [&](size_t i) {
      if (i >= a.size()) fail("call ", c->name, " has too few arguments");
      return a[i];
    };
    static const std::unordered_map<std::string, double (*)(double)> unary = {
        {"exp", [](double x) { return std::exp(x); }},     {"log", [](double x) { return std::log(x); }},
        {"sqrt", [](double x) { return std::sqrt(x); }},   {"sin", [](double x) { return std::sin(x); }},
        {"cos", [](double x) { return std::cos(x); }},     {"tan", [](double x) { return std::tan(x); }},
        {"asin", [](double x) { return std::asin(x); }},   {"acos", [](double x) { return std::acos(x); }},
        {"atan", [](double x) { return std::atan(x); }},   {"sinh", [](double x) { return std::sinh(x); }},
        {"cosh", [](double x) { return std::cosh(x); }},   {"tanh", [](double x) { return std::tanh(x); }},
        {"asinh", [](double x) { return std::asinh(x); }}, {"acosh", [](double x) { return std::acosh(x); }},
        {"atanh", [](double x) { return std::atanh(x); }}, {"floor", [](double x) { return std::floor(x); }},
        {"ceil", [](double x) { return std::ceil(x); }},   {"trunc", [](double x) { return std::trunc(x); }},
        {"round", [](double x) { return std::nearbyint(x); }},  // Halide rounds half to even
        {"abs", [](double x) { return std::fabs(x); }},
        {"fast_inverse", [](double x) { return 1.0 / x; }},
        {"fast_inverse_sqrt", [](double x) { return 1.0 / std::sqrt(x); }},
    };
    if (auto it = unary.find(name); it != unary.end()) return float_val(c->type, it->second(arg(0)));
    if (name == "pow") return float_val(c->type, std::pow(arg(0), arg(1)));
    if (name == "atan2") return float_val(c->type, std::atan2(arg(0), arg(1)));
    if (name == "is_nan") return int_val(c->type, std::isnan(arg(0)));
    if (name == "is_inf") return int_val(c->type, std::isinf(arg(0)));
    if (name == "is_finite") return int_val(c->type, std::isfinite(arg(0)));
    fail("the reference does not know the function '", c->name, "'");
  }

  Val reduction(const Call* c) {
    const std::string kind = c->name.substr(std::string(kReducePrefix).size());
    if (c->args.size() != 1) fail("reduction ", c->name, " takes one argument");
    const Expr& term = c->args[0];
    FindUnboundRVar outer(env, true);
    term.accept(&outer);
    ReductionDomain dom = outer.found;
    if (!dom.defined()) {
      FindUnboundRVar any(env, false);
      term.accept(&any);
      dom = any.found;
    }
    if (!dom.defined()) fail("reduction ", c->name, " has no reduction domain in its argument");
    const Type t = c->type;
    const std::vector<ReductionVariable>& vars = dom.domain();
    std::vector<int64_t> mins, extents;
    for (const ReductionVariable& rv : vars) {
      mins.push_back(eval(rv.min).i);
      extents.push_back(eval(rv.extent).i);
    }
    // Accumulators: floats in double, integers modulo 2^64 (wrapped at the end).
    double facc = kind == "product" ? 1.0 : kind == "maximum" ? -std::numeric_limits<double>::infinity()
                                        : kind == "minimum" ? std::numeric_limits<double>::infinity()
                                                            : 0.0;
    uint64_t iacc = kind == "product" ? 1 : 0;
    bool any_term = false;
    if (kind != "sum" && kind != "product" && kind != "maximum" && kind != "minimum")
      fail("unknown reduction ", c->name);
    for (int64_t e : extents)
      if (e <= 0) return t.is_float() ? float_val(t, facc) : int_val(t, iacc);
    std::vector<int64_t> pos = mins;
    const Expr pred = dom.predicate();
    while (true) {
      for (size_t d = 0; d < vars.size(); ++d) env[vars[d].var] = int_val(Halide::Int(32), static_cast<uint64_t>(pos[d]));
      const bool take = !pred.defined() || eval(pred).truthy();
      if (take) {
        const Val v = eval(term);
        if (t.is_float()) {
          if (kind == "sum") facc += v.f;
          else if (kind == "product") facc *= v.f;
          else if (kind == "maximum") facc = std::max(facc, v.f);
          else facc = std::min(facc, v.f);
        } else {
          const uint64_t u = static_cast<uint64_t>(v.i);
          if (kind == "sum") iacc += u;
          else if (kind == "product") iacc *= u;
          else if (!any_term) iacc = u;
          else if (kind == "maximum") iacc = static_cast<uint64_t>(std::max(static_cast<int64_t>(iacc), v.i));
          else iacc = static_cast<uint64_t>(std::min(static_cast<int64_t>(iacc), v.i));
        }
        any_term = true;
      }
      size_t d = 0;  // odometer, the first RVar innermost (Halide's order)
      for (; d < vars.size(); ++d) {
        if (++pos[d] < mins[d] + extents[d]) break;
        pos[d] = mins[d];
      }
      if (d == vars.size()) break;
    }
    for (const ReductionVariable& rv : vars) env.erase(rv.var);
    if (t.is_float()) return float_val(t, facc);
    if (!any_term && (kind == "maximum" || kind == "minimum")) {  // the type's extreme, as Halide's init value
      const int bits = t.bits();
      const bool sgn = t.is_int();
      uint64_t lo = sgn ? (uint64_t{1} << (bits - 1)) : 0;
      uint64_t hi = sgn ? (uint64_t{1} << (bits - 1)) - 1 : (bits >= 64 ? ~uint64_t{0} : (uint64_t{1} << bits) - 1);
      iacc = kind == "maximum" ? lo : hi;
    }
    return int_val(t, iacc);
  }

  Val call(const Call* c) {
    if (c->call_type == Call::Image) return read_input(c);
    if (is_reduction_call(c)) return reduction(c);
    if (c->call_type == Call::PureExtern || c->call_type == Call::Extern) return math(c);
    if (c->call_type == Call::Intrinsic || c->call_type == Call::PureIntrinsic) {
      auto arg = [&](size_t i) { return eval(c->args.at(i)); };
      const Type t = c->type;
      if (c->is_intrinsic(Call::likely) || c->is_intrinsic(Call::likely_if_innermost) ||
          c->is_intrinsic(Call::promise_clamped) || c->is_intrinsic(Call::unsafe_promise_clamped) ||
          c->is_intrinsic(Call::strict_float) || c->is_intrinsic(Call::return_second)) {
        return c->is_intrinsic(Call::return_second) ? arg(1) : arg(0);
      }
      if (c->is_intrinsic(Call::if_then_else)) return arg(0).truthy() ? arg(1) : (c->args.size() > 2 ? arg(2) : Val{t});
      if (c->is_intrinsic(Call::abs)) {
        Val a = arg(0);
        if (a.t.is_float()) return float_val(t, std::fabs(a.f));
        return int_val(t, a.i < 0 ? uint64_t{0} - static_cast<uint64_t>(a.i) : static_cast<uint64_t>(a.i));
      }
      if (c->is_intrinsic(Call::absd)) {
        Val a = arg(0), b = arg(1);
        if (a.t.is_float()) return float_val(t, std::fabs(a.f - b.f));
        return int_val(t, a.i > b.i ? static_cast<uint64_t>(a.i) - static_cast<uint64_t>(b.i)
                                    : static_cast<uint64_t>(b.i) - static_cast<uint64_t>(a.i));
      }
      if (c->is_intrinsic(Call::bitwise_and)) return int_val(t, static_cast<uint64_t>(arg(0).i & arg(1).i));
      if (c->is_intrinsic(Call::bitwise_or)) return int_val(t, static_cast<uint64_t>(arg(0).i | arg(1).i));
      if (c->is_intrinsic(Call::bitwise_xor)) return int_val(t, static_cast<uint64_t>(arg(0).i ^ arg(1).i));
      if (c->is_intrinsic(Call::bitwise_not)) return int_val(t, ~static_cast<uint64_t>(arg(0).i));
      if (c->is_intrinsic(Call::shift_left) || c->is_intrinsic(Call::shift_right)) {
        Val a = arg(0), b = arg(1);
        int64_t s = b.i;
        bool left = c->is_intrinsic(Call::shift_left);
        if (s < 0) {
          s = -s;
          left = !left;
        }
        if (s >= 64) return int_val(t, left || !t.is_int() || a.i >= 0 ? 0 : ~uint64_t{0});
        if (left) return int_val(t, static_cast<uint64_t>(a.i) << s);
        if (t.is_int()) return int_val(t, static_cast<uint64_t>(a.i >> s));
        return int_val(t, (static_cast<uint64_t>(a.i) & (t.bits() >= 64 ? ~uint64_t{0} : (uint64_t{1} << t.bits()) - 1)) >> s);
      }
      if (c->is_intrinsic(Call::div_round_to_zero) || c->is_intrinsic(Call::mod_round_to_zero)) {
        Val a = arg(0), b = arg(1);
        if (t.is_float()) return float_val(t, c->is_intrinsic(Call::div_round_to_zero) ? std::trunc(a.f / b.f) : std::fmod(a.f, b.f));
        if (b.i == 0) return int_val(t, 0);
        if (b.i == -1) return int_val(t, c->is_intrinsic(Call::div_round_to_zero) ? uint64_t{0} - static_cast<uint64_t>(a.i) : 0);
        return int_val(t, static_cast<uint64_t>(c->is_intrinsic(Call::div_round_to_zero) ? a.i / b.i : a.i % b.i));
      }
      if (c->is_intrinsic(Call::reinterpret)) {
        Val a = arg(0);
        const Type from = a.t;
        if (from.bits() != t.bits()) fail("reinterpret between different widths");
        uint64_t bits = 0;
        if (from.is_float() && from.bits() == 32 && !from.is_bfloat()) {
          float f = static_cast<float>(a.f);
          uint32_t u;
          std::memcpy(&u, &f, 4);
          bits = u;
        } else if (from.is_float() && from.bits() == 64) {
          std::memcpy(&bits, &a.f, 8);
        } else if (!from.is_float()) {
          bits = static_cast<uint64_t>(a.i);
        } else {
          fail("reinterpret of ", type_name(from), " is not supported by the reference");
        }
        if (!t.is_float()) return int_val(t, bits);
        if (t.bits() == 32 && !t.is_bfloat()) {
          uint32_t u = static_cast<uint32_t>(bits);
          float f;
          std::memcpy(&f, &u, 4);
          return float_val(t, f);
        }
        if (t.bits() == 64) {
          double d;
          std::memcpy(&d, &bits, 8);
          return float_val(t, d);
        }
        fail("reinterpret to ", type_name(t), " is not supported by the reference");
      }
    }
    fail("the reference cannot interpret the call '", c->name, "'");
  }

  const UserDef& def_;
  const std::vector<const RefTensor*>& in_;
};

}  // namespace

struct DefineEvaluator::Impl {
  Impl(const UserDef& def, std::vector<const RefTensor*> tensors) : in(std::move(tensors)), interp(def, in) {}
  std::vector<const RefTensor*> in;  // before interp, which refers to it
  Interpreter interp;
};

DefineEvaluator::DefineEvaluator(const UserDef& def, std::vector<const RefTensor*> in)
    : impl_(std::make_unique<Impl>(def, std::move(in))) {}

DefineEvaluator::~DefineEvaluator() = default;

void DefineEvaluator::bind(const std::string& var, int64_t value) {
  impl_->interp.env[var] = int_val(Halide::Int(32), static_cast<uint64_t>(value));
}

void DefineEvaluator::unbind(const std::string& var) { impl_->interp.env.erase(var); }

bool DefineEvaluator::bound(const std::string& var) const { return impl_->interp.env.count(var) > 0; }

double DefineEvaluator::eval(const Expr& e) { return impl_->interp.eval(e).as_double(); }

RefTensor eval_define(const Node& n, const std::vector<const RefTensor*>& in) {
  if (!n.user) fail("has no definition");
  const UserDef& def = *n.user;
  if (!def.body.defined()) fail("has an undefined body");
  if (def.placeholders.size() != in.size())
    fail("reads ", def.placeholders.size(), " tensors but has ", in.size(), " inputs");
  Shape shape = attr_ints(n.attrs, "shape", n.op);
  if (shape.size() != def.vars.size())
    fail("shape ", shape_str(shape), " has rank ", shape.size(), " but the definition takes ", def.vars.size(), " Vars");
  RefTensor r;
  r.dtype = dtype_for(def.body.type());
  r.shape = shape;
  r.data.resize(static_cast<size_t>(numel(shape)));
  Interpreter interp(def, in);
  for (int64_t k = 0; k < r.numel(); ++k) {
    std::vector<int64_t> idx = unravel(k, shape);
    for (size_t d = 0; d < def.vars.size(); ++d)
      interp.env[def.vars[d].name()] = int_val(Halide::Int(32), static_cast<uint64_t>(idx[d]));
    r.data[k] = interp.eval(def.body).as_double();
  }
  return r;
}

}  // namespace tessera::ref::detail
