// Algebraic simplification: local rewrites that keep every value bit-exact
// (except the sign of a zero: x + 0 -> x keeps a -0 that add would turn
// into +0).
//
//   x*1, 1*x, x+0, 0+x, x-0, x/1 -> x   when the result type is x's (no
//                                        broadcasting enlarged it); 1 and 0 are
//                                        constants whose elements all equal it
//   permute(permute(x)) -> permute(x), or x when the composition is the identity
//   identity permute, reshape/squeeze/unsqueeze to x's own shape,
//   cast to x's dtype, broadcast_to x's own shape          -> x
//   reshape-like(reshape-like(x)) -> reshape(x) (reshape, squeeze and unsqueeze
//                                   are all row-major reinterpretations), or x
//   cast(cast(x: A -> B) -> C) -> cast(x -> C), or x when C == A, if B holds
//                                   every value of A exactly
//   broadcast_to(broadcast_to(x)) -> broadcast_to(x)
//   an elementwise op reading broadcast_to(y) reads y instead when its output
//   type stays the same and y has one element, or when every use of the
//   broadcast_to is such an elementwise op (so the broadcast disappears)
//
// A rewritten node keeps its name. The rewrites run to a fixed point; then
// the nodes the rewrites orphaned are removed (dead code that was already in
// the graph is left for dce). This pass does not evaluate constants (fold)
// or merge duplicates (cse).
#include <set>

#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/error.h"
#include "tessera/passes.h"

namespace tessera {

namespace {

bool reshape_like(const Node& n) { return n.op == "reshape" || n.op == "squeeze" || n.op == "unsqueeze"; }

// Whether every value of `a` is exactly a value of `b` (so a -> b -> c casts as a -> c).
bool exact_in(DType a, DType b) {
  if (a == b || a == DType::boolean) return true;
  switch (a) {
    case DType::u8:
    case DType::i8:
      if (a == DType::u8 && b == DType::i8) return false;
      return b != DType::boolean && b != DType::u8 && b != DType::i8;  // 8 bits fit even bf16's mantissa
    case DType::i32: return b == DType::i64 || b == DType::f64;
    case DType::f16:
    case DType::bf16: return b == DType::f32 || b == DType::f64;
    case DType::f32: return b == DType::f64;
    default: return false;
  }
}

// The permutation of a permute node, normalized; empty if malformed.
std::vector<int64_t> perm_of(const Node& n) {
  auto it = n.attrs.find("dims");
  if (it == n.attrs.end() || !std::holds_alternative<std::vector<int64_t>>(it->second)) return {};
  std::vector<int64_t> p = std::get<std::vector<int64_t>>(it->second);
  for (int64_t& d : p) {
    d = norm_axis(d, static_cast<int64_t>(p.size()));
    if (d < 0) return {};
  }
  return p;
}

bool is_identity(const std::vector<int64_t>& p) {
  for (size_t i = 0; i < p.size(); ++i)
    if (p[i] != static_cast<int64_t>(i)) return false;
  return true;
}

class Simplifier {
 public:
  explicit Simplifier(const Graph& g) : g_(g), rw_(g) {}

  Graph run(bool& changed) {
    find_removable_broadcasts();
    for (const Node& old : g_.nodes) {
      Node n = rw_.remapped(old.id);
      int target = -1;
      for (int round = 0; round < 64; ++round) {
        target = forward(n);
        if (target >= 0 || !rewrite(n)) break;
        changed = true;
      }
      if (target >= 0) {
        rw_.map(old.id, target);
        changed = true;
      } else {
        rw_.map(old.id, rw_.emit(std::move(n)));
      }
    }
    return std::move(rw_).finish();
  }

 private:
  const Node& at(int new_id) const { return rw_.result().nodes[new_id]; }

  // A node the rewritten `n` equals, or -1.
  int forward(const Node& n) const {
    if (n.is_leaf()) return -1;
    const std::string& op = n.op;
    if ((op == "mul" || op == "add" || op == "sub" || op == "div") && n.inputs.size() == 2) {
      const double unit = op == "mul" || op == "div" ? 1.0 : 0.0;
      const Node& a = at(n.inputs[0]);
      const Node& b = at(n.inputs[1]);
      if (is_splat_constant(b, unit) && a.type == n.type) return a.id;
      if ((op == "mul" || op == "add") && is_splat_constant(a, unit) && b.type == n.type) return b.id;
      return -1;
    }
    if (n.inputs.size() != 1) return -1;
    const Node& x = at(n.inputs[0]);
    if ((op == "permute" || reshape_like(n) || op == "cast" || op == "broadcast_to") && x.type == n.type) {
      if (op != "permute") return x.id;
      std::vector<int64_t> p = perm_of(n);
      if (!p.empty() && is_identity(p)) return x.id;
      if (n.type.rank() == 0) return x.id;
    }
    return -1;
  }

  // Rewrites `n` in place (same name); false when no rule applies.
  bool rewrite(Node& n) {
    if (n.is_leaf()) return false;
    const OpDef* def = find_op(n.op);
    if (!def) return false;
    if (n.inputs.size() == 1) {
      const Node& x = at(n.inputs[0]);
      if (n.op == "permute" && x.op == "permute") {
        std::vector<int64_t> outer = perm_of(n), inner = perm_of(x);
        if (outer.empty() || outer.size() != inner.size()) return false;
        std::vector<int64_t> dims(outer.size());
        for (size_t d = 0; d < outer.size(); ++d) dims[d] = inner[outer[d]];
        Node m = n;
        m.inputs = {x.inputs.at(0)};
        m.attrs = {{"dims", dims}};
        return accept(n, std::move(m));
      }
      if (reshape_like(n) && reshape_like(x) && find_op("reshape")) {
        Node m = n;
        m.op = "reshape";
        m.inputs = {x.inputs.at(0)};
        m.attrs = {{"shape", n.type.shape}};
        return accept(n, std::move(m));
      }
      if (n.op == "cast" && x.op == "cast") {
        const Node& src = at(x.inputs.at(0));
        if (!exact_in(src.type.dtype, x.type.dtype)) return false;
        Node m = n;
        m.inputs = {src.id};
        return accept(n, std::move(m));
      }
      if (n.op == "broadcast_to" && x.op == "broadcast_to") {
        Node m = n;
        m.inputs = {x.inputs.at(0)};
        return accept(n, std::move(m));
      }
    }
    if (def->kind == OpKind::elementwise) {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const Node& b = at(n.inputs[i]);
        if (b.op != "broadcast_to" || b.inputs.size() != 1) continue;
        const Node& y = at(b.inputs[0]);
        if (y.type.numel() != 1 && !removable_broadcasts_.count(b.name)) continue;
        Node m = n;
        for (int& in : m.inputs)
          if (in == b.id) in = y.id;
        if (accept(n, std::move(m))) return true;
      }
    }
    return false;
  }

  // Takes `m` for `n` when its type is unchanged.
  bool accept(Node& n, Node m) const {
    try {
      if (infer_node_type(rw_.result(), m) != n.type) return false;
    } catch (const Error&) {
      return false;
    }
    n = std::move(m);
    return true;
  }

  // broadcast_to nodes of g_ whose every use is an elementwise op whose type
  // stays the same when it reads the broadcast's input instead.
  void find_removable_broadcasts() {
    std::vector<std::vector<int>> readers(g_.nodes.size());
    for (const Node& n : g_.nodes)
      for (int in : n.inputs)
        if (readers[in].empty() || readers[in].back() != n.id) readers[in].push_back(n.id);
    std::set<int> outputs;
    for (const GraphOutput& o : g_.outputs) outputs.insert(o.node);
    for (const Node& b : g_.nodes) {
      if (b.op != "broadcast_to" || b.inputs.size() != 1 || outputs.count(b.id) || readers[b.id].empty()) continue;
      bool ok = true;
      for (int r : readers[b.id]) {
        const Node& reader = g_.nodes[r];
        const OpDef* def = find_op(reader.op);
        if (!def || def->kind != OpKind::elementwise) {
          ok = false;
          break;
        }
        Node m = reader;
        for (int& in : m.inputs)
          if (in == b.id) in = b.inputs[0];
        try {
          ok = infer_node_type(g_, m) == reader.type;
        } catch (const Error&) {
          ok = false;
        }
        if (!ok) break;
      }
      if (ok) removable_broadcasts_.insert(b.name);
    }
  }

  const Graph& g_;
  GraphRewriter rw_;
  std::set<std::string> removable_broadcasts_;
};

Graph run_simplify(const Graph& input) {
  Graph g = input;
  for (int iteration = 0; iteration < 100; ++iteration) {
    bool changed = false;
    Graph next = Simplifier(g).run(changed);
    // Orphans go at once, so that the next round counts only real uses.
    g = remove_orphans(input, next);
    if (!changed) break;
  }
  return g;
}

}  // namespace

Pass simplify() { return Pass{"simplify", run_simplify}; }

}  // namespace tessera
