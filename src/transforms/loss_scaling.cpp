// Dynamic loss scaling (include/tessera/autocast.h): PyTorch GradScaler's
// scale, unscale, inf/NaN check and scale update, written into a joint graph.
//
// The loss cotangent (autodiff's scalar constant "grad.<loss>") is replaced
// by the "amp.loss_scale" param; the gradient outputs are unscaled; the f64
// sum of every unscaled element, checked by a `define` using Halide's
// is_finite (evaluated strictly even where float math is not), is the
// "optim.skip" output; the scale and growth tracker updates are the
// "new.amp.*" outputs. Skipping the update itself is the optimizer's job
// (optimizer.h reads "optim.skip"). Nothing here simplifies the graph.
#include <cmath>

#include "graph_rewrite.h"
#include "tessera/autocast.h"
#include "tessera/autodiff.h"
#include "tessera/error.h"
#include "tessera/ops.h"

namespace tessera {

namespace {

const char* const kWho = "loss_scaling";

void check_option(bool ok, const char* what, double v, const char* need) {
  if (!ok) fail(kWho, ": ", what, " = ", v, " is invalid (", need, ")");
}

void check_free(const Graph& g, const std::string& name) {
  if (g.find(name) >= 0) fail(kWho, ": graph '", g.name, "' already has a node named '", name, "'");
  for (const GraphOutput& o : g.outputs)
    if (o.name == name) fail(kWho, ": graph '", g.name, "' already has an output named '", name, "'");
}

// 1 (u8) when the scalar float `x` is inf or NaN, else 0: a `define`, since
// Halide evaluates is_finite strictly even where float math is not.
Tensor nonfinite(GraphBuilder& b, Tensor x, const std::string& what) {
  std::string name = "amp.nonfinite." + what;
  for (int k = 1; b.graph().find(name) >= 0; ++k) name = "amp.nonfinite." + what + "." + std::to_string(k);
  return b.define(name, {}, [&]() {
    return Halide::select(Halide::is_finite(x()), Expr(uint8_t(0)), Expr(uint8_t(1)));
  });
}

}  // namespace

Graph apply_loss_scaling(const Graph& joint, const LossScalingOptions& o) {
  check_option(std::isfinite(o.init_scale) && o.init_scale > 0, "init_scale", o.init_scale, "need a finite value > 0");
  check_option(std::isfinite(o.growth_factor) && o.growth_factor > 1, "growth_factor", o.growth_factor,
               "need a finite value > 1");
  check_option(o.backoff_factor > 0 && o.backoff_factor < 1, "backoff_factor", o.backoff_factor,
               "need 0 < backoff_factor < 1");
  check_option(o.growth_interval >= 1 && o.growth_interval <= INT32_MAX, "growth_interval",
               static_cast<double>(o.growth_interval), "need 1 <= growth_interval < 2^31");

  for (const char* name : {kLossScale, kGrowthTracker}) {
    check_free(joint, name);
    check_free(joint, new_name(name));
  }
  check_free(joint, kOptimSkip);
  const std::string seed_name = grad_name(o.loss);
  const int seed = joint.find(seed_name);
  if (seed < 0 || joint.node(seed).op != "constant" || joint.node(seed).type.rank() != 0 ||
      !is_float(joint.node(seed).type.dtype))
    fail(kWho, ": graph '", joint.name, "' has no loss cotangent '", seed_name,
         "' (a float scalar constant): run loss_scaling after autodiff, on loss '", o.loss, "'");
  if (joint.find(kOptimStep) >= 0)
    fail(kWho, ": graph '", joint.name, "' already has '", kOptimStep, "': run loss_scaling before the optimizer");
  std::vector<size_t> grads;
  for (size_t i = 0; i < joint.outputs.size(); ++i) {
    const GraphOutput& out = joint.outputs[i];
    if (out.name.rfind("grad.", 0) != 0) continue;
    const int p = joint.find(out.name.substr(5));
    if (p < 0 || joint.node(p).op != "param") continue;
    if (!is_float(joint.node(out.node).type.dtype))
      fail(kWho, ": output '", out.name, "' is ", to_string(joint.node(out.node).type), ", not a float gradient");
    grads.push_back(i);
  }
  if (grads.empty()) fail(kWho, ": graph '", joint.name, "' has no \"grad.<param>\" output (differentiate it first)");

  // The cotangent becomes the scale (cast to the loss's type if it is not f32).
  GraphRewriter rw(joint);
  for (const Node& n : joint.nodes) {
    if (n.id != seed) {
      rw.copy(n.id);
      continue;
    }
    Node p;
    p.name = kLossScale;
    p.op = "param";
    p.type = {DType::f32, {}};
    int s = rw.emit(std::move(p));
    if (n.type.dtype != DType::f32) {
      Node c;
      c.op = "cast";
      c.inputs = {s};
      c.attrs = {{"dtype", std::string(dtype_name(n.type.dtype))}};
      c.type = n.type;
      s = rw.emit(std::move(c));
    }
    rw.map(n.id, s);
  }
  GraphBuilder b(std::move(rw).finish());

  Tensor scale = b.tensor(kLossScale);
  Tensor tracker = b.param(kGrowthTracker, {}, DType::i32);
  // PyTorch: inv_scale = scale.double().reciprocal().float().
  Tensor inv = cast(1.0 / cast(scale, DType::f64), DType::f32);
  std::vector<GraphOutput> outputs = b.graph().outputs;
  // Some unscaled element is inf or NaN exactly when the f64 sum of all of
  // them is: inf and NaN propagate through the sum, and a sum of f32 (or
  // f16/bf16) values cannot overflow f64. One reduction per gradient, then
  // one strict check of the scalar. (For f64 gradients a finite sum above
  // 1.8e308 would count as overflow.)
  Tensor total;
  for (size_t i : grads) {
    Tensor g = b.tensor(outputs[i].node);
    Tensor u;
    if (g.dtype() == DType::f32) u = g * inv;
    else if (g.dtype() == DType::f64) u = g * cast(inv, DType::f64);
    else u = cast(cast(g, DType::f32) * inv, g.dtype());
    outputs[i].node = u.id();
    Tensor s = sum(u.dtype() == DType::f64 ? u : cast(u, DType::f64));
    total = total.defined() ? total + s : s;
  }
  Tensor skip = cast(nonfinite(b, total, "gradients"), DType::boolean);

  // GradScaler.update(): back off on inf/NaN, else count clean steps and grow
  // at growth_interval when the grown scale is finite.
  Tensor one = b.constant(1.0, DType::i32), zero = b.constant(0.0, DType::i32);
  Tensor clean = tracker + one;
  Tensor grow = ge(clean, b.constant(static_cast<double>(o.growth_interval), DType::i32));
  Tensor grown = scale * o.growth_factor;
  Tensor grown_ok = eq(nonfinite(b, grown, "grown_scale"), b.constant(0.0, DType::u8));
  Tensor next_scale = where(skip, scale * o.backoff_factor, where(grow, where(grown_ok, grown, scale), scale));
  Tensor next_tracker = where(skip, zero, where(grow, zero, clean));

  Graph g = b.graph();
  g.outputs = outputs;
  g.outputs.push_back({kOptimSkip, skip.id()});
  g.outputs.push_back({new_name(kLossScale), next_scale.id()});
  g.outputs.push_back({new_name(kGrowthTracker), next_tracker.id()});
  verify(g, {true});
  return g;
}

Pass loss_scaling(LossScalingOptions options) {
  return Pass{kWho, [options](const Graph& g) { return apply_loss_scaling(g, options); }};
}

}  // namespace tessera
