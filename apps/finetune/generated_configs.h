// Which run settings tessera-finetune's generated (ahead-of-time) training
// steps were built for, and how a run's settings compare with them.
//
// apps/CMakeLists.txt runs the generators with PARAMS text ("vocab_size=96
// block_size=32 ...", "r=8 alpha=16 targets=c_attn,c_proj,c_fc") and passes
// the same text to the app as compile definitions; parse_generated_config
// reads it back, so the app's idea of a step cannot drift from the step.
// A pretraining step depends on the model and batch only; a QLoRA step also
// on the LoRA rank, alpha and targets, and has no dropout. The learning rate
// and the step number are inputs of every step, so they never differ.
//
// Used for the GPU steps (gpu_steps.h) and the CPU steps (cpu_steps.h).
// This file compares and words messages; it runs nothing and does not know
// which steps a build has.
#pragma once

#include <tessera/models.h>

#include <string>
#include <vector>

namespace finetune {

struct RunConfig;

enum class StepKind { pretrain, qlora };

// One generated configuration: a preset's model and batch, and the LoRA
// settings of its QLoRA step (rank, alpha, targets; no dropout).
struct GeneratedConfig {
  std::string preset;  // "tiny", "cpu", "gpu"
  tessera::GptConfig gpt;
  int lora_r = 0;
  double lora_alpha = 0;
  std::vector<std::string> lora_targets;
};

// The configuration of preset `preset` from the generators' PARAMS (keys
// separated by spaces): `model` has vocab_size, block_size, n_layer, n_head,
// n_embd and batch; `lora` has r, alpha and targets. Throws tessera::Error
// naming a missing key or a malformed item.
GeneratedConfig parse_generated_config(const std::string& preset, const std::string& model, const std::string& lora);

// "--preset tiny or gpu" (pretrain), or that and " with --lora-r 8
// --lora-alpha 16 --lora-dropout 0 --lora-targets c_attn,c_proj,c_fc" (qlora;
// every configuration of a build shares its LoRA settings). `configs` must
// not be empty.
std::string describe_configs(const std::vector<GeneratedConfig>& configs, StepKind kind);

// Empty when `rc` equals one of `configs` for a step of `kind`; else a
// message naming the preset or flag that differs and what the `device`
// ("GPU", "CPU") steps of this build support. `configs` must not be empty.
std::string config_mismatch(const std::vector<GeneratedConfig>& configs, StepKind kind, const RunConfig& rc,
                            const std::string& device);
// The index in `configs` of the one `rc` equals for `kind`, or -1.
int matching_config(const std::vector<GeneratedConfig>& configs, StepKind kind, const RunConfig& rc);

}  // namespace finetune
