// Trainer: owns a model's params and optimizer state and runs training steps.
//
// Built from a joint graph (differentiate()'s result: outputs `loss` and
// "grad.<param>"), it applies the optimizer transform (optimizer.h), compiles
// the step graph once, and then each step(batch) is one run (forward,
// backward, update) that writes every "new.X" output over X's own buffer
// where the plan allows it (Executable::in_place_updates(): one copy of the
// params and moments, as torch.optim keeps), and otherwise into a buffer of
// its own that is then swapped with X's (the old buffer becomes the next
// run's output buffer). Either way steady state allocates nothing. evaluate(batch) runs the forward graph (the joint
// graph without gradient outputs) with the current params, without updating.
//
// Initialization, per param, first match wins:
//   1. options.init[name] (the model's own choice);
//   2. how the graph uses it: the weight of `linear` -> U(-b, b) with
//      b = 1/sqrt(fan_in), fan_in = weight.shape[1] (PyTorch's
//      kaiming_uniform(a = sqrt 5)); the bias of `linear` -> the same bound;
//      the weight of `embedding` -> N(0, 0.02) (GPT-2); the weight of
//      `layer_norm`/`rms_norm` -> ones, their bias -> zeros;
//   3. by name and rank: "*bias" -> zeros, rank 1 "*weight" -> ones, rank >= 2
//      -> U(-b, b), b = 1/sqrt(numel / shape[0]); anything else -> zeros.
// Values come from std::mt19937_64 seeded with hash(seed, param name) and
// transformed by hand-written (portable) uniform and Box-Muller normal
// formulas, so the same seed gives bitwise the same params on every platform
// and adding a param does not change the others. Optimizer state starts at 0.
//
// Gradient accumulation: with accumulation_steps = N > 1, step() takes N
// micro-batches, runs the joint graph on each, averages the gradients (the
// loss is a mean, so with equal micro-batches this is the big batch's
// gradient) and runs the update graph (gradients_as_inputs) once; the loss
// returned is the mean of the micro-batch losses.
//
// Loss scaling (mixed precision with f16, autocast.h): with
// options.loss_scaling set, the step graph is apply_loss_scaling() of the
// joint graph, then the optimizer. Its state "amp.loss_scale" starts at
// init_scale and "amp.growth_tracker" at 0; both are in state() and are
// updated inside the step graph. A step whose gradients hold inf/NaN
// changes no param or optimizer state (last_step_skipped() says so) and, as
// with PyTorch's GradScaler, does not count as an optimizer step (steps_done()
// and "optim.step" do not advance). Not combinable with accumulation_steps > 1.
//
// The step graph is compiled as the optimizer returns it (no simplify/cse).
//
// Not handled: dropout offsets are node attributes, so every step reuses the
// same dropout masks (a per-step offset needs an input, not an attribute);
// non-float params are left as given (zeros unless set with param()).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tessera/autocast.h"
#include "tessera/graph.h"
#include "tessera/optimizer.h"
#include "tessera/runtime.h"

namespace tessera {

struct Init {
  enum class Kind { zeros, ones, constant, uniform, normal };
  Kind kind = Kind::zeros;
  double a = 0;  // constant: the value; uniform: low; normal: mean
  double b = 0;  // uniform: high; normal: std

  static Init zeros() { return {Kind::zeros, 0, 0}; }
  static Init ones() { return {Kind::ones, 0, 0}; }
  static Init constant(double v) { return {Kind::constant, v, 0}; }
  static Init uniform(double lo, double hi) { return {Kind::uniform, lo, hi}; }
  static Init normal(double mean, double std) { return {Kind::normal, mean, std}; }
};

struct TrainerOptions {
  OptimizerOptions optimizer = AdamWOptions{};  // its lr is the initial "optim.lr"
  uint64_t seed = 0;
  std::map<std::string, Init> init;  // per param name; overrides the defaults above
  int accumulation_steps = 1;        // micro-batches per step
  std::string loss = "loss";         // the loss output of the joint graph
  Target target = Target::host();
  // Dynamic loss scaling (autocast.h); off when empty.
  std::optional<LossScalingOptions> loss_scaling;
};

// Everything that decides how training continues: the params, the optimizer
// state, the step counter, the lr and the last step's grad norm (there is no
// other random or step state). checkpoint.h saves and loads it.
struct TrainingState {
  std::map<std::string, Buffer> params, state;
  int64_t steps_done = 0;
  double lr = 0;
  double last_grad_norm = 0;
};

class Trainer {
 public:
  // Throws Error if the joint graph has no float scalar `loss` output or no
  // gradient outputs, an init names no param, the optimizer or loss scaling
  // rejects it, loss scaling is combined with accumulation, or the joint
  // graph already has loss-scaling state (set options.loss_scaling instead).
  explicit Trainer(const Graph& joint, TrainerOptions options = {});

  // One optimizer step; returns the loss (the mean over micro-batches). The
  // batch holds every graph input (not params, "optim.*"). With
  // accumulation_steps = N, the vector form needs exactly N micro-batches.
  double step(const std::map<std::string, Buffer>& batch);
  double step(const std::vector<std::map<std::string, Buffer>>& micro_batches);
  // The forward graph's outputs (loss included) with the current params.
  std::map<std::string, Buffer> evaluate(const std::map<std::string, Buffer>& batch);

  // Params and optimizer state by name (the trained values; writable:
  // assign a Buffer of the same type to load weights). Buffers share
  // storage, and after a step the old param buffers are reused as output
  // buffers: a copy taken here is overwritten two steps later, so clone()
  // (or to_f64()) to keep a snapshot.
  const std::map<std::string, Buffer>& params() const { return params_; }
  const std::map<std::string, Buffer>& state() const { return state_; }
  Buffer& param(const std::string& name);

  double lr() const { return lr_; }
  void set_lr(double lr);                       // takes effect at the next step
  int64_t steps_done() const { return steps_; }  // optim.step of the next step is steps_done() + 1
  // "optim.grad_norm" of the last step (0 unless clipping is on).
  double last_grad_norm() const { return grad_norm_; }
  // Whether loss scaling skipped the last step (inf/NaN gradients); false without loss scaling.
  bool last_step_skipped() const { return skipped_; }
  // The current loss scale ("amp.loss_scale"); 1 without loss scaling.
  double loss_scale() const;

  // Replaces params, optimizer state, step counter, lr and grad norm, so
  // that the next step continues bit-identically from where `s` was taken.
  // All or nothing: throws Error naming the first missing, extra or mistyped
  // tensor (or a negative step count or bad lr) and changes nothing. The
  // Buffers are taken over, not copied.
  void restore(TrainingState s);

  const Graph& step_graph() const { return step_graph_; }
  const Graph& forward_graph() const { return forward_graph_; }

 private:
  void init_params(const Graph& joint);
  std::map<std::string, Buffer> args_for(const std::map<std::string, Buffer>& batch, bool with_state) const;
  Buffer* param_or_state(const std::string& name);
  void share_in_place_outputs();
  void swap_in(std::map<std::string, Buffer>& outputs);

  TrainerOptions options_;
  Graph step_graph_, forward_graph_, joint_;
  Executable step_exe_, forward_exe_, joint_exe_;
  bool forward_compiled_ = false, joint_compiled_ = false;
  std::map<std::string, Buffer> params_, state_, outputs_;
  std::vector<std::string> graph_inputs_;  // the joint graph's inputs, for checking batches
  double lr_ = 0, grad_norm_ = 0;
  int64_t steps_ = 0;
  bool skipped_ = false;
};

// The default initialization of every param of `g` (rule 2 and 3 above), for inspection.
std::map<std::string, Init> default_inits(const Graph& g);

// The params a Trainer built from `joint` with `options` starts from
// (options.init over default_inits, options.seed), computed without
// building a Trainer: for a step that trains elsewhere (a generated GPU
// step) and must start where a Trainer would. Throws Error if options.init
// names something that is not a param of `joint`.
std::map<std::string, Buffer> initial_params(const Graph& joint, const TrainerOptions& options);

// Throws Error, its message starting with `who`, unless `given` holds
// exactly the params and optimizer state tensors of `expected` (names,
// dtypes, shapes), with steps_done >= 0 and lr >= 0. What
// Trainer::restore checks, for a state restored elsewhere.
void check_training_state(const TrainingState& expected, const TrainingState& given, const std::string& who);

}  // namespace tessera
