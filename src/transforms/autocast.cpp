// The autocast transform (include/tessera/autocast.h): one forward sweep that
// gives every op the input types its precision rule asks for, inserting casts
// (made once per tensor and type, never stacked), then casts graph outputs
// back to their original types.
//
// It reads the policy table (precision_policy.cpp) and the op registry's type
// rules. It removes only the nodes its own rewrite orphaned; it does not
// remove other dead code or fold casts of constants (run cse/fold/simplify/dce
// afterwards if wanted).
#include <map>
#include <utility>

#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/autocast.h"
#include "tessera/error.h"

namespace tessera {

namespace {

bool is_half(DType t) { return t == DType::f16 || t == DType::bf16; }

// Whether every value of float type `a` is exactly a value of float type `b`.
bool widens(DType a, DType b) {
  if (a == b) return true;
  if (is_half(a)) return b == DType::f32 || b == DType::f64;
  return a == DType::f32 && b == DType::f64;
}

// The type two float types compute in together (f16 with bf16 meets in f32).
DType promote(DType a, DType b) {
  if (a == b) return a;
  if (a == DType::f64 || b == DType::f64) return DType::f64;
  return DType::f32;
}

class Autocaster {
 public:
  Autocaster(const Graph& g, const AutocastOptions& o) : g_(g), o_(o), rw_(g) {}

  Graph run() {
    for (const Node& old : g_.nodes) {
      if (old.is_leaf()) {
        rw_.copy(old.id);
      } else if (old.op == "cast") {
        copy_cast(old);
      } else {
        rewrite(old);
      }
    }
    // Every graph output keeps its type.
    std::vector<int> out_nodes;
    for (const GraphOutput& o : g_.outputs) out_nodes.push_back(cast_to(rw_.mapped(o.node), g_.node(o.node).type.dtype));
    Graph out = std::move(rw_).finish();
    for (size_t i = 0; i < out.outputs.size(); ++i) out.outputs[i].node = out_nodes[i];
    return out;
  }

 private:
  const Node& at(int new_id) const { return rw_.result().nodes[new_id]; }

  // Follows widening casts back to their source while the wanted type is not
  // there yet: casting cast(x: A -> B) to C is casting x to C when B holds A.
  // Returns the node that has type `d` (or its memoized cast), or the
  // innermost source to cast from, with found = false.
  std::pair<int, bool> reduce(int x, DType d) const {
    for (;;) {
      const Node& n = at(x);
      if (n.type.dtype == d) return {x, true};
      auto it = memo_.find({x, d});
      if (it != memo_.end()) return {it->second, true};
      if (n.op != "cast" || !is_float(n.type.dtype)) return {x, false};
      const Node& src = at(n.inputs.at(0));
      if (!is_float(src.type.dtype) || !widens(src.type.dtype, n.type.dtype)) return {x, false};
      x = src.id;
    }
  }

  int emit_cast(int x, DType d, const std::string& name) {
    Node c;
    c.name = name;
    c.op = "cast";
    c.inputs = {x};
    c.attrs = {{"dtype", std::string(dtype_name(d))}};
    c.type = {d, at(x).type.shape};
    const int id = rw_.emit(std::move(c));
    memo_[{x, d}] = id;
    return id;
  }

  // Node `x` of the result as type `d`. A shape op (permute, reshape, ...)
  // is redone on the cast of its input (casting commutes with moving data)
  // when that input already has a cast to `d`, so that W^T in the backward
  // reuses the forward's cast of W, or when the op moves every element once
  // (same element count), so that the cast reads and writes in the input's
  // own layout and the shape op stays a view (a GEMM reads a transposed
  // operand as it is: library_gemm.h). Chains of such ops are followed.
  int cast_to(int x, DType d) {
    auto [y, found] = reduce(x, d);
    if (found) return y;
    int id = -1;
    const Node n = at(y);  // a copy: the recursion below may grow the node list
    const OpDef* def = find_op(n.op);
    if (def && def->kind == OpKind::shape && n.inputs.size() == 1) {
      auto [z, z_found] = reduce(n.inputs[0], d);
      if (!z_found && at(n.inputs[0]).type.numel() == n.type.numel() && is_float(at(n.inputs[0]).type.dtype)) {
        z = cast_to(n.inputs[0], d);
        z_found = true;
      }
      if (z_found) {
        Node m = n;
        m.name.clear();
        m.inputs = {z};
        try {
          m.type = infer_node_type(rw_.result(), m);
          id = rw_.emit(std::move(m));
          memo_[{y, d}] = id;
        } catch (const Error&) {
          id = -1;
        }
      }
    }
    if (id < 0) id = emit_cast(y, d, "");
    memo_[{x, d}] = id;
    return id;
  }

  // A cast of the input graph: reuses an equal value when there is one, else
  // is copied under its own name (and is what later requests for it reuse).
  void copy_cast(const Node& old) {
    Node n = rw_.remapped(old.id);
    const int x = n.inputs.at(0);
    const DType d = n.type.dtype;
    if (!is_float(at(x).type.dtype) || !is_float(d)) {
      rw_.map(old.id, rw_.emit(std::move(n)));
      return;
    }
    auto [y, found] = reduce(x, d);
    if (found) {
      rw_.map(old.id, y);
      return;
    }
    const int id = emit_cast(y, d, n.name);
    memo_[{x, d}] = id;
    rw_.map(old.id, id);
  }

  void rewrite(const Node& old) {
    Node n = rw_.remapped(old.id);
    OpPrecision rule = o_.policy.lookup(n.op);
    std::vector<size_t> floats;
    bool any_f64 = false;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const DType t = at(n.inputs[i]).type.dtype;
      if (!is_float(t)) continue;
      floats.push_back(i);
      any_f64 = any_f64 || t == DType::f64;
    }
    if (rule == OpPrecision::low && any_f64) rule = OpPrecision::follow;
    std::vector<DType> want(n.inputs.size());
    for (size_t i : floats) want[i] = at(n.inputs[i]).type.dtype;
    switch (rule) {
      case OpPrecision::low:
        for (size_t i : floats) want[i] = o_.dtype;
        break;
      case OpPrecision::f32:
        for (size_t i : floats) want[i] = any_f64 ? DType::f64 : DType::f32;
        break;
      case OpPrecision::keep:
        for (size_t i : floats) want[i] = g_.node(old.inputs[i]).type.dtype;
        break;
      case OpPrecision::follow: {
        // The widest type among the inputs that are not scalar constants
        // (among all of them when every one is).
        bool have = false, have_strong = false;
        DType t = DType::f32, strong = DType::f32;
        for (size_t i : floats) {
          const Node& in = at(n.inputs[i]);
          t = have ? promote(t, in.type.dtype) : in.type.dtype;
          have = true;
          if (in.op == "constant" && in.type.rank() == 0) continue;
          strong = have_strong ? promote(strong, in.type.dtype) : in.type.dtype;
          have_strong = true;
        }
        for (size_t i : floats) want[i] = have_strong ? strong : t;
        break;
      }
    }
    for (size_t i : floats) n.inputs[i] = cast_to(n.inputs[i], want[i]);
    try {
      n.type = infer_node_type(rw_.result(), n);
    } catch (const Error& e) {
      fail("autocast: ", n.op, " '", n.name, "' does not take the types its precision rule (",
           precision_name(rule), ", low type ", dtype_name(o_.dtype), ") gives it: ", e.what());
    }
    rw_.map(old.id, rw_.emit(std::move(n)));
  }

  const Graph& g_;
  const AutocastOptions& o_;
  GraphRewriter rw_;
  std::map<std::pair<int, DType>, int> memo_;  // (result node, type) -> its cast
};

}  // namespace

Graph apply_autocast(const Graph& g, const AutocastOptions& options) {
  if (!is_half(options.dtype))
    fail("autocast: the low-precision type must be bf16 or f16, got ", dtype_name(options.dtype));
  for (const auto& [op, rule] : options.policy.ops) {
    PrecisionPolicy check;
    check.set(op, rule);  // throws for an unknown op, a leaf or cast
  }
  // The rewrite can orphan nodes (an f32 permute now read through the low
  // type's copy); those go, dead code the input already had stays.
  Graph out = remove_orphans(g, Autocaster(g, options).run());
  verify(out, {true});
  return out;
}

Pass autocast(DType dtype) {
  AutocastOptions o;
  o.dtype = dtype;
  return autocast(std::move(o));
}

Pass autocast(AutocastOptions options) {
  if (!is_half(options.dtype))
    fail("autocast: the low-precision type must be bf16 or f16, got ", dtype_name(options.dtype));
  return Pass{std::string("autocast(") + dtype_name(options.dtype) + ")",
              [options](const Graph& g) { return apply_autocast(g, options); }};
}

}  // namespace tessera
