// The precision policy table that autocast reads (include/tessera/autocast.h):
// the default rules, lookup, set (with its checks) and printing. It does not
// rewrite graphs (autocast.cpp does).
#include <vector>

#include "op_registry.h"
#include "tessera/autocast.h"
#include "tessera/error.h"

namespace tessera {

const char* precision_name(OpPrecision p) {
  switch (p) {
    case OpPrecision::low: return "low";
    case OpPrecision::f32: return "f32";
    case OpPrecision::follow: return "follow";
    case OpPrecision::keep: return "keep";
  }
  return "?";
}

OpPrecision PrecisionPolicy::lookup(const std::string& op) const {
  auto it = ops.find(op);
  return it == ops.end() ? fallback : it->second;
}

PrecisionPolicy& PrecisionPolicy::set(const std::string& op, OpPrecision p) {
  const OpDef* def = find_op(op);
  if (!def) fail("precision policy: unknown op '", op, "' (not in the op registry)");
  if (def->kind == OpKind::leaf) fail("precision policy: '", op, "' is a leaf; leaves keep their types");
  if (op == "cast") fail("precision policy: 'cast' has no rule: its output type is its dtype attribute");
  ops[op] = p;
  return *this;
}

PrecisionPolicy default_precision_policy() {
  PrecisionPolicy p;
  for (const char* op : {"matmul", "linear", "attention", "attention_grad"}) p.set(op, OpPrecision::low);
  for (const char* op : {"softmax", "log_softmax", "logsumexp", "layer_norm", "rms_norm", "layer_norm_grad", "rms_norm_grad",
                         "cross_entropy", "sum", "mean", "exp", "log", "pow", "rsqrt", "embedding_grad"})
    p.set(op, OpPrecision::f32);
  for (const char* op : {"define", "define_grad"}) p.set(op, OpPrecision::keep);
  return p;
}

std::string to_string(const PrecisionPolicy& policy) {
  std::string s;
  for (OpPrecision p : {OpPrecision::low, OpPrecision::f32, OpPrecision::follow, OpPrecision::keep}) {
    std::string line;
    for (const auto& [op, rule] : policy.ops)
      if (rule == p) line += " " + op;
    if (p == policy.fallback) line += " (every other op)";
    if (!line.empty()) s += std::string(precision_name(p)) + ":" + line + "\n";
  }
  return s;
}

}  // namespace tessera
