// The ops that are not library functions: the leaves (input, param,
// constant), whose type is stored in the node, and `define`, whose type comes
// from its UserDef (see infer_node_type). They are registered so that every
// node's op is known to the registry (verify, passes, lowering look them up).
#include "op_registry.h"
#include "tessera/error.h"

namespace tessera {

namespace {

const bool registered = [] {
  for (const char* name : {"input", "param", "constant"}) {
    OpDef d;
    d.name = name;
    d.kind = OpKind::leaf;
    d.min_inputs = d.max_inputs = 0;
    std::string op = name;
    d.infer = [op](const std::vector<TensorType>&, const Attrs&) -> TensorType {
      fail(op, ": a leaf's type is stored in its node");
    };
    register_op(std::move(d));
  }
  OpDef def;
  def.name = "define";
  def.kind = OpKind::user;
  def.min_inputs = 0;
  def.max_inputs = -1;
  def.infer = [](const std::vector<TensorType>&, const Attrs&) -> TensorType {
    fail("define: its type comes from its definition");
  };
  register_op(std::move(def));
  return true;
}();

}  // namespace

void link_leaf_ops() { (void)registered; }

}  // namespace tessera
