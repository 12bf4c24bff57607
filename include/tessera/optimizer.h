// Optimizers as Graph -> Graph transforms on a joint (forward + backward) graph.
//
// The input is a graph with outputs "grad.<param>" (autodiff.h's
// differentiate() makes one). sgd() and adamw() append the update, with
// torch.optim.SGD's and torch.optim.AdamW's exact semantics, and return a
// "step graph":
//
//   inputs   the original inputs, plus
//            "optim.step"  f32[]  the 1-based step count t (bias correction,
//                                 SGD's first-step momentum buffer)
//            "optim.lr"    f32[]  the learning rate (an input, so that a
//                                 schedule changes it without recompiling)
//   params   the original params, plus optimizer state, one per updated param:
//            SGD with momentum: "<param>.momentum_buffer"
//            AdamW:             "<param>.exp_avg", "<param>.exp_avg_sq"
//            (same type as the param; a runtime starts them at zero)
//   outputs  the original non-gradient outputs (the loss), then for each
//            updated param "new.<param>" and "new.<state>" for its state, and
//            "optim.grad_norm" (f32[], before clipping) when clipping is on.
//            The "grad.<param>" outputs are gone.
//
// Applying a step: run the graph with the current params and state, then
// write every output "new.X" back into param X (donation: the old buffer can
// be reused as the next run's output buffer; trainer.h does exactly this).
// Skipped steps: when the joint graph has an output "optim.skip" (bool[]),
// every "new.X" is where(optim.skip, X, X's update), so a true flag leaves
// params and state exactly as they were (GradScaler's skipped step on inf/NaN
// gradients; autocast.h's loss_scaling() makes this output). The output is
// kept. Only params that have a "grad.<param>" output are updated; others are left
// untouched (frozen). Scalar hyperparameter arithmetic (bias corrections,
// lr * weight_decay, the clip coefficient) is done in f64 from optim.lr and
// optim.step and cast once to each param's dtype; tensor arithmetic is in the
// param's dtype, as PyTorch does.
//
// Gradient accumulation over micro-batches: gradients_as_inputs(joint) gives
// a graph whose "grad.<param>" outputs are read from inputs of that name;
// sgd()/adamw() of it is an update-only graph. Run the joint graph once per
// micro-batch, average the gradients, and run the update graph on the mean
// (trainer.h's Trainer does this when accumulation_steps > 1).
//
// This header does not differentiate (autodiff.h), own buffers or loop (trainer.h).
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "tessera/graph.h"
#include "tessera/passes.h"

namespace tessera {

// torch.optim.SGD. The lr here is the value a Trainer feeds as "optim.lr".
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  // L2: grad += weight_decay * param
  bool nesterov = false;    // needs momentum > 0 and dampening == 0 (as PyTorch)
  double max_grad_norm = 0; // > 0: clip_grad_norm_ before the update; 0: off
};

// torch.optim.AdamW (decoupled weight decay: param *= 1 - lr * weight_decay).
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  double max_grad_norm = 0;  // > 0: clip_grad_norm_ before the update; 0: off
};

using OptimizerOptions = std::variant<SGDOptions, AdamWOptions>;

// Input and output names of step graphs.
inline const char* const kOptimStep = "optim.step";
inline const char* const kOptimLr = "optim.lr";
inline const char* const kOptimGradNorm = "optim.grad_norm";
inline const char* const kOptimSkip = "optim.skip";
inline std::string new_name(const std::string& x) { return "new." + x; }

// Throws Error naming the problem: a bad hyperparameter (lr < 0, momentum <
// 0, betas outside [0, 1), eps <= 0, weight_decay < 0, nesterov without
// momentum or with dampening, max_grad_norm < 0), no "grad.<param>" output at
// all, a "grad.X" output with no param X or of another type than X, a
// non-float param, an "optim.skip" output that is not bool[], or a name the
// transform would add that is already taken.
Graph sgd(const Graph& joint, const SGDOptions& options);
Graph adamw(const Graph& joint, const AdamWOptions& options);
Graph apply_optimizer(const Graph& joint, const OptimizerOptions& options);
Pass optimizer(OptimizerOptions options);

// The names of the state params the optimizer adds for `param`.
std::vector<std::string> optimizer_state_names(const OptimizerOptions& options, const std::string& param);

// For gradient accumulation: a graph with the params of `joint` that have a
// "grad.<param>" output, one input "grad.<param>" of the param's type per such
// param, and the outputs "grad.<param>" reading those inputs. Feed it to
// sgd()/adamw() to get an update-only graph.
Graph gradients_as_inputs(const Graph& joint);

}  // namespace tessera
