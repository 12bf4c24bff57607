// GraphBuilder: adds nodes, infers and checks their types, and records
// user definitions (see builder.h).
#include "tessera/builder.h"

#include <set>

#include "halide_util.h"
#include "op_registry.h"
#include "tessera/passes.h"
#include "user_def.h"

namespace tessera {

const Node& Tensor::node() const {
  if (!b_) fail("use of an undefined Tensor");
  return b_->graph().node(id_);
}

Expr Tensor::at(const std::vector<Expr>& index) const {
  if (!b_) fail("indexing an undefined Tensor");
  return b_->access(id_, index);
}

GraphBuilder::GraphBuilder(std::string name) { g_.name = std::move(name); }

GraphBuilder::GraphBuilder(const Graph& g) : g_(g) {}

Tensor GraphBuilder::tensor(int id) {
  g_.node(id);  // throws if absent
  return Tensor(this, id);
}

Tensor GraphBuilder::tensor(const std::string& name) { return Tensor(this, g_.node(name).id); }

std::string GraphBuilder::fresh_name() {
  std::string n;
  do n = "t" + std::to_string(counter_++);
  while (g_.find(n) >= 0);
  return n;
}

int GraphBuilder::append(Node n) {
  if (n.name.empty()) n.name = fresh_name();
  else if (g_.find(n.name) >= 0)
    fail(n.op, " '", n.name, "': the name is already used by another node of graph '", g_.name, "'");
  n.id = static_cast<int>(g_.nodes.size());
  g_.nodes.push_back(std::move(n));
  return g_.nodes.back().id;
}

namespace {
void check_shape(const std::string& what, const std::string& name, const Shape& shape) {
  for (int64_t d : shape)
    if (d < 1) fail(what, " '", name, "': shape ", to_string(shape), " has a dimension below 1");
}
}  // namespace

Tensor GraphBuilder::argument(const std::string& op, const std::string& name, Shape shape, DType dtype) {
  if (name.empty()) fail(op, ": a graph ", op, " needs a name");
  check_shape(op, name, shape);
  Node n;
  n.name = name;
  n.op = op;
  n.type = {dtype, std::move(shape)};
  return Tensor(this, append(std::move(n)));
}

Tensor GraphBuilder::input(const std::string& name, Shape shape, DType dtype) {
  return argument("input", name, std::move(shape), dtype);
}

Tensor GraphBuilder::param(const std::string& name, Shape shape, DType dtype) {
  return argument("param", name, std::move(shape), dtype);
}

Tensor GraphBuilder::constant(double value, DType dtype) { return constant({value}, {}, dtype); }

Tensor GraphBuilder::constant(std::vector<double> values, Shape shape, DType dtype) {
  Node n;
  n.op = "constant";
  n.name = fresh_name();
  check_shape("constant", n.name, shape);
  if (values.size() != 1 && static_cast<int64_t>(values.size()) != numel(shape))
    fail("constant '", n.name, "': ", values.size(), " values for shape ", to_string(shape), " (", numel(shape),
         " elements)");
  n.type = {dtype, std::move(shape)};
  n.values = std::move(values);
  return Tensor(this, append(std::move(n)));
}

Tensor GraphBuilder::add(const std::string& op, const std::vector<Tensor>& inputs, Attrs attrs) {
  return add(op, inputs, std::move(attrs), nullptr);
}

Tensor GraphBuilder::add(const std::string& op, const std::vector<Tensor>& inputs, Attrs attrs,
                         std::shared_ptr<const UserDef> user) {
  const OpDef& def = op_def(op);
  if (def.kind == OpKind::leaf || op == "define") fail(op, ": use the GraphBuilder method of that name");
  Node n;
  n.op = op;
  n.name = fresh_name();
  n.attrs = std::move(attrs);
  n.user = std::move(user);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) fail(op, " '", n.name, "': input ", i, " is an undefined Tensor");
    if (t.builder() != this) fail(op, " '", n.name, "': input ", i, " belongs to another GraphBuilder");
    n.inputs.push_back(t.id());
  }
  n.type = infer_node_type(g_, n);
  return Tensor(this, append(std::move(n)));
}

Expr GraphBuilder::access(int id, const std::vector<Expr>& index) {
  const Node& n = g_.node(id);
  if (static_cast<int>(index.size()) != n.type.rank())
    fail("define: tensor '", n.name, "' of type ", to_string(n.type), " is read with ", index.size(),
         " indices");
  auto it = placeholders_.find(id);
  if (it == placeholders_.end()) it = placeholders_.emplace(id, "tessera_ph" + std::to_string(id) + "_" + g_.name).first;
  return placeholder_read(it->second, halide_type(n.type.dtype), index);
}

Tensor GraphBuilder::define_impl(const std::string& name, Shape shape, const std::vector<Var>& vars, Expr body) {
  if (name.empty()) fail("define: a user op needs a name");
  check_shape("define", name, shape);
  body = canonicalize_user_expr(body, name);
  // Find which tensors the body reads, in order of first appearance.
  auto def = std::make_shared<UserDef>();
  def->vars = vars;
  std::vector<int> inputs;
  for (const std::string& read : image_reads(body)) {
    int id = -1;
    for (const auto& [nid, ph] : placeholders_)
      if (ph == read) id = nid;
    if (id < 0) fail("define '", name, "': reads '", read, "', which is not a tensor of graph '", g_.name, "'");
    inputs.push_back(id);
    def->placeholders.push_back(read);
  }
  def->body = body;
  Node n;
  n.op = "define";
  n.name = name;
  n.inputs = inputs;
  n.attrs["shape"] = shape;
  n.user = def;
  n.type = infer_node_type(g_, n);
  return Tensor(this, append(std::move(n)));
}

void GraphBuilder::output(const std::string& name, Tensor t) {
  if (!t.defined() || t.builder() != this) fail("output '", name, "': not a tensor of graph '", g_.name, "'");
  for (const GraphOutput& o : g_.outputs)
    if (o.name == name) fail("output '", name, "': graph '", g_.name, "' already has an output of that name");
  g_.outputs.push_back({name, t.id()});
}

Graph GraphBuilder::build() const {
  verify(g_);
  return g_;
}

}  // namespace tessera
