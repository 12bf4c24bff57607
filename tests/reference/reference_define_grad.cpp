// The reference semantics of `define_grad` nodes, computed independently of
// Halide's autodiff: a reverse-mode walk over the body's Expr, in double.
//
// For every point p of the output (the cotangent's shape), with the Vars
// bound to p, the cotangent ct[p] is pushed down the body: at each node the
// partial derivatives come from the values of its operands (evaluated by
// DefineEvaluator, i.e. eval_define's semantics), and a read of input k at an
// index adds the incoming adjoint to the gradient there. Conventions where the
// derivative is undefined (the same as the library's and the lowering's):
// binary min/max split a tie in halves, abs'(0) = 0, a maximum/minimum
// reduction sends its adjoint to its first argmax/argmin in iteration order
// (the RDom's first dimension innermost), floor/ceil/round/trunc have
// derivative 0; integer and bool values carry no gradient, casts between
// float types pass it through. Product reductions and functions without a
// derivative here are errors (autodiff refuses them too). It does not know
// about Halide's Funcs, schedules or propagate_adjoints.
#include <Halide.h>

#include <cmath>
#include <set>
#include <sstream>

#include "../../src/frontend/user_def.h"
#include "reference/reference_internal.h"

namespace tessera::ref::detail {

namespace {

using namespace Halide::Internal;
using Halide::Expr;

bool is_reduction_call(const Call* c) {
  return c->call_type == Call::PureExtern && c->name.rfind(kReducePrefix, 0) == 0;
}

// The first RVar of `e` (pre-order) that `bound` does not bind, optionally
// not looking inside nested reductions: the domain a reduction runs over.
class UnboundRVar : public IRVisitor {
 public:
  UnboundRVar(const DefineEvaluator& ev, bool skip_nested) : ev_(ev), skip_nested_(skip_nested) {}
  ReductionDomain found;
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (!found.defined() && v->reduction_domain.defined() && !ev_.bound(v->name)) found = v->reduction_domain;
  }
  void visit(const Call* c) override {
    if (skip_nested_ && is_reduction_call(c)) return;
    IRVisitor::visit(c);
  }

 private:
  const DefineEvaluator& ev_;
  bool skip_nested_;
};

std::string text_of(const Expr& e) {
  std::ostringstream os;
  os << e;
  return os.str();
}

class Backprop {
 public:
  Backprop(const UserDef& def, DefineEvaluator& ev, int k, const RefTensor& xk, std::vector<double>& grad)
      : def_(def), ev_(ev), k_(k), xk_(xk), grad_(grad) {}

  // Adds adj * d e / d x_k to the gradient, at the bound point.
  void run(const Expr& e, double adj) {
    if (!e.type().is_float()) return;  // integers and bools carry no gradient
    switch (e->node_type) {
      case IRNodeType::FloatImm:
      case IRNodeType::Variable: return;
      case IRNodeType::Cast: {
        const Cast* c = e.as<Cast>();
        if (c->value.type().is_float()) run(c->value, adj);
        return;
      }
      case IRNodeType::Add:
        run(e.as<Add>()->a, adj);
        run(e.as<Add>()->b, adj);
        return;
      case IRNodeType::Sub:
        run(e.as<Sub>()->a, adj);
        run(e.as<Sub>()->b, -adj);
        return;
      case IRNodeType::Mul: {
        const Mul* m = e.as<Mul>();
        const double a = val(m->a), b = val(m->b);
        run(m->a, adj * b);
        run(m->b, adj * a);
        return;
      }
      case IRNodeType::Div: {
        const Div* d = e.as<Div>();
        const double a = val(d->a), b = val(d->b);
        run(d->a, adj / b);
        run(d->b, -adj * a / (b * b));
        return;
      }
      case IRNodeType::Mod: {  // a - b floor(a / b)
        const Mod* m = e.as<Mod>();
        const double a = val(m->a), b = val(m->b);
        run(m->a, adj);
        run(m->b, -adj * std::floor(a / b));
        return;
      }
      case IRNodeType::Min: {
        const Min* m = e.as<Min>();
        pick(m->a, m->b, val(m->a) - val(m->b), -1, adj);
        return;
      }
      case IRNodeType::Max: {
        const Max* m = e.as<Max>();
        pick(m->a, m->b, val(m->a) - val(m->b), 1, adj);
        return;
      }
      case IRNodeType::Select: {
        const Select* s = e.as<Select>();
        run(val(s->condition) != 0 ? s->true_value : s->false_value, adj);
        return;
      }
      case IRNodeType::Call: return call(e.as<Call>(), adj);
      default: fail("the gradient reference cannot differentiate ", text_of(e));
    }
  }

 private:
  double val(const Expr& e) { return ev_.eval(e); }

  // min (sign -1) or max (sign 1) of a and b, whose difference is diff.
  void pick(const Expr& a, const Expr& b, double diff, int sign, double adj) {
    if (diff * sign > 0) return run(a, adj);
    if (diff * sign < 0) return run(b, adj);
    run(a, adj / 2);  // a tie (or NaN): halves
    run(b, adj / 2);
  }

  void read(const Call* c, double adj) {
    size_t j = 0;
    while (j < def_.placeholders.size() && def_.placeholders[j] != c->name) ++j;
    if (j == def_.placeholders.size()) fail("the definition reads '", c->name, "', which is not one of its inputs");
    if (static_cast<int>(j) != k_) return;
    const Shape& shape = xk_.shape;
    if (c->args.size() != shape.size()) fail("input ", j, " of shape ", shape_str(shape), " is read with ", c->args.size(), " indices");
    int64_t flat = 0;
    for (size_t d = 0; d < c->args.size(); ++d) {
      const int64_t i = static_cast<int64_t>(val(c->args[d]));
      if (i < 0 || i >= shape[d]) fail("reads input ", j, " of shape ", shape_str(shape), " out of bounds at dim ", d);
      flat = flat * shape[d] + i;
    }
    grad_[static_cast<size_t>(flat)] += adj;
  }

  void reduction(const Call* c, double adj) {
    const std::string kind = c->name.substr(std::string(kReducePrefix).size());
    if (kind == "product") fail("a product reduction has no gradient (autodiff refuses it)");
    if (kind != "sum" && kind != "maximum" && kind != "minimum") fail("unknown reduction ", c->name);
    const Expr& term = c->args.at(0);
    UnboundRVar outer(ev_, true);
    term.accept(&outer);
    ReductionDomain dom = outer.found;
    if (!dom.defined()) {
      UnboundRVar any(ev_, false);
      term.accept(&any);
      dom = any.found;
    }
    if (!dom.defined()) fail("reduction ", c->name, " has no reduction domain in its argument");
    const std::vector<ReductionVariable>& rvars = dom.domain();
    std::vector<int64_t> mins, ends;
    for (const ReductionVariable& rv : rvars) {
      mins.push_back(static_cast<int64_t>(val(rv.min)));
      ends.push_back(mins.back() + static_cast<int64_t>(val(rv.extent)));
      if (ends.back() <= mins.back()) return;  // empty: no terms, no gradient
    }
    // Every point of the domain, the first RVar innermost.
    std::vector<int64_t> pos = mins;
    auto bind = [&](const std::vector<int64_t>& p) {
      for (size_t d = 0; d < rvars.size(); ++d) ev_.bind(rvars[d].var, p[d]);
    };
    std::vector<int64_t> best;
    double best_value = 0;
    while (true) {
      bind(pos);
      if (kind == "sum") {
        run(term, adj);
      } else {
        const double v = val(term);
        if (best.empty() || (kind == "maximum" ? v > best_value : v < best_value)) {
          best = pos;
          best_value = v;
        }
      }
      size_t d = 0;
      for (; d < rvars.size(); ++d) {
        if (++pos[d] < ends[d]) break;
        pos[d] = mins[d];
      }
      if (d == rvars.size()) break;
    }
    if (!best.empty()) {
      bind(best);
      run(term, adj);
    }
    for (const ReductionVariable& rv : rvars) ev_.unbind(rv.var);
  }

  void math(const Call* c, double adj) {
    std::string name = c->name;
    for (const char* suffix : {"_f16", "_f32", "_f64"})
      if (name.size() > 4 && name.compare(name.size() - 4, 4, suffix) == 0) name.resize(name.size() - 4);
    if (name == "pow" || name == "atan2") {
      const double a = val(c->args.at(0)), b = val(c->args.at(1));
      if (name == "pow") {
        run(c->args[0], adj * b * std::pow(a, b - 1));
        run(c->args[1], adj * std::pow(a, b) * std::log(a));
      } else {  // atan2(y = a, x = b)
        run(c->args[0], adj * b / (a * a + b * b));
        run(c->args[1], -adj * a / (a * a + b * b));
      }
      return;
    }
    const double x = val(c->args.at(0));
    double d;
    if (name == "exp") d = std::exp(x);
    else if (name == "log") d = 1 / x;
    else if (name == "sqrt") d = 0.5 / std::sqrt(x);
    else if (name == "sin") d = std::cos(x);
    else if (name == "cos") d = -std::sin(x);
    else if (name == "tan") d = 1 / (std::cos(x) * std::cos(x));
    else if (name == "asin") d = 1 / std::sqrt(1 - x * x);
    else if (name == "acos") d = -1 / std::sqrt(1 - x * x);
    else if (name == "atan") d = 1 / (1 + x * x);
    else if (name == "sinh") d = std::cosh(x);
    else if (name == "cosh") d = std::sinh(x);
    else if (name == "tanh") d = 1 - std::tanh(x) * std::tanh(x);
    else if (name == "asinh") d = 1 / std::sqrt(x * x + 1);
    else if (name == "acosh") d = 1 / std::sqrt(x * x - 1);
    else if (name == "atanh") d = 1 / (1 - x * x);
    else if (name == "floor" || name == "ceil" || name == "round" || name == "trunc") d = 0;
    else if (name == "fast_inverse") d = -1 / (x * x);
    else if (name == "fast_inverse_sqrt") d = -0.5 / (x * std::sqrt(x));
    else fail("the gradient reference has no derivative of '", c->name, "'");
    run(c->args[0], adj * d);
  }

  void call(const Call* c, double adj) {
    if (c->call_type == Call::Image) return read(c, adj);
    if (is_reduction_call(c)) return reduction(c, adj);
    if (c->call_type == Call::PureExtern || c->call_type == Call::Extern) return math(c, adj);
    if (c->is_intrinsic(Call::abs)) {
      const double x = val(c->args[0]);
      return run(c->args[0], x > 0 ? adj : x < 0 ? -adj : 0);
    }
    if (c->is_intrinsic(Call::absd)) {
      const double d = val(c->args[0]) - val(c->args[1]);
      const double s = d > 0 ? 1 : d < 0 ? -1 : 0;
      run(c->args[0], adj * s);
      return run(c->args[1], -adj * s);
    }
    if (c->is_intrinsic(Call::likely) || c->is_intrinsic(Call::likely_if_innermost) ||
        c->is_intrinsic(Call::strict_float) || c->is_intrinsic(Call::promise_clamped) ||
        c->is_intrinsic(Call::unsafe_promise_clamped))
      return run(c->args[0], adj);
    if (c->is_intrinsic(Call::return_second)) return run(c->args.at(1), adj);
    if (c->is_intrinsic(Call::if_then_else))
      return run(val(c->args[0]) != 0 ? c->args.at(1) : c->args.at(2), adj);
    if (c->is_intrinsic(Call::reinterpret)) return;  // bits: no gradient
    fail("the gradient reference cannot differentiate the call '", c->name, "'");
  }

  const UserDef& def_;
  DefineEvaluator& ev_;
  int k_;
  const RefTensor& xk_;
  std::vector<double>& grad_;
};

}  // namespace

RefTensor eval_define_grad(const Node& n, const std::vector<const RefTensor*>& in) {
  if (!n.user) fail("has no definition");
  const UserDef& def = *n.user;
  if (!def.body.defined()) fail("has an undefined body");
  const size_t np = def.placeholders.size();
  if (in.size() != np + 1) fail("its definition reads ", np, " tensors but it has ", in.size(), " inputs");
  const int64_t k = attr_int(n.attrs, "index", n.op);
  if (k < 0 || k >= static_cast<int64_t>(np)) fail("index ", k, " is not one of the definition's ", np, " inputs");
  const RefTensor& ct = *in.back();
  if (ct.shape.size() != def.vars.size())
    fail("the cotangent has shape ", shape_str(ct.shape), " but the definition takes ", def.vars.size(), " Vars");
  const RefTensor& xk = *in[static_cast<size_t>(k)];
  if (!is_float(xk.dtype)) fail("input ", k, " is not a float tensor");
  RefTensor r;
  r.shape = xk.shape;
  r.dtype = xk.dtype;
  r.data.assign(static_cast<size_t>(xk.numel()), 0.0);
  DefineEvaluator ev(def, std::vector<const RefTensor*>(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(np)));
  Backprop bp(def, ev, static_cast<int>(k), xk, r.data);
  const Expr body = substitute_in_all_lets(def.body);
  for (int64_t p = 0; p < ct.numel(); ++p) {
    std::vector<int64_t> idx = unravel(p, ct.shape);
    for (size_t d = 0; d < def.vars.size(); ++d) ev.bind(def.vars[d].name(), idx[d]);
    bp.run(body, ct.data[static_cast<size_t>(p)]);
  }
  return r;
}

}  // namespace tessera::ref::detail
