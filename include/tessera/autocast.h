// Mixed precision: autocast (a per-op precision policy applied as a
// Graph -> Graph transform) and dynamic loss scaling (PyTorch's GradScaler,
// inside the step graph).
//
// autocast rewrites every op by the policy's rule for its op name:
//   low     runs in the low-precision type (bf16 or f16): its f32 float
//           inputs are cast down (matmul, linear, attention). An op with an
//           f64 input is left to `follow`.
//   f32     runs in at least f32: its f16/bf16 inputs are cast up (softmax,
//           log_softmax, logsumexp, layer_norm, rms_norm, layer_norm_grad,
//           rms_norm_grad, cross_entropy, sum, mean, exp, log, pow, rsqrt,
//           embedding_grad).
//   follow  runs in the widest float type among its inputs, which are cast
//           to it when they differ (elementwise and shape ops, everything not
//           listed). A scalar constant does not widen: x_bf16 * 0.5 stays
//           bf16, as a Python scalar does in PyTorch.
//   keep    runs on exactly the types the input graph gave it (user ops:
//           define, define_grad, whose definitions are typed).
// Integer and bool inputs are never cast. Inputs and params keep their types
// (master weights stay f32; casts are inserted where an op reads them), and
// every graph output keeps the type it had (a cast back is added where
// needed), so "loss", "grad.<param>" and "new.<param>" are unchanged in type.
// Casts are made once per (tensor, type) and never stacked: casting
// cast(x: A -> B) to C casts x itself when B holds every value of A (so
// x -> bf16 -> f32 -> bf16 is x -> bf16), but a rounding cast is never
// dropped (f32 -> bf16 -> f32 is not the identity). A shape op (permute,
// reshape, ...) of a tensor that already has a cast is redone on the cast
// rather than cast again (W^T in the backward reads the forward's cast of W).
//
// Pass order: autocast sees whatever graph it is given. On a joint graph
// (after autodiff) the backward's ops follow the same table (the gradient
// matmuls run in the low type, bias gradients are f32 sums); before autodiff
// the casts it inserts are differentiated like any op (their gradients are
// cast back, as PyTorch's autograd does). Both give f32 "grad.<param>".
//
//   PassManager{autodiff(), autocast(DType::bf16), adamw({...})}
//   PassManager{autodiff(), autocast(DType::f16), loss_scaling(), adamw({...})}
//
// Loss scaling (f16's gradients underflow without it) continues a joint
// graph (outputs `loss` and "grad.<param>", with autodiff's loss cotangent
// "grad.<loss>", a scalar constant 1): the cotangent becomes the scale, a
// state param, so every gradient in the backward is scaled; each
// "grad.<param>" output is unscaled (times 1/scale, computed in f64 and
// rounded to f32 as PyTorch does) and checked for inf/NaN. It adds
//   params   "amp.loss_scale"      f32[]  (start it at init_scale, not 0)
//            "amp.growth_tracker"  i32[]  consecutive clean steps (start at 0)
//   outputs  "optim.skip"          bool[] any unscaled gradient is inf/NaN;
//                                         the optimizer (optimizer.h) then
//                                         leaves params and state unchanged
//            "new.amp.loss_scale", "new.amp.growth_tracker"
//                                         GradScaler.update(): on inf/NaN the
//                                         scale is times backoff_factor and the
//                                         tracker 0; else the tracker counts up
//                                         and at growth_interval the scale is
//                                         times growth_factor (if that stays
//                                         finite) and the tracker 0.
// The loss output is not scaled. Run it after autodiff (and autocast) and
// before the optimizer; write the "new.X" outputs back into X after each run,
// as for optimizer state (trainer.h's Trainer does all this when
// TrainerOptions::loss_scaling is set). Gradient accumulation is not supported.
//
// This header does not differentiate (autodiff.h) or update params (optimizer.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "tessera/graph.h"
#include "tessera/optimizer.h"
#include "tessera/passes.h"

namespace tessera {

enum class OpPrecision { low, f32, follow, keep };

// "low", "f32", "follow", "keep".
const char* precision_name(OpPrecision p);

// The table: a rule per op name; ops not in it get `fallback`.
struct PrecisionPolicy {
  std::map<std::string, OpPrecision> ops;
  OpPrecision fallback = OpPrecision::follow;

  OpPrecision lookup(const std::string& op) const;
  // Sets op's rule. Throws Error for an op the registry does not know, a leaf
  // (input, param, constant) or cast (whose type is its attribute).
  PrecisionPolicy& set(const std::string& op, OpPrecision p);
};

// The table described above.
PrecisionPolicy default_precision_policy();
// One line per rule, grouped: "low: attention linear matmul\nf32: ...\n...".
std::string to_string(const PrecisionPolicy& policy);

struct AutocastOptions {
  DType dtype = DType::bf16;  // the low-precision type: bf16 or f16
  PrecisionPolicy policy = default_precision_policy();
};

// Throws Error for a dtype other than bf16/f16, a policy naming an unknown op,
// a leaf or cast, or an op that refuses the types the policy gives it.
Graph apply_autocast(const Graph& g, const AutocastOptions& options);
Pass autocast(DType dtype = DType::bf16);
Pass autocast(AutocastOptions options);

// torch.cuda.amp.GradScaler's defaults.
struct LossScalingOptions {
  std::string loss = "loss";
  double init_scale = 65536.0;
  double growth_factor = 2.0;     // > 1
  double backoff_factor = 0.5;    // in (0, 1)
  int64_t growth_interval = 2000; // >= 1 consecutive clean steps before growing
};

inline const char* const kLossScale = "amp.loss_scale";
inline const char* const kGrowthTracker = "amp.growth_tracker";

// Throws Error naming the problem: a bad option, no loss cotangent
// "grad.<loss>" (not a joint graph from autodiff), no "grad.<param>" output,
// an already-optimized graph ("optim.step" present) or a name it would add
// that is already taken.
Graph apply_loss_scaling(const Graph& joint, const LossScalingOptions& options);
Pass loss_scaling(LossScalingOptions options = {});

}  // namespace tessera
