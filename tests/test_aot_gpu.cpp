// The generated libraries' CUDA variants on a real GPU against their CPU
// variant, on the same random inputs: the MLP and GPT training steps of
// tests/CMakeLists.txt, one step (direct, captured and replayed as a CUDA
// Graph: all bitwise equal with tessera's attention kernels, within
// tolerance of the CPU with cuDNN's) and a 30-step loss curve with the state
// kept on the device; and every op (op_zoo) once. The same in bf16 (every op, and the
// GPT step under bf16 autocast): uint16 storage in the Halide kernels, bf16
// cuBLASLt products. Links only the generated libraries (no libHalide, no
// libtessera), so the binary runs on a GPU machine without Halide. Skips
// when no CUDA device is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aot_gpt_step.h"
#include "aot_gpt_step_bf16.h"
#include "aot_mlp_step.h"
#include "aot_op_zoo.h"
#include "aot_op_zoo_bf16.h"
#include "aot_qlora_step.h"

namespace {

int64_t numel(const tessera_aot::TensorSpec& s) {
  int64_t n = 1;
  for (int d = 0; d < s.rank; ++d) n *= s.shape[d];
  return n;
}

// Random values of the spec's dtype (f32, i32, u8 or i8 here), as raw bytes.
std::vector<uint8_t> random_tensor(const tessera_aot::TensorSpec& s, std::mt19937& rng) {
  std::vector<uint8_t> bytes(s.bytes);
  const std::string dtype = s.dtype, name = s.name;
  std::uniform_real_distribution<float> u(-1, 1);
  // Matrices as nn.Linear initializes them, U(-1/sqrt(in), 1/sqrt(in)):
  // at U(-1, 1) a bf16 GPT's attention saturates, and its logits, rounded
  // in bf16 on both sides, then differ by more than the tolerance.
  const float scale = s.rank == 2 && name.find("weight") != std::string::npos ? 1 / std::sqrt(float(s.shape[1])) : 1;
  for (int64_t i = 0; i < numel(s); ++i) {
    if (dtype == "f32") {
      float v = name == "optim.step" ? 2.0f : name == "optim.lr" ? 1e-3f : u(rng) * scale;
      // Second moments at least 0.01: near 0, AdamW's step m / sqrt(v)
      // magnifies the two sides' rounding of the gradient without bound.
      if (name.find("exp_avg_sq") != std::string::npos) v = 0.01f + v * v;
      std::memcpy(&bytes[i * 4], &v, 4);
    } else if (dtype == "i32") {
      int32_t v = static_cast<int32_t>(rng() % 5);
      std::memcpy(&bytes[i * 4], &v, 4);
    } else if (dtype == "u8" || dtype == "i8") {  // packed NF4 codes, int8 weights: any byte
      bytes[i] = static_cast<uint8_t>(rng());
    } else {
      ADD_FAILURE() << "no random values for dtype " << dtype;
    }
  }
  return bytes;
}

template <typename Step>
void expect_gpu_matches_cpu(double tol) {
  const int cc = Step::gpu_capability();
  if (!Step::gpu_variants_run())
    GTEST_SKIP() << (cc == 0 ? "no CUDA device (or driver): the CUDA variants are compiled but not run"
                             : "built without the CUDA toolkit: the CUDA variants cannot run");
  const char* gpu_target = cc >= 90 ? "host-cuda-sm90" : "host-cuda-sm80";
  std::mt19937 rng(std::random_device{}());
  std::vector<std::vector<uint8_t>> inputs;
  std::vector<const void*> in;
  for (int i = 0; i < Step::kNumInputs; ++i) inputs.push_back(random_tensor(Step::inputs()[i], rng));
  for (auto& t : inputs) in.push_back(t.data());
  auto run = [&](Step& step) {
    std::vector<std::vector<float>> outs(Step::kNumOutputs);
    std::vector<void*> out;
    for (int i = 0; i < Step::kNumOutputs; ++i) {
      outs[i].assign(numel(Step::outputs()[i]), std::nanf(""));
      out.push_back(outs[i].data());
    }
    step.run(in.data(), out.data());
    return outs;
  };
  Step cpu("host"), gpu(gpu_target);
  auto want = run(cpu);
  // An output rounded to bf16 (op_zoo's "..._bf16") may round the other
  // way after a reassociated sum: one bf16 step, 2^-7 relative, at most.
  auto expect_near_cpu = [&](const std::vector<std::vector<float>>& got, const char* run_name) {
    for (int i = 0; i < Step::kNumOutputs; ++i) {
      const std::string name = Step::outputs()[i].name;
      const bool bf16 = name.size() > 5 && name.compare(name.size() - 5, 5, "_bf16") == 0;
      const double out_tol = bf16 ? std::max(tol, 1.0 / 128) : tol;
      int bad = 0;
      for (size_t j = 0; j < want[i].size(); ++j)
        if (!(std::fabs(got[i][j] - want[i][j]) <= out_tol * (1 + std::fabs(want[i][j]))) && bad++ < 3)
          ADD_FAILURE() << gpu.target() << " " << run_name << " " << name << "[" << j << "]: GPU " << got[i][j]
                        << ", CPU " << want[i][j];
    }
  };
  // First with cuDNN's attention where it runs (bf16 attention, cuDNN
  // loadable): direct twice, then captured and replayed. Its backward sums
  // with atomics, so these runs are held to the CPU only.
  for (int r = 0; r < 3; ++r) expect_near_cpu(run(gpu), r < 2 ? "direct (cuDNN attention)" : "graph (cuDNN attention)");
  EXPECT_TRUE(gpu.last_run_was_graph());
  // Then tessera's own kernels (a graph of their own): deterministic, so
  // direct runs, the capture and its replays agree bitwise.
  gpu.set_cudnn_attention(false);
  auto got = run(gpu);    // direct launches
  EXPECT_FALSE(gpu.last_run_was_graph());
  auto second = run(gpu);  // direct again
  EXPECT_FALSE(gpu.last_run_was_graph());
  auto again = run(gpu);  // captured into a CUDA Graph, then replayed
  EXPECT_TRUE(gpu.last_run_was_graph());
  auto replayed = run(gpu);
  EXPECT_TRUE(gpu.last_run_was_graph());
  gpu.set_graphs(false);
  auto direct = run(gpu);
  EXPECT_FALSE(gpu.last_run_was_graph());
  expect_near_cpu(got, "direct");
  for (int i = 0; i < Step::kNumOutputs; ++i) {
    int bad = 0;
    for (size_t j = 0; j < want[i].size(); ++j)
      for (const auto* other : {&second, &again, &replayed, &direct})
        if (std::memcmp(&got[i][j], &(*other)[i][j], 4) != 0 && bad++ < 3)
          ADD_FAILURE() << Step::outputs()[i].name << "[" << j << "]: a graph replay and a direct run differ";
  }
}

// Trains `steps` steps from the same start on the CPU variant (feeding each
// output new.X back into input X on the host) and on the GPU (on the device,
// set_feed_back, once with copies and once updated in place), and compares
// the loss curves; the two GPU runs must agree bitwise, final state included.
template <typename Step>
void expect_loss_curve_matches_cpu(int steps, double tol) {
  const int cc = Step::gpu_capability();
  if (!Step::gpu_variants_run())
    GTEST_SKIP() << (cc == 0 ? "no CUDA device (or driver): the CUDA variants are compiled but not run"
                             : "built without the CUDA toolkit: the CUDA variants cannot run");
  std::mt19937 rng(std::random_device{}());
  std::vector<std::vector<uint8_t>> inputs;
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const tessera_aot::TensorSpec& spec = Step::inputs()[i];
    inputs.push_back(random_tensor(spec, rng));
    const std::string name = spec.name;
    if (std::string(spec.dtype) != "f32" || name.rfind("optim.", 0) == 0) continue;
    float* v = reinterpret_cast<float*>(inputs.back().data());
    const bool moment = name.find(".exp_avg") != std::string::npos;
    for (int64_t j = 0; j < numel(spec); ++j) v[j] = moment ? 0.0f : 0.2f * v[j];  // params small, moments zero
  }
  int step_input = -1, loss_output = -1;
  std::vector<std::pair<int, int>> feed;  // (input, output new.<input>)
  for (int i = 0; i < Step::kNumInputs; ++i)
    if (std::string(Step::inputs()[i].name) == "optim.step") step_input = i;
  for (int o = 0; o < Step::kNumOutputs; ++o) {
    const std::string name = Step::outputs()[o].name;
    if (name == "loss") loss_output = o;
    for (int i = 0; i < Step::kNumInputs; ++i)
      if (name == std::string("new.") + Step::inputs()[i].name) feed.emplace_back(i, o);
  }
  ASSERT_GE(step_input, 0);
  ASSERT_GE(loss_output, 0);

  const char* gpu_target = cc >= 90 ? "host-cuda-sm90" : "host-cuda-sm80";
  Step cpu("host");
  std::vector<float> cpu_loss;
  {  // CPU: the host feeds the state back
    std::vector<std::vector<uint8_t>> state = inputs;
    std::vector<std::vector<uint8_t>> outs(Step::kNumOutputs);
    std::vector<const void*> in;
    std::vector<void*> out;
    for (auto& t : state) in.push_back(t.data());
    for (int o = 0; o < Step::kNumOutputs; ++o) {
      outs[o].resize(Step::outputs()[o].bytes);
      out.push_back(outs[o].data());
    }
    for (int k = 0; k < steps; ++k) {
      const float step = static_cast<float>(k + 1);
      std::memcpy(state[step_input].data(), &step, 4);
      cpu.run(in.data(), out.data());
      float loss;
      std::memcpy(&loss, outs[loss_output].data(), 4);
      cpu_loss.push_back(loss);
      for (auto [i, o] : feed) std::memcpy(state[i].data(), outs[o].data(), outs[o].size());
    }
  }
  // GPU: the state stays on the device; only the step counter goes up and the
  // loss comes down. Fed back by copies, or updated in place: the same bits.
  struct Curve {
    std::vector<float> loss;
    std::vector<std::vector<uint8_t>> state;  // the inputs after the last step
  };
  auto gpu_curve = [&](bool in_place, bool cudnn) {
    Step gpu(gpu_target, in_place);
    gpu.set_cudnn_attention(cudnn);
    Curve c;
    for (int i = 0; i < Step::kNumInputs; ++i) gpu.upload(i, inputs[i].data());
    gpu.set_feed_back(true);
    for (int k = 0; k < steps; ++k) {
      const float step = static_cast<float>(k + 1);
      gpu.upload(step_input, &step);
      gpu.run_device();
      float loss = 0;
      gpu.download(Step::kNumInputs + loss_output, &loss);
      gpu.synchronize();
      c.loss.push_back(loss);
      if (k >= 3) {
        EXPECT_TRUE(gpu.last_run_was_graph()) << "step " << k;
      }
    }
    for (int i = 0; i < Step::kNumInputs; ++i) {
      c.state.emplace_back(inputs[i].size());
      gpu.download(i, c.state.back().data());
    }
    gpu.synchronize();
    int in_place_outputs = 0;
    for (int o = 0; o < Step::kNumOutputs; ++o) in_place_outputs += gpu.in_place_of(o) != nullptr;
    EXPECT_GT(in_place_outputs, 0) << "no new.X is written over X";
    return c;
  };
  // tessera's attention kernels (deterministic) fed back by copies and in
  // place: the same bits; and cuDNN's where it runs (not bitwise repeatable).
  const Curve copied = gpu_curve(false, false), in_place = gpu_curve(true, false), cudnn = gpu_curve(true, true);
  EXPECT_EQ(std::memcmp(in_place.loss.data(), copied.loss.data(), 4 * steps), 0) << "losses differ in place";
  for (int i = 0; i < Step::kNumInputs; ++i)
    EXPECT_TRUE(in_place.state[i] == copied.state[i]) << Step::inputs()[i].name << " differs after training in place";
  for (const Curve* c : {&copied, &cudnn}) {
    const char* which = c == &cudnn ? "cuDNN attention" : "tessera's attention";
    for (int k = 0; k < steps; ++k)
      EXPECT_NEAR(c->loss[k], cpu_loss[k], tol * std::fabs(cpu_loss[k])) << which << ", step " << k;
    EXPECT_LT(c->loss.back(), c->loss.front()) << "the GPU run did not learn (" << which << ")";
  }
  EXPECT_LT(cpu_loss.back(), cpu_loss.front()) << "the CPU run did not learn";
}

TEST(AotGpu, MlpTrainingStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_mlp_step>(1e-4); }
TEST(AotGpu, GptTrainingStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_gpt_step>(1e-3); }
// Every op of the library (op_zoo) on the GPU against the CPU: Halide CUDA
// kernels, cuBLASLt products, decomposed attention, quantized linears.
TEST(AotGpu, EveryOpMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_op_zoo>(2e-4); }
// bf16: the GPU rounds the same values to bf16 as the CPU, but its exp/tanh
// approximations and cuBLASLt's summation order can move a result by one
// bf16 ulp (2^-8 relative).
TEST(AotGpu, EveryOpBf16MatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_op_zoo_bf16>(2e-2); }
TEST(AotGpu, GptBf16TrainingStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_gpt_step_bf16>(2e-2); }
TEST(AotGpu, GptBf16LossCurveMatchesCpu) { expect_loss_curve_matches_cpu<tessera_aot::aot_gpt_step_bf16>(30, 2e-2); }
TEST(AotGpu, MlpLossCurveMatchesCpu) { expect_loss_curve_matches_cpu<tessera_aot::aot_mlp_step>(30, 1e-3); }
TEST(AotGpu, QloraStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_qlora_step>(1e-3); }
TEST(AotGpu, QloraLossCurveMatchesCpu) { expect_loss_curve_matches_cpu<tessera_aot::aot_qlora_step>(30, 2e-3); }
TEST(AotGpu, GptLossCurveMatchesCpu) { expect_loss_curve_matches_cpu<tessera_aot::aot_gpt_step>(30, 2e-3); }

}  // namespace

