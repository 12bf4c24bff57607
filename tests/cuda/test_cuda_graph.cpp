// StepGraphs on a real device: a step of GEMMs with epilogues, a memset, an
// accumulating GEMM and a copy, run directly and as a captured CUDA Graph,
// must give bitwise equal results (outputs poisoned before every run), also
// after the inputs change between replays; warm-up, capture and replay are
// reported; a new key captures a new graph; disabling runs directly; work
// that throws during capture leaves the stream usable. Label gpu; skips
// without a CUDA device.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/gemm.h"
#include "tessera/cuda/step_graphs.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::random_values;
using testing::to_bytes;
using testing::upload;

// A small MLP-like step in bf16 over one arena: h = gelu(x W1^T + b1),
// y = relu(h W2^T + b2), acc = 0; acc += h W3 (beta 1), y_copy = y.
struct MlpStep {
  static constexpr int64_t in = 96, hidden = 160, out = 48;
  static constexpr DType dt = DType::bf16;
  int64_t rows;
  DeviceArena arena;
  void *x, *w1, *b1, *w2, *b2, *w3, *h, *y, *acc, *y_copy;

  static size_t bytes(int64_t n) { return static_cast<size_t>(n) * 2; }
  explicit MlpStep(int64_t rows_) : rows(rows_), arena(size_t{4} << 20, "graph test") {
    auto take = [&](int64_t n, const char* what) { return arena.at(arena.reserve(bytes(n), what), bytes(n)); };
    x = take(rows * in, "x"), w1 = take(hidden * in, "w1"), b1 = take(hidden, "b1");
    w2 = take(out * hidden, "w2"), b2 = take(out, "b2"), w3 = take(hidden * out, "w3");
    h = take(rows * hidden, "h"), y = take(rows * out, "y"), acc = take(rows * out, "acc");
    y_copy = take(rows * out, "y_copy");
    std::mt19937 rng(1234 + static_cast<unsigned>(rows));
    for (auto [p, n] :
         {std::pair{x, rows * in}, {w1, hidden * in}, {b1, hidden}, {w2, out * hidden}, {b2, out}, {w3, hidden * out}})
      upload(p, to_bytes(random_values(static_cast<size_t>(n), dt, rng), dt));
  }
  void new_input(unsigned seed) {
    std::mt19937 rng(seed);
    upload(x, to_bytes(random_values(static_cast<size_t>(rows * in), dt, rng), dt));
  }
  void enqueue(CublasLtGemm& gemm, cudaStream_t s) {
    gemm.run(GemmShape::linear(dt, rows, in, hidden, GemmEpilogue::gelu_bias), {x, w1, h, b1});
    gemm.run(GemmShape::linear(dt, rows, hidden, out, GemmEpilogue::relu_bias), {h, w2, y, b2});
    TESSERA_CUDA_CHECK(cudaMemsetAsync(acc, 0, bytes(rows * out), s), "graph test step");
    gemm.run(GemmShape::matmul(dt, 1, rows, hidden, out), {h, w3, acc, nullptr, nullptr, 1.0f, 1.0f});
    TESSERA_CUDA_CHECK(cudaMemcpyAsync(y_copy, y, bytes(rows * out), cudaMemcpyDeviceToDevice, s), "graph test step");
  }
  void poison_outputs() {
    for (auto [p, n] : {std::pair{h, rows * hidden}, {y, rows * out}, {acc, rows * out}, {y_copy, rows * out}})
      testing::fill_bytes(p, 0xFF, bytes(n));
  }
  std::vector<uint8_t> outputs() {
    std::vector<uint8_t> all;
    for (auto [p, n] : {std::pair{h, rows * hidden}, {y, rows * out}, {acc, rows * out}, {y_copy, rows * out}}) {
      const auto part = download(p, bytes(n));
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  }
};

class CudaGraph : public ::testing::Test {
 protected:
  void SetUp() override {
    TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
    stream_ = std::make_unique<DeviceStream>(0);
    gemm_ = std::make_unique<CublasLtGemm>(*stream_);
  }
  // Runs `step` once through `graphs` under `key` with its outputs poisoned first; returns the outputs.
  std::vector<uint8_t> run(StepGraphs& graphs, const std::string& key, MlpStep& step, StepGraphs::Ran expected) {
    step.poison_outputs();
    const StepGraphs::Ran ran = graphs.run(key, [&](cudaStream_t s) { step.enqueue(*gemm_, s); });
    EXPECT_EQ(static_cast<int>(ran), static_cast<int>(expected)) << "key " << key;
    EXPECT_EQ(graphs.last_ran_as_graph(), expected != StepGraphs::Ran::direct);
    stream_->synchronize("graph test");
    return step.outputs();
  }
  // The step's outputs from plain stream launches, no graph.
  std::vector<uint8_t> direct(MlpStep& step) {
    step.poison_outputs();
    step.enqueue(*gemm_, stream_->stream());
    stream_->synchronize("graph test direct");
    return step.outputs();
  }
  std::unique_ptr<DeviceStream> stream_;
  std::unique_ptr<CublasLtGemm> gemm_;
};

size_t poisoned_elements(const std::vector<uint8_t>& v) {
  size_t n = 0;
  for (size_t i = 0; i + 1 < v.size(); i += 2) n += v[i] == 0xFF && v[i + 1] == 0xFF;
  return n;
}

TEST_F(CudaGraph, ReplayIsBitwiseEqualToDirectLaunches) {
  using Ran = StepGraphs::Ran;
  MlpStep step(64);
  const std::vector<uint8_t> reference = direct(step);
  ASSERT_EQ(poisoned_elements(reference), 0u) << "the direct step left outputs unwritten";

  StepGraphs graphs(*stream_, /*warmup_runs=*/2);
  EXPECT_EQ(run(graphs, "mlp64", step, Ran::direct), reference);
  EXPECT_EQ(run(graphs, "mlp64", step, Ran::direct), reference);
  EXPECT_EQ(graphs.graph_count(), 0u);
  EXPECT_EQ(run(graphs, "mlp64", step, Ran::captured_and_replayed), reference);
  EXPECT_EQ(graphs.graph_count(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(run(graphs, "mlp64", step, Ran::replayed), reference);

  // Replays read the buffers' current contents: new input, new (equal) results.
  step.new_input(99);
  const std::vector<uint8_t> reference2 = direct(step);
  ASSERT_NE(reference2, reference);
  EXPECT_EQ(run(graphs, "mlp64", step, Ran::replayed), reference2);
}

TEST_F(CudaGraph, ANewKeyCapturesANewGraphAndTheSwitchTurnsCaptureOff) {
  using Ran = StepGraphs::Ran;
  MlpStep small(64), odd(33);
  const std::vector<uint8_t> ref_small = direct(small), ref_odd = direct(odd);
  StepGraphs graphs(*stream_, /*warmup_runs=*/1);
  run(graphs, "rows64", small, Ran::direct);
  EXPECT_EQ(run(graphs, "rows64", small, Ran::captured_and_replayed), ref_small);
  EXPECT_EQ(run(graphs, "rows33", odd, Ran::direct), ref_odd);
  EXPECT_EQ(run(graphs, "rows33", odd, Ran::captured_and_replayed), ref_odd);
  EXPECT_EQ(graphs.graph_count(), 2u);
  EXPECT_EQ(run(graphs, "rows64", small, Ran::replayed), ref_small);

  graphs.set_enabled(false);
  EXPECT_FALSE(graphs.enabled());
  EXPECT_EQ(run(graphs, "rows64", small, Ran::direct), ref_small);
  EXPECT_EQ(run(graphs, "rows17", small, Ran::direct), ref_small);
  EXPECT_EQ(graphs.graph_count(), 2u);
  graphs.set_enabled(true);
  EXPECT_EQ(run(graphs, "rows33", odd, Ran::replayed), ref_odd);
}

TEST_F(CudaGraph, WorkThatThrowsDuringCaptureLeavesTheStreamUsable) {
  MlpStep step(64);
  const std::vector<uint8_t> reference = direct(step);
  StepGraphs graphs(*stream_, /*warmup_runs=*/0);
  bool threw = false;
  try {
    graphs.run("bad", [&](cudaStream_t s) {
      step.enqueue(*gemm_, s);
      gemm_->run(GemmShape::matmul(DType::i32, 1, 4, 4, 4), {step.x, step.w1, step.h});  // not a GEMM dtype
    });
  } catch (const Error& e) {
    threw = true;
    EXPECT_NE(std::string(e.what()).find("dtype must be f32, f16 or bf16"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(threw);
  EXPECT_EQ(graphs.graph_count(), 0u);
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusActive;
  TESSERA_CUDA_CHECK(cudaStreamIsCapturing(stream_->stream(), &capturing), "graph test");
  EXPECT_EQ(capturing, cudaStreamCaptureStatusNone);
  EXPECT_EQ(direct(step), reference);
  EXPECT_EQ(run(graphs, "good", step, StepGraphs::Ran::captured_and_replayed), reference);
}

}  // namespace
}  // namespace tessera::cuda
