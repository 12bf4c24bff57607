// Canonicalizes the Expr a user's `define` returns (see user_def.h).
//
// Halide's inline reductions (sum, maximum, ...) come back as calls to
// anonymous Funcs with an update definition. We rewrite each into a
// PureExtern call "tessera.<kind>(body)", substituting the call's arguments
// for the Func's free variables, so that the definition is one self-contained
// Expr that can be printed, parsed, interpreted and lowered again.
#include "user_def.h"

#include <algorithm>
#include <map>

#include "halide_util.h"
#include "tessera/error.h"

namespace tessera {

namespace {

using namespace Halide;
using namespace Halide::Internal;

class CanonicalizeReductions : public IRMutator {
 public:
  explicit CanonicalizeReductions(std::string op) : op_(std::move(op)) {}

  using IRMutator::visit;
  Expr visit(const Call* c) override {
    if (c->call_type != Call::Halide) return IRMutator::visit(c);
    Function f(c->func);
    if (f.updates().size() != 1 || f.outputs() != 1)
      fail("define '", op_, "': calls Func '", f.name(),
           "'; a definition may only read tensors and use inline reductions (sum, maximum, minimum, product)");
    // Halide's inline reductions CSE their term: a repeated subexpression
    // comes back as a Let around the update.
    Expr update = substitute_in_all_lets(f.updates()[0].values()[0]);
    Expr self;
    Expr term;
    std::string kind;
    auto split = [&](const Expr& a, const Expr& b) {
      const Call* ca = a.as<Call>();
      if (ca && ca->name == f.name()) {
        self = a;
        term = b;
        return true;
      }
      return false;
    };
    if (const Add* n = update.as<Add>()) {
      kind = "sum";
      split(n->a, n->b) || split(n->b, n->a);
    } else if (const Mul* n = update.as<Mul>()) {
      kind = "product";
      split(n->a, n->b) || split(n->b, n->a);
    } else if (const Max* n = update.as<Max>()) {
      kind = "maximum";
      split(n->a, n->b) || split(n->b, n->a);
    } else if (const Min* n = update.as<Min>()) {
      kind = "minimum";
      split(n->a, n->b) || split(n->b, n->a);
    }
    if (!term.defined())
      fail("define '", op_, "': Func '", f.name(), "' is not a sum, maximum, minimum or product reduction");
    // Put the caller's arguments in place of the Func's free variables.
    std::map<std::string, Expr> args;
    for (size_t i = 0; i < f.args().size(); ++i) args[f.args()[i]] = c->args[i];
    term = substitute(args, substitute_in_all_lets(term));
    term = mutate(term);
    return Call::make(c->type, std::string(kReducePrefix) + kind, {term}, Call::PureExtern);
  }

 private:
  std::string op_;
};

class CollectImageReads : public IRVisitor {
 public:
  std::vector<std::string> names;
  using IRVisitor::visit;
  void visit(const Call* c) override {
    if (c->call_type == Call::Image && std::find(names.begin(), names.end(), c->name) == names.end())
      names.push_back(c->name);
    IRVisitor::visit(c);
  }
};

class FindReduction : public IRVisitor {
 public:
  bool found = false;
  using IRVisitor::visit;
  void visit(const Call* c) override {
    if (c->call_type == Call::PureExtern && c->name.rfind(kReducePrefix, 0) == 0) found = true;
    IRVisitor::visit(c);
  }
};

// Rewrites a definition onto real Funcs (see bind_user_expr).
class BindUserDef : public IRMutator {
 public:
  BindUserDef(const UserDef& def, const std::vector<Func>& inputs, const std::vector<Shape>* shapes)
      : funcs_(inputs), shapes_(shapes) {
    for (size_t k = 0; k < def.placeholders.size() && k < inputs.size(); ++k) index_[def.placeholders[k]] = k;
  }
  using IRMutator::visit;
  Expr visit(const Call* c) override {
    if (c->call_type == Call::Image) {
      auto it = index_.find(c->name);
      if (it == index_.end()) fail("define: reads an unknown tensor '", c->name, "'");
      std::vector<Expr> args;
      for (size_t d = 0; d < c->args.size(); ++d) {
        Expr a = mutate(c->args[d]);
        if (shapes_ && d < (*shapes_)[it->second].size())
          a = clamp(a, 0, static_cast<int>((*shapes_)[it->second][d] - 1));
        args.push_back(a);
      }
      return at(funcs_[it->second], args);
    }
    if (c->call_type == Call::PureExtern && c->name.rfind(kReducePrefix, 0) == 0) {
      std::string kind = c->name.substr(std::string(kReducePrefix).size());
      Expr body = mutate(c->args[0]);
      if (kind == "sum") return Halide::sum(body);
      if (kind == "product") return Halide::product(body);
      if (kind == "maximum") return Halide::maximum(body);
      if (kind == "minimum") return Halide::minimum(body);
      fail("define: unknown reduction '", c->name, "'");
    }
    return IRMutator::visit(c);
  }

 private:
  std::map<std::string, size_t> index_;  // placeholder -> input
  std::vector<Func> funcs_;
  const std::vector<Shape>* shapes_;
};

}  // namespace

Expr bind_user_expr(const Expr& e, const UserDef& def, const std::vector<Func>& inputs,
                    const std::vector<Shape>* clamp_shapes) {
  BindUserDef bind(def, inputs, clamp_shapes);
  return bind.mutate(e);
}

Expr placeholder_read(const std::string& name, const Type& type, const std::vector<Expr>& index) {
  std::vector<Expr> args;
  for (const Expr& e : index) args.push_back(cast(Int(32), e));
  Parameter param(type, true, static_cast<int>(index.size()), name);
  return Call::make(type, name, args, Call::Image, FunctionPtr(), 0, Halide::Buffer<>(), param);
}

bool uses_reduction(const Expr& e) {
  FindReduction v;
  e.accept(&v);
  return v.found;
}

std::vector<std::string> image_reads(const Expr& e) {
  CollectImageReads v;
  e.accept(&v);
  return v.names;
}

// Rejects RDoms with where() predicates: the text form, the reference
// interpreter and the lowering do not carry them.
class RejectPredicatedRDoms : public IRVisitor {
 public:
  explicit RejectPredicatedRDoms(const std::string& op) : op_(op) {}
  using IRVisitor::visit;
  void visit(const Variable* v) override {
    if (v->reduction_domain.defined() && v->reduction_domain.predicate().defined() &&
        !is_const_one(v->reduction_domain.predicate()))
      fail("define '", op_, "': RDom ", v->name,
           " has a where() predicate, which definitions do not support; use select() in the reduced expression");
  }

 private:
  const std::string& op_;
};

Expr canonicalize_user_expr(const Expr& e, const std::string& op_name) {
  if (!e.defined()) fail("define '", op_name, "': the definition returned an undefined Expr");
  CanonicalizeReductions m(op_name);
  Expr r = m.mutate(substitute_in_all_lets(e));
  RejectPredicatedRDoms check(op_name);
  r.accept(&check);
  return r;
}

}  // namespace tessera
