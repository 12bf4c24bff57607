// Reverse-mode autodiff (include/tessera/autodiff.h): differentiate(), the
// autodiff() pass and split_forward_backward().
//
// differentiate() continues the input graph with a GraphBuilder: it seeds the
// loss cotangent with a scalar constant 1.0 named "grad.<loss>", walks the
// nodes in reverse order (SSA order is topological) over the nodes on a path
// from a trainable param to the loss, calls each node's VJP rule (vjp.h) and
// accumulates the cotangents of tensors used several times with add (the
// cotangents of disjoint slices of one tensor, which slice's rule pads with
// zeros, merge into one concat instead: see add_cotangents). Paths
// run through float tensors only: a bool or integer tensor carries no
// gradient (as in PyTorch and JAX), so a comparison or an integer cast cuts
// the path rather than failing; a float node on a path whose op has no rule
// is an Error. split_forward_backward() cuts the joint graph in two. Neither
// simplifies the result (that is for cse/fold/simplify/dce), nor updates params.
#include "tessera/autodiff.h"

#include <set>

#include "graph_rewrite.h"
#include "tessera/error.h"
#include "tessera/ops.h"
#include "vjp.h"

namespace tessera {

namespace {

const GraphOutput* find_output(const Graph& g, const std::string& name) {
  for (const GraphOutput& o : g.outputs)
    if (o.name == name) return &o;
  return nullptr;
}

bool is_param_named(const Graph& g, const std::string& name) {
  int id = g.find(name);
  return id >= 0 && g.node(id).op == "param";
}

// Whether n is zeros: a constant of zeros, or one broadcast.
bool is_zeros(const Graph& g, const Node& n) {
  if (n.op == "broadcast_to" && n.inputs.size() == 1) return is_zeros(g, g.node(n.inputs[0]));
  return is_splat_constant(n, 0.0);
}

// A concat along `axis` as its pieces: (width, node id, zeros or not).
struct Piece {
  int64_t width;
  int id;
  bool zero;
};

std::vector<Piece> pieces_of(const Graph& g, const Node& n, int64_t& axis) {
  if (n.op != "concat") return {};
  axis = norm_axis(attr_int(n.attrs, "axis", "concat"), n.type.rank());
  std::vector<Piece> p;
  for (int in : n.inputs) p.push_back({g.node(in).type.shape[axis], in, is_zeros(g, g.node(in))});
  return p;
}

// The sum of two cotangents of one tensor. When both are concats along one
// axis and, wherever one has a piece that is not zeros, the other has zeros
// (the cotangents of disjoint slices of the tensor, which slice's rule pads
// with zeros: e.g. the q, k and v slices of one projection), one concat of
// those pieces with zeros between: the same values (up to the sign of a
// zero) without adding zero-padded copies that a kernel would read in full.
Tensor add_cotangents(GraphBuilder& b, const Tensor& x, const Tensor& y) {
  const Graph& g = b.graph();
  int64_t ax = -1, ay = -1;
  const std::vector<Piece> px = pieces_of(g, x.node(), ax), py = pieces_of(g, y.node(), ay);
  if (px.empty() || py.empty() || ax != ay || ax < 0 || x.type() != y.type()) return add(x, y);
  // Walk both piece lists at once; `merged` gets (width, id or -1 for zeros).
  std::vector<std::pair<int64_t, int>> merged;
  auto emit = [&](int64_t w, int id) {
    if (id < 0 && !merged.empty() && merged.back().second < 0) merged.back().first += w;
    else merged.push_back({w, id});
  };
  size_t i = 0, j = 0;
  int64_t used_x = 0, used_y = 0;  // of the current pieces
  while (i < px.size() && j < py.size()) {
    const Piece &a = px[i], &c = py[j];
    const int64_t left_x = a.width - used_x, left_y = c.width - used_y;
    int64_t step = std::min(left_x, left_y);
    if (!a.zero && !c.zero) return add(x, y);
    if (!a.zero || !c.zero) {
      // The piece that is not zeros goes whole, over zeros of the other that cover it.
      const Piece& real = a.zero ? c : a;
      const int64_t real_left = a.zero ? left_y : left_x, zeros_left = a.zero ? left_x : left_y;
      if (real_left != real.width || zeros_left < real.width) return add(x, y);
      step = real.width;
      emit(step, real.id);
    } else {
      emit(step, -1);
    }
    used_x += step;
    used_y += step;
    if (used_x == a.width) ++i, used_x = 0;
    if (used_y == c.width) ++j, used_y = 0;
  }
  std::vector<Tensor> pieces;
  for (auto [w, id] : merged) {
    if (id >= 0) {
      pieces.push_back(b.tensor(id));
    } else {
      Shape s = x.shape();
      s[ax] = w;
      pieces.push_back(broadcast_to(b.constant(0.0, x.dtype()), s));
    }
  }
  return pieces.size() == 1 ? pieces[0] : concat(pieces, ax);
}

}  // namespace

Graph differentiate(const Graph& g, const AutodiffOptions& options) {
  const std::string& loss_name = options.loss;
  const GraphOutput* loss_out = find_output(g, loss_name);
  if (!loss_out) fail("autodiff: the loss '", loss_name, "' is not an output of graph '", g.name, "'");
  const Node& loss = g.node(loss_out->node);
  if (!is_float(loss.type.dtype) || !loss.type.shape.empty())
    fail("autodiff: the loss '", loss_name, "' must be a float scalar (shape []), got ", to_string(loss.type),
         " (node '", loss.name, "')");
  for (const auto* list : {&options.params, &options.frozen})
    for (const std::string& p : *list)
      if (!is_param_named(g, p)) fail("autodiff: '", p, "' is not a param of graph '", g.name, "'");

  // Trainable params, in graph order: float, listed (or every one when none
  // is listed), not frozen.
  auto listed = [](const std::vector<std::string>& l, const std::string& n) {
    return std::find(l.begin(), l.end(), n) != l.end();
  };
  const int n = static_cast<int>(g.nodes.size());
  // A param read only through frozen inputs (a quantized weight's scales, vjp.h) is frozen.
  std::vector<int> uses(g.nodes.size(), 0), frozen_uses(g.nodes.size(), 0);
  for (const Node& node : g.nodes)
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      ++uses[node.inputs[k]];
      if (is_frozen_input(node, k)) ++frozen_uses[node.inputs[k]];
    }
  for (const GraphOutput& o : g.outputs) ++uses[o.node];
  std::vector<int> trainable;
  for (int id : g.params()) {
    const Node& p = g.node(id);
    if (!is_float(p.type.dtype) || listed(options.frozen, p.name)) continue;
    if (uses[id] > 0 && uses[id] == frozen_uses[id]) continue;
    if (!options.params.empty() && !listed(options.params, p.name)) continue;
    trainable.push_back(id);
  }
  for (int id : trainable)
    if (find_output(g, grad_name(g.node(id).name)))
      fail("autodiff: graph '", g.name, "' already has an output named '", grad_name(g.node(id).name), "'");

  // from_param[i]: the first trainable param with a float path to node i (-1: none).
  std::vector<int> from_param(n, -1);
  for (int id : trainable) from_param[id] = id;
  for (const Node& node : g.nodes) {
    if (node.is_leaf() || !is_float(node.type.dtype)) continue;
    for (int i : node.inputs)
      if (from_param[i] >= 0 && is_float(g.node(i).type.dtype)) {
        from_param[node.id] = from_param[i];
        break;
      }
  }
  // to_loss[i]: node i reaches the loss through float tensors.
  std::vector<bool> to_loss(n, false);
  to_loss[loss.id] = true;
  for (int id = n - 1; id >= 0; --id) {
    if (!to_loss[id]) continue;
    for (int i : g.node(id).inputs)
      if (is_float(g.node(i).type.dtype)) to_loss[i] = true;
  }
  std::vector<bool> on_path(n);
  for (int id = 0; id < n; ++id) on_path[id] = to_loss[id] && from_param[id] >= 0;
  // Every node on a path needs a rule: check them all before building anything.
  for (const Node& node : g.nodes)
    if (on_path[node.id] && !node.is_leaf() && !find_vjp(node.op))
      fail("autodiff: cannot differentiate '", node.name, "' (op ", node.op, ") on the path from param '",
           g.node(from_param[node.id]).name, "' to loss '", loss_name, "'");

  // The seed, named so that split_forward_backward can find it.
  Graph base = g;
  const std::string seed_name = grad_name(loss_name);
  if (base.find(seed_name) >= 0)
    fail("autodiff: graph '", g.name, "' already has a node named '", seed_name, "' (the loss cotangent's name)");
  Node seed;
  seed.id = n;
  seed.name = seed_name;
  seed.op = "constant";
  seed.type = {loss.type.dtype, {}};
  seed.values = {1.0};
  base.nodes.push_back(seed);

  GraphBuilder b(base);
  std::vector<Tensor> ct(n);
  if (on_path[loss.id]) ct[loss.id] = b.tensor(n);
  for (int id = n - 1; id >= 0; --id) {
    const Node& node = g.node(id);
    if (!on_path[id] || node.is_leaf() || !ct[id].defined()) continue;
    VjpContext c{b, node, {}, b.tensor(id), ct[id], {}};
    for (int i : node.inputs) {
      c.inputs.push_back(b.tensor(i));
      c.needs_grad.push_back(on_path[i]);
    }
    std::vector<Tensor> grads;
    try {
      grads = (*find_vjp(node.op))(c);
    } catch (const Error& e) {
      fail("autodiff: the gradient of '", node.name, "' (op ", node.op, ") failed: ", e.what());
    }
    if (grads.size() != node.inputs.size())
      fail("autodiff: the VJP rule of op ", node.op, " returned ", grads.size(), " gradients for ",
           node.inputs.size(), " inputs (node '", node.name, "')");
    for (size_t k = 0; k < grads.size(); ++k) {
      const int in = node.inputs[k];
      if (!on_path[in] || !grads[k].defined()) continue;
      if (grads[k].type() != g.node(in).type)
        fail("autodiff: the VJP rule of op ", node.op, " gave input ", k, " of '", node.name, "' a gradient of type ",
             to_string(grads[k].type()), ", expected ", to_string(g.node(in).type));
      ct[in] = ct[in].defined() ? add_cotangents(b, ct[in], grads[k]) : grads[k];  // a tensor used several times
    }
  }
  for (int id : trainable) {
    const Node& p = g.node(id);
    Tensor grad = ct[id];
    if (!grad.defined()) {
      // No path from this param to the loss: its gradient is zeros of its
      // type, a splat constant broadcast to its shape.
      grad = b.constant(0.0, p.type.dtype);
      if (!p.type.shape.empty()) grad = broadcast_to(grad, p.type.shape);
    }
    b.output(grad_name(p.name), grad);
  }
  Graph out = b.graph();
  verify(out, {true});
  return out;
}

Pass autodiff(AutodiffOptions options) {
  return Pass{"autodiff", [options](const Graph& g) { return differentiate(g, options); }};
}

SplitGraphs split_forward_backward(const Graph& joint, const std::string& loss) {
  const int n = static_cast<int>(joint.nodes.size());
  const std::string seed_name = grad_name(loss);
  const int seed = joint.find(seed_name);
  if (seed < 0 || joint.node(seed).op != "constant" || !joint.node(seed).type.shape.empty())
    fail("split_forward_backward: graph '", joint.name, "' has no loss cotangent '", seed_name,
         "' (a scalar constant): is it the result of differentiate() with loss '", loss, "'?");
  auto is_grad_output = [&](const GraphOutput& o) {
    return o.name.rfind("grad.", 0) == 0 && is_param_named(joint, o.name.substr(5));
  };
  // Forward: every input and param, and what the non-gradient outputs need.
  std::vector<bool> fwd(n, false);
  for (const Node& node : joint.nodes)
    if (node.op == "input" || node.op == "param") fwd[node.id] = true;
  for (const GraphOutput& o : joint.outputs)
    if (!is_grad_output(o)) fwd[o.node] = true;
  for (int id = n - 1; id >= 0; --id)
    if (fwd[id])
      for (int i : joint.node(id).inputs) fwd[i] = true;
  if (fwd[seed]) fail("split_forward_backward: the forward outputs of graph '", joint.name, "' read the loss cotangent");
  // Backward: what the gradient outputs need, beyond the forward.
  std::vector<bool> bwd(n, false);
  for (const GraphOutput& o : joint.outputs)
    if (is_grad_output(o)) bwd[o.node] = true;
  for (int id = n - 1; id >= 0; --id)
    if (bwd[id] && !fwd[id])
      for (int i : joint.node(id).inputs) bwd[i] = true;
  // Saved: the forward nodes the backward reads (constants are copied instead).
  std::vector<bool> saved(n, false);
  for (int id = 0; id < n; ++id) {
    if (!bwd[id]) continue;
    if (fwd[id] && joint.node(id).op != "constant") saved[id] = true;
  }

  SplitGraphs r;
  // Forward graph: the forward nodes, the non-gradient outputs, then the saved tensors.
  Graph f = joint;
  f.outputs.clear();
  for (const GraphOutput& o : joint.outputs)
    if (!is_grad_output(o)) f.outputs.push_back(o);
  for (int id = 0; id < n; ++id) {
    if (!saved[id]) continue;
    const std::string& name = joint.node(id).name;
    r.saved.push_back(name);
    if (const GraphOutput* o = find_output(f, name)) {
      if (o->node != id)
        fail("split_forward_backward: graph '", joint.name, "' has an output named '", name,
             "' that is not node '", name, "', which the backward reads: rename that output");
      continue;  // already an output of that name and node
    }
    f.outputs.push_back({name, id});
  }
  r.forward = keep_only(f, fwd);
  verify(r.forward, {true});

  // Backward graph: the saved tensors and the cotangent as inputs, the gradient nodes.
  Graph bw;
  bw.name = joint.name;
  std::vector<int> map(n, -1);
  auto append = [&](Node node, int old) {
    node.id = static_cast<int>(bw.nodes.size());
    for (int& i : node.inputs) i = map.at(i);
    map[old] = node.id;
    bw.nodes.push_back(std::move(node));
  };
  for (int id = 0; id < n; ++id) {
    if (!saved[id]) continue;
    Node in;
    in.name = joint.node(id).name;
    in.op = "input";
    in.type = joint.node(id).type;
    append(in, id);
  }
  {
    Node in;
    in.name = seed_name;
    in.op = "input";
    in.type = joint.node(seed).type;
    append(in, seed);
  }
  for (int id = 0; id < n; ++id)
    if (bwd[id] && !saved[id] && id != seed) append(joint.node(id), id);
  for (const GraphOutput& o : joint.outputs)
    if (is_grad_output(o)) bw.outputs.push_back({o.name, map.at(o.node)});
  verify(bw, {true});
  r.backward = std::move(bw);
  return r;
}

}  // namespace tessera
