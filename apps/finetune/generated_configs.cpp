// The settings of the generated training steps read from their generators'
// PARAMS, and compared with a run's (generated_configs.h). Runs nothing.
#include "generated_configs.h"

#include <tessera/error.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "finetune_model.h"

using tessera::fail;

namespace finetune {

namespace {

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string join(const std::vector<std::string>& items, const char* sep = ",") {
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

// "key=value key=value ..." (the generators' PARAMS, joined by spaces).
std::map<std::string, std::string> parse_params(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream in(text);
  for (std::string item; in >> item;) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("generated step parameters: '", item, "' is not key=value (in '", text, "')");
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

}  // namespace

GeneratedConfig parse_generated_config(const std::string& preset, const std::string& model, const std::string& lora) {
  GeneratedConfig c;
  c.preset = preset;
  const auto m = parse_params(model), l = parse_params(lora);
  const auto text = [&](const std::map<std::string, std::string>& params, const char* key) -> const std::string& {
    auto it = params.find(key);
    if (it == params.end()) fail("generated step of preset ", preset, ": no parameter '", key, "'");
    return it->second;
  };
  c.gpt.vocab_size = std::stoll(text(m, "vocab_size"));
  c.gpt.block_size = std::stoll(text(m, "block_size"));
  c.gpt.n_layer = std::stoll(text(m, "n_layer"));
  c.gpt.n_head = std::stoll(text(m, "n_head"));
  c.gpt.n_embd = std::stoll(text(m, "n_embd"));
  c.gpt.batch = std::stoll(text(m, "batch"));
  c.gpt.bias = true;  // the registered models' GPT (registry.cpp) has biases
  c.lora_r = std::stoi(text(l, "r"));
  c.lora_alpha = std::stod(text(l, "alpha"));
  c.lora_targets = split_list(text(l, "targets"));
  return c;
}

std::string describe_configs(const std::vector<GeneratedConfig>& configs, StepKind kind) {
  std::vector<std::string> presets;
  for (const GeneratedConfig& c : configs) presets.push_back(c.preset);
  std::string out = "--preset " + join(presets, " or ");
  if (kind == StepKind::pretrain) return out;
  const GeneratedConfig& c = configs.front();  // all share the LoRA settings (apps/CMakeLists.txt)
  return out + " with --lora-r " + std::to_string(c.lora_r) + " --lora-alpha " + num(c.lora_alpha) +
         " --lora-dropout 0 --lora-targets " + join(c.lora_targets);
}

std::string config_mismatch(const std::vector<GeneratedConfig>& configs, StepKind kind, const RunConfig& rc,
                            const std::string& device) {
  const std::string supported = "; the " + device + " steps of this build are generated for " +
                                describe_configs(configs, kind) +
                                " (other settings need their own tessera_add_generator lines in apps/CMakeLists.txt)";
  const GeneratedConfig* match = nullptr;
  for (const GeneratedConfig& c : configs)
    if (same_model(c.gpt, rc.gpt)) match = &c;
  if (!match)
    return "--preset " + rc.preset + " (" + describe_model(rc.gpt) + ") has no generated " + device + " step" +
           supported;
  if (kind == StepKind::pretrain) return "";
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

int matching_config(const std::vector<GeneratedConfig>& configs, StepKind kind, const RunConfig& rc) {
  if (configs.empty() || !config_mismatch(configs, kind, rc, "").empty()) return -1;
  for (size_t i = 0; i < configs.size(); ++i)
    if (same_model(configs[i].gpt, rc.gpt)) return static_cast<int>(i);
  return -1;
}

}  // namespace finetune
