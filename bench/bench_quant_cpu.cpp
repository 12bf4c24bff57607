// CPU benchmark of the weight-only quantized GEMV (batch 1): linear_nf4 and
// linear_int8 (Tessera, Halide JIT, the GEMV schedule) against Eigen's f32
// GEMV of the same shape in the same run, at 4096 x 4096 and 4096 x 11008
// (out x in, a Llama-7B projection's shape).
//
// Counters: GB/s counts the bytes each variant must read once (the packed
// weight and its scales, or the f32 weight, plus x and y); "vs_eigen" is
// Eigen's time for the same shape (measured in the same process just before)
// divided by this variant's, so > 1 means faster than f32 Eigen. Eigen's GEMV
// runs on both cores too (OpenMP, rows split in two), as Tessera's does.
// BM_linear_nf4_rows64, BM_gemm_eigen_f32_rows64 and BM_grad_input_nf4_row1
// show the other schedules (batched forward, gradient) for reference.
// This measures nothing about accuracy (tests/test_quantize.cpp does that).
#include <benchmark/benchmark.h>
#include <omp.h>
#include <tessera/quant_ops.h>
#include <tessera/quantize.h>
#include <tessera/tessera.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <map>
#include <random>

using namespace tessera;

namespace {

Buffer random_buffer(Shape shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Buffer b(DType::f32, shape);
  float* p = b.data_as<float>();
  for (int64_t i = 0; i < b.numel(); ++i) p[i] = u(rng);
  return b;
}

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// y = W x with W [N, K] row-major, rows split across the OpenMP threads.
void eigen_gemv(const float* w, const float* x, float* y, int64_t N, int64_t K) {
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const int64_t lo = N * t / T, hi = N * (t + 1) / T;
    Eigen::Map<const Mat> W(w + lo * K, hi - lo, K);
    Eigen::Map<const Eigen::VectorXf> X(x, K);
    Eigen::Map<Eigen::VectorXf> Y(y + lo, hi - lo);
    Y.noalias() = W * X;
  }
}

// Eigen's mean seconds per GEMV of this shape (cached per shape).
double eigen_seconds(int64_t N, int64_t K) {
  static std::map<std::pair<int64_t, int64_t>, double> cache;
  auto it = cache.find({N, K});
  if (it != cache.end()) return it->second;
  Buffer w = random_buffer({N, K}, 1), x = random_buffer({K}, 2), y(DType::f32, {N});
  for (int i = 0; i < 3; ++i) eigen_gemv(w.data_as<float>(), x.data_as<float>(), y.data_as<float>(), N, K);
  const int reps = 30;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) eigen_gemv(w.data_as<float>(), x.data_as<float>(), y.data_as<float>(), N, K);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  return cache[{N, K}] = s;
}

void counters(benchmark::State& state, double bytes, int64_t N, int64_t K) {
  state.counters["GB/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["vs_eigen"] = benchmark::Counter(eigen_seconds(N, K) * double(state.iterations()),
                                                  benchmark::Counter::kIsRate);
}

void BM_gemv_eigen_f32(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1);
  Buffer w = random_buffer({N, K}, 1), x = random_buffer({K}, 2), y(DType::f32, {N});
  for (auto _ : state) {
    eigen_gemv(w.data_as<float>(), x.data_as<float>(), y.data_as<float>(), N, K);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(double(N * K + N + K) * 4, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemv_nf4(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1);
  const bool nested = state.range(2) != 0;
  const NF4Weight q = quantize_nf4(random_buffer({N, K}, 1), nested);
  GraphBuilder g("gemv_nf4");
  NF4Tensors t;
  t.out_features = N;
  t.in_features = K;
  t.weight = g.param("fc.weight", q.weight.shape(), DType::u8);
  t.absmax = g.param("fc.weight.absmax", q.absmax.shape(), q.absmax.dtype());
  std::map<std::string, Buffer> args = {{"x", random_buffer({1, K}, 2)}, {"fc.weight", q.weight},
                                        {"fc.weight.absmax", q.absmax}};
  if (nested) {
    t.nested_absmax = g.param("fc.weight.nested_absmax", q.nested_absmax.shape());
    t.nested_quant_map = g.param("fc.weight.nested_quant_map", {256});
    t.nested_offset = g.param("fc.weight.nested_offset", {});
    args["fc.weight.nested_absmax"] = q.nested_absmax;
    args["fc.weight.nested_quant_map"] = q.nested_quant_map;
    args["fc.weight.nested_offset"] = q.nested_offset;
  }
  g.output("y", linear_nf4(g.input("x", {1, K}), t));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> out;
  exe.run(args, out);
  for (auto _ : state) exe.run(args, out);
  double bytes = double(q.weight.bytes() + q.absmax.bytes()) + double(N + K) * 4;
  if (nested) bytes += double(q.nested_absmax.bytes() + 256 * 4 + 4);
  counters(state, bytes, N, K);
}

void BM_gemv_int8(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1);
  const Int8Weight q = quantize_int8(random_buffer({N, K}, 1));
  GraphBuilder g("gemv_int8");
  Tensor w = g.param("fc.weight", {N, K}, DType::i8), s = g.param("fc.weight.scale", {N});
  g.output("y", linear_int8(g.input("x", {1, K}), w, s));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> args = {{"x", random_buffer({1, K}, 2)}, {"fc.weight", q.weight},
                                        {"fc.weight.scale", q.scale}};
  std::map<std::string, Buffer> out;
  exe.run(args, out);
  for (auto _ : state) exe.run(args, out);
  counters(state, double(q.weight.bytes() + q.scale.bytes()) + double(N + K) * 4, N, K);
}

// For reference, not GEMV: linear_nf4 at 64 rows (the tiled schedule that
// dequantizes into each tile) against Eigen's f32 GEMM (64 x K) x (K x N),
// and dx = g @ W at one row (linear_nf4_grad_input, the streaming schedule).
void BM_linear_nf4_rows64(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), M = 64;
  const NF4Weight q = quantize_nf4(random_buffer({N, K}, 1));
  GraphBuilder g("linear_nf4_rows64");
  NF4Tensors t{g.param("fc.weight", q.weight.shape(), DType::u8), g.param("fc.weight.absmax", q.absmax.shape()),
               {}, {}, {}, N, K};
  g.output("y", linear_nf4(g.input("x", {M, K}), t));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> args = {{"x", random_buffer({M, K}, 2)}, {"fc.weight", q.weight},
                                        {"fc.weight.absmax", q.absmax}};
  std::map<std::string, Buffer> out;
  exe.run(args, out);
  for (auto _ : state) exe.run(args, out);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_gemm_eigen_f32_rows64(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1), M = 64;
  Buffer w = random_buffer({N, K}, 1), x = random_buffer({M, K}, 2);
  Eigen::Map<const Mat> W(w.data_as<float>(), N, K), X(x.data_as<float>(), M, K);
  Mat y(M, N);
  for (auto _ : state) {
    y.noalias() = X * W.transpose();
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_grad_input_nf4_row1(benchmark::State& state) {
  const int64_t N = state.range(0), K = state.range(1);
  const NF4Weight q = quantize_nf4(random_buffer({N, K}, 1));
  GraphBuilder g("grad_input_nf4");
  NF4Tensors t{g.param("fc.weight", q.weight.shape(), DType::u8), g.param("fc.weight.absmax", q.absmax.shape()),
               {}, {}, {}, N, K};
  g.output("dx", linear_nf4_grad_input(g.input("g", {1, N}), t));
  Executable exe = compile(g.build());
  std::map<std::string, Buffer> args = {{"g", random_buffer({1, N}, 2)}, {"fc.weight", q.weight},
                                        {"fc.weight.absmax", q.absmax}};
  std::map<std::string, Buffer> out;
  exe.run(args, out);
  for (auto _ : state) exe.run(args, out);
  counters(state, double(q.weight.bytes() + q.absmax.bytes()) + double(N + K) * 4, N, K);
}

}  // namespace

BENCHMARK(BM_linear_nf4_rows64)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemm_eigen_f32_rows64)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_grad_input_nf4_row1)->Args({4096, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemv_eigen_f32)->Args({4096, 4096})->Args({4096, 11008})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemv_nf4)
    ->ArgNames({"N", "K", "double_quant"})
    ->Args({4096, 4096, 0})
    ->Args({4096, 11008, 0})
    ->Args({4096, 4096, 1})
    ->Args({4096, 11008, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_gemv_int8)->Args({4096, 4096})->Args({4096, 11008})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
