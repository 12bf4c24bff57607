// The optimizer transforms (optimizer.h): SGD and AdamW appended to a joint
// graph, with optional clipping by global gradient norm, plus
// gradients_as_inputs for update-only graphs (gradient accumulation).
//
// Each transform continues the joint graph with a GraphBuilder, adds the
// "optim.step"/"optim.lr" inputs and the state params, computes the scalar
// hyperparameter arithmetic once in f64, and swaps the "grad.<param>"
// outputs for "new.<param>"/"new.<state>" (each a where() on "optim.skip"
// when the joint graph has that output). It does not differentiate,
// simplify or remove dead code (run the usual passes afterwards).
#include <cmath>
#include <map>

#include "tessera/autodiff.h"
#include "tessera/ops.h"
#include "tessera/optimizer.h"

namespace tessera {
namespace {

struct Target_ {
  std::string param;  // the param's name
  int param_node = -1;
  int grad_node = -1;
};

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// The params with a "grad.<param>" output, in output order, after checking them.
std::vector<Target_> updated_params(const Graph& g, const char* who) {
  std::vector<Target_> out;
  for (const GraphOutput& o : g.outputs) {
    if (!starts_with(o.name, "grad.")) continue;
    const std::string p = o.name.substr(5);
    const int id = g.find(p);
    if (id < 0 || g.nodes[id].op != "param")
      fail(who, ": output '", o.name, "' is a gradient of '", p, "', which is not a param of graph '", g.name, "'");
    const Node& pn = g.nodes[id];
    const TensorType& gt = g.node(o.node).type;
    if (gt != pn.type)
      fail(who, ": output '", o.name, "' is ", to_string(gt), " but param '", p, "' is ", to_string(pn.type));
    if (!is_float(pn.type.dtype))
      fail(who, ": param '", p, "' is ", to_string(pn.type), "; only float params can be updated");
    out.push_back({p, id, o.node});
  }
  if (out.empty())
    fail(who, ": graph '", g.name, "' has no \"grad.<param>\" output (differentiate it first: autodiff.h)");
  return out;
}

void check_new_name(const Graph& g, const std::string& name, const char* who) {
  if (g.find(name) >= 0) fail(who, ": graph '", g.name, "' already has a node named '", name, "'");
  for (const GraphOutput& o : g.outputs)
    if (o.name == name) fail(who, ": graph '", g.name, "' already has an output named '", name, "'");
}

void check_hyper(bool ok, const char* who, const char* what, double v, const char* need) {
  if (!ok) fail(who, ": ", what, " = ", v, " is invalid (", need, ")");
}

// The shared part of both optimizers: the builder, the scalar inputs, the
// (possibly clipped) gradients, and the outputs being assembled.
class Update {
 public:
  Update(const Graph& joint, const char* who, const std::vector<std::string>& state_suffixes, double max_grad_norm)
      : joint_(joint), targets_(updated_params(joint, who)), b_(joint) {
    check_new_name(joint, kOptimStep, who);
    check_new_name(joint, kOptimLr, who);
    for (const Target_& t : targets_) {
      check_new_name(joint, new_name(t.param), who);
      for (const std::string& s : state_suffixes) {
        check_new_name(joint, t.param + s, who);
        check_new_name(joint, new_name(t.param + s), who);
      }
    }
    step_ = b_.input(kOptimStep, {}, DType::f32);
    lr_ = b_.input(kOptimLr, {}, DType::f32);
    step64_ = cast(step_, DType::f64);
    lr64_ = cast(lr_, DType::f64);
    for (const Target_& t : targets_) grads_.push_back(b_.tensor(t.grad_node));
    if (max_grad_norm > 0) clip(max_grad_norm);
    for (const GraphOutput& o : joint.outputs) {
      if (o.name != kOptimSkip) continue;
      const TensorType& st = joint.node(o.node).type;
      if (st != TensorType{DType::boolean, {}})
        fail(who, ": output '", kOptimSkip, "' of graph '", joint.name, "' is ", to_string(st), ", not bool[]");
      skip_ = b_.tensor(o.node);
    }
  }

  GraphBuilder& b() { return b_; }
  const std::vector<Target_>& targets() const { return targets_; }
  Tensor param(size_t i) { return b_.tensor(targets_[i].param_node); }
  Tensor grad(size_t i) const { return grads_[i]; }
  Tensor step() const { return step_; }
  Tensor step64() const { return step64_; }
  Tensor lr64() const { return lr64_; }
  Tensor f64(double v) { return b_.constant(v, DType::f64); }
  // An f64 scalar cast to `dtype` (once per scalar and dtype).
  Tensor as(Tensor x64, DType dtype) {
    if (dtype == DType::f64) return x64;
    auto key = std::make_pair(x64.id(), dtype);
    auto it = casts_.find(key);
    if (it != casts_.end()) return b_.tensor(it->second);
    Tensor c = cast(x64, dtype);
    casts_[key] = c.id();
    return c;
  }
  Tensor state(size_t i, const std::string& suffix) {
    const Node& p = joint_.nodes[targets_[i].param_node];
    return b_.param(p.name + suffix, p.type.shape, p.type.dtype);
  }
  // Output "new.X" = t, or X itself where "optim.skip" is true.
  void emit(const std::string& name, Tensor t) {
    if (skip_.defined()) t = where(skip_, b_.tensor(name.substr(4)), t);
    results_.push_back({name, t.id()});
  }

  Graph finish() {
    Graph g = b_.graph();
    g.outputs.clear();
    for (const GraphOutput& o : joint_.outputs)
      if (!starts_with(o.name, "grad.")) g.outputs.push_back(o);
    for (const GraphOutput& o : results_) g.outputs.push_back(o);
    if (grad_norm_.defined()) g.outputs.push_back({kOptimGradNorm, grad_norm_.id()});
    verify(g, {true});
    return g;
  }

 private:
  // torch.nn.utils.clip_grad_norm_: total = ||all grads||_2, grads *= min(1, max / (total + 1e-6)).
  void clip(double max_norm) {
    Tensor total2;
    for (Tensor g : grads_) {
      Tensor x = (g.dtype() == DType::f16 || g.dtype() == DType::bf16) ? cast(g, DType::f32) : g;
      Tensor s = sum(x * x);
      if (s.dtype() != DType::f64) s = cast(s, DType::f64);
      total2 = total2.defined() ? total2 + s : s;
    }
    Tensor total = sqrt(total2);
    Tensor coef = minimum(f64(1.0), f64(max_norm) / (total + 1e-6));
    for (Tensor& g : grads_) g = g * as(coef, g.dtype());
    grad_norm_ = cast(total, DType::f32);
  }

  const Graph& joint_;
  std::vector<Target_> targets_;
  GraphBuilder b_;
  Tensor step_, lr_, step64_, lr64_, grad_norm_, skip_;
  std::vector<Tensor> grads_;
  std::map<std::pair<int, DType>, int> casts_;
  std::vector<GraphOutput> results_;
};

const char* const kMomentum = ".momentum_buffer";
const char* const kExpAvg = ".exp_avg";
const char* const kExpAvgSq = ".exp_avg_sq";

}  // namespace

Graph sgd(const Graph& joint, const SGDOptions& o) {
  const char* who = "sgd";
  check_hyper(o.lr >= 0, who, "lr", o.lr, "need lr >= 0");
  check_hyper(o.momentum >= 0, who, "momentum", o.momentum, "need momentum >= 0");
  check_hyper(std::isfinite(o.dampening), who, "dampening", o.dampening, "need a finite value");
  check_hyper(o.weight_decay >= 0, who, "weight_decay", o.weight_decay, "need weight_decay >= 0");
  check_hyper(o.max_grad_norm >= 0, who, "max_grad_norm", o.max_grad_norm, "need >= 0; 0 turns clipping off");
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    fail(who, ": nesterov momentum needs momentum > 0 and dampening == 0 (momentum = ", o.momentum,
         ", dampening = ", o.dampening, ")");

  const bool momentum = o.momentum != 0;
  Update u(joint, who, momentum ? std::vector<std::string>{kMomentum} : std::vector<std::string>{}, o.max_grad_norm);
  // PyTorch's first step sets buf = d (no dampening); with a zero buffer the
  // general formula gives (1 - dampening) d, so select on step == 1. Without
  // dampening the formula is already exact on a zero buffer.
  Tensor first = momentum && o.dampening != 0 ? eq(u.step(), u.b().constant(1.0, DType::f32)) : Tensor();
  for (size_t i = 0; i < u.targets().size(); ++i) {
    Tensor p = u.param(i);
    Tensor d = u.grad(i);
    if (o.weight_decay != 0) d = d + p * o.weight_decay;
    std::string buf_name;
    Tensor new_buf;
    if (momentum) {
      Tensor buf = u.state(i, kMomentum);
      Tensor damped = o.dampening != 0 ? d * (1.0 - o.dampening) : d;
      new_buf = buf * o.momentum + damped;
      if (first.defined()) new_buf = where(first, d, new_buf);
      d = o.nesterov ? d + new_buf * o.momentum : new_buf;
      buf_name = buf.name();
    }
    Tensor new_p = p - d * u.as(u.lr64(), p.dtype());
    u.emit(new_name(p.name()), new_p);
    if (momentum) u.emit(new_name(buf_name), new_buf);
  }
  return u.finish();
}

Graph adamw(const Graph& joint, const AdamWOptions& o) {
  const char* who = "adamw";
  check_hyper(o.lr >= 0, who, "lr", o.lr, "need lr >= 0");
  check_hyper(o.beta1 >= 0 && o.beta1 < 1, who, "beta1", o.beta1, "need 0 <= beta1 < 1");
  check_hyper(o.beta2 >= 0 && o.beta2 < 1, who, "beta2", o.beta2, "need 0 <= beta2 < 1");
  check_hyper(o.eps > 0, who, "eps", o.eps, "need eps > 0");
  check_hyper(o.weight_decay >= 0, who, "weight_decay", o.weight_decay, "need weight_decay >= 0");
  check_hyper(o.max_grad_norm >= 0, who, "max_grad_norm", o.max_grad_norm, "need >= 0; 0 turns clipping off");

  Update u(joint, who, {kExpAvg, kExpAvgSq}, o.max_grad_norm);
  // The scalars PyTorch computes in Python doubles, here in f64:
  // bias_correction{1,2} = 1 - beta^t, step_size = lr / bc1, bc2_sqrt = sqrt(bc2).
  Tensor bc1 = 1.0 - pow(u.f64(o.beta1), u.step64());
  Tensor bc2 = 1.0 - pow(u.f64(o.beta2), u.step64());
  Tensor step_size = u.lr64() / bc1;
  Tensor bc2_sqrt = sqrt(bc2);
  Tensor decay = o.weight_decay != 0 ? 1.0 - u.lr64() * o.weight_decay : Tensor();
  for (size_t i = 0; i < u.targets().size(); ++i) {
    Tensor p = u.param(i);
    Tensor g = u.grad(i);
    const DType dt = p.dtype();
    Tensor m = u.state(i, kExpAvg);
    Tensor v = u.state(i, kExpAvgSq);
    Tensor p1 = decay.defined() ? p * u.as(decay, dt) : p;                // param.mul_(1 - lr * wd)
    Tensor m1 = m + (g - m) * (1.0 - o.beta1);                            // exp_avg.lerp_(grad, 1 - beta1)
    Tensor v1 = v * o.beta2 + g * g * (1.0 - o.beta2);                    // exp_avg_sq.mul_(beta2).addcmul_(g, g, 1 - beta2)
    Tensor denom = sqrt(v1) / u.as(bc2_sqrt, dt) + o.eps;                 // (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
    Tensor new_p = p1 - m1 / denom * u.as(step_size, dt);                 // param.addcdiv_(exp_avg, denom, -step_size)
    u.emit(new_name(p.name()), new_p);
    u.emit(new_name(m.name()), m1);
    u.emit(new_name(v.name()), v1);
  }
  return u.finish();
}

Graph apply_optimizer(const Graph& joint, const OptimizerOptions& options) {
  if (const auto* s = std::get_if<SGDOptions>(&options)) return sgd(joint, *s);
  return adamw(joint, std::get<AdamWOptions>(options));
}

Pass optimizer(OptimizerOptions options) {
  const char* name = std::holds_alternative<SGDOptions>(options) ? "sgd" : "adamw";
  return Pass{name, [options](const Graph& g) { return apply_optimizer(g, options); }};
}

std::vector<std::string> optimizer_state_names(const OptimizerOptions& options, const std::string& param) {
  if (const auto* s = std::get_if<SGDOptions>(&options))
    return s->momentum != 0 ? std::vector<std::string>{param + kMomentum} : std::vector<std::string>{};
  return {param + kExpAvg, param + kExpAvgSq};
}

Graph gradients_as_inputs(const Graph& joint) {
  const std::vector<Target_> targets = updated_params(joint, "gradients_as_inputs");
  GraphBuilder b(joint.name + ".update");
  for (const Target_& t : targets) {
    const Node& p = joint.nodes[t.param_node];
    b.param(p.name, p.type.shape, p.type.dtype);
  }
  for (const Target_& t : targets) {
    const Node& p = joint.nodes[t.param_node];
    b.input(grad_name(p.name), p.type.shape, p.type.dtype);
  }
  Graph g = b.graph();
  for (const Target_& t : targets) g.outputs.push_back({grad_name(t.param), g.find(grad_name(t.param))});
  verify(g, {true});
  return g;
}

}  // namespace tessera
