// Ready-made model graphs: an MLP classifier and a GPT-2-style language model.
//
// Each builder returns a verified forward Graph with a float scalar output
// "loss" (so autodiff.h and the Trainer can take it as it is), built only
// from the public frontend (builder.h, ops.h). Each model also declares how
// its params are initialized (a name -> ParamInit map, as PyTorch / Hugging
// Face initialize the same model); init_params() fills Buffers from such a
// map (to run a forward graph without a Trainer) and trainer_init() hands it
// to the Trainer. This header trains nothing and loads no checkpoints.
//
// Layouts: every linear weight is [out, in] (PyTorch's nn.Linear, as
// ops.h's linear). Hugging Face's GPT-2 stores its attention and MLP weights
// as Conv1D, i.e. transposed: HF's "attn.c_attn.weight" is [C, 3C] where ours
// is [3C, C]; transpose c_attn, c_proj and c_fc weights when loading HF
// checkpoints. Embeddings and LayerNorm params match HF as they are.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/graph.h"
#include "tessera/runtime.h"
#include "tessera/trainer.h"

namespace tessera {

// ---- MLP classifier ----------------------------------------------------------
// Inputs "x" f32[batch, sizes[0]], "y" i32[batch] (class ids); params
// "layers.<i>.weight" [sizes[i+1], sizes[i]] and "layers.<i>.bias"
// [sizes[i+1]]; the activation follows every layer but the last; outputs
// "logits" f32[batch, sizes.back()] and "loss" (cross_entropy, mean).
struct MlpConfig {
  std::vector<int64_t> sizes = {784, 256, 10};  // at least two: input and classes
  int64_t batch = 64;
  std::string activation = "relu";  // "relu" or "gelu" (exact erf form)
};
Graph mlp(const MlpConfig& config);

// ---- GPT (GPT-2 architecture, nanoGPT's options) --------------------------------
// Inputs "idx" i32[batch, block_size] and "targets" i32[batch, block_size]
// (token ids; the sequence length is block_size: shapes are static). Outputs
// "logits" f32[batch, block_size, vocab_size] and "loss", the mean
// cross_entropy over all batch*block_size positions.
//
// x = wte[idx] + wpe; per block: x += c_proj(attn(ln_1(x))), x += mlp(ln_2(x))
// with causal multi-head attention (c_attn gives q, k, v, split as HF does,
// then [B, T, H, D] -> [B, H, T, D]) and mlp = c_proj(gelu_tanh(c_fc(.))) of
// width 4C; then ln_f and the LM head. Params, for block i in [0, n_layer):
//   transformer.wte.weight [V, C]            transformer.wpe.weight [block_size, C]
//   transformer.h.<i>.ln_1.weight, .bias [C]
//   transformer.h.<i>.attn.c_attn.weight [3C, C], .bias [3C]  (q, k, v rows in this order)
//   transformer.h.<i>.attn.c_proj.weight [C, C],  .bias [C]
//   transformer.h.<i>.ln_2.weight, .bias [C]
//   transformer.h.<i>.mlp.c_fc.weight [4C, C],    .bias [4C]
//   transformer.h.<i>.mlp.c_proj.weight [C, 4C],  .bias [C]
//   transformer.ln_f.weight, .bias [C]
//   lm_head.weight [V, C]                    (absent when tie_weights: wte is used)
// With bias == false no linear or LayerNorm has a bias param (as nanoGPT).
// Dropout (p > 0) follows the embedding sum and each residual branch's
// c_proj (not the attention probabilities, which the attention op has no
// dropout for); its mask is fixed by `dropout_seed` in the graph, so a
// Trainer that wants fresh masks each step must rebuild or re-seed the
// graph. p == 0 adds no dropout nodes.
struct GptConfig {
  int64_t vocab_size = 50257;
  int64_t block_size = 1024;  // context length T
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;  // C; a multiple of n_head
  int64_t batch = 1;
  double dropout = 0.0;
  uint64_t dropout_seed = 0;
  bool bias = true;
  bool tie_weights = false;  // lm_head reads transformer.wte.weight
  double layer_norm_eps = 1e-5;
};
Graph gpt(const GptConfig& config);

// ---- Param initialization -------------------------------------------------------
struct ParamInit {
  enum Kind {
    zeros,    // 0
    ones,     // 1
    normal,   // N(mean a, std b)
    uniform,  // U(a, b)
  };
  Kind kind = zeros;
  double a = 0;
  double b = 0;
};
using InitMap = std::map<std::string, ParamInit>;

// PyTorch's nn.Linear defaults: weight and bias U(-1/sqrt(in), 1/sqrt(in))
// (kaiming_uniform with a = sqrt(5) gives that bound for the weight).
InitMap mlp_init(const MlpConfig& config);
// GPT-2 / nanoGPT: wte, wpe, c_attn, c_fc and lm_head weights N(0, 0.02);
// both c_proj weights N(0, 0.02 / sqrt(2 n_layer)); biases 0; LayerNorm
// weights 1, biases 0.
InitMap gpt_init(const GptConfig& config);

// One Buffer per param of `g`, filled as `init` says. Deterministic: each
// param's values depend only on (seed, param name, shape), not on the order
// of params, so adding a param leaves the others' values unchanged. Throws
// Error if a float param of `g` has no entry in `init`.
std::map<std::string, Buffer> init_params(const Graph& g, const InitMap& init, uint64_t seed = 0);

// The same map in the Trainer's terms (trainer.h), for TrainerOptions::init.
// The Trainer draws its own values (its generator, same seed rule), so its
// params equal init_params()'s in distribution, not bit for bit.
std::map<std::string, Init> trainer_init(const InitMap& init);

// Every op of the library at awkward sizes, each result a named f32 output
// (src/models/op_zoo.cpp): for checking one target against another. With
// dtype bf16 or f16 the f32 inputs and params are cast to it first and the
// ops run on it.
Graph op_zoo(DType dtype = DType::f32);

// ---- Registered models (for generators) -----------------------------------------
// "mlp" and "gpt" (forward graphs), "mlp_train_step" and "gpt_train_step"
// (adamw(differentiate(model)): forward, backward and AdamW update in one
// graph), "gpt_qlora" (the GPT with its linears but the LM head in NF4 and
// LoRA adapters: its evaluation graph, no dropout), "gpt_qlora_train_step"
// (that model's gradients and AdamW for the adapters only), and
// "op_zoo" (dtype=f32); sized by key=value parameters: mlp:
// sizes=784,256,10 batch=64 activation=relu; gpt: vocab_size=96
// block_size=64 n_layer=1 n_head=4 n_embd=64 batch=8; train steps also
// beta1, beta2, eps, weight_decay, max_grad_norm (lr is the step's input
// "optim.lr") and autocast=none (bf16: autocast.h on the joint graph, before
// the optimizer; f16 adds loss scaling, so the step has autocast.h's
// "amp.*" params and "optim.skip" output); gpt_train_step also
// logits=true (false: the step returns the loss but not the f32 logits
// [batch, block_size, vocab_size], as a training loop that reads only the
// loss wants); mlp_train_step and gpt_train_step also remat=none (a
// fraction in [0, 1]: remat.h's rematerialize() with that budget on the f32
// joint graph, before autocast and the optimizer; its clones carry the
// attribute remat); the QLoRA
// step also r=8 alpha=16 targets=c_attn (comma-separated patterns, lora.h)
// double_quant=false, and weight_decay 0; both QLoRA models also
// quantize=true (false: the same adapters on the f32 base, plain LoRA) and
// logits=true (as gpt_train_step's). Throws Error for an unknown model
// or parameter, or a bad value.
std::vector<std::string> registered_models();
Graph registered_model(const std::string& name, const std::map<std::string, std::string>& params = {});

}  // namespace tessera
