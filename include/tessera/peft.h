// LoRA adapters in Hugging Face PEFT's on-disk layout, and back.
//
// A PEFT LoRA adapter is a directory holding
//   adapter_model.safetensors  tensors "base_model.model.<module>.lora_A.weight"
//                              (shape [r, in_features]) and
//                              "base_model.model.<module>.lora_B.weight"
//                              ([out_features, r]), metadata {"format": "pt"}
//   adapter_config.json        LoraConfig's fields (peft_type "LORA", r,
//                              lora_alpha, lora_dropout, target_modules, ...),
//                              sorted keys, indented by 2, as PEFT writes it.
// In a tessera graph the same tensors are the params "<module>.lora_A.weight"
// and "<module>.lora_B.weight"; save_peft_adapter and load_peft_adapter
// translate between the two. Each file is replaced atomically (the
// pair is not: a failure writing the config leaves the new tensor file).
//
// This is the file format only: building the LoRA transform, merging
// adapters into weights, and PEFT's other adapter kinds (DoRA, bias
// training, modules_to_save, per-module rank/alpha patterns, embedding
// LoRA) are not handled; such files are refused with an Error.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/runtime.h"

namespace tessera {

// The adapter_config.json fields that carry information; the rest are
// written with PEFT's defaults (no patterns, no DoRA, no layer replication).
struct LoraAdapterConfig {
  int64_t r = 8;
  double lora_alpha = 8;  // written as an integer when it is one, as PEFT does
  double lora_dropout = 0;
  // Module name suffixes PEFT matches ("c_attn", "q_proj"). Empty on save:
  // the last dotted component of every adapted module, sorted.
  std::vector<std::string> target_modules;
  std::string base_model_name_or_path;  // empty: written as null
  std::string task_type = "CAUSAL_LM";
  bool fan_in_fan_out = false;  // true for GPT-2's Conv1D layers
  bool inference_mode = true;
  bool use_rslora = false;
};

struct LoraAdapter {
  std::map<std::string, Buffer> params;  // in-graph names "<module>.lora_A.weight", ...
  LoraAdapterConfig config;
};

// "<module>.lora_A.weight" -> "base_model.model.<module>.lora_A.weight"
// (and lora_B); throws Error on a name of another form.
std::string peft_key(const std::string& in_graph_name);
// The inverse; throws Error on a key of another form.
std::string in_graph_name(const std::string& peft_key);

// Writes `dir`/adapter_model.safetensors and `dir`/adapter_config.json,
// creating `dir` if needed. Throws Error naming the param at fault unless
// every param is a float "<module>.lora_A.weight" [r, in] with a matching
// "<module>.lora_B.weight" [out, r] and r == config.r > 0.
void save_peft_adapter(const std::string& dir, const std::map<std::string, Buffer>& lora_params,
                       const LoraAdapterConfig& config);

// Reads a directory written by save_peft_adapter or by PEFT's
// save_pretrained (safetensors format). Throws Error naming the file and
// the key or field at fault.
LoraAdapter load_peft_adapter(const std::string& dir);

}  // namespace tessera
