// Trainer (trainer.h): param initialization, the compiled step graph, the
// in-place update or buffer swap after each step, gradient accumulation and evaluation.
//
// Loss scaling's state is initialized here and skipped steps are not
// counted. It compiles graphs as given (no simplification passes) and holds every
// buffer on the host; it does not differentiate (the joint graph is an input)
// or schedule anything itself.
#include "tessera/trainer.h"

#include <cmath>
#include <random>

#include "tessera/autodiff.h"
#include "tessera/error.h"
#include "tessera/passes.h"

namespace tessera {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// FNV-1a of the name, mixed with the seed (splitmix64's finalizer).
uint64_t param_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  uint64_t z = h + seed * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// In [0, 1), 53 random bits.
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

Buffer make_init(const Node& p, const Init& init, uint64_t seed) {
  Buffer b(p.type.dtype, p.type.shape);
  std::mt19937_64 rng(param_seed(seed, p.name));
  const int64_t n = b.numel();
  for (int64_t i = 0; i < n; ++i) {
    double v = 0;
    switch (init.kind) {
      case Init::Kind::zeros: v = 0; break;
      case Init::Kind::ones: v = 1; break;
      case Init::Kind::constant: v = init.a; break;
      case Init::Kind::uniform: v = init.a + (init.b - init.a) * uniform01(rng); break;
      case Init::Kind::normal: {
        // Box-Muller; one value per pair of draws (simple and portable).
        const double u1 = 1.0 - uniform01(rng);  // (0, 1]
        const double u2 = uniform01(rng);
        v = init.a + init.b * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
        break;
      }
    }
    b.set(i, v);
  }
  return b;
}

void check_batch(const std::vector<std::string>& inputs, const std::map<std::string, Buffer>& batch) {
  for (const std::string& name : inputs)
    if (!batch.count(name)) fail("Trainer: the batch has no input '", name, "'");
}

}  // namespace

std::map<std::string, Init> default_inits(const Graph& g) {
  std::map<std::string, Init> out;
  auto set = [&](int id, Init init) {
    const Node& n = g.nodes[id];
    if (n.op == "param" && !out.count(n.name)) out[n.name] = init;
  };
  // Rule 2: how the graph uses the param.
  for (const Node& n : g.nodes) {
    if (n.op == "linear" && n.inputs.size() >= 2) {
      const Node& w = g.nodes[n.inputs[1]];
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.type.shape.back()));
      set(n.inputs[1], Init::uniform(-bound, bound));
      if (n.inputs.size() >= 3) set(n.inputs[2], Init::uniform(-bound, bound));
    } else if (n.op == "embedding" && n.inputs.size() >= 2) {
      set(n.inputs[1], Init::normal(0, 0.02));
    } else if (n.op == "layer_norm" || n.op == "rms_norm") {
      if (n.inputs.size() >= 2) set(n.inputs[1], Init::ones());
      if (n.inputs.size() >= 3) set(n.inputs[2], Init::zeros());
    }
  }
  // Rule 3: by name and rank.
  for (int id : g.params()) {
    const Node& p = g.nodes[id];
    if (out.count(p.name)) continue;
    if (ends_with(p.name, "bias")) {
      out[p.name] = Init::zeros();
    } else if (p.type.rank() == 1 && ends_with(p.name, "weight")) {
      out[p.name] = Init::ones();
    } else if (p.type.rank() >= 2) {
      const double fan_in = static_cast<double>(p.type.numel() / p.type.shape[0]);
      const double bound = 1.0 / std::sqrt(fan_in);
      out[p.name] = Init::uniform(-bound, bound);
    } else {
      out[p.name] = Init::zeros();
    }
  }
  return out;
}

std::map<std::string, Buffer> initial_params(const Graph& joint, const TrainerOptions& options) {
  std::map<std::string, Init> inits = default_inits(joint);
  for (const auto& [name, init] : options.init) {
    const int id = joint.find(name);
    if (id < 0 || joint.nodes[id].op != "param") fail("Trainer: init names '", name, "', which is not a param");
    inits[name] = init;
  }
  std::map<std::string, Buffer> params;
  for (int id : joint.params()) {
    const Node& p = joint.nodes[id];
    params[p.name] = is_float(p.type.dtype) ? make_init(p, inits.at(p.name), options.seed)
                                             : Buffer(p.type.dtype, p.type.shape);
  }
  return params;
}

void check_training_state(const TrainingState& expected, const TrainingState& given, const std::string& who) {
  auto check = [&](const char* what, const std::map<std::string, Buffer>& have,
                   const std::map<std::string, Buffer>& got) {
    for (const auto& [name, b] : have) {
      auto it = got.find(name);
      if (it == got.end()) fail(who, ": no ", what, " '", name, "' (", to_string(b.type()), ")");
      if (!it->second.defined() || it->second.type() != b.type())
        fail(who, ": ", what, " '", name, "' is ",
             it->second.defined() ? to_string(it->second.type()) : std::string("undefined"), ", expected ",
             to_string(b.type()));
    }
    for (const auto& [name, b] : got)
      if (!have.count(name)) fail(who, ": ", what, " '", name, "' (", to_string(b.type()), ") is not one of this run's");
  };
  check("param", expected.params, given.params);
  check("optimizer state", expected.state, given.state);
  if (given.steps_done < 0) fail(who, ": steps_done = ", given.steps_done, " (need >= 0)");
  if (!(given.lr >= 0)) fail(who, ": lr = ", given.lr, " is invalid (need lr >= 0)");
}

Trainer::Trainer(const Graph& joint, TrainerOptions options) : options_(std::move(options)), joint_(joint) {
  const int loss = [&] {
    for (const GraphOutput& o : joint.outputs)
      if (o.name == options_.loss) return o.node;
    fail("Trainer: graph '", joint.name, "' has no output '", options_.loss, "'");
  }();
  const TensorType& lt = joint.node(loss).type;
  if (!is_float(lt.dtype) || lt.rank() != 0)
    fail("Trainer: the loss '", options_.loss, "' must be a float scalar, not ", to_string(lt));
  if (options_.accumulation_steps < 1)
    fail("Trainer: accumulation_steps = ", options_.accumulation_steps, " (need >= 1)");
  lr_ = std::visit([](const auto& o) { return o.lr; }, options_.optimizer);
  for (int id : joint.inputs()) graph_inputs_.push_back(joint.nodes[id].name);

  // The forward graph: the joint graph without its gradients.
  Graph fwd = joint;
  fwd.outputs.clear();
  for (const GraphOutput& o : joint.outputs)
    if (o.name.rfind("grad.", 0) != 0) fwd.outputs.push_back(o);
  forward_graph_ = dce().run(fwd);

  if (joint.find(kLossScale) >= 0)
    fail("Trainer: graph '", joint.name, "' already has loss-scaling state '", kLossScale,
         "': pass the joint graph without loss_scaling() and set TrainerOptions::loss_scaling (the Trainer sets the "
         "initial scale)");
  if (options_.loss_scaling && options_.accumulation_steps != 1)
    fail("Trainer: loss scaling with accumulation_steps = ", options_.accumulation_steps,
         " is not supported (only 1)");
  if (options_.loss_scaling) {
    LossScalingOptions ls = *options_.loss_scaling;
    ls.loss = options_.loss;
    step_graph_ = apply_optimizer(apply_loss_scaling(joint, ls), options_.optimizer);
  } else {
    step_graph_ = options_.accumulation_steps == 1 ? apply_optimizer(joint, options_.optimizer)
                                                   : apply_optimizer(gradients_as_inputs(joint), options_.optimizer);
  }
  init_params(joint);
  step_exe_ = compile(step_graph_, options_.target);
}

void Trainer::init_params(const Graph& joint) {
  params_ = initial_params(joint, options_);
  for (int id : step_graph_.params()) {
    const Node& p = step_graph_.nodes[id];
    if (!params_.count(p.name)) state_[p.name] = Buffer(p.type.dtype, p.type.shape);
  }
  if (options_.loss_scaling) state_.at(kLossScale).set(0, options_.loss_scaling->init_scale);
}

double Trainer::loss_scale() const {
  auto it = state_.find(kLossScale);
  return it == state_.end() ? 1.0 : it->second.get(0);
}

Buffer& Trainer::param(const std::string& name) {
  auto it = params_.find(name);
  if (it == params_.end()) fail("Trainer: no param '", name, "'");
  return it->second;
}

void Trainer::set_lr(double lr) {
  if (!(lr >= 0)) fail("Trainer: lr = ", lr, " is invalid (need lr >= 0)");
  lr_ = lr;
}

void Trainer::restore(TrainingState s) {
  check_training_state(TrainingState{params_, state_}, s, "Trainer::restore");
  params_ = std::move(s.params);
  state_ = std::move(s.state);
  steps_ = s.steps_done;
  lr_ = s.lr;
  grad_norm_ = s.last_grad_norm;
}

std::map<std::string, Buffer> Trainer::args_for(const std::map<std::string, Buffer>& batch, bool with_state) const {
  check_batch(graph_inputs_, batch);
  std::map<std::string, Buffer> args = batch;
  for (const auto& [name, b] : params_) args[name] = b;
  if (with_state) {
    for (const auto& [name, b] : state_) args[name] = b;
    args[kOptimStep] = Buffer::from({static_cast<double>(steps_ + 1)}, {}, DType::f32);
    args[kOptimLr] = Buffer::from({lr_}, {}, DType::f32);
  }
  return args;
}

Buffer* Trainer::param_or_state(const std::string& name) {
  auto it = params_.find(name);
  if (it != params_.end()) return &it->second;
  auto st = state_.find(name);
  return st != state_.end() ? &st->second : nullptr;
}

void Trainer::share_in_place_outputs() {
  for (const auto& [out, x] : step_exe_.in_place_updates())
    if (Buffer* b = param_or_state(x)) outputs_[out] = *b;
}

void Trainer::swap_in(std::map<std::string, Buffer>& outputs) {
  for (auto& [name, b] : outputs) {
    if (name.rfind("new.", 0) != 0) continue;
    Buffer* target = param_or_state(name.substr(4));
    if (!target) fail("Trainer: output '", name, "' updates nothing");
    if (target->data() != b.data()) std::swap(*target, b);  // the old buffer becomes the next run's output buffer
  }
  auto gn = outputs.find(kOptimGradNorm);
  grad_norm_ = gn != outputs.end() ? gn->second.get(0) : 0.0;
  auto skip = outputs.find(kOptimSkip);
  skipped_ = skip != outputs.end() && skip->second.get(0) != 0;
  if (!skipped_) ++steps_;
}

double Trainer::step(const std::map<std::string, Buffer>& batch) {
  if (options_.accumulation_steps != 1) return step(std::vector<std::map<std::string, Buffer>>{batch});
  std::map<std::string, Buffer> args = args_for(batch, true);
  share_in_place_outputs();
  step_exe_.run(args, outputs_);
  const double loss = outputs_.at(options_.loss).get(0);
  swap_in(outputs_);
  return loss;
}

double Trainer::step(const std::vector<std::map<std::string, Buffer>>& micro_batches) {
  const int n = options_.accumulation_steps;
  if (static_cast<int>(micro_batches.size()) != n)
    fail("Trainer: ", micro_batches.size(), " micro-batches for accumulation_steps = ", n);
  if (n == 1) return step(micro_batches[0]);
  if (!joint_compiled_) {
    joint_exe_ = compile(joint_, options_.target);
    joint_compiled_ = true;
  }
  // Sum the gradients in f64, then feed their mean to the update graph.
  std::map<std::string, std::vector<double>> sums;
  double loss = 0;
  std::map<std::string, Buffer> outs;
  for (const auto& mb : micro_batches) {
    joint_exe_.run(args_for(mb, false), outs);
    loss += outs.at(options_.loss).get(0);
    for (const auto& [name, b] : outs) {
      if (name.rfind("grad.", 0) != 0) continue;
      std::vector<double>& s = sums[name];
      s.resize(b.numel(), 0.0);
      for (int64_t i = 0; i < b.numel(); ++i) s[i] += b.get(i);
    }
  }
  std::map<std::string, Buffer> args;
  for (const auto& [name, b] : params_) args[name] = b;
  for (const auto& [name, b] : state_) args[name] = b;
  args[kOptimStep] = Buffer::from({static_cast<double>(steps_ + 1)}, {}, DType::f32);
  args[kOptimLr] = Buffer::from({lr_}, {}, DType::f32);
  for (auto& [name, s] : sums) {
    for (double& v : s) v /= n;
    const Node& p = joint_.node(name.substr(5));
    args[name] = Buffer::from(s, p.type.shape, p.type.dtype);
  }
  // The update graph reads only the updated params; drop the others.
  for (auto it = args.begin(); it != args.end();)
    it = step_graph_.find(it->first) < 0 ? args.erase(it) : std::next(it);
  share_in_place_outputs();
  step_exe_.run(args, outputs_);
  swap_in(outputs_);
  return loss / n;
}

std::map<std::string, Buffer> Trainer::evaluate(const std::map<std::string, Buffer>& batch) {
  if (!forward_compiled_) {
    forward_exe_ = compile(forward_graph_, options_.target);
    forward_compiled_ = true;
  }
  return forward_exe_.run(args_for(batch, false));
}

}  // namespace tessera
