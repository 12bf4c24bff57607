// CPU benchmarks for the core: Tessera (Halide JIT) side by side with plain
// C++ loops and Eigen in the same run.
//
//   BM_chain_*   gelu(x * w + b) over a 4096 x 1024 f32 tensor (w, b broadcast
//                per column): Tessera's fused kernel, an unfused loop per op
//                with materialized temporaries, and an Eigen array expression.
//   BM_matmul_*  512 x 512 x 512 f32: Tessera's tiled Halide matmul vs Eigen GEMM.
//   BM_compile_mlp  JIT compile time of the example MLP forward graph.
//
// All variants use both cores (the loops and Eigen through OpenMP), so the
// ratios measure code generation and fusion, not thread counts. Counters
// report GB/s (bytes the op must move at least once) and GFLOP/s.
#include <benchmark/benchmark.h>
#include <omp.h>
#include <tessera/tessera.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>

using namespace tessera;

namespace {

constexpr int kRows = 4096, kCols = 1024;
constexpr int64_t kN = int64_t(kRows) * kCols;

Buffer random_buffer(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Buffer b(DType::f32, shape);
  float* p = b.data_as<float>();
  for (int64_t i = 0; i < b.numel(); ++i) p[i] = u(rng);
  return b;
}

void chain_counters(benchmark::State& state) {
  state.counters["GB/s"] = benchmark::Counter(double(kN) * 8 + kCols * 8, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_chain_tessera(benchmark::State& state) {
  GraphBuilder g("chain");
  Tensor x = g.input("x", {kRows, kCols});
  Tensor w = g.input("w", {kCols});
  Tensor b = g.input("b", {kCols});
  g.output("y", gelu(x * w + b, "tanh"));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> args = {
      {"x", random_buffer({kRows, kCols}, 1)}, {"w", random_buffer({kCols}, 2)}, {"b", random_buffer({kCols}, 3)}};
  std::map<std::string, Buffer> out;
  for (auto _ : state) exe.run(args, out);
  chain_counters(state);
}

void BM_chain_unfused_loops(benchmark::State& state) {
  Buffer x = random_buffer({kRows, kCols}, 1), w = random_buffer({kCols}, 2), b = random_buffer({kCols}, 3);
  const float *xp = x.data_as<float>(), *wp = w.data_as<float>(), *bp = b.data_as<float>();
  // Temporaries allocated once, as an op-by-op runtime with a caching allocator would.
  Buffer t1(DType::f32, {kRows, kCols}), t2(DType::f32, {kRows, kCols}), y(DType::f32, {kRows, kCols});
  float *p1 = t1.data_as<float>(), *p2 = t2.data_as<float>(), *py = y.data_as<float>();
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  for (auto _ : state) {
    // One loop per op, each materializing its result, as an op-by-op runtime does.
#pragma omp parallel for
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) p1[r * kCols + c] = xp[r * kCols + c] * wp[c];
#pragma omp parallel for
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) p2[r * kCols + c] = p1[r * kCols + c] + bp[c];
    // gelu with Eigen's vectorized tanh, so that the loop is not bound by scalar libm.
#pragma omp parallel for
    for (int r = 0; r < kRows; ++r) {
      Eigen::Map<Eigen::ArrayXf> v(p2 + int64_t(r) * kCols, kCols), out(py + int64_t(r) * kCols, kCols);
      out = 0.5f * v * (1.0f + (k * (v + 0.044715f * v * v * v)).tanh());
    }
    benchmark::DoNotOptimize(py);
    benchmark::ClobberMemory();
  }
  chain_counters(state);
}

void BM_chain_eigen(benchmark::State& state) {
  using Arr = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Buffer xb = random_buffer({kRows, kCols}, 1), wb = random_buffer({kCols}, 2), bb = random_buffer({kCols}, 3);
  Eigen::Map<const Arr> x(xb.data_as<float>(), kRows, kCols);
  Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>> w(wb.data_as<float>(), kCols), b(bb.data_as<float>(), kCols);
  const float k = 0.7978845608028654f;
  Arr y(kRows, kCols);
  for (auto _ : state) {
    // Eigen fuses one expression per statement; split rows across the cores.
#pragma omp parallel for
    for (int r = 0; r < kRows; ++r) {
      auto v = x.row(r) * w + b;
      y.row(r) = 0.5f * v * (1.0f + (k * (v + 0.044715f * v * v * v)).tanh());
    }
    benchmark::DoNotOptimize(y.data());
  }
  chain_counters(state);
}

constexpr int kM = 512;

void matmul_counters(benchmark::State& state) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * kM * kM * kM * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_matmul_tessera(benchmark::State& state) {
  GraphBuilder g("matmul");
  g.output("c", matmul(g.input("a", {kM, kM}), g.input("b", {kM, kM})));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> args = {{"a", random_buffer({kM, kM}, 4)}, {"b", random_buffer({kM, kM}, 5)}};
  std::map<std::string, Buffer> out;
  for (auto _ : state) exe.run(args, out);
  matmul_counters(state);
}

void BM_matmul_eigen(benchmark::State& state) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Buffer ab = random_buffer({kM, kM}, 4), bb = random_buffer({kM, kM}, 5);
  Eigen::Map<const Mat> a(ab.data_as<float>(), kM, kM), b(bb.data_as<float>(), kM, kM);
  Mat c(kM, kM);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  matmul_counters(state);
}

Graph mlp_graph(int id) {
  const int B = 64, D = 784, H = 256, C = 10;
  GraphBuilder g("mlp_compile_" + std::to_string(id));  // a new name: no cache hit
  Tensor x = g.input("x", {B, D});
  Tensor y = g.input("y", {B}, DType::i32);
  Tensor h = gelu(linear(x, g.param("fc1.weight", {H, D}), g.param("fc1.bias", {H})));
  Tensor logits = linear(h, g.param("fc2.weight", {C, H}), g.param("fc2.bias", {C}));
  g.output("logits", logits);
  g.output("loss", cross_entropy(logits, y));
  return g.build();
}

void BM_compile_mlp(benchmark::State& state) {
  int id = 0;
  for (auto _ : state) benchmark::DoNotOptimize(compile(mlp_graph(id++)));
}

}  // namespace

BENCHMARK(BM_chain_tessera)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_chain_unfused_loops)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_chain_eigen)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_tessera)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_eigen)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_compile_mlp)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
