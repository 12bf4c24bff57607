// The define_grad op (see define_grad.h): its type rule, and its algorithm,
// which asks Halide's propagate_adjoints for the gradient of a define's body.
//
// How the gradient is built (GradLowering):
//  1. The body is rewritten into a "differentiable form" F over stand-ins:
//     each read of input j becomes an Image call to a stand-in buffer (so that
//     propagate_adjoints stops there and names its adjoint after it, and never
//     walks into the Funcs that compute the inputs); every integer or bool
//     value that reads data (a condition, an index read from a tensor, a cast
//     to an integer) becomes a stand-in too, computed for real aside: it has
//     no gradient, and propagate_adjoints cannot always step over it. Sums
//     become Halide sums over their own RDom; a maximum (minimum) becomes its
//     term at the argmax (argmin), whose indices are such a hidden stand-in,
//     because propagate_adjoints refuses max/min reductions; binary max/min
//     and abs become selects (ties split the gradient in halves, abs'(0) = 0,
//     as for the library ops), float % becomes a - b * floor(a / b) (Halide's
//     derivative of % assumes truncation); products are refused. f16 and
//     bf16 values are computed in f32 (see diff_type).
//  2. Reads that Halide differentiates wrongly are refused: two indices of
//     one read that Halide inverts to the same index variable (x(i, i),
//     Halide issue 7385, where every x(u, v) would get the gradient of x(i, i)).
//  3. propagate_adjoints(F, ct, box) gives the adjoint of input k's stand-in.
//     The cotangent reads zero outside the output box (Halide's adjoints of
//     shifted reads rely on it), and the box is passed with inclusive maxima:
//     Halide 14 reads {min, extent} as [min, min + extent], one too many.
//  4. In every Func the adjoint calls, the stand-ins are replaced by calls of
//     the real inputs (indices clamped into their shapes) and of the hidden
//     Funcs. The adjoint Funcs that have update definitions are the node's
//     stages: a schedule must compute them at root (their updates may scatter).
//
// It never compiles anything; check_define_grad runs steps 1-3 on stand-in
// inputs so that autodiff reports problems where the gradient is asked for.
#include <map>
#include <set>

#include "define_grad.h"
#include "halide_util.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "user_def.h"

namespace tessera {

namespace {

using namespace Halide;
using namespace Halide::Internal;

// ---- small IR queries -----------------------------------------------------------

class FindCall : public IRVisitor {
 public:
  bool found = false;
  using IRVisitor::visit;
  void visit(const Call*) override { found = true; }
};

bool has_call(const Expr& e) {
  FindCall v;
  e.accept(&v);
  return v.found;
}

// The Variables of an Expr whose names are in `names`, in order of first appearance.
class CollectVars : public IRVisitor {
 public:
  explicit CollectVars(const std::set<std::string>& names) : names_(names) {}
  std::vector<Expr> found;
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (names_.count(v->name) && seen_.insert(v->name).second) found.push_back(v);
  }

 private:
  const std::set<std::string>& names_;
  std::set<std::string> seen_;
};

bool is_reduction(const Call* c) {
  return c->call_type == Call::PureExtern && c->name.rfind(kReducePrefix, 0) == 0;
}

// The RDom a canonical reduction reduces over: the first RVar of its term
// that no enclosing reduction binds, outside nested reductions if possible.
class FindOwnRDom : public IRVisitor {
 public:
  FindOwnRDom(const std::set<std::string>& bound, bool skip_nested) : bound_(bound), skip_nested_(skip_nested) {}
  ReductionDomain found;
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (!found.defined() && v->reduction_domain.defined() && !bound_.count(v->name)) found = v->reduction_domain;
  }
  void visit(const Call* c) override {
    if (skip_nested_ && is_reduction(c)) return;
    IRVisitor::visit(c);
  }

 private:
  const std::set<std::string>& bound_;
  bool skip_nested_;
};

// Float math whose derivative Halide 14's propagate_adjoints implements.
bool known_derivative(const std::string& name) {
  static const std::set<std::string> known = {
      "exp",  "log",   "sin",   "asin",  "cos",   "acos", "tan",  "atan",         "atan2",
      "sinh", "asinh", "cosh",  "acosh", "tanh",  "atanh", "ceil", "floor",       "round",
      "trunc", "sqrt", "pow",   "fast_inverse", "fast_inverse_sqrt"};
  for (const char* suffix : {"_f16", "_f32", "_f64"}) {
    const size_t n = name.size();
    if (n > 4 && name.compare(n - 4, 4, suffix) == 0) return known.count(name.substr(0, n - 4)) > 0;
  }
  return false;
}

// The type the differentiable form computes in: halves in f32, as the
// library's f16/bf16 ops do (and because Halide 14's propagate_adjoints
// mixes up f16 and bf16: their associativity patterns share one table).
Type diff_type(const Type& t) { return t.is_float() && t.bits() == 16 ? Float(32) : t; }

// An Image call of the stand-in buffer `name` (not a real buffer: it is
// replaced before anything is compiled).
Expr stand_in_call(const std::string& name, const Type& type, const std::vector<Expr>& args) {
  Parameter param(type, true, static_cast<int>(args.size()), name);
  return Call::make(type, name, args, Call::Image, FunctionPtr(), 0, Halide::Buffer<>(), param);
}

// Reads of one stand-in that Halide's propagate_adjoints turns into wrong
// gathers (Halide issue 7385): it inverts each index that is a function of
// one pure variable alone (with Halide's own solve_inverse), and when two
// indices invert to the same variable, as in x(i, i) or x(i, 7 - i), every
// x(u, v) gets the gradient meant for the diagonal. Such a read is found
// exactly as Halide would invert it.
class FindDiagonalRead : public IRVisitor {
 public:
  FindDiagonalRead(std::string name, std::vector<std::string> pure) : name_(std::move(name)), pure_(std::move(pure)) {}
  std::string var;  // the variable, when found
  using IRVisitor::visit;
  void visit(const Call* c) override {
    IRVisitor::visit(c);
    if (c->call_type != Call::Image || c->name != name_ || !var.empty()) return;
    std::map<std::string, int> inverted;
    for (const Expr& a : c->args) {
      std::vector<int> vars = gather_variables(a, pure_);
      if (vars.size() != 1) continue;
      const std::string& v = pure_[vars[0]];
      const std::string u = unique_name('u');
      if (solve_inverse(Variable::make(a.type(), u) == a, u, v).first && ++inverted[v] == 2) var = v;
    }
  }

 private:
  std::string name_;
  std::vector<std::string> pure_;
};

class DiffForm;

// Builds the gradient of one define body (see the file comment).
class GradLowering {
 public:
  // `types`: the types of the define's inputs followed by the cotangent's.
  GradLowering(const UserDef& def, const std::vector<TensorType>& types, std::string prefix)
      : def_(def), types_(types), prefix_(std::move(prefix)) {
    const size_t n = def.placeholders.size();
    for (size_t j = 0; j < n; ++j) {
      shapes_.push_back(types[j].shape);
      input_name_.push_back(prefix_ + "_x" + std::to_string(j) + "_in");
      placeholder_[def.placeholders[j]] = static_cast<int>(j);
    }
    for (const Var& v : def.vars) context_.insert(v.name());
  }

  // The gradient for input k, from the real inputs (the define's, then the cotangent).
  Definition build(int k, const std::vector<Func>& inputs, const std::string& name);

  // Parts of the differentiable form (used by DiffForm).
  Expr input_read(const Call* c);
  Expr reduction(const Call* c, DiffForm& m);
  Expr hide(const Expr& e);
  [[noreturn]] void refuse(const std::string& why) const { throw Error(why); }

 private:
  Expr bind_real(const Expr& e) { return bind_user_expr(e, def_, real_, &shapes_); }
  std::vector<Expr> context_vars(const Expr& e) const {
    CollectVars v(context_);
    e.accept(&v);
    return v.found;
  }
  void replace_stand_ins(const Func& root, const std::set<std::string>& outside);

  // A hidden value's stand-in: replaced by a call of `func` (value_index of its tuple).
  struct StandIn {
    FunctionPtr func;
    int value_index = 0;
  };

  const UserDef& def_;
  const std::vector<TensorType>& types_;
  std::string prefix_;
  std::vector<Shape> shapes_;
  std::vector<std::string> input_name_;
  std::map<std::string, int> placeholder_;
  std::set<std::string> context_;  // the index Vars and the RVars of enclosing reductions
  std::vector<Func> real_;
  std::map<std::string, StandIn> stand_ins_;
  int counter_ = 0;
};

class DiffForm : public IRMutator {
 public:
  explicit DiffForm(GradLowering& g) : g_(g) {}

  Expr mutate(const Expr& e) override {
    if (e.defined() && !e.type().is_float() && has_call(e)) return g_.hide(e);  // carries no gradient
    return IRMutator::mutate(e);
  }
  using IRMutator::mutate;

 protected:
  using IRMutator::visit;
  Expr visit(const FloatImm* op) override {
    return op->type == diff_type(op->type) ? Expr(op) : FloatImm::make(diff_type(op->type), op->value);
  }
  Expr visit(const Cast* op) override {
    Expr v = mutate(op->value);
    const Type t = diff_type(op->type);
    return v.type() == t ? v : Cast::make(t, v);
  }
  // A call rebuilt with its arguments rewritten, in the form's type.
  Expr rebuilt(const Call* c, const std::string& name) {
    std::vector<Expr> args;
    for (const Expr& a : c->args) args.push_back(mutate(a));
    return Call::make(diff_type(c->type), name, args, c->call_type);
  }
  // max/min as selects whose tie case, (a + b) / 2 (exactly a), splits the
  // gradient in halves as the library's maximum/minimum do; propagate_adjoints
  // would give both operands all of it.
  Expr visit(const Max* op) override {
    if (!op->type.is_float()) return IRMutator::visit(op);
    Expr a = mutate(op->a), b = mutate(op->b);
    return select(a > b, a, select(b > a, b, (a + b) * make_const(a.type(), 0.5)));
  }
  Expr visit(const Min* op) override {
    if (!op->type.is_float()) return IRMutator::visit(op);
    Expr a = mutate(op->a), b = mutate(op->b);
    return select(a < b, a, select(b < a, b, (a + b) * make_const(a.type(), 0.5)));
  }
  Expr visit(const Mod* op) override {
    if (!op->type.is_float()) return IRMutator::visit(op);
    Expr a = mutate(op->a), b = mutate(op->b);
    return a - b * floor(a / b);
  }
  Expr visit(const Call* c) override {
    if (c->call_type == Call::Image) return g_.input_read(c);
    if (is_reduction(c)) return g_.reduction(c, *this);
    if (c->call_type == Call::PureExtern || c->call_type == Call::Extern) {
      if (c->type.is_float() && !known_derivative(c->name))
        g_.refuse("calls '" + c->name + "', which has no derivative in Halide's propagate_adjoints");
      std::string name = c->name;
      const size_t n = name.size();
      if (diff_type(c->type) != c->type && n > 4 && name.compare(n - 4, 4, "_f16") == 0)
        name.replace(n - 4, 4, "_f32");  // exp_f16 -> exp_f32
      else if (diff_type(c->type) != c->type)
        g_.refuse("calls '" + c->name + "' on a half-precision value, which the gradient cannot compute in f32");
      return rebuilt(c, name);
    }
    if (c->call_type == Call::Intrinsic || c->call_type == Call::PureIntrinsic) {
      if (c->is_intrinsic(Call::abs) && c->type.is_float()) {  // abs'(0) = 0, as the library's abs
        Expr x = mutate(c->args[0]), zero = make_zero(x.type());
        return select(x > zero, x, select(x < zero, -x, zero));
      }
      if (c->is_intrinsic(Call::lerp) || c->is_intrinsic(Call::likely) || c->is_intrinsic(Call::return_second))
        return rebuilt(c, c->name);
      if (c->is_intrinsic(Call::likely_if_innermost) || c->is_intrinsic(Call::strict_float) ||
          c->is_intrinsic(Call::promise_clamped) || c->is_intrinsic(Call::unsafe_promise_clamped))
        return mutate(c->args[0]);
      if (c->is_intrinsic(Call::absd) && c->type.is_float()) {
        Expr d = mutate(c->args[0] - c->args[1]), zero = make_zero(d.type());
        return select(d > zero, d, select(d < zero, -d, zero));
      }
      if (c->is_intrinsic(Call::if_then_else) && c->args.size() == 3)
        return select(mutate(c->args[0]), mutate(c->args[1]), mutate(c->args[2]));
      if (c->is_intrinsic(Call::reinterpret)) return g_.hide(c);  // bits: no gradient
      g_.refuse("uses the intrinsic '" + c->name + "', which Halide's propagate_adjoints does not differentiate");
    }
    g_.refuse("calls '" + c->name + "', which a definition may not contain");
  }

 private:
  GradLowering& g_;
};

Expr GradLowering::input_read(const Call* c) {
  auto it = placeholder_.find(c->name);
  if (it == placeholder_.end()) refuse("reads '" + c->name + "', which is not one of its inputs");
  const int j = it->second;
  if (!c->type.is_float()) return hide(c);
  if (c->args.size() != shapes_[j].size())
    refuse("reads input " + std::to_string(j) + " of type " + to_string(types_[j]) + " with " +
           std::to_string(c->args.size()) + " indices");
  // Halide order (the stand-in's adjoint is then a Func in Halide order).
  std::vector<Expr> args;
  for (size_t d = c->args.size(); d-- > 0;) {
    Expr a = c->args[d];
    if (has_call(a)) a = clamp(hide(a), 0, static_cast<int>(shapes_[j][d] - 1));  // data-dependent: bound it
    args.push_back(a);
  }
  return stand_in_call(input_name_[j], diff_type(c->type), args);
}

Expr GradLowering::hide(const Expr& e) {
  // A Func of the enclosing index variables that computes e from the real
  // inputs, and a stand-in call of it at those variables.
  std::vector<Expr> args = context_vars(e);
  std::vector<Var> vars;
  std::map<std::string, Expr> rename;
  for (const Expr& a : args) {
    vars.emplace_back();
    rename[a.as<Variable>()->name] = vars.back();
  }
  const std::string tag = std::to_string(counter_++);
  Func real(prefix_ + "_hidden" + tag + "_v");
  real(vars) = cast(diff_type(e.type()), bind_real(substitute(rename, e)));
  const std::string name = prefix_ + "_h" + tag + "_in";
  stand_ins_[name] = StandIn{real.function().get_contents(), 0};
  return stand_in_call(name, diff_type(e.type()), args);
}

Expr GradLowering::reduction(const Call* c, DiffForm& m) {
  const std::string kind = c->name.substr(std::string(kReducePrefix).size());
  if (c->args.size() != 1) refuse("has a malformed reduction '" + c->name + "'");
  const Expr& term = c->args[0];
  FindOwnRDom own(context_, true);
  term.accept(&own);
  if (!own.found.defined()) {
    FindOwnRDom any(context_, false);
    term.accept(&any);
    own.found = any.found;
  }
  if (!own.found.defined()) refuse("has a reduction '" + kind + "' without a reduction domain");
  if (kind == "product")
    refuse("uses a product reduction, whose gradient Halide's propagate_adjoints refuses; for positive terms "
           "write exp(sum(log(...))) instead");
  if (kind != "sum" && kind != "maximum" && kind != "minimum") refuse("uses an unknown reduction '" + kind + "'");
  const RDom rdom(own.found);
  const std::vector<ReductionVariable>& rvars = own.found.domain();

  // The term, with this reduction's RVars bound while it is rewritten.
  std::vector<Expr> argbest;  // maximum/minimum: the hidden argmax (argmin), one index per RVar
  if (kind != "sum") {
    // The real argmax over the term, as a function of the enclosing index
    // variables (they become pure Vars of the Func that Halide's argmax makes).
    std::vector<Expr> outer = context_vars(term);
    std::map<std::string, Expr> rename, back;
    for (const Expr& a : outer) {
      Var v;
      rename[a.as<Variable>()->name] = v;
      back[v.name()] = a;
    }
    Expr real_term = bind_real(substitute(rename, term));
    Tuple best = kind == "maximum" ? argmax(rdom, real_term, prefix_ + "_argmax")
                                   : argmin(rdom, real_term, prefix_ + "_argmin");
    for (size_t d = 0; d < rvars.size(); ++d) {
      const Call* call = best[static_cast<int>(d)].as<Call>();
      if (!call || !call->func.defined()) refuse("has a " + kind + " reduction Halide could not take the argmax of");
      std::vector<Expr> call_args;
      for (const Expr& a : call->args) {
        const Variable* v = a.as<Variable>();
        auto it = v ? back.find(v->name) : back.end();
        if (it == back.end()) refuse("has a " + kind + " reduction whose argmax depends on an unexpected variable");
        call_args.push_back(it->second);
      }
      const std::string name = prefix_ + "_best" + std::to_string(counter_++) + "_in";
      stand_ins_[name] = StandIn{call->func, static_cast<int>(d)};
      argbest.push_back(stand_in_call(name, call->type, call_args));
    }
  }
  for (const ReductionVariable& rv : rvars) context_.insert(rv.var);
  Expr t = m.mutate(term);
  for (const ReductionVariable& rv : rvars) context_.erase(rv.var);
  if (kind == "sum") return Halide::sum(rdom, t, prefix_ + "_sum");
  // The term at the argmax: each RVar replaced by its (clamped) index.
  std::map<std::string, Expr> at_best;
  for (size_t d = 0; d < rvars.size(); ++d)
    at_best[rvars[d].var] = clamp(argbest[d], rvars[d].min, rvars[d].min + rvars[d].extent - 1);
  return substitute(at_best, t);
}

// Replaces the stand-ins in every Func that `root` calls (except those in
// `outside`, the real inputs' Funcs) by real calls.
void GradLowering::replace_stand_ins(const Func& root, const std::set<std::string>& outside) {
  class Replace : public IRMutator {
   public:
    explicit Replace(GradLowering& g) : g_(g) {}
    using IRMutator::visit;
    Expr visit(const Call* c) override {
      if (c->call_type != Call::Image) return IRMutator::visit(c);
      std::vector<Expr> args;
      for (const Expr& a : c->args) args.push_back(mutate(a));
      for (size_t j = 0; j < g_.input_name_.size(); ++j) {
        if (c->name != g_.input_name_[j]) continue;
        const Shape& s = g_.shapes_[j];  // args are in Halide order
        for (size_t d = 0; d < args.size(); ++d) args[d] = clamp(args[d], 0, static_cast<int>(s[s.size() - 1 - d] - 1));
        return cast(c->type, Call::make(g_.real_[j].function(), args, 0));  // halves read as f32
      }
      auto it = g_.stand_ins_.find(c->name);
      if (it == g_.stand_ins_.end()) return IRMutator::visit(c);
      return Call::make(Function(it->second.func), args, it->second.value_index);
    }

   private:
    GradLowering& g_;
  } replace(*this);
  for (auto& [name, fn] : find_transitive_calls(root.function())) {
    if (outside.count(name)) continue;
    Function f = fn;
    f.mutate(&replace);
  }
}

Definition GradLowering::build(int k, const std::vector<Func>& inputs, const std::string& name) {
  const size_t n = def_.placeholders.size();
  if (inputs.size() != n + 1 || types_.size() != n + 1)
    refuse("takes " + std::to_string(n + 1) + " inputs (the definition's and the cotangent), got " +
           std::to_string(inputs.size()));
  if (k < 0 || k >= static_cast<int>(n)) refuse("has no input " + std::to_string(k) + " to differentiate");
  real_ = inputs;
  const Shape& out_shape = types_[n].shape;
  const Type out_type = def_.body.type();
  if (!out_type.is_float()) refuse("computes a non-float value, which has no gradient");

  // 1. The differentiable form.
  DiffForm form(*this);
  Func fwd(prefix_ + "_fwd");
  define_pure(fwd, def_.vars, form.mutate(substitute_in_all_lets(def_.body)));

  // 2. Reads Halide differentiates wrongly.
  for (auto& [fname, fn] : find_transitive_calls(fwd.function())) {
    FindDiagonalRead diag(input_name_[k], fn.args());
    for (const Expr& e : fn.values()) e.accept(&diag);
    for (const Internal::Definition& u : fn.updates())
      for (const Expr& e : u.values()) e.accept(&diag);
    if (!diag.var.empty())
      refuse("reads input " + std::to_string(k) + " with two indices that are each a function of the index "
             "variable '" + diag.var + "' alone (a diagonal such as x(i, i)); Halide's propagate_adjoints gives "
             "wrong gradients for such reads (Halide issue 7385), so they are not differentiated");
  }

  // 3. The adjoint of input k's stand-in.
  std::vector<Var> v = make_vars(static_cast<int>(out_shape.size()));
  Expr inside = const_true();
  std::vector<Expr> clamped;
  for (size_t d = 0; d < out_shape.size(); ++d) {
    const int extent = static_cast<int>(out_shape[d]);
    inside = inside && v[d] >= 0 && v[d] < extent;
    clamped.push_back(clamp(v[d], 0, extent - 1));
  }
  const Type form_type = diff_type(out_type);
  Func ct = make_func(prefix_ + "_ct", v, select(inside, cast(form_type, at(real_[n], clamped)), make_zero(form_type)));
  Region box;
  for (auto it = out_shape.rbegin(); it != out_shape.rend(); ++it) box.emplace_back(0, static_cast<int>(*it - 1));
  Func adjoint;
  try {
    Derivative d = propagate_adjoints(fwd, ct, box);
    adjoint = d(Func(Function(input_name_[k])));  // looked up by the exact stand-in name
  } catch (const Halide::Error& e) {
    refuse(std::string("Halide's propagate_adjoints failed: ") + e.what());
  }

  // 4. Real calls in place of the stand-ins; the output in input k's type.
  const Type tk = halide_type(types_[k].dtype);
  std::vector<Var> vk = make_vars(static_cast<int>(shapes_[k].size()));
  Func out(name);
  std::set<std::string> outside;
  for (const Func& f : real_)
    for (const auto& [fname, fn] : find_transitive_calls(f.function())) outside.insert(fname);
  if (!adjoint.defined()) {
    define_pure(out, vk, make_zero(tk));  // input k is not read where it could have a gradient
  } else {
    replace_stand_ins(adjoint, outside);
    define_pure(out, vk, cast(tk, at(adjoint, as_exprs(vk))));
  }
  Definition result;
  result.func = out;
  for (const auto& [fname, fn] : find_transitive_calls(out.function()))
    if (!outside.count(fname) && fname != out.name() && !fn.updates().empty()) result.stages.emplace_back(fn);
  return result;
}

Definition define_grad_define(const DefineContext& c) {
  const int k = static_cast<int>(attr_int(c.node.attrs, "index", "define_grad"));
  try {
    GradLowering g(*c.node.user, c.input_types, c.node.name);
    return g.build(k, c.inputs, c.node.name);
  } catch (const Error& e) {
    fail("define_grad '", c.node.name, "': ", e.what());
  } catch (const Halide::Error& e) {
    fail("define_grad '", c.node.name, "': Halide rejected the gradient: ", e.what());
  }
}

const bool registered = [] {
  OpDef d;
  d.name = "define_grad";
  d.kind = OpKind::user;
  d.min_inputs = 2;
  d.max_inputs = -1;
  d.infer = [](const std::vector<TensorType>&, const Attrs&) -> TensorType {
    fail("define_grad: its type comes from its definition");
  };
  d.define = define_grad_define;
  register_op(std::move(d));
  return true;
}();

}  // namespace

void link_define_grad_ops() { (void)registered; }

TensorType define_grad_type(const Node& node, const std::vector<TensorType>& in) {
  const std::string where = "define_grad '" + node.name + "'";
  if (!node.user || !node.user->body.defined()) fail(where, ": has no definition");
  const UserDef& def = *node.user;
  const size_t n = def.placeholders.size();
  if (in.size() != n + 1)
    fail(where, ": its definition reads ", n, " tensors, so it takes ", n + 1,
         " inputs (those and the cotangent), got ", in.size());
  const int64_t k = attr_int(node.attrs, "index", where);
  if (k < 0 || k >= static_cast<int64_t>(n))
    fail(where, ": index ", k, " is not one of the definition's ", n, " inputs");
  const TensorType& ct = in.back();
  if (ct.rank() != static_cast<int>(def.vars.size()))
    fail(where, ": the cotangent ", to_string(ct), " has rank ", ct.rank(), " but the definition takes ",
         def.vars.size(), " Vars");
  DType body;
  try {
    body = dtype_of(def.body.type());
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  if (ct.dtype != body)
    fail(where, ": the cotangent ", to_string(ct), " is not of the definition's dtype ", dtype_name(body));
  if (!is_float(in[k].dtype))
    fail(where, ": input ", k, " is ", to_string(in[k]), ", and only float inputs have a gradient");
  return in[k];
}

Tensor define_grad(GraphBuilder& b, const Node& fwd, const std::vector<Tensor>& inputs, int k,
                   const Tensor& cotangent) {
  std::vector<Tensor> ins = inputs;
  ins.push_back(cotangent);
  return b.add("define_grad", ins, {{"index", int64_t{k}}}, fwd.user);
}

void check_define_grad(const Node& fwd, const std::vector<TensorType>& input_types, int k) {
  if (!fwd.user) fail("define '", fwd.name, "': has no definition");
  const UserDef& def = *fwd.user;
  std::vector<TensorType> types = input_types;
  types.push_back(TensorType{dtype_of(def.body.type()), attr_ints(fwd.attrs, "shape", "define")});
  // Stand-in inputs: ImageParams of the right types (nothing is compiled).
  std::vector<Func> inputs;
  for (size_t j = 0; j < types.size(); ++j) {
    ImageParam p(halide_type(types[j].dtype), types[j].rank(), "check_in" + std::to_string(j) + "_p");
    std::vector<Var> v = make_vars(types[j].rank());
    std::vector<Expr> idx = as_exprs(v);
    std::vector<Expr> rev(idx.rbegin(), idx.rend());
    inputs.push_back(make_func("check_in" + std::to_string(j) + "_f", v, p(rev)));
  }
  try {
    GradLowering g(def, types, "check");
    g.build(k, inputs, "check_grad");
  } catch (const Halide::Error& e) {
    fail("Halide rejected the gradient: ", e.what());
  }
}

}  // namespace tessera
