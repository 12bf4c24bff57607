// AOT output equals JIT output: generated libraries (tessera_add_generator in
// tests/CMakeLists.txt) run on random inputs and are compared with compile()
// of the same registered model. The same executable runs once per CPU variant
// (ctest sets TESSERA_AOT_VARIANT), so each variant's code is checked; the
// CUDA variants are compiled (they are in the library) but run only on a GPU.
// Also the registry's parameters that generators pass (remat=, bad values).
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <tuple>

#include "aot_gpt_step.h"
#include "aot_mlp_step.h"
#include "aot_op_zoo.h"
#include "aot_qlora_step.h"
#include "test_util.h"

using namespace tessera;

namespace {

template <typename Step>
void expect_aot_equals_jit(const Graph& g, double tol) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> u(-1, 1);
  std::map<std::string, Buffer> args;
  std::vector<const void*> in(Step::kNumInputs);
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const tessera_aot::TensorSpec& s = Step::inputs()[i];
    const Node& n = g.node(g.find(s.name));
    ASSERT_EQ(std::string(s.dtype), dtype_name(n.type.dtype)) << s.name;
    ASSERT_EQ(Shape(s.shape, s.shape + s.rank), n.type.shape) << s.name;
    std::vector<double> v(n.type.numel());
    for (double& x : v) x = is_float(n.type.dtype) ? u(rng) : static_cast<double>(rng() % 5);
    if (std::string(s.name) == "optim.step") v.assign(v.size(), 2);
    if (std::strstr(s.name, "exp_avg_sq")) for (double& x : v) x = x * x;
    args[s.name] = Buffer::from(v, n.type.shape, n.type.dtype);
    in[i] = args[s.name].data();
  }
  auto want = compile(g).run(args);
  std::vector<Buffer> got;
  std::vector<void*> out;
  for (int i = 0; i < Step::kNumOutputs; ++i) {
    const Buffer& w = want.at(Step::outputs()[i].name);
    got.emplace_back(w.dtype(), w.shape());
    std::memset(got.back().data(), 0xFF, got.back().bytes());
    out.push_back(got.back().data());
  }
  Step step;
  for (int repeat = 0; repeat < 2; ++repeat) {  // the second run reuses the arena
    step.run(in.data(), out.data());
    for (int i = 0; i < Step::kNumOutputs; ++i) {
      std::vector<double> a = got[i].to_f64(), b = want.at(Step::outputs()[i].name).to_f64();
      int bad = 0;
      for (size_t j = 0; j < a.size(); ++j)
        if (!(std::fabs(a[j] - b[j]) <= tol * (1 + std::fabs(b[j]))) && bad++ < 3)
          ADD_FAILURE() << Step::variant() << ": " << Step::outputs()[i].name << "[" << j << "]: AOT " << a[j]
                        << ", JIT " << b[j];
    }
  }
  // Again with every output new.X written over its input X (in_place_of):
  // the same bits as into separate arrays.
  std::vector<std::vector<uint8_t>> own;
  std::vector<const void*> own_in;
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const uint8_t* p = static_cast<const uint8_t*>(in[i]);
    own.emplace_back(p, p + Step::inputs()[i].bytes);
    own_in.push_back(own.back().data());
  }
  std::vector<Buffer> fresh;
  std::vector<void*> own_out;
  int updates = 0, in_place = 0;
  for (int o = 0; o < Step::kNumOutputs; ++o) {
    const std::string name = Step::outputs()[o].name;
    const char* x = step.in_place_of(o);
    updates += name.rfind("new.", 0) == 0;
    in_place += x != nullptr;
    if (x) EXPECT_EQ(name, std::string("new.") + x);
    int input = -1;
    for (int i = 0; x && i < Step::kNumInputs; ++i)
      if (std::string(Step::inputs()[i].name) == x) input = i;
    if (input >= 0) {
      own_out.push_back(own[input].data());
    } else {
      fresh.emplace_back(got[o].dtype(), got[o].shape());
      own_out.push_back(fresh.back().data());
    }
  }
  if (updates > 0) EXPECT_GT(in_place, 0) << "a training step with no output written in place";
  step.run(own_in.data(), own_out.data());
  for (int o = 0; o < Step::kNumOutputs; ++o)
    EXPECT_EQ(std::memcmp(own_out[o], got[o].data(), got[o].bytes()), 0)
        << Step::variant() << ": " << Step::outputs()[o].name << " differs when written in place";
}

TEST(Aot, MlpTrainingStepEqualsJit) {
  expect_aot_equals_jit<tessera_aot::aot_mlp_step>(
      registered_model("mlp_train_step", {{"sizes", "13,33,7"}, {"batch", "5"}}), 1e-5);
}

TEST(Aot, GptTrainingStepEqualsJit) {
  expect_aot_equals_jit<tessera_aot::aot_gpt_step>(
      registered_model("gpt_train_step", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                          {"n_head", "2"}, {"n_embd", "8"}, {"batch", "3"}}),
      1e-4);
}

TEST(Aot, QloraStepEqualsJit) {
  expect_aot_equals_jit<tessera_aot::aot_qlora_step>(
      registered_model("gpt_qlora_train_step", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                                {"n_head", "2"}, {"n_embd", "8"}, {"batch", "3"}, {"r", "4"},
                                                {"double_quant", "true"}}),
      1e-4);
}

// The generated QLoRA step trains: 120 steps on one batch from zero moments,
// each output new.X fed back into input X, lower the loss; only adapter
// params and their moments are outputs (the NF4 base stays frozen). (The
// premise of test_aot_gpu's QLoRA loss curve, checked here without a GPU.)
TEST(Aot, QloraStepLearns) {
  using Step = tessera_aot::aot_qlora_step;
  SEEDED(seed);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<std::vector<uint8_t>> in(Step::kNumInputs);
  int step_input = -1;
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const tessera_aot::TensorSpec& s = Step::inputs()[i];
    const std::string name = s.name, dtype = s.dtype;
    in[i].resize(s.bytes);
    if (name == "optim.step") step_input = i;
    for (size_t j = 0; j < s.bytes; ++j) in[i][j] = static_cast<uint8_t>(rng());  // NF4 codes: any byte
    if (dtype == "i32")
      for (size_t j = 0; j < s.bytes / 4; ++j) reinterpret_cast<int32_t*>(in[i].data())[j] = static_cast<int32_t>(rng() % 11);
    if (dtype == "f32")
      for (size_t j = 0; j < s.bytes / 4; ++j)
        reinterpret_cast<float*>(in[i].data())[j] = name == "optim.lr" ? 5e-2f
                                                    : name.find(".exp_avg") != std::string::npos ? 0.0f
                                                                                                 : 0.2f * u(rng);
  }
  ASSERT_GE(step_input, 0);
  std::vector<std::vector<uint8_t>> out(Step::kNumOutputs);
  std::vector<std::pair<int, int>> feed;
  int loss = -1;
  for (int o = 0; o < Step::kNumOutputs; ++o) {
    const std::string name = Step::outputs()[o].name;
    out[o].resize(Step::outputs()[o].bytes);
    if (name == "loss") loss = o;
    if (name == "loss" || name == "logits") continue;
    EXPECT_NE(name.find("lora_"), std::string::npos) << "output '" << name << "' updates a frozen param";
    for (int i = 0; i < Step::kNumInputs; ++i)
      if (name == std::string("new.") + Step::inputs()[i].name) feed.emplace_back(i, o);
  }
  ASSERT_GE(loss, 0);
  EXPECT_FALSE(feed.empty());
  std::vector<const void*> ip;
  std::vector<void*> op;
  for (auto& t : in) ip.push_back(t.data());
  for (auto& t : out) op.push_back(t.data());
  Step step;
  constexpr int kSteps = 120;
  float first = 0, last = 0;
  for (int k = 0; k < kSteps; ++k) {
    const float t = static_cast<float>(k + 1);
    std::memcpy(in[step_input].data(), &t, 4);
    step.run(ip.data(), op.data());
    std::memcpy(k == 0 ? &first : &last, out[loss].data(), 4);
    for (auto [i, o] : feed) std::memcpy(in[i].data(), out[o].data(), out[o].size());
  }
  // A 1-layer model whose frozen base is random and whose adapters sit on
  // c_attn only: its loss (about ln 11 at the start) fell by 0.002-0.05 in
  // 30 steps at this rate (10 seeds of 300 below 0.01; 1 of 300 in 60
  // steps; none of 500 in 120).
  EXPECT_LT(last, first - 0.01f) << "the QLoRA step did not learn: loss " << first << " -> " << last;
}

TEST(Aot, EveryOpEqualsJit) { expect_aot_equals_jit<tessera_aot::aot_op_zoo>(op_zoo(), 1e-5); }

TEST(Aot, TypedInterfaceNamesEveryTensor) {
  tessera_aot::aot_mlp_step::Inputs in;
  in.x = nullptr;
  in.layers_0_weight_exp_avg_sq = nullptr;
  tessera_aot::aot_mlp_step::Outputs out;
  out.loss = nullptr;
  out.new_layers_1_bias = nullptr;
  tessera_aot::aot_mlp_step step;
  try {
    step.run(in, out);
    ADD_FAILURE() << "run with null pointers did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no pointer for input 'x'"), std::string::npos) << e.what();
  }
}

TEST(Aot, OutputsOverlappingInputsOtherThanInPlaceAreRefused) {
  using Step = tessera_aot::aot_mlp_step;
  std::vector<std::vector<float>> data;
  std::vector<const void*> in;
  std::vector<void*> out;
  for (int i = 0; i < Step::kNumInputs; ++i) data.emplace_back(Step::inputs()[i].bytes / 4 + 1, 0.5f);
  for (auto& d : data) in.push_back(d.data());
  int moment = -1;
  for (int i = 0; i < Step::kNumInputs; ++i)
    if (std::string(Step::inputs()[i].name) == "layers.0.weight.exp_avg") moment = i;
  ASSERT_GE(moment, 0);
  std::vector<std::vector<float>> results;
  for (int o = 0; o < Step::kNumOutputs; ++o) results.emplace_back(Step::outputs()[o].bytes / 4 + 1);
  for (auto& r : results) out.push_back(r.data());
  Step step;
  for (int o = 0; o < Step::kNumOutputs; ++o)
    if (std::string(Step::outputs()[o].name) == "new.layers.0.weight") out[o] = data[moment].data();
  try {
    step.run(in.data(), out.data());
    ADD_FAILURE() << "an output over the wrong input did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("output 'new.layers.0.weight' overlaps input 'layers.0.weight.exp_avg'"),
              std::string::npos)
        << e.what();
  }
}

TEST(Aot, RegisteredModelErrors) {
  EXPECT_THROW(registered_model("resnet"), Error);
  EXPECT_THROW(registered_model("mlp", {{"widths", "3"}}), Error);
  EXPECT_THROW(registered_model("mlp", {{"batch", "-1"}}), Error);
}

// Nodes that rematerialize() cloned into the backward (they carry "remat").
int remat_clones(const Graph& g) {
  int n = 0;
  for (const Node& node : g.nodes) n += node.attrs.count("remat") ? 1 : 0;
  return n;
}

// remat=<fraction> on a training step: the backward recomputes forward
// tensors (clones marked "remat"), and the step computes bitwise what the
// step without remat computes (loss, new params and moments) on the CPU JIT:
// the GPT under bf16 autocast (as the GPU benchmark bench_remat_gpu runs it)
// and the MLP in f32. (The remat pass itself, f32 GPT steps included, is
// test_remat.cpp's.) The JIT does not depend on the AOT variant, so the
// per-variant runs of this executable (TESSERA_AOT_VARIANT set) skip it.
TEST(RegisteredModel, RematStepsComputeTheSameAsWithout) {
  if (std::getenv("TESSERA_AOT_VARIANT")) GTEST_SKIP() << "runs once, without TESSERA_AOT_VARIANT";
  using Params = std::map<std::string, std::string>;
  const Params gpt = {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"}, {"n_head", "2"},
                      {"n_embd", "8"},      {"batch", "3"},      {"autocast", "bf16"}};
  const std::vector<std::tuple<std::string, Params, std::string>> cases = {
      {"gpt_train_step", gpt, "0.5"},
      {"mlp_train_step", {{"sizes", "13,33,7"}, {"batch", "5"}}, "0"},
  };
  SEEDED(seed);
  for (const auto& [model, params, budget] : cases) {
    SCOPED_TRACE(model + " remat=" + budget);
    const Graph plain = registered_model(model, params);
    Params with = params;
    with["remat"] = budget;
    const Graph remat = registered_model(model, with);
    EXPECT_EQ(remat_clones(plain), 0);
    EXPECT_GT(remat_clones(remat), 0) << "no node was rematerialized";
    // remat=none is the step as it is.
    with["remat"] = "none";
    EXPECT_EQ(print(registered_model(model, with)), print(plain));
    const auto args = test_util::random_args(plain, seed);
    const auto want = compile(plain).run(args);
    const auto got = compile(remat).run(args);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, w] : want) {
      const Buffer& g = got.at(name);
      ASSERT_EQ(g.type(), w.type()) << name;
      EXPECT_EQ(std::memcmp(g.data(), w.data(), w.bytes()), 0) << "output " << name << " differs with remat";
    }
  }
  // In f32 too, at every budget the GPU benchmark builds (graphs only).
  Params f32 = gpt;
  f32.erase("autocast");
  for (const std::string budget : {"1.0", "0.5", "0.25"}) {
    f32["remat"] = budget;
    EXPECT_GT(remat_clones(registered_model("gpt_train_step", f32)), 0) << "remat=" << budget;
  }
}

TEST(RegisteredModel, RematBadValuesNameTheModelAndParameter) {
  const std::map<std::string, std::string> gpt = {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                                  {"n_head", "2"},      {"n_embd", "8"},     {"batch", "3"}};
  for (const std::string bad : {"1.5", "-0.1", "half", "0.5x", "nan", ""}) {
    auto params = gpt;
    params["remat"] = bad;
    const std::string e = test_util::error_of([&] { registered_model("gpt_train_step", params); });
    EXPECT_NE(e.find("model 'gpt_train_step': parameter remat=" + bad + " is not none or a budget fraction in [0, 1]"),
              std::string::npos)
        << e;
  }
  const std::string e = test_util::error_of(
      [] { registered_model("mlp_train_step", {{"sizes", "13,33,7"}, {"remat", "2"}}); });
  EXPECT_NE(e.find("model 'mlp_train_step': parameter remat=2 "), std::string::npos) << e;
  // Only the MLP and GPT steps take it.
  const std::string forward = test_util::error_of([] { registered_model("gpt", {{"remat", "0.5"}}); });
  EXPECT_NE(forward.find("model 'gpt' has no parameter 'remat'"), std::string::npos) << forward;
}

// logits=false: the GPT step without its logits output computes bitwise the
// same loss, params and moments as the step with it (CPU JIT, bf16 autocast
// as the GPU benchmark runs it), and has no [batch, block, vocab] output.
TEST(RegisteredModel, StepWithoutLogitsComputesTheSameRest) {
  if (std::getenv("TESSERA_AOT_VARIANT")) GTEST_SKIP() << "runs once, without TESSERA_AOT_VARIANT";
  std::map<std::string, std::string> params = {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                               {"n_head", "2"},      {"n_embd", "8"},     {"batch", "3"},
                                               {"autocast", "bf16"}};
  const Graph with = registered_model("gpt_train_step", params);
  params["logits"] = "false";
  const Graph without = registered_model("gpt_train_step", params);
  auto has_output = [](const Graph& g, const std::string& name) {
    for (const GraphOutput& o : g.outputs)
      if (o.name == name) return true;
    return false;
  };
  ASSERT_TRUE(has_output(with, "logits"));
  EXPECT_FALSE(has_output(without, "logits"));
  EXPECT_EQ(without.outputs.size() + 1, with.outputs.size());
  SEEDED(seed);
  const auto args = test_util::random_args(with, seed);
  const auto want = compile(with).run(args);
  const auto got = compile(without).run(args);
  for (const auto& [name, g] : got) {
    const Buffer& w = want.at(name);
    ASSERT_EQ(g.type(), w.type()) << name;
    EXPECT_EQ(std::memcmp(g.data(), w.data(), w.bytes()), 0) << "output " << name << " differs without logits";
  }
  params["logits"] = "no";
  const std::string e = test_util::error_of([&] { registered_model("gpt_train_step", params); });
  EXPECT_NE(e.find("model 'gpt_train_step': parameter logits=no is not true or false"), std::string::npos) << e;
}

}  // namespace
