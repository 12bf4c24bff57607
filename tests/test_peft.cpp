// Tests of PEFT LoRA adapter files (peft.h): the exported key names and
// adapter_config.json fields (checked against literal PEFT names, parsed
// with an independent JSON reader), the round trip, a real adapter written
// by PEFT 0.21 (tests/data/safetensors/peft_gpt2, see its README) read back
// and re-exported byte-identically, and malformed params and configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tessera/peft.h"
#include "tessera/safetensors.h"
#include "test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using test_util::error_of;
using json = nlohmann::json;

#define EXPECT_HAS(text, piece) EXPECT_NE((text).find(piece), std::string::npos) << (text)

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_peft_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Buffer ramp(Shape shape, double start) {
  Buffer b(DType::f32, std::move(shape));
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, start + 0.125 * i);
  return b;
}

// Two GPT-2-style modules with r = 2: c_attn (8 -> 24) and mlp.c_fc (8 -> 32).
std::map<std::string, Buffer> lora_params() {
  return {{"transformer.h.0.attn.c_attn.lora_A.weight", ramp({2, 8}, 0)},
          {"transformer.h.0.attn.c_attn.lora_B.weight", ramp({24, 2}, 1)},
          {"transformer.h.0.mlp.c_fc.lora_A.weight", ramp({2, 8}, 2)},
          {"transformer.h.0.mlp.c_fc.lora_B.weight", ramp({32, 2}, 3)}};
}

TEST(Peft, KeyNames) {
  EXPECT_EQ(peft_key("model.layers.0.self_attn.q_proj.lora_A.weight"),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(in_graph_name("base_model.model.h.1.lora_B.weight"), "h.1.lora_B.weight");
  EXPECT_HAS(error_of([] { peft_key("h.1.weight"); }), "param 'h.1.weight' is not \"<module>.lora_A.weight\"");
  EXPECT_HAS(error_of([] { peft_key(".lora_A.weight"); }), "is not \"<module>.lora_A.weight\"");
  EXPECT_HAS(error_of([] { in_graph_name("h.1.lora_B.weight"); }), "key 'h.1.lora_B.weight' is not");
}

TEST(Peft, ExportWritesPeftKeysAndConfigFields) {
  TempDir dir;
  LoraAdapterConfig c;
  c.r = 2;
  c.lora_alpha = 16;
  c.lora_dropout = 0.05;
  c.base_model_name_or_path = "gpt2";
  c.fan_in_fan_out = true;
  const std::string out = dir.file("adapter");  // created by the call
  save_peft_adapter(out, lora_params(), c);

  SafetensorsFile f = SafetensorsFile::open(out + "/adapter_model.safetensors");
  std::vector<std::string> names = f.names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                                             "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
                                             "base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight",
                                             "base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight"}));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(f.tensor("base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight").shape, (Shape{32, 2}));

  const json j = json::parse(read_file(out + "/adapter_config.json"));
  EXPECT_EQ(j.at("peft_type"), "LORA");
  EXPECT_EQ(j.at("r"), 2);
  EXPECT_TRUE(j.at("lora_alpha").is_number_integer());  // 16, not 16.0, as PEFT's int field
  EXPECT_EQ(j.at("lora_alpha"), 16);
  EXPECT_EQ(j.at("lora_dropout"), 0.05);
  EXPECT_EQ(j.at("target_modules"), json::array({"c_attn", "c_fc"}));  // derived: last name components
  EXPECT_EQ(j.at("bias"), "none");
  EXPECT_EQ(j.at("task_type"), "CAUSAL_LM");
  EXPECT_EQ(j.at("base_model_name_or_path"), "gpt2");
  EXPECT_EQ(j.at("fan_in_fan_out"), true);
  EXPECT_EQ(j.at("inference_mode"), true);
  EXPECT_EQ(j.at("use_dora"), false);
  EXPECT_EQ(j.at("use_rslora"), false);
  EXPECT_EQ(j.at("init_lora_weights"), true);
  EXPECT_EQ(j.at("modules_to_save"), nullptr);
  EXPECT_EQ(j.at("rank_pattern"), json::object());
  EXPECT_EQ(j.at("alpha_pattern"), json::object());
  // PEFT writes sorted keys, indented by two.
  EXPECT_EQ(read_file(out + "/adapter_config.json").substr(0, 25), "{\n  \"alpha_pattern\": {},\n");
}

TEST(Peft, RoundTrip) {
  TempDir dir;
  LoraAdapterConfig c;
  c.r = 2;
  c.lora_alpha = 3.5;
  c.target_modules = {"c_fc", "c_attn"};
  c.task_type = "SEQ_CLS";
  c.inference_mode = false;
  c.use_rslora = true;
  save_peft_adapter(dir.file("a"), lora_params(), c);
  const LoraAdapter a = load_peft_adapter(dir.file("a"));
  const auto want = lora_params();
  ASSERT_EQ(a.params.size(), want.size());
  for (const auto& [name, b] : want) {
    ASSERT_TRUE(a.params.count(name)) << name;
    EXPECT_EQ(a.params.at(name).type(), b.type());
    EXPECT_EQ(std::memcmp(a.params.at(name).data(), b.data(), b.bytes()), 0) << name;
  }
  EXPECT_EQ(a.config.r, 2);
  EXPECT_EQ(a.config.lora_alpha, 3.5);
  EXPECT_EQ(a.config.lora_dropout, 0);
  EXPECT_EQ(a.config.target_modules, (std::vector<std::string>{"c_fc", "c_attn"}));
  EXPECT_EQ(a.config.task_type, "SEQ_CLS");
  EXPECT_EQ(a.config.base_model_name_or_path, "");
  EXPECT_FALSE(a.config.inference_mode);
  EXPECT_TRUE(a.config.use_rslora);
  EXPECT_FALSE(a.config.fan_in_fan_out);
}

const fs::path kPeftDir = fs::path(__FILE__).parent_path() / "data" / "safetensors" / "peft_gpt2";

TEST(Peft, ReadsAnAdapterWrittenByPeftAndWritesTheSameTensorFile) {
  const LoraAdapter a = load_peft_adapter(kPeftDir.string());
  EXPECT_EQ(a.config.r, 2);
  EXPECT_EQ(a.config.lora_alpha, 4);
  EXPECT_EQ(a.config.lora_dropout, 0.05);
  std::vector<std::string> targets = a.config.target_modules;
  std::sort(targets.begin(), targets.end());
  EXPECT_EQ(targets, (std::vector<std::string>{"c_attn", "c_proj"}));
  EXPECT_TRUE(a.config.fan_in_fan_out);
  EXPECT_EQ(a.config.task_type, "CAUSAL_LM");
  EXPECT_EQ(a.config.base_model_name_or_path, "");  // null in the file
  // Every tensor against the bytes torch reported (peft_values.txt).
  std::ifstream values(kPeftDir / "peft_values.txt");
  std::string line;
  size_t count = 0;
  while (std::getline(values, line)) {
    std::istringstream ls(line);
    std::string key, dtype, hex;
    ls >> key >> dtype;
    std::getline(ls, line, ']');
    ls >> hex;
    const std::string name = key.substr(std::string("base_model.model.").size());
    ASSERT_TRUE(a.params.count(name)) << name;
    const Buffer& b = a.params.at(name);
    ASSERT_EQ(b.bytes() * 2, hex.size()) << name;
    const auto* p = static_cast<const uint8_t*>(b.data());
    for (size_t i = 0; i < b.bytes(); ++i) ASSERT_EQ(p[i], std::stoi(hex.substr(2 * i, 2), nullptr, 16)) << name;
    ++count;
  }
  EXPECT_EQ(count, 12u);
  EXPECT_EQ(a.params.size(), 12u);
  EXPECT_EQ(a.params.at("transformer.h.1.mlp.c_proj.lora_A.weight").shape(), (Shape{2, 32}));

  TempDir dir;
  save_peft_adapter(dir.file("again"), a.params, a.config);
  EXPECT_EQ(read_file(dir.file("again") + "/adapter_model.safetensors"),
            read_file((kPeftDir / "adapter_model.safetensors").string()));
}

TEST(Peft, ExportRejectsParamsThatAreNotLoraPairs) {
  TempDir dir;
  LoraAdapterConfig c;
  c.r = 2;
  auto p = lora_params();
  p.erase("transformer.h.0.mlp.c_fc.lora_B.weight");
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), p, c); }),
             "'transformer.h.0.mlp.c_fc.lora_A.weight' has no partner 'transformer.h.0.mlp.c_fc.lora_B.weight'");
  p = lora_params();
  p["transformer.h.0.attn.c_attn.weight"] = ramp({24, 8}, 0);
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), p, c); }),
             "'transformer.h.0.attn.c_attn.weight' is not \"<module>.lora_A.weight\"");
  c.r = 4;
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), lora_params(), c); }),
             "'transformer.h.0.attn.c_attn.lora_A.weight' has shape [2, 8], expected [r, in_features] with r = 4");
  c.r = 2;
  p = lora_params();
  p["transformer.h.0.attn.c_attn.lora_B.weight"] = ramp({24, 3}, 0);
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), p, c); }),
             "'transformer.h.0.attn.c_attn.lora_B.weight' has shape [24, 3], expected [out_features, r] with r = 2");
  p = lora_params();
  p["transformer.h.0.attn.c_attn.lora_A.weight"] = Buffer(DType::i32, {2, 8});
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), p, c); }), "is i32[2, 8], not a float tensor");
  c.r = 0;
  EXPECT_HAS(error_of([&] { save_peft_adapter(dir.file("x"), lora_params(), c); }), "r = 0 (need r > 0)");
  EXPECT_FALSE(fs::exists(dir.file("x")));  // nothing written on error
}

TEST(Peft, LoadRejectsWhatItCannotRepresent) {
  TempDir dir;
  LoraAdapterConfig c;
  c.r = 2;
  const std::string d = dir.file("a");
  save_peft_adapter(d, lora_params(), c);
  const std::string config_text = read_file(d + "/adapter_config.json");
  auto with_config = [&](const std::function<void(json&)>& edit) {
    json j = json::parse(config_text);
    edit(j);
    std::ofstream(d + "/adapter_config.json") << j.dump(2);
    return error_of([&] { load_peft_adapter(d); });
  };
  EXPECT_HAS(with_config([](json& j) { j["peft_type"] = "IA3"; }), "\"peft_type\" is \"IA3\", expected \"LORA\"");
  EXPECT_HAS(with_config([](json& j) { j["r"] = 4; }),
             "has shape [2, 8], expected [r, in_features] with r = 4");
  EXPECT_HAS(with_config([](json& j) { j["r"] = "2"; }), "\"r\" is \"2\", expected an integer");
  EXPECT_HAS(with_config([](json& j) { j["use_dora"] = true; }), "DoRA is not supported");
  EXPECT_HAS(with_config([](json& j) { j["bias"] = "all"; }), "trained biases are not supported");
  EXPECT_HAS(with_config([](json& j) { j["rank_pattern"] = {{"c_fc", 4}}; }), "per-module patterns are not supported");
  EXPECT_HAS(with_config([](json& j) { j["modules_to_save"] = {"lm_head"}; }), "modules_to_save is not supported");
  EXPECT_HAS(with_config([](json& j) { j.erase("lora_alpha"); }), "\"lora_alpha\" is missing, expected a number");
  std::ofstream(d + "/adapter_config.json") << "{ not json";
  EXPECT_HAS(error_of([&] { load_peft_adapter(d); }), "adapter_config.json' is not valid JSON");
  std::ofstream(d + "/adapter_config.json") << config_text;
  EXPECT_EQ(load_peft_adapter(d).params.size(), 4u);

  // A tensor PEFT would name differently (a trained bias, say).
  auto tensors = load_safetensors(d + "/adapter_model.safetensors");
  tensors["base_model.model.transformer.h.0.attn.c_attn.bias"] = ramp({24}, 0);
  save_safetensors(d + "/adapter_model.safetensors", tensors);
  EXPECT_HAS(error_of([&] { load_peft_adapter(d); }),
             "key 'base_model.model.transformer.h.0.attn.c_attn.bias' is not \"base_model.model.<module>.lora_A.weight\"");

  fs::remove(d + "/adapter_model.safetensors");
  std::ofstream(d + "/adapter_model.bin") << "pickle";
  EXPECT_HAS(error_of([&] { load_peft_adapter(d); }),
             "has no adapter_model.safetensors (adapter_model.bin, a pickle, is not supported)");
  EXPECT_HAS(error_of([&] { load_peft_adapter(dir.file("none")); }), "is not a directory");
}

}  // namespace
}  // namespace tessera
