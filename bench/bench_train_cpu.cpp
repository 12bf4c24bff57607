// One CPU training step (forward, backward, AdamW) of the MLP 784-256-10 at
// batch 64: Tessera's compiled step (Trainer) against a hand-written Eigen
// implementation of the same step, in the same run.
//
// The Eigen step is written the way one would by hand: row-major matrices,
// GEMMs through Eigen (OpenMP on both cores, as Halide uses both), the
// softmax-cross-entropy gradient in closed form and AdamW with PyTorch's
// semantics. The counter reports the step's GEMM FLOPs per second.
#include <benchmark/benchmark.h>
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <Eigen/Dense>
#include <cmath>
#include <random>

using namespace tessera;

namespace {

constexpr int B = 64, D = 784, H = 256, C = 10;

std::map<std::string, Buffer> make_batch() {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> x(B * D), y(B);
  for (double& v : x) v = u(rng);
  for (int i = 0; i < B; ++i) y[i] = i % C;
  return {{"x", Buffer::from(x, {B, D})}, {"y", Buffer::from(y, {B}, DType::i32)}};
}

void counters(benchmark::State& state) {
  // Forward 2 GEMMs, backward 3 (no input gradient for the first layer).
  double flops = 2.0 * B * (D * H + H * C) + 2.0 * B * (H * C * 2 + D * H);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_mlp_step_tessera(benchmark::State& state) {
  Graph joint = differentiate(mlp({{D, H, C}, B, "relu"}));
  TrainerOptions options;
  options.optimizer = AdamWOptions{};
  Trainer trainer(joint, options);
  auto batch = make_batch();
  trainer.step(batch);  // compile and warm up
  for (auto _ : state) benchmark::DoNotOptimize(trainer.step(batch));
  counters(state);
}

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXf;

struct AdamW {
  Mat m, v;
  void init(const Mat& p) {
    m = Mat::Zero(p.rows(), p.cols());
    v = Mat::Zero(p.rows(), p.cols());
  }
  // PyTorch's AdamW: decoupled decay, then the bias-corrected Adam step.
  void update(Mat& p, const Mat& g, int t, float lr = 1e-3f, float b1 = 0.9f, float b2 = 0.999f, float eps = 1e-8f,
              float wd = 1e-2f) {
    p *= 1 - lr * wd;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g.cwiseProduct(g);
    const float bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    p.array() -= (lr / bc1) * m.array() / (v.array().sqrt() / std::sqrt(bc2) + eps);
  }
};

void BM_mlp_step_eigen(benchmark::State& state) {
  std::mt19937 rng(1);
  auto uniform = [&](int r, int c, float bound) {
    std::uniform_real_distribution<float> u(-bound, bound);
    Mat m(r, c);
    for (int i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
    return m;
  };
  Mat w1 = uniform(H, D, 1 / std::sqrt(float(D))), b1 = uniform(1, H, 1 / std::sqrt(float(D)));
  Mat w2 = uniform(C, H, 1 / std::sqrt(float(H))), b2 = uniform(1, C, 1 / std::sqrt(float(H)));
  AdamW ow1, ob1, ow2, ob2;
  ow1.init(w1), ob1.init(b1), ow2.init(w2), ob2.init(b2);
  auto batch = make_batch();
  Eigen::Map<const Mat> x(batch["x"].data_as<float>(), B, D);
  const int32_t* y = batch["y"].data_as<int32_t>();
  Mat h(B, H), logits(B, C), dlogits(B, C), dh(B, H), gw1(H, D), gw2(C, H);
  int t = 0;
  float loss = 0;
  for (auto _ : state) {
    ++t;
    // Forward.
    h.noalias() = x * w1.transpose();
    h.rowwise() += b1.row(0);
    h = h.cwiseMax(0.0f);
    logits.noalias() = h * w2.transpose();
    logits.rowwise() += b2.row(0);
    // Softmax cross-entropy and its gradient.
    loss = 0;
    for (int i = 0; i < B; ++i) {
      float mx = logits.row(i).maxCoeff();
      dlogits.row(i) = (logits.row(i).array() - mx).exp();
      float s = dlogits.row(i).sum();
      loss += std::log(s) + mx - logits(i, y[i]);
      dlogits.row(i) /= s;
      dlogits(i, y[i]) -= 1;
    }
    loss /= B;
    dlogits /= float(B);
    // Backward.
    gw2.noalias() = dlogits.transpose() * h;
    Mat gb2 = dlogits.colwise().sum();
    dh.noalias() = dlogits * w2;
    dh = (h.array() > 0).select(dh, 0.0f);
    gw1.noalias() = dh.transpose() * x;
    Mat gb1 = dh.colwise().sum();
    // AdamW.
    ow1.update(w1, gw1, t);
    ob1.update(b1, gb1, t);
    ow2.update(w2, gw2, t);
    ob2.update(b2, gb2, t);
    benchmark::DoNotOptimize(loss);
  }
  counters(state);
}

}  // namespace

BENCHMARK(BM_mlp_step_tessera)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_mlp_step_eigen)->Unit(benchmark::kMicrosecond)->UseRealTime();

BENCHMARK_MAIN();
