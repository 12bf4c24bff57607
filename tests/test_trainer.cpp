// Tests of the Trainer (trainer.h): deterministic init and losses, init
// rules and statistics, one step against a hand computation, lr changes,
// gradient accumulation against a full batch, evaluate, errors, and an MLP
// differentiated by autodiff that learns a separable task to 100% training
// accuracy.
//
// Most tests use a hand-built joint graph (linear regression with its
// gradient written out), so they do not depend on autodiff; the last one does.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <random>

#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/ops.h"
#include "tessera/trainer.h"

namespace tessera {
namespace {

constexpr int64_t kIn = 3, kOut = 2;

// loss = mean((x w^T + b - y)^2) with w [out, in] used through `linear`, and
// its gradients written by hand.
Graph regression_joint(int64_t n) {
  GraphBuilder b("regression");
  Tensor x = b.input("x", {n, kIn});
  Tensor y = b.input("y", {n, kOut});
  Tensor w = b.param("fc.weight", {kOut, kIn});
  Tensor bias = b.param("fc.bias", {kOut});
  Tensor r = linear(x, w, bias) - y;
  b.output("loss", mean(r * r));
  Tensor s = r * (2.0 / static_cast<double>(n * kOut));
  b.output("grad.fc.weight", matmul(transpose(s, 0, 1), x));
  b.output("grad.fc.bias", sum(s, {0}));
  return b.build();
}

// y = x A + c plus nothing: a realizable regression target.
std::map<std::string, Buffer> regression_batch(int64_t n, uint32_t seed, int64_t first_row = 0) {
  std::mt19937 rng(seed);
  std::vector<double> x, y;
  for (int64_t i = 0; i < first_row + n; ++i) {
    double a = std::uniform_real_distribution<double>(-1, 1)(rng);
    double b = std::uniform_real_distribution<double>(-1, 1)(rng);
    double c = std::uniform_real_distribution<double>(-1, 1)(rng);
    if (i < first_row) continue;
    x.insert(x.end(), {a, b, c});
    y.insert(y.end(), {0.5 * a - b + 0.25, 2 * c - 0.5});
  }
  return {{"x", Buffer::from(x, {n, kIn})}, {"y", Buffer::from(y, {n, kOut})}};
}

TEST(Trainer, SameSeedSameLossesBitwise) {
  const Graph joint = regression_joint(8);
  TrainerOptions o;
  o.seed = 42;
  o.optimizer = AdamWOptions{0.05};
  Trainer a(joint, o), b(joint, o);
  auto batch = regression_batch(8, 1);
  for (int i = 0; i < 5; ++i) {
    const double la = a.step(batch), lb = b.step(batch);
    EXPECT_EQ(la, lb) << "step " << i;
  }
  for (const auto& [name, buf] : a.params()) EXPECT_EQ(buf.to_f64(), b.params().at(name).to_f64()) << name;
  for (const auto& [name, buf] : a.state()) EXPECT_EQ(buf.to_f64(), b.state().at(name).to_f64()) << name;
  EXPECT_EQ(a.steps_done(), 5);

  o.seed = 43;
  Trainer c(joint, o);
  EXPECT_NE(c.params().at("fc.weight").to_f64(), Trainer(joint, TrainerOptions{}).params().at("fc.weight").to_f64());
}

TEST(Trainer, LossDecreasesAndEvaluateDoesNotUpdate) {
  TrainerOptions o;
  o.optimizer = SGDOptions{0.1, 0.9};
  Trainer t(regression_joint(8), o);
  auto batch = regression_batch(8, 2);
  const std::vector<double> w0 = t.params().at("fc.weight").to_f64();
  const double before = t.evaluate(batch).at("loss").get(0);
  EXPECT_EQ(t.params().at("fc.weight").to_f64(), w0);
  const double first = t.step(batch);
  EXPECT_FLOAT_EQ(before, first);  // step returns the loss before its update
  double last = first;
  for (int i = 0; i < 60; ++i) last = t.step(batch);
  EXPECT_LT(last, 1e-3 * first);
  EXPECT_TRUE(t.state().count("fc.weight.momentum_buffer"));
}

TEST(Trainer, OneSgdStepByHandAndLrChanges) {
  TrainerOptions o;
  o.optimizer = SGDOptions{0.25};
  o.seed = 5;
  const Graph joint = regression_joint(4);
  Trainer t(joint, o);
  auto batch = regression_batch(4, 3);
  // The gradient at the initial params, from the reference interpreter.
  std::map<std::string, Buffer> args = batch;
  for (const auto& [name, b] : t.params()) args[name] = b.clone();
  auto ref = ref::evaluate(joint, ref::from_buffers(args));
  const std::vector<double> w0 = args.at("fc.weight").to_f64();
  t.step(batch);
  const std::vector<double> w1 = t.params().at("fc.weight").to_f64();
  for (size_t i = 0; i < w0.size(); ++i)
    EXPECT_NEAR(w1[i], w0[i] - 0.25 * ref.at("grad.fc.weight").data[i], 1e-6) << i;

  t.set_lr(0);
  t.step(batch);
  EXPECT_EQ(t.params().at("fc.weight").to_f64(), w1);
  EXPECT_EQ(t.lr(), 0);
  EXPECT_THROW(t.set_lr(-1), Error);
}

TEST(Trainer, AccumulationMatchesFullBatch) {
  TrainerOptions full_o;
  full_o.optimizer = SGDOptions{0.1, 0.9, 0, 0.01};
  full_o.seed = 9;
  TrainerOptions acc_o = full_o;
  acc_o.accumulation_steps = 2;
  Trainer full(regression_joint(8), full_o);
  Trainer acc(regression_joint(4), acc_o);
  EXPECT_EQ(full.params().at("fc.weight").to_f64(), acc.params().at("fc.weight").to_f64());
  auto batch = regression_batch(8, 4);
  std::vector<std::map<std::string, Buffer>> micro = {regression_batch(4, 4, 0), regression_batch(4, 4, 4)};
  for (int i = 0; i < 4; ++i) {
    const double lf = full.step(batch), la = acc.step(micro);
    EXPECT_NEAR(lf, la, 1e-6 * (1 + lf)) << "step " << i;
  }
  for (const auto& [name, buf] : full.params()) {
    auto a = acc.params().at(name).to_f64(), f = buf.to_f64();
    for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], a[i], 1e-6) << name << " " << i;
  }
  EXPECT_THROW(acc.step(micro[0]), Error);  // one micro-batch for accumulation_steps = 2
}

TEST(Trainer, InitRulesAndStatistics) {
  GraphBuilder b("inits");
  Tensor tok = b.input("tok", {16}, DType::i32);
  Tensor emb = b.param("emb.weight", {1000, 64});
  Tensor lnw = b.param("ln.weight", {64});
  Tensor lnb = b.param("ln.bias", {64});
  Tensor fcw = b.param("fc.weight", {256, 64});
  Tensor fcb = b.param("fc.bias", {256});
  Tensor proj = b.param("proj", {256, 100});  // read by matmul: rule 3, fan_in = 100
  Tensor extra = b.param("extra.bias", {4});
  Tensor custom = b.param("custom", {10});
  Tensor h = linear(layer_norm(embedding(tok, emb), lnw, lnb), fcw, fcb);
  Tensor out = matmul(h, proj);
  b.output("loss", mean(out) + sum(extra) + sum(custom));
  b.output("grad.extra.bias", extra);
  TrainerOptions o;
  o.optimizer = SGDOptions{};
  o.init["custom"] = Init::constant(3);
  Trainer t(b.build(), o);

  auto stats = [](const std::vector<double>& v) {
    double s = 0, s2 = 0, mx = 0;
    for (double x : v) s += x, s2 += x * x, mx = std::max(mx, std::fabs(x));
    const double mean = s / v.size();
    return std::array<double, 3>{mean, std::sqrt(s2 / v.size() - mean * mean), mx};
  };
  auto e = stats(t.params().at("emb.weight").to_f64());
  EXPECT_NEAR(e[0], 0, 0.001);
  EXPECT_NEAR(e[1], 0.02, 0.0005);
  const double bound = 1 / 8.0;  // 1/sqrt(64)
  auto w = stats(t.params().at("fc.weight").to_f64());
  EXPECT_LE(w[2], bound);
  EXPECT_GT(w[2], 0.99 * bound);
  EXPECT_NEAR(w[0], 0, 0.005);
  EXPECT_NEAR(w[1], bound / std::sqrt(3.0), 0.003);  // the std of U(-b, b)
  auto fb = stats(t.params().at("fc.bias").to_f64());
  EXPECT_LE(fb[2], bound);
  EXPECT_GT(fb[2], 0.9 * bound);
  auto p = stats(t.params().at("proj").to_f64());
  EXPECT_LE(p[2], 0.1);
  EXPECT_GT(p[2], 0.099);
  EXPECT_EQ(t.params().at("ln.weight").to_f64(), std::vector<double>(64, 1.0));
  EXPECT_EQ(t.params().at("ln.bias").to_f64(), std::vector<double>(64, 0.0));
  EXPECT_EQ(t.params().at("extra.bias").to_f64(), std::vector<double>(4, 0.0));
  EXPECT_EQ(t.params().at("custom").to_f64(), std::vector<double>(10, 3.0));
  // Only extra.bias has a gradient: the others are not updated.
  t.step({{"tok", Buffer::from(std::vector<double>(16, 7), {16}, DType::i32)}});
  EXPECT_EQ(t.params().at("custom").to_f64(), std::vector<double>(10, 3.0));
  EXPECT_EQ(t.state().size(), 0u);
}

TEST(Trainer, Errors) {
  const Graph joint = regression_joint(4);
  TrainerOptions o;
  o.loss = "nope";
  EXPECT_THROW(Trainer(joint, o), Error);
  o = {};
  o.init["missing"] = Init::zeros();
  EXPECT_THROW(Trainer(joint, o), Error);
  o = {};
  o.accumulation_steps = 0;
  EXPECT_THROW(Trainer(joint, o), Error);
  Trainer t(joint);
  try {
    t.step({{"x", Buffer(DType::f32, {4, kIn})}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the batch has no input 'y'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.param("nope"), Error);
}

// An MLP differentiated by autodiff learns two separable classes to 100%.
TEST(Trainer, MlpLearnsSeparableTask) {
  constexpr int64_t n = 64, d = 4, hidden = 16;
  GraphBuilder b("mlp");
  Tensor x = b.input("x", {n, d});
  Tensor y = b.input("y", {n}, DType::i32);
  Tensor h = relu(linear(x, b.param("fc1.weight", {hidden, d}), b.param("fc1.bias", {hidden})));
  Tensor logits = linear(h, b.param("fc2.weight", {2, hidden}), b.param("fc2.bias", {2}));
  b.output("logits", logits);
  b.output("loss", cross_entropy(logits, y));
  const Graph joint = differentiate(b.build());

  std::mt19937 rng(11);
  std::vector<double> xs, ys;
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    const double u[d] = {1.0, -2.0, 0.5, 1.5};
    for (int64_t k = 0; k < d; ++k) {
      xs.push_back(std::uniform_real_distribution<double>(-1, 1)(rng));
      s += u[k] * xs.back();
    }
    ys.push_back(s > 0 ? 1 : 0);
  }
  std::map<std::string, Buffer> batch{{"x", Buffer::from(xs, {n, d})}, {"y", Buffer::from(ys, {n}, DType::i32)}};
  TrainerOptions o;
  o.optimizer = AdamWOptions{0.05};
  o.seed = 3;
  Trainer t(joint, o);
  double first = 0, last = 0;
  for (int i = 0; i < 150; ++i) {
    last = t.step(batch);
    if (i == 0) first = last;
  }
  EXPECT_LT(last, 0.2 * first);
  auto out = t.evaluate(batch);
  const Buffer& lg = out.at("logits");
  int correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += (lg.get(2 * i + 1) > lg.get(2 * i)) == (ys[i] == 1);
  EXPECT_EQ(correct, n);
}

}  // namespace
}  // namespace tessera
