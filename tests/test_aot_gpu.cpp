// The generated libraries' CUDA variants on a real GPU against their CPU
// variant, on the same random inputs: the MLP and GPT training steps of
// tests/CMakeLists.txt. Links only the generated libraries (no libHalide, no
// libtessera), so the binary runs on a GPU machine without Halide. Skips
// when no CUDA device is present.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aot_gpt_step.h"
#include "aot_mlp_step.h"

namespace {

int64_t numel(const tessera_aot::TensorSpec& s) {
  int64_t n = 1;
  for (int d = 0; d < s.rank; ++d) n *= s.shape[d];
  return n;
}

// Random values of the spec's dtype (f32 or i32 here), as raw bytes.
std::vector<uint8_t> random_tensor(const tessera_aot::TensorSpec& s, std::mt19937& rng) {
  std::vector<uint8_t> bytes(s.bytes);
  const std::string dtype = s.dtype, name = s.name;
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t i = 0; i < numel(s); ++i) {
    if (dtype == "f32") {
      float v = name == "optim.step" ? 2.0f : name == "optim.lr" ? 1e-3f : u(rng);
      if (name.find("exp_avg_sq") != std::string::npos) v *= v;
      std::memcpy(&bytes[i * 4], &v, 4);
    } else if (dtype == "i32") {
      int32_t v = static_cast<int32_t>(rng() % 5);
      std::memcpy(&bytes[i * 4], &v, 4);
    } else {
      ADD_FAILURE() << "no random values for dtype " << dtype;
    }
  }
  return bytes;
}

template <typename Step>
void expect_gpu_matches_cpu(double tol) {
  const int cc = Step::gpu_capability();
  if (cc == 0) GTEST_SKIP() << "no CUDA device (or driver): the CUDA variants are compiled but not run";
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
  auto got = run(gpu);
  auto again = run(gpu);  // device buffers reused, inputs uploaded again
  for (int i = 0; i < Step::kNumOutputs; ++i) {
    int bad = 0;
    for (size_t j = 0; j < want[i].size(); ++j) {
      if (!(std::fabs(got[i][j] - want[i][j]) <= tol * (1 + std::fabs(want[i][j]))) && bad++ < 3)
        ADD_FAILURE() << gpu.target() << " " << Step::outputs()[i].name << "[" << j << "]: GPU " << got[i][j]
                      << ", CPU " << want[i][j];
      if (std::memcmp(&got[i][j], &again[i][j], 4) != 0 && bad++ < 3)
        ADD_FAILURE() << Step::outputs()[i].name << "[" << j << "]: two GPU runs differ";
    }
  }
}

TEST(AotGpu, MlpTrainingStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_mlp_step>(1e-4); }
TEST(AotGpu, GptTrainingStepMatchesCpu) { expect_gpu_matches_cpu<tessera_aot::aot_gpt_step>(1e-3); }

}  // namespace
