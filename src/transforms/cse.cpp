// Common-subexpression elimination: merges structurally equal nodes.
//
// One forward sweep. Two nodes are equal when they have the same op,
// attributes, inputs (after earlier merges), type, constant values (compared
// element by element, bit-exactly, so 0 and -0 stay apart and NaNs match) and,
// for nodes that carry a UserDef (`define`, `define_grad`), the same
// definition (the same UserDef, or vars, placeholders and a
// Halide-structurally-equal body). The first of equal nodes
// is kept and takes the others' uses; the others are dropped. Random ops
// (OpKind::random, e.g. dropout), inputs and params are never merged. This
// pass removes no other node (dead code is dce's job).
#include <cmath>
#include <functional>
#include <unordered_map>

#include "graph_rewrite.h"
#include "op_registry.h"
#include "tessera/passes.h"
#include "user_def.h"

namespace tessera {

namespace {

void hash_combine(size_t& h, size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); }

size_t hash_attr(const AttrValue& v) {
  size_t h = v.index();
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          for (int64_t e : x) hash_combine(h, std::hash<int64_t>{}(e));
        } else if constexpr (std::is_same_v<T, double>) {
          hash_combine(h, std::hash<double>{}(x == 0 ? 0.0 : x));  // 0 and -0 compare equal as attrs
        } else {
          hash_combine(h, std::hash<T>{}(x));
        }
      },
      v);
  return h;
}

size_t hash_node(const Node& n) {
  size_t h = std::hash<std::string>{}(n.op);
  for (int in : n.inputs) hash_combine(h, std::hash<int>{}(in));
  for (const auto& [k, v] : n.attrs) {
    hash_combine(h, std::hash<std::string>{}(k));
    hash_combine(h, hash_attr(v));
  }
  hash_combine(h, static_cast<size_t>(n.type.dtype));
  for (int64_t d : n.type.shape) hash_combine(h, std::hash<int64_t>{}(d));
  // Constants: the first value is enough to spread them (splat or not).
  if (!n.values.empty() && !std::isnan(n.values[0])) hash_combine(h, std::hash<double>{}(n.values[0]));
  return h;
}

bool same_values(const Node& a, const Node& b) {
  if (a.values.size() == b.values.size()) {
    for (size_t i = 0; i < a.values.size(); ++i)
      if (!same_value(a.values[i], b.values[i])) return false;
    return true;
  }
  // One splat, one element-wise (same type, checked by the caller).
  if (a.values.empty() || b.values.empty()) return false;
  if (a.values.size() != 1 && b.values.size() != 1) return false;
  int64_t n = a.type.numel();
  for (int64_t i = 0; i < n; ++i)
    if (!same_value(constant_value(a, i), constant_value(b, i))) return false;
  return true;
}

bool same_definition(const Node& a, const Node& b) {
  if (a.user == b.user) return true;
  if (!a.user || !b.user) return false;
  const UserDef& x = *a.user;
  const UserDef& y = *b.user;
  if (x.placeholders != y.placeholders || x.vars.size() != y.vars.size()) return false;
  for (size_t i = 0; i < x.vars.size(); ++i)
    if (x.vars[i].name() != y.vars[i].name()) return false;
  return Halide::Internal::equal(x.body, y.body);
}

bool same_node(const Node& a, const Node& b) {
  return a.op == b.op && a.inputs == b.inputs && a.attrs == b.attrs && a.type == b.type && same_values(a, b) &&
         ((!a.user && !b.user) || same_definition(a, b));
}

bool mergeable(const Node& n) {
  if (n.op == "input" || n.op == "param") return false;
  const OpDef* def = find_op(n.op);
  return def && def->kind != OpKind::random;
}

Graph run_cse(const Graph& g) {
  GraphRewriter rw(g);
  std::unordered_map<size_t, std::vector<int>> seen;  // hash -> result ids
  for (const Node& old : g.nodes) {
    Node n = rw.remapped(old.id);
    if (!mergeable(n)) {
      rw.copy(old.id);
      continue;
    }
    size_t h = hash_node(n);
    std::vector<int>& bucket = seen[h];
    int match = -1;
    for (int id : bucket)
      if (same_node(rw.result().nodes[id], n)) {
        match = id;
        break;
      }
    if (match >= 0) {
      rw.map(old.id, match);
    } else {
      bucket.push_back(rw.copy(old.id));
    }
  }
  return std::move(rw).finish();
}

}  // namespace

Pass cse() { return Pass{"cse", run_cse}; }

}  // namespace tessera
