// Trains the MLP 784-256-10 (batch 64, AdamW) with the ahead-of-time
// compiled training step `mlp_step` (generators/CMakeLists.txt): this
// program links that generated library, the Halide runtime headers and
// Tessera's thread pool only, not libHalide or libtessera. Data: one synthetic batch whose labels come
// from a fixed random linear teacher. Prints the variant the library picked,
// the loss as it falls and the time per step.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "mlp_step.h"

using Step = tessera_aot::mlp_step;

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 200;
  std::mt19937 rng(1);
  std::map<std::string, std::vector<float>> tensors;  // every input by name
  auto numel = [](const tessera_aot::TensorSpec& s) {
    int64_t n = 1;
    for (int d = 0; d < s.rank; ++d) n *= s.shape[d];
    return n;
  };
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const tessera_aot::TensorSpec& s = Step::inputs()[i];
    std::vector<float>& t = tensors[s.name];
    t.assign(numel(s), 0.0f);
    std::string name = s.name;
    if (name.size() > 7 && (name.compare(name.size() - 7, 7, ".weight") == 0 || name.compare(name.size() - 5, 5, ".bias") == 0)) {
      // PyTorch's nn.Linear init: U(-1/sqrt(in), 1/sqrt(in)), in = the weight's second dim.
      const tessera_aot::TensorSpec& w = Step::inputs()[name.back() == 's' ? i - 1 : i];
      std::uniform_real_distribution<float> u(-1 / std::sqrt(float(w.shape[1])), 1 / std::sqrt(float(w.shape[1])));
      for (float& v : t) v = u(rng);
    }
  }
  // The batch: x ~ N(0, 1); y = argmax of a random linear teacher.
  std::vector<float>& x = tensors["x"];
  std::normal_distribution<float> n01;
  for (float& v : x) v = n01(rng);
  const tessera_aot::TensorSpec& xs = Step::inputs()[0];
  const int B = static_cast<int>(xs.shape[0]), D = static_cast<int>(xs.shape[1]), C = 10;
  std::vector<float> teacher(C * D);
  for (float& v : teacher) v = n01(rng);
  std::vector<int32_t> y(B);
  for (int b = 0; b < B; ++b) {
    float best = -1e30f;
    for (int c = 0; c < C; ++c) {
      float s = 0;
      for (int d = 0; d < D; ++d) s += teacher[c * D + d] * x[b * D + d];
      if (s > best) best = s, y[b] = c;
    }
  }
  std::memcpy(tensors["y"].data(), y.data(), y.size() * sizeof(int32_t));
  tensors["optim.lr"][0] = 1e-3f;

  std::vector<std::vector<float>> outputs(Step::kNumOutputs);
  std::vector<void*> out(Step::kNumOutputs);
  for (int i = 0; i < Step::kNumOutputs; ++i) {
    outputs[i].assign(numel(Step::outputs()[i]), 0.0f);
    out[i] = outputs[i].data();
  }
  std::vector<const void*> in(Step::kNumInputs);
  Step step;
  std::printf("mlp_step: variant %s, arena %zu bytes\n", Step::variant(), Step::kArenaBytes);
  double seconds = 0;
  for (int t = 1; t <= steps; ++t) {
    tensors["optim.step"][0] = static_cast<float>(t);
    for (int i = 0; i < Step::kNumInputs; ++i) in[i] = tensors[Step::inputs()[i].name].data();
    auto start = std::chrono::steady_clock::now();
    step.run(in.data(), out.data());
    if (t > 1) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    float loss = 0;
    for (int i = 0; i < Step::kNumOutputs; ++i) {
      std::string name = Step::outputs()[i].name;
      if (name == "loss") loss = outputs[i][0];
      if (name.rfind("new.", 0) == 0) std::swap(tensors[name.substr(4)], outputs[i]), out[i] = outputs[i].data();
    }
    if (t == 1 || t % 50 == 0 || t == steps) std::printf("step %4d  loss %.4f\n", t, loss);
  }
  if (steps > 1) std::printf("%.1f us per step (steps 2..%d)\n", seconds / (steps - 1) * 1e6, steps);
  return 0;
}
