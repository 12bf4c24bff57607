// What the generated GPU steps support, compared with a run's settings
// (gpu_steps.h). Which steps exist is answered by gpu_steps_cuda.cpp or,
// without the CUDA toolkit, gpu_steps_none.cpp; this file only compares and
// words the messages. It runs nothing.
#include "gpu_steps.h"

#include <algorithm>
#include <sstream>

#include "finetune_model.h"

namespace finetune {

namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string join(std::vector<std::string> items, const char* sep = ",") {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

bool same_model(const tessera::GptConfig& a, const tessera::GptConfig& b) {
  return a.vocab_size == b.vocab_size && a.block_size == b.block_size && a.n_layer == b.n_layer &&
         a.n_head == b.n_head && a.n_embd == b.n_embd && a.batch == b.batch && a.bias == b.bias &&
         a.tie_weights == b.tie_weights && a.dropout == b.dropout && a.layer_norm_eps == b.layer_norm_eps;
}

std::string describe_model(const tessera::GptConfig& c) {
  return std::to_string(c.n_layer) + " layers, n_embd " + std::to_string(c.n_embd) + ", " + std::to_string(c.n_head) +
         " heads, context " + std::to_string(c.block_size) + ", batch " + std::to_string(c.batch);
}

}  // namespace

std::string describe_generated_configs() {
  const std::vector<GeneratedConfig> configs = generated_gpu_configs();
  if (configs.empty()) return "nothing (this build has no GPU steps: it was built without the CUDA toolkit)";
  std::vector<std::string> presets;
  for (const GeneratedConfig& c : configs) presets.push_back(c.preset);
  const GeneratedConfig& c = configs.front();  // all share the LoRA settings (apps/CMakeLists.txt)
  return "--preset " + join(presets, " or ") + " with --lora-r " + std::to_string(c.lora_r) + " --lora-alpha " +
         num(c.lora_alpha) + " --lora-dropout 0 --lora-targets " + join(c.lora_targets);
}

std::string gpu_config_mismatch(const RunConfig& rc) {
  const std::vector<GeneratedConfig> configs = generated_gpu_configs();
  if (configs.empty()) return "this build has no GPU training steps: it was built without the CUDA toolkit";
  const std::string supported = "; the GPU steps of this build are generated for " + describe_generated_configs() +
                                " (other settings need their own tessera_add_generator lines in apps/CMakeLists.txt)";
  const GeneratedConfig* match = nullptr;
  for (const GeneratedConfig& c : configs)
    if (same_model(c.gpt, rc.gpt)) match = &c;
  if (!match)
    return "--preset " + rc.preset + " (" + describe_model(rc.gpt) + ") has no generated GPU step" + supported;
  if (rc.lora.r != match->lora_r)
    return "--lora-r is " + std::to_string(rc.lora.r) + ", the generated QLoRA step has r " +
           std::to_string(match->lora_r) + supported;
  if (rc.lora.alpha != match->lora_alpha)
    return "--lora-alpha is " + num(rc.lora.alpha) + ", the generated QLoRA step has alpha " + num(match->lora_alpha) +
           supported;
  if (rc.lora.dropout != 0)
    return "--lora-dropout is " + num(rc.lora.dropout) + ", the generated QLoRA step has no dropout (0)" + supported;
  if (sorted(rc.lora.targets) != sorted(match->lora_targets))
    return "--lora-targets is " + join(rc.lora.targets) + ", the generated QLoRA step adapts " +
           join(match->lora_targets) + supported;
  return "";
}

int matching_gpu_config(const RunConfig& rc) {
  if (!gpu_config_mismatch(rc).empty()) return -1;
  const std::vector<GeneratedConfig> configs = generated_gpu_configs();
  for (size_t i = 0; i < configs.size(); ++i)
    if (same_model(configs[i].gpt, rc.gpt)) return static_cast<int>(i);
  return -1;
}

}  // namespace finetune
