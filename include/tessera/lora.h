// LoRA adapters (Hu et al. 2021) as a Graph -> Graph transform, in the style
// of Hugging Face PEFT, and their merge back into plain weights for export.
//
// lora() adds an adapter to every linear-like node whose module matches a
// target pattern:
//
//   y = base(x, <module>.weight, ...) + linear(linear(dropout(x), A), B) * (alpha / r)
//
// with two new params "<module>.lora_A.weight" [r, in] and
// "<module>.lora_B.weight" [out, r] (PyTorch layout, as PEFT's lora_A/lora_B
// nn.Linear weights), of x's dtype. A node is linear-like when its op is in
// LoraOptions::base_ops and its second input is a param named
// "<module>.weight"; <module> is that name without ".weight". Assumption about
// a base op (so that a quantized linear can be one later): its first input is
// x [..., in] and its output is [..., out]; in and out are read from x's and
// the output's last dims, never from the weight's shape (a packed quantized
// weight is not [out, in]). The first input x must be a float tensor. A
// weight read by several linear-like nodes gets one adapter that all of them
// use; a weight also read by another op (e.g. a tied embedding) is refused.
// Adapter params end in ".weight" too: a quantize pass that runs after lora()
// must skip lora_param_names() (or run before it).
//
// Target patterns (a subset of PEFT's):
//   target_modules  a list; a module matches an entry when its name equals it
//                   or ends with "." + entry (PEFT's list form): "c_attn"
//                   matches "transformer.h.0.attn.c_attn", "attn.c_proj"
//                   matches the attention's c_proj but not "mlp.c_proj",
//                   "attn" matches neither (not a module of a linear-like node).
//   target_regex    a std::regex (ECMAScript) that must match the whole module
//                   name (PEFT's string form, re.fullmatch).
// A module matching either is adapted. Every list entry and the regex (when
// given) must match at least one module, else Error naming the pattern. Not
// supported: PEFT's "all-linear", layers_to_transform, per-module rank/alpha
// patterns, rslora, DoRA, bias training.
//
// Dropout: the library op dropout{p, seed, offset} (ops.h) on the adapter's
// input only. Its mask is fixed by dropout_seed and an offset per adapted
// node (the running sum of the adapted inputs' element counts), so it is the
// same at every step (trainer.h says why). With training = false (or
// dropout = 0) no dropout node is added: that is the eval graph. The train and
// eval graphs have the same params, so trained values plug into either.
//
// Run it on a forward graph, before autodiff (differentiate the adapted graph).
//
// Training only the adapters: lora_autodiff_options() makes differentiate()
// give gradients to the adapters alone; the optimizer (optimizer.h) then
// updates only them. lora_init() is PEFT's initialization for TrainerOptions
// (via models.h's trainer_init) or init_params(): A kaiming-uniform as
// torch.nn.Linear (a = sqrt 5: U(-1/sqrt(in), 1/sqrt(in))), B zeros, so that
// the adapted model equals the base model at initialization.
//
// Export: merge_lora() folds trained adapters into the weights of a state
// dict, W' = W + (alpha / r) B A, and remove_lora() turns the adapted graph
// back into the plain model's graph, so that the two together compute what
// the adapted model computed (its eval graph: a merged model has no adapter
// dropout). For a quantized base, merge_lora's float weights belong to the
// unquantized model's graph (e.g. gpt(config)), not to remove_lora's result,
// which still reads the quantized weights.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tessera/autodiff.h"
#include "tessera/graph.h"
#include "tessera/models.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"

namespace tessera {

struct LoraOptions {
  int64_t r = 8;                            // rank, > 0
  double alpha = 8;                         // scaling = alpha / r; > 0
  double dropout = 0.0;                     // on the adapter input, in [0, 1)
  std::vector<std::string> target_modules;  // list patterns (above)
  std::string target_regex;                 // full-match regex (above); empty: none
  std::vector<std::string> base_ops = {"linear"};  // linear-like ops (the assumption above)
  bool training = true;                     // false: no dropout node (the eval graph)
  uint64_t dropout_seed = 0x4c6f5241;       // Philox key of the adapter dropouts ("LoRA");
                                            // differs from the models' default seed 0
};

// The adapter param names of `module`.
inline std::string lora_a_name(const std::string& module) { return module + ".lora_A.weight"; }
inline std::string lora_b_name(const std::string& module) { return module + ".lora_B.weight"; }

// Throws Error for bad options (r <= 0, alpha <= 0, dropout outside [0, 1),
// no pattern, an invalid regex, an empty base op list), a pattern that
// matches no module (naming it and listing the candidate modules), a module
// whose adapter params exist already, a matched weight that is also read by a
// node that is not linear-like (merging would change that node too; e.g. a
// tied embedding), or a non-float input x.
Graph add_lora(const Graph& g, const LoraOptions& options);
Pass lora(LoraOptions options);

// The adapted modules of `g` (those with both adapter params), in graph order.
std::vector<std::string> lora_modules(const Graph& g);
// The adapter params of `g` ("*.lora_A.weight", "*.lora_B.weight"), in graph order.
std::vector<std::string> lora_param_names(const Graph& g);
// differentiate() options that train only the adapters: params = the adapter
// params, frozen = every other param. Throws Error if `g` has no adapters.
AutodiffOptions lora_autodiff_options(const Graph& g, const std::string& loss = "loss");
// PEFT's init of every adapter param of `g`: A U(-b, b) with b = gain *
// sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)), a = sqrt 5, fan_in = in
// (so b = 1/sqrt(in)); B zeros. Other params are not in the map: merge it
// with the model's own (e.g. gpt_init).
InitMap lora_init(const Graph& g);

// For a quantized base: returns module's float weight [out, in] from the
// state dict (e.g. unpacking "<module>.weight" with its scales). `replaces`
// lists other state entries (scales, ...) that the merged float weight makes
// obsolete; merge_lora removes them from its result.
struct DequantizedWeight {
  Buffer weight;
  std::vector<std::string> replaces;
};
using Dequantizer = std::function<DequantizedWeight(const std::string& module, const std::map<std::string, Buffer>& state)>;

// The state dict with every adapted module merged: "<module>.weight" becomes
// W + (alpha / r) B A, computed in f64 and stored in W's dtype (the
// dequantized weight's, with a dequantizer), and the adapter entries (and
// what the dequantizer says it replaces) are gone; other entries are shared,
// not copied. Only options.r and options.alpha are read. Without a
// dequantizer every adapted weight must be a float [out, in] Buffer. Throws
// Error for bad options, an "A" without its "B" (or the reverse), a missing
// weight, or shapes that disagree (naming the tensors and shapes).
std::map<std::string, Buffer> merge_lora(const std::map<std::string, Buffer>& state, const LoraOptions& options,
                                         const Dequantizer& dequantize = nullptr);

// `g` without its adapters: each adapted node reads its base result again and
// the adapter nodes and params are gone; node names are kept, so
// remove_lora(add_lora(g, o)) prints as g. It recognizes the adapters after
// simplify/cse/dce too (a scale of 1 simplified away), and keeps a dropout
// that something other than an adapter reads. Throws Error when an output still
// depends on an adapter param in a way lora() does not build (e.g. the
// "grad.*" outputs of a joint graph: remove adapters from the forward graph).
Graph remove_lora(const Graph& g);

}  // namespace tessera
