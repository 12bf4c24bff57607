// PEFT LoRA adapter directories (peft.h): key renaming, shape checks and
// adapter_config.json. The tensor file itself is safetensors.cpp's.
#include "tessera/peft.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tessera/atomic_file.h"
#include "tessera/error.h"
#include "tessera/safetensors.h"

namespace tessera {
namespace {

using json = nlohmann::json;

const std::string kPrefix = "base_model.model.";
const std::string kA = ".lora_A.weight", kB = ".lora_B.weight";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The module of "<module>.lora_A.weight" / ".lora_B.weight", or "" if the
// name has another form.
std::string module_of(const std::string& name) {
  for (const std::string* s : {&kA, &kB})
    if (ends_with(name, *s) && name.size() > s->size()) return name.substr(0, name.size() - s->size());
  return "";
}

// Every module has a float lora_A [r, in] and lora_B [out, r]; `where` names
// the file or call in errors.
void check_pairs(const std::string& where, const std::map<std::string, Buffer>& params, int64_t r) {
  if (r <= 0) fail(where, ": r = ", r, " (need r > 0)");
  if (params.empty()) fail(where, ": no LoRA tensors");
  for (const auto& [name, b] : params) {
    const std::string module = module_of(name);
    if (module.empty()) fail(where, ": '", name, "' is not \"<module>.lora_A.weight\" or \"<module>.lora_B.weight\"");
    if (!b.defined() || !is_float(b.dtype()))
      fail(where, ": '", name, "' is ", b.defined() ? to_string(b.type()) : std::string("undefined"),
           ", not a float tensor");
    const bool is_a = ends_with(name, kA);
    const std::string other = module + (is_a ? kB : kA);
    if (!params.count(other)) fail(where, ": '", name, "' has no partner '", other, "'");
    const Shape& s = b.shape();
    if (s.size() != 2 || (is_a ? s[0] : s[1]) != r)
      fail(where, ": '", name, "' has shape ", to_string(s), ", expected ", is_a ? "[r, in_features]" : "[out_features, r]",
           " with r = ", r);
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("PEFT adapter: cannot read '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string peft_key(const std::string& name) {
  if (module_of(name).empty())
    fail("PEFT adapter: param '", name, "' is not \"<module>.lora_A.weight\" or \"<module>.lora_B.weight\"");
  return kPrefix + name;
}

std::string in_graph_name(const std::string& key) {
  if (key.compare(0, kPrefix.size(), kPrefix) != 0 || module_of(key.substr(kPrefix.size())).empty())
    fail("PEFT adapter: key '", key, "' is not \"", kPrefix, "<module>.lora_A.weight\" (or lora_B)");
  return key.substr(kPrefix.size());
}

void save_peft_adapter(const std::string& dir, const std::map<std::string, Buffer>& lora_params,
                       const LoraAdapterConfig& config) {
  const std::string where = "save_peft_adapter('" + dir + "')";
  check_pairs(where, lora_params, config.r);
  if (!(config.lora_dropout >= 0 && config.lora_dropout < 1))
    fail(where, ": lora_dropout = ", config.lora_dropout, " (need 0 <= p < 1)");
  if (!std::isfinite(config.lora_alpha)) fail(where, ": lora_alpha = ", config.lora_alpha, " is not finite");

  std::map<std::string, Buffer> tensors;
  std::set<std::string> suffixes;
  for (const auto& [name, b] : lora_params) {
    tensors[peft_key(name)] = b;
    const std::string module = module_of(name);
    suffixes.insert(module.substr(module.rfind('.') == std::string::npos ? 0 : module.rfind('.') + 1));
  }
  json targets = json::array();
  if (config.target_modules.empty())
    for (const std::string& s : suffixes) targets.push_back(s);
  else
    for (const std::string& s : config.target_modules) targets.push_back(s);

  json c = json::object();  // PEFT's LoraConfig.to_dict(), defaults included
  c["alpha_pattern"] = json::object();
  c["auto_mapping"] = nullptr;
  if (config.base_model_name_or_path.empty())
    c["base_model_name_or_path"] = nullptr;  // as PEFT writes an unnamed base model
  else
    c["base_model_name_or_path"] = config.base_model_name_or_path;
  c["bias"] = "none";
  c["fan_in_fan_out"] = config.fan_in_fan_out;
  c["inference_mode"] = config.inference_mode;
  c["init_lora_weights"] = true;
  c["layer_replication"] = nullptr;
  c["layers_pattern"] = nullptr;
  c["layers_to_transform"] = nullptr;
  c["loftq_config"] = json::object();
  if (config.lora_alpha == std::floor(config.lora_alpha) && std::fabs(config.lora_alpha) < 9e15)
    c["lora_alpha"] = static_cast<int64_t>(config.lora_alpha);
  else
    c["lora_alpha"] = config.lora_alpha;
  c["lora_dropout"] = config.lora_dropout;
  c["megatron_config"] = nullptr;
  c["megatron_core"] = "megatron.core";
  c["modules_to_save"] = nullptr;
  c["peft_type"] = "LORA";
  c["r"] = config.r;
  c["rank_pattern"] = json::object();
  c["revision"] = nullptr;
  c["target_modules"] = targets;
  c["task_type"] = config.task_type;
  c["use_dora"] = false;
  c["use_rslora"] = config.use_rslora;
  std::string text;
  try {
    text = c.dump(2) + "\n";
  } catch (const json::exception&) {
    fail(where, ": base_model_name_or_path, task_type or a target module is not valid UTF-8");
  }

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail(where, ": cannot create the directory: ", ec.message());
  save_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomically(dir + "/adapter_config.json", text);
}

LoraAdapter load_peft_adapter(const std::string& dir) {
  const std::string config_path = dir + "/adapter_config.json";
  const std::string model_path = dir + "/adapter_model.safetensors";
  if (!std::filesystem::is_directory(dir)) fail("PEFT adapter: '", dir, "' is not a directory");
  if (!std::filesystem::exists(model_path))
    fail("PEFT adapter: '", dir, "' has no adapter_model.safetensors",
         std::filesystem::exists(dir + "/adapter_model.bin") ? " (adapter_model.bin, a pickle, is not supported)" : "");

  LoraAdapter a;
  json c;
  try {
    c = json::parse(read_text(config_path));
  } catch (const json::exception& e) {
    fail("PEFT adapter: '", config_path, "' is not valid JSON: ", e.what());
  }
  auto bad = [&](const std::string& key, const std::string& want) {
    fail("PEFT adapter: '", config_path, "': \"", key, "\" is ", c.contains(key) ? c[key].dump() : "missing",
         ", expected ", want);
  };
  if (!c.is_object()) fail("PEFT adapter: '", config_path, "' is not a JSON object");
  if (!c.contains("peft_type") || c["peft_type"] != "LORA") bad("peft_type", "\"LORA\"");
  if (!c.contains("r") || !c["r"].is_number_integer()) bad("r", "an integer");
  a.config.r = c["r"].get<int64_t>();
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number()) bad("lora_alpha", "a number");
  a.config.lora_alpha = c["lora_alpha"].get<double>();
  if (c.contains("lora_dropout")) {
    if (!c["lora_dropout"].is_number()) bad("lora_dropout", "a number");
    a.config.lora_dropout = c["lora_dropout"].get<double>();
  }
  if (c.contains("target_modules") && !c["target_modules"].is_null()) {
    const json& t = c["target_modules"];
    if (t.is_string()) {
      a.config.target_modules = {t.get<std::string>()};  // a regular expression in PEFT
    } else if (t.is_array()) {
      for (const json& s : t) {
        if (!s.is_string()) bad("target_modules", "a list of strings");
        a.config.target_modules.push_back(s.get<std::string>());
      }
    } else {
      bad("target_modules", "a list of strings or a string");
    }
  }
  auto text_field = [&](const char* key, std::string& out) {
    if (!c.contains(key) || c[key].is_null()) return;
    if (!c[key].is_string()) bad(key, "a string");
    out = c[key].get<std::string>();
  };
  auto bool_field = [&](const char* key, bool& out) {
    if (!c.contains(key) || c[key].is_null()) return;
    if (!c[key].is_boolean()) bad(key, "true or false");
    out = c[key].get<bool>();
  };
  text_field("base_model_name_or_path", a.config.base_model_name_or_path);
  text_field("task_type", a.config.task_type);
  bool_field("fan_in_fan_out", a.config.fan_in_fan_out);
  bool_field("inference_mode", a.config.inference_mode);
  bool_field("use_rslora", a.config.use_rslora);
  // What this reader cannot represent.
  if (c.contains("bias") && c["bias"] != "none") bad("bias", "\"none\" (trained biases are not supported)");
  bool use_dora = false, lora_bias = false;
  bool_field("use_dora", use_dora);
  if (use_dora) bad("use_dora", "false (DoRA is not supported)");
  bool_field("lora_bias", lora_bias);
  if (lora_bias) bad("lora_bias", "false (lora_B biases are not supported)");
  for (const char* key : {"rank_pattern", "alpha_pattern"})
    if (c.contains(key) && !c[key].is_null() && !(c[key].is_object() && c[key].empty()))
      bad(key, "{} (per-module patterns are not supported)");
  if (c.contains("modules_to_save") && !c["modules_to_save"].is_null() &&
      !(c["modules_to_save"].is_array() && c["modules_to_save"].empty()))
    bad("modules_to_save", "null (modules_to_save is not supported)");

  for (auto& [key, b] : load_safetensors(model_path)) {
    std::string name;
    try {
      name = in_graph_name(key);
    } catch (const Error& e) {
      fail("PEFT adapter: '", model_path, "': ", e.what());
    }
    a.params[name] = std::move(b);
  }
  check_pairs("PEFT adapter: '" + model_path + "'", a.params, a.config.r);
  return a;
}

}  // namespace tessera
