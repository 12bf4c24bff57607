// Tests of the LoRA transform and its merge (include/tessera/lora.h): the
// printed adapted graph (hand-written), adapter-only gradients and a float64
// gradient check of the adapters against central differences, equality with
// the base model at initialization, merge equivalence after training with the
// Trainer (compiled and against the float64 reference interpreter), gradient
// accumulation updating only the adapters, target
// pattern matching on the GPT model, a GPT with adapted attention projections
// whose loss falls, the eval graph without dropout, remove_lora after other
// passes, a weight shared by two linears, a stand-in quantized base merged
// through a dequantizer, and errors. Random values come from fixed
// seeds or from TESSERA_TEST_SEED / std::random_device (named on failure).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <set>

#include "gradcheck.h"
#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/lora.h"
#include "tessera/models.h"
#include "tessera/ops.h"
#include "tessera/text.h"
#include "tessera/trainer.h"
#include "test_util.h"

namespace tessera {
namespace {

using test_util::error_of;
using test_util::has_output;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// x [lead..., 7] -> fc1 (6, with bias) -> gelu -> fc2 (3, no bias) = y;
// loss = mean((y - target)^2).
Graph block(DType t = DType::f32, Shape lead = {5}) {
  GraphBuilder b("block");
  Shape xs = lead, ts = lead;
  xs.push_back(7);
  ts.push_back(3);
  Tensor x = b.input("x", xs, t);
  Tensor target = b.input("target", ts, t);
  Tensor w1 = b.param("fc1.weight", {6, 7}, t);
  Tensor b1 = b.param("fc1.bias", {6}, t);
  Tensor h = gelu(linear(x, w1, b1));
  Tensor y = linear(h, b.param("fc2.weight", {3, 6}, t));
  b.output("y", y);
  Tensor d = y - target;
  b.output("loss", mean(d * d));
  return b.build();
}

LoraOptions block_options() {
  LoraOptions o;
  o.r = 2;
  o.alpha = 3;
  o.dropout = 0.25;
  o.target_modules = {"fc1", "fc2"};
  o.dropout_seed = 7;
  return o;
}

std::map<std::string, Buffer> random_buffers(const Graph& g, uint32_t seed, double lo = -1, double hi = 1) {
  std::mt19937 rng(seed);
  std::map<std::string, Buffer> out;
  for (const Node& n : g.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(static_cast<size_t>(n.type.numel()));
    for (double& e : v) e = std::uniform_real_distribution<double>(lo, hi)(rng);
    out[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
  }
  return out;
}

std::map<std::string, Buffer> subset(const std::map<std::string, Buffer>& all, const Graph& g) {
  std::map<std::string, Buffer> out;
  for (const Node& n : g.nodes)
    if ((n.op == "input" || n.op == "param") && all.count(n.name)) out[n.name] = all.at(n.name);
  return out;
}

int count_op(const Graph& g, const std::string& op) {
  int c = 0;
  for (const Node& n : g.nodes) c += n.op == op;
  return c;
}

void expect_near_all(const std::vector<double>& want, const std::vector<double>& got, double tol,
                     const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(std::fabs(want[i] - got[i]) <= tol * (1 + std::fabs(want[i]))) && bad++ < 4)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", expected " << want[i];
}

// ---- the transform's result ------------------------------------------------------

TEST(Lora, PrintedAdaptedBlock) {
  const Graph adapted = add_lora(block(), block_options());
  // Adapter params follow their module's weight; each adapter follows its
  // base node and the base's readers read the sum. Dropout offsets: fc1's
  // input has 5 * 7 = 35 elements, so fc2's adapter dropout starts at 35.
  const std::string want =
      "graph block {\n"
      "  x = input()  # f32[5, 7]\n"
      "  target = input()  # f32[5, 3]\n"
      "  fc1.weight = param()  # f32[6, 7]\n"
      "  fc1.lora_A.weight = param()  # f32[2, 7]\n"
      "  fc1.lora_B.weight = param()  # f32[6, 2]\n"
      "  fc1.bias = param()  # f32[6]\n"
      "  t0 = linear(x, fc1.weight, fc1.bias)  # f32[5, 6]\n"
      "  t6 = dropout(x, offset=0, p=0.25, seed=7)  # f32[5, 7]\n"
      "  t7 = linear(t6, fc1.lora_A.weight)  # f32[5, 2]\n"
      "  t8 = linear(t7, fc1.lora_B.weight)  # f32[5, 6]\n"
      "  t9 = constant(value=1.5)  # f32[]\n"
      "  t10 = mul(t8, t9)  # f32[5, 6]\n"
      "  t11 = add(t0, t10)  # f32[5, 6]\n"
      "  t1 = gelu(t11, approximate=\"none\")  # f32[5, 6]\n"
      "  fc2.weight = param()  # f32[3, 6]\n"
      "  fc2.lora_A.weight = param()  # f32[2, 6]\n"
      "  fc2.lora_B.weight = param()  # f32[3, 2]\n"
      "  t2 = linear(t1, fc2.weight)  # f32[5, 3]\n"
      "  t12 = dropout(t1, offset=35, p=0.25, seed=7)  # f32[5, 6]\n"
      "  t13 = linear(t12, fc2.lora_A.weight)  # f32[5, 2]\n"
      "  t14 = linear(t13, fc2.lora_B.weight)  # f32[5, 3]\n"
      "  t15 = constant(value=1.5)  # f32[]\n"
      "  t16 = mul(t14, t15)  # f32[5, 3]\n"
      "  t17 = add(t2, t16)  # f32[5, 3]\n"
      "  t3 = sub(t17, target)  # f32[5, 3]\n"
      "  t4 = mul(t3, t3)  # f32[5, 3]\n"
      "  t5 = mean(t4, axes=[], keepdim=false)  # f32[]\n"
      "  output y = t17\n"
      "  output loss = t5\n"
      "}\n";
  EXPECT_EQ(print(adapted), want);
  EXPECT_EQ(print(parse(print(adapted))), want);
  EXPECT_EQ(lora_modules(adapted), (std::vector<std::string>{"fc1", "fc2"}));
  EXPECT_EQ(lora_param_names(adapted),
            (std::vector<std::string>{"fc1.lora_A.weight", "fc1.lora_B.weight", "fc2.lora_A.weight",
                                      "fc2.lora_B.weight"}));
  // The pass form does the same, and removing the adapters gives the block back.
  EXPECT_EQ(print(PassManager{lora(block_options())}.run(block())), want);
  EXPECT_EQ(print(remove_lora(adapted)), print(block()));
}

TEST(Lora, NoDropoutNodeInTheEvalGraphOrWithZeroDropout) {
  LoraOptions o = block_options();
  EXPECT_EQ(count_op(add_lora(block(), o), "dropout"), 2);
  o.training = false;
  const Graph eval = add_lora(block(), o);
  EXPECT_EQ(count_op(eval, "dropout"), 0);
  EXPECT_EQ(lora_param_names(eval), lora_param_names(add_lora(block(), block_options())));
  o.training = true;
  o.dropout = 0;
  EXPECT_EQ(count_op(add_lora(block(), o), "dropout"), 0);
  EXPECT_EQ(print(remove_lora(eval)), print(block()));
}

// remove_lora finds the adapters after simplify dropped a scale of 1
// (alpha == r) and cse ran, and keeps a model's own dropout that feeds both
// the base and an adapter without dropout.
TEST(Lora, RemoveAfterPassesAndBesideAModelDropout) {
  LoraOptions o = block_options();
  o.alpha = 2;  // = r: scale 1
  const Graph adapted = PassManager{lora(o), simplify(), cse(), dce()}.run(block());
  EXPECT_EQ(count_op(adapted, "mul"), 1);  // only the loss's square is left
  EXPECT_EQ(lora_modules(adapted).size(), 2u);
  EXPECT_EQ(print(remove_lora(adapted)), print(block()));

  GraphBuilder b("dropped");
  Tensor x = b.input("x", {4, 5});
  Tensor w = b.param("fc.weight", {3, 5});
  b.output("y", linear(dropout(x, 0.5, 3), w));
  const Graph plain = b.build();
  o.training = false;
  o.target_modules = {"fc"};
  const Graph eval = add_lora(plain, o);
  EXPECT_EQ(count_op(eval, "dropout"), 1);
  EXPECT_EQ(print(remove_lora(eval)), print(plain));
}

// Adapted outputs on fresh random values at an awkward rank-3 input, compiled
// and by the reference interpreter, against the formula evaluated here by
// hand in f64: y = base + (alpha / r) * (dropout(x) A^T) B^T. The dropout mask
// is read off the reference's dropout node (an independent implementation).
TEST(Lora, MatchesTheFormulaOnRandomValues) {
  SEEDED(seed);
  LoraOptions o = block_options();
  o.target_modules = {"fc1"};
  o.alpha = 5;
  o.r = 3;
  const Graph plain = block(DType::f32, {2, 3});
  const Graph adapted = add_lora(plain, o);
  auto args = random_buffers(adapted, seed);
  auto ref_all = ref::evaluate_all(adapted, ref::from_buffers(args));
  auto got = compile(adapted).run(args);
  auto want_ref = ref::evaluate(adapted, ref::from_buffers(args));
  expect_near_all(want_ref.at("y").data, got.at("y").to_f64(), 1e-5, "y vs reference");

  // fc1's adapted output [2, 3, 6] by hand.
  const Node& drop = adapted.nodes[adapted.find("t6")];
  ASSERT_EQ(drop.op, "dropout");
  const std::vector<double>& dx = ref_all[drop.id].data;  // dropout(x) [6 rows, 7]
  const std::vector<double> x = args.at("x").to_f64();
  int dropped = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (dx[i] == 0) ++dropped;
    else EXPECT_NEAR(dx[i], static_cast<float>(x[i] / 0.75), 1e-6);
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, static_cast<int>(x.size()));
  const std::vector<double> w = args.at("fc1.weight").to_f64(), bias = args.at("fc1.bias").to_f64();
  const std::vector<double> a = args.at("fc1.lora_A.weight").to_f64(), bm = args.at("fc1.lora_B.weight").to_f64();
  std::vector<double> want(6 * 6);
  for (int row = 0; row < 6; ++row)
    for (int o2 = 0; o2 < 6; ++o2) {
      double base = bias[o2], lora = 0;
      for (int i = 0; i < 7; ++i) base += x[row * 7 + i] * w[o2 * 7 + i];
      for (int k = 0; k < 3; ++k) {
        double h = 0;
        for (int i = 0; i < 7; ++i) h += dx[row * 7 + i] * a[k * 7 + i];
        lora += bm[o2 * 3 + k] * h;
      }
      want[row * 6 + o2] = base + 5.0 / 3.0 * lora;
    }
  // The adapted fc1 is the add that reads the base linear t0.
  int add_id = -1;
  for (const Node& n : adapted.nodes)
    if (n.op == "add" && adapted.node(n.inputs[0]).name == "t0") add_id = n.id;
  ASSERT_GE(add_id, 0);
  expect_near_all(want, ref_all[add_id].data, 1e-5, "fc1 + adapter");
}

// ---- training only the adapters --------------------------------------------------------

TEST(Lora, OnlyAdaptersGetGradients) {
  const Graph adapted = add_lora(block(), block_options());
  const AutodiffOptions ad = lora_autodiff_options(adapted);
  EXPECT_EQ(ad.params, lora_param_names(adapted));
  EXPECT_EQ(std::set<std::string>(ad.frozen.begin(), ad.frozen.end()),
            (std::set<std::string>{"fc1.weight", "fc1.bias", "fc2.weight"}));
  const Graph joint = differentiate(adapted, ad);
  std::vector<std::string> grads;
  for (const GraphOutput& out : joint.outputs)
    if (out.name.rfind("grad.", 0) == 0) grads.push_back(out.name);
  EXPECT_EQ(grads, (std::vector<std::string>{"grad.fc1.lora_A.weight", "grad.fc1.lora_B.weight",
                                             "grad.fc2.lora_A.weight", "grad.fc2.lora_B.weight"}));
  // Without the options, every param would get one.
  EXPECT_TRUE(has_output(differentiate(adapted), "grad.fc1.weight"));
  EXPECT_TRUE(contains(error_of([] { lora_autodiff_options(block()); }), "no LoRA adapter params"));
}

// d loss / d adapters in float64, by differentiate() (compiled and reference)
// against central differences of the forward graph (reference), with B != 0
// so that A's gradient is not zero, dropout on, and a rank-3 input.
TEST(Lora, GradientCheckOfTheAdaptersInFloat64) {
  SEEDED(seed);
  LoraOptions o = block_options();
  o.r = 3;
  o.dropout = 0.3;
  const Graph plain = [] {
    GraphBuilder b("block64");
    Tensor x = b.input("x", {2, 3, 7}, DType::f64);
    Tensor w1 = b.param("fc1.weight", {6, 7}, DType::f64);
    Tensor b1 = b.param("fc1.bias", {6}, DType::f64);
    Tensor h = gelu(linear(x, w1, b1));
    Tensor y = linear(h, b.param("fc2.weight", {5, 6}, DType::f64));
    b.output("y", y);
    b.output("loss", sum(y * b.input("r", {2, 3, 5}, DType::f64)));
    return b.build();
  }();
  const Graph adapted = add_lora(plain, o);
  const Graph joint = differentiate(adapted, lora_autodiff_options(adapted));
  auto args = random_buffers(adapted, seed);
  auto ref_args = ref::from_buffers(args);
  auto got = compile(joint).run(args);
  auto ref_got = ref::evaluate(joint, ref_args);
  const std::vector<double> weights = args.at("r").to_f64();
  for (const std::string& p : lora_param_names(adapted)) {
    SCOPED_TRACE(p);
    const std::vector<double> fd = gradcheck::finite_differences(adapted, ref_args, p, weights, 1e-6);
    gradcheck::expect_close(ref_got.at(grad_name(p)).data, fd, 1e-7, 1e-5, "reference " + grad_name(p));
    gradcheck::expect_close(got.at(grad_name(p)).to_f64(), fd, 1e-7, 1e-5, "compiled " + grad_name(p));
  }
}

TEST(Lora, InitIsPeftsAndTheAdaptedModelEqualsTheBaseExactly) {
  SEEDED(seed);
  const Graph plain = block(DType::f32, {9});
  const Graph adapted = add_lora(plain, block_options());
  const InitMap init = lora_init(adapted);
  ASSERT_EQ(init.size(), 4u);
  // torch.nn.init.kaiming_uniform_(a = sqrt 5) on [r, in]: gain = sqrt(2 / (1 + 5)),
  // bound = gain * sqrt(3 / in) = 1 / sqrt(in).
  for (const auto& [module, in] : std::vector<std::pair<std::string, int>>{{"fc1", 7}, {"fc2", 6}}) {
    const ParamInit& a = init.at(lora_a_name(module));
    EXPECT_EQ(a.kind, ParamInit::uniform);
    EXPECT_NEAR(a.b, 1 / std::sqrt(static_cast<double>(in)), 1e-15) << module;
    EXPECT_EQ(a.a, -a.b);
    EXPECT_EQ(init.at(lora_b_name(module)).kind, ParamInit::zeros);
  }

  // Base params random, adapters as PEFT: the outputs are bitwise the base's.
  InitMap full = init;
  for (int id : plain.params()) full[plain.node(id).name] = ParamInit{ParamInit::uniform, -1, 1};
  auto args = random_buffers(plain, seed);
  for (const auto& [name, b] : init_params(adapted, full, seed)) args[name] = b;
  EXPECT_EQ(args.at("fc1.lora_B.weight").to_f64(), std::vector<double>(12, 0.0));
  std::vector<double> a = args.at("fc1.lora_A.weight").to_f64();
  double amax = 0;
  for (double v : a) amax = std::max(amax, std::fabs(v));
  EXPECT_GT(amax, 0.5 / std::sqrt(7.0));
  EXPECT_LE(amax, 1 / std::sqrt(7.0));
  auto base = compile(plain).run(subset(args, plain));
  auto with = compile(adapted).run(args);
  EXPECT_EQ(base.at("y").to_f64(), with.at("y").to_f64());
  EXPECT_EQ(base.at("loss").to_f64(), with.at("loss").to_f64());

  // The Trainer takes the same map.
  TrainerOptions to;
  to.init = trainer_init(init);
  Trainer t(differentiate(adapted, lora_autodiff_options(adapted)), to);
  EXPECT_EQ(t.params().at("fc2.lora_B.weight").to_f64(), std::vector<double>(6, 0.0));
  for (double v : t.params().at("fc2.lora_A.weight").to_f64()) EXPECT_LE(std::fabs(v), 1 / std::sqrt(6.0));
}

// A few AdamW steps with the Trainer (dropout on): only adapters change; then
// merge_lora + remove_lora equal the eval graph with adapters, compiled and
// by the float64 reference interpreter.
TEST(Lora, MergedModelEqualsTheAdaptedModelAfterTraining) {
  SEEDED(seed);
  const Graph plain = block(DType::f32, {11});
  LoraOptions o = block_options();
  const Graph adapted = add_lora(plain, o);
  TrainerOptions to;
  to.optimizer = AdamWOptions{0.05};
  to.seed = seed;
  to.init = trainer_init(lora_init(adapted));
  Trainer t(differentiate(adapted, lora_autodiff_options(adapted)), to);
  auto data = random_buffers(plain, seed + 1);
  std::map<std::string, Buffer> batch{{"x", data.at("x")}, {"target", data.at("target")}};
  std::map<std::string, std::vector<double>> before;
  for (const auto& [name, b] : t.params()) before[name] = b.to_f64();
  double first = 0, last = 0;
  for (int i = 0; i < 6; ++i) {
    last = t.step(batch);
    if (i == 0) first = last;
  }
  EXPECT_LT(last, first);
  for (const auto& [name, b] : t.params()) {
    const bool is_adapter = name.find(".lora_") != std::string::npos;
    if (is_adapter) EXPECT_NE(b.to_f64(), before.at(name)) << name;
    else EXPECT_EQ(b.to_f64(), before.at(name)) << name << " is frozen";
  }
  std::set<std::string> state_names;
  for (const auto& [name, b] : t.state()) state_names.insert(name);
  for (const std::string& p : lora_param_names(adapted)) {
    EXPECT_TRUE(state_names.count(p + ".exp_avg")) << p;
    state_names.erase(p + ".exp_avg");
    state_names.erase(p + ".exp_avg_sq");
  }
  EXPECT_TRUE(state_names.empty()) << "optimizer state for a frozen param: " << *state_names.begin();

  LoraOptions eval_o = o;
  eval_o.training = false;
  const Graph eval = add_lora(plain, eval_o);
  std::map<std::string, Buffer> params;
  for (const auto& [name, b] : t.params()) params[name] = b.clone();
  std::map<std::string, Buffer> args = params;
  args.insert(batch.begin(), batch.end());
  const std::vector<double> y_lora = compile(eval).run(args).at("y").to_f64();

  const std::map<std::string, Buffer> merged = merge_lora(params, o);
  EXPECT_EQ(merged.size(), 3u);
  for (const auto& [name, b] : merged) EXPECT_EQ(name.find("lora"), std::string::npos) << name;
  EXPECT_NE(merged.at("fc1.weight").to_f64(), params.at("fc1.weight").to_f64());
  EXPECT_EQ(merged.at("fc1.bias").to_f64(), params.at("fc1.bias").to_f64());
  const Graph back = remove_lora(eval);
  EXPECT_EQ(print(back), print(plain));
  std::map<std::string, Buffer> margs = merged;
  margs.insert(batch.begin(), batch.end());
  const std::vector<double> y_merged = compile(back).run(margs).at("y").to_f64();
  expect_near_all(y_lora, y_merged, 1e-5, "merged vs adapters (compiled)");
  auto ref_lora = ref::evaluate(eval, ref::from_buffers(args));
  auto ref_merged = ref::evaluate(back, ref::from_buffers(margs));
  expect_near_all(ref_lora.at("y").data, ref_merged.at("y").data, 1e-5, "merged vs adapters (reference)");
  expect_near_all(ref_lora.at("y").data, y_merged, 1e-5, "merged (compiled) vs adapters (reference)");
  // The training graph (dropout on) differs from the eval graph once B != 0.
  EXPECT_NE(compile(adapted).run(args).at("y").to_f64(), y_lora);
}

// Gradient accumulation (the update graph reads only the adapters' gradients)
// matches the full batch and leaves the base alone.
TEST(Lora, TrainerAccumulationUpdatesOnlyAdapters) {
  LoraOptions o = block_options();
  o.dropout = 0;  // masks would differ between a full batch and its halves
  TrainerOptions full_o;
  full_o.optimizer = SGDOptions{0.1, 0.9};
  full_o.seed = 4;
  TrainerOptions acc_o = full_o;
  acc_o.accumulation_steps = 2;
  const Graph big = add_lora(block(DType::f32, {8}), o), half = add_lora(block(DType::f32, {4}), o);
  full_o.init = trainer_init(lora_init(big));
  acc_o.init = trainer_init(lora_init(half));
  Trainer full(differentiate(big, lora_autodiff_options(big)), full_o);
  Trainer acc(differentiate(half, lora_autodiff_options(half)), acc_o);
  auto data = random_buffers(block(DType::f32, {8}), 21);
  auto rows = [&](const std::string& name, int64_t first, int64_t n) {
    const Buffer& b = data.at(name);
    const int64_t cols = b.shape()[1];
    std::vector<double> v = b.to_f64();
    return Buffer::from(std::vector<double>(v.begin() + first * cols, v.begin() + (first + n) * cols), {n, cols});
  };
  std::map<std::string, Buffer> batch{{"x", data.at("x")}, {"target", data.at("target")}};
  std::vector<std::map<std::string, Buffer>> micro = {{{"x", rows("x", 0, 4)}, {"target", rows("target", 0, 4)}},
                                                      {{"x", rows("x", 4, 4)}, {"target", rows("target", 4, 4)}}};
  const std::vector<double> w0 = full.params().at("fc1.weight").to_f64();
  for (int i = 0; i < 3; ++i) {
    const double lf = full.step(batch), la = acc.step(micro);
    EXPECT_NEAR(lf, la, 1e-6 * (1 + lf)) << "step " << i;
  }
  for (const auto& [name, b] : full.params())
    expect_near_all(b.to_f64(), acc.params().at(name).to_f64(), 1e-5, name);
  EXPECT_EQ(acc.params().at("fc1.weight").to_f64(), w0);
  EXPECT_NE(acc.params().at("fc1.lora_B.weight").to_f64(), std::vector<double>(12, 0.0));
  EXPECT_EQ(acc.state().size(), 4u);  // one momentum buffer per adapter param
}

TEST(Lora, EvalWithoutDropoutIsDeterministic) {
  SEEDED(seed);
  LoraOptions o = block_options();
  o.dropout = 0.5;
  o.training = false;
  const Graph eval = add_lora(block(), o);
  auto args = random_buffers(eval, seed);  // B != 0
  auto first = compile(eval).run(args).at("y").to_f64();
  auto second = compile(eval).run(args).at("y").to_f64();
  EXPECT_EQ(first, second);
  auto ref = ref::evaluate(eval, ref::from_buffers(args));
  expect_near_all(ref.at("y").data, first, 1e-5, "eval vs reference");
  // Another dropout seed changes the training graph but not the eval graph.
  LoraOptions o2 = o;
  o2.dropout_seed = 99;
  EXPECT_EQ(compile(add_lora(block(), o2)).run(args).at("y").to_f64(), first);
  o.training = o2.training = true;
  auto train1 = compile(add_lora(block(), o)).run(args).at("y").to_f64();
  auto train2 = compile(add_lora(block(), o2)).run(args).at("y").to_f64();
  EXPECT_NE(train1, first);
  EXPECT_NE(train1, train2);
}

// ---- target patterns on GPT (Hugging Face GPT-2 names) -------------------------------------

GptConfig small_gpt() {
  GptConfig c;
  c.vocab_size = 11;
  c.block_size = 5;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.batch = 3;
  return c;
}

std::vector<std::string> adapted_modules(const std::vector<std::string>& patterns, const std::string& regex = "") {
  LoraOptions o;
  o.r = 2;
  o.target_modules = patterns;
  o.target_regex = regex;
  return lora_modules(add_lora(gpt(small_gpt()), o));
}

TEST(Lora, TargetPatterns) {
  using V = std::vector<std::string>;
  EXPECT_EQ(adapted_modules({"c_attn"}), (V{"transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"}));
  EXPECT_EQ(adapted_modules({"attn.c_proj"}), (V{"transformer.h.0.attn.c_proj", "transformer.h.1.attn.c_proj"}));
  EXPECT_EQ(adapted_modules({"c_proj"}), (V{"transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                                            "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"}));
  EXPECT_EQ(adapted_modules({"h.1.attn.c_attn", "transformer.h.0.mlp.c_fc"}),
            (V{"transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn"}));
  EXPECT_EQ(adapted_modules({"lm_head"}), (V{"lm_head"}));
  EXPECT_EQ(adapted_modules({}, R"(transformer\.h\.1\.(attn|mlp)\.c_proj)"),
            (V{"transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"}));
  EXPECT_EQ(adapted_modules({"c_attn"}, R"(.*\.0\.mlp\.c_fc)"),
            (V{"transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn"}));

  // Misses: not a dotted suffix, not a linear's module, a regex that matches
  // only part of a name. Each error names the pattern.
  for (const char* p : {"attn", "_attn", "c_at", "ln_1", "transformer.wte", "h.2.attn.c_attn"}) {
    const std::string e = error_of([&] { adapted_modules({"c_attn", p}); });
    EXPECT_TRUE(contains(e, "target module pattern '" + std::string(p) + "' matches no module")) << e;
    EXPECT_TRUE(contains(e, "transformer.h.0.attn.c_attn")) << "lists the modules: " << e;
  }
  std::string e = error_of([] { adapted_modules({}, "c_attn"); });
  EXPECT_TRUE(contains(e, "target_regex 'c_attn' matches no module")) << e;
  e = error_of([] { adapted_modules({}, "(c_attn"); });
  EXPECT_TRUE(contains(e, "target_regex '(c_attn' is not a valid regex")) << e;
  e = error_of([] { adapted_modules({}); });
  EXPECT_TRUE(contains(e, "no target_modules and no target_regex")) << e;
}

// A weight read by two linear nodes: one adapter that both use (dropout
// offsets 0 and 3 * 5 = 15), and the merge covers both (reference interpreter).
TEST(Lora, SharedWeightGetsOneAdapter) {
  SEEDED(seed);
  GraphBuilder b("shared");
  Tensor w = b.param("fc.weight", {2, 5});
  b.output("y", linear(b.input("x1", {3, 5}), w));
  b.output("z", linear(b.input("x2", {4, 5}), w));
  const Graph plain = b.build();
  LoraOptions o = block_options();
  o.target_modules = {"fc"};
  const Graph adapted = add_lora(plain, o);
  EXPECT_EQ(lora_param_names(adapted), (std::vector<std::string>{"fc.lora_A.weight", "fc.lora_B.weight"}));
  std::vector<int64_t> offsets;
  for (const Node& n : adapted.nodes)
    if (n.op == "dropout") offsets.push_back(std::get<int64_t>(n.attrs.at("offset")));
  EXPECT_EQ(offsets, (std::vector<int64_t>{0, 15}));
  EXPECT_EQ(count_op(adapted, "add"), 2);
  o.training = false;
  const Graph eval = add_lora(plain, o);
  auto args = random_buffers(eval, seed);
  auto margs = merge_lora(args, o);
  auto with = ref::evaluate(eval, ref::from_buffers(args));
  auto merged = ref::evaluate(remove_lora(eval), ref::from_buffers(margs));
  expect_near_all(with.at("y").data, merged.at("y").data, 1e-5, "y");
  expect_near_all(with.at("z").data, merged.at("z").data, 1e-5, "z");
}

TEST(Lora, TiedEmbeddingAndAdaptingTwiceAreErrors) {
  GptConfig c = small_gpt();
  c.tie_weights = true;
  LoraOptions o;
  o.target_modules = {"transformer.wte"};  // the tied LM head reads wte through linear
  std::string e = error_of([&] { add_lora(gpt(c), o); });
  EXPECT_TRUE(contains(e, "the weight 'transformer.wte.weight' of module 'transformer.wte' is also read by embedding"))
      << e;
  o.target_modules = {"fc1"};
  const Graph once = add_lora(block(), o);
  e = error_of([&] { add_lora(once, o); });
  EXPECT_TRUE(contains(e, "module 'fc1' already has a node named 'fc1.lora_A.weight'")) << e;
}

// GPT-2 adapted on its attention projections (c_attn and attn.c_proj), base
// frozen at GPT-2's init: the Trainer fits a fixed batch and the loss falls.
TEST(Lora, GptWithAdaptedAttentionTrains) {
  const GptConfig c = small_gpt();
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.dropout = 0.05;
  o.target_modules = {"c_attn", "attn.c_proj"};
  const Graph adapted = PassManager{lora(o)}.run(gpt(c));
  ASSERT_EQ(lora_modules(adapted).size(), 4u);
  InitMap init = gpt_init(c);
  // A stand-in for pretrained weights: GPT-2's init, but an LM head large
  // enough that the final LayerNorm's output can move the logits (at std 0.02
  // they stay within about +-0.16 and no adapter could lower the loss much).
  init["lm_head.weight"] = ParamInit{ParamInit::normal, 0.0, 1.0};
  for (const auto& [name, pi] : lora_init(adapted)) init[name] = pi;
  TrainerOptions to;
  to.optimizer = AdamWOptions{0.05};
  to.seed = 5;
  to.init = trainer_init(init);
  Trainer t(differentiate(adapted, lora_autodiff_options(adapted)), to);
  std::mt19937 rng(17);
  std::vector<double> idx, targets;
  for (int64_t i = 0; i < c.batch * c.block_size; ++i) {
    idx.push_back(static_cast<double>(rng() % c.vocab_size));
    targets.push_back(static_cast<double>(rng() % c.vocab_size));
  }
  std::map<std::string, Buffer> batch{{"idx", Buffer::from(idx, {c.batch, c.block_size}, DType::i32)},
                                      {"targets", Buffer::from(targets, {c.batch, c.block_size}, DType::i32)}};
  const std::vector<double> wte = t.params().at("transformer.wte.weight").to_f64();
  double first = 0, last = 0;
  for (int i = 0; i < 60; ++i) {
    last = t.step(batch);
    if (i == 0) first = last;
  }
  EXPECT_LT(last, 0.5 * first);  // measured: about 5.6 -> 0.4
  EXPECT_EQ(t.params().at("transformer.wte.weight").to_f64(), wte);
  EXPECT_EQ(t.state().size(), 2 * lora_param_names(adapted).size());  // AdamW state for adapters only

  // Merged into the plain GPT-2 (HF names), it computes what the eval graph
  // with adapters computes (float64 reference interpreter).
  LoraOptions eval_o = o;
  eval_o.training = false;
  std::map<std::string, Buffer> params;
  for (const auto& [name, b] : t.params()) params[name] = b.clone();
  std::map<std::string, Buffer> args = params, margs = merge_lora(params, o);
  args.insert(batch.begin(), batch.end());
  margs.insert(batch.begin(), batch.end());
  auto with = ref::evaluate(add_lora(gpt(c), eval_o), ref::from_buffers(args));
  auto merged = ref::evaluate(gpt(c), ref::from_buffers(margs));
  expect_near_all(with.at("logits").data, merged.at("logits").data, 1e-5, "GPT logits, merged vs adapters");
}

// ---- a stand-in quantized base and the dequantizer -------------------------------------

// The base op is `matmul` with the weight stored transposed, [in, out]: a
// layout the adapter must not read in/out from. The dequantizer turns it
// into the [out, in] float weight of the plain `linear` model and says that
// a side entry ("q.weight.scale") is replaced.
TEST(Lora, MergeThroughADequantizer) {
  SEEDED(seed);
  constexpr int64_t n = 4, in = 5, out = 3;
  GraphBuilder qb("stand_in");
  Tensor qx = qb.input("x", {n, in});
  qb.output("y", matmul(qx, qb.param("q.weight", {in, out})));
  const Graph stand_in = qb.build();
  GraphBuilder pb("plain");
  Tensor px = pb.input("x", {n, in});
  pb.output("y", linear(px, pb.param("q.weight", {out, in})));
  const Graph plain = pb.build();

  LoraOptions o;
  o.r = 2;
  o.alpha = 6;
  o.target_modules = {"q"};
  o.base_ops = {"matmul"};
  const Graph adapted = add_lora(stand_in, o);
  EXPECT_EQ(adapted.node("q.lora_A.weight").type.shape, (Shape{2, in}));
  EXPECT_EQ(adapted.node("q.lora_B.weight").type.shape, (Shape{out, 2}));
  auto args = random_buffers(adapted, seed);
  const std::vector<double> y_lora = compile(adapted).run(args).at("y").to_f64();

  std::map<std::string, Buffer> state = args;
  state.erase("x");
  state["q.weight.scale"] = Buffer::from({1.0}, {});
  int calls = 0;
  Dequantizer transpose = [&](const std::string& module, const std::map<std::string, Buffer>& s) {
    ++calls;
    EXPECT_EQ(module, "q");
    const Buffer& wt = s.at("q.weight");
    std::vector<double> w(static_cast<size_t>(in * out));
    for (int64_t i = 0; i < in; ++i)
      for (int64_t j = 0; j < out; ++j) w[j * in + i] = wt.get(i * out + j);
    return DequantizedWeight{Buffer::from(w, {out, in}), {"q.weight.scale"}};
  };
  const auto merged = merge_lora(state, o, transpose);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(merged.size(), 1u);
  EXPECT_EQ(merged.at("q.weight").shape(), (Shape{out, in}));
  std::map<std::string, Buffer> pargs = merged;
  pargs["x"] = args.at("x");
  expect_near_all(y_lora, compile(plain).run(pargs).at("y").to_f64(), 1e-5, "merged plain vs stand-in");
  auto ref = ref::evaluate(plain, ref::from_buffers(pargs));
  expect_near_all(ref.at("y").data, y_lora, 1e-5, "merged plain (reference) vs stand-in");

  // Without the dequantizer the [in, out] weight is refused.
  const std::string e = error_of([&] { merge_lora(state, o); });
  EXPECT_TRUE(contains(e, "needs a dequantizer")) << e;
}

// ---- errors -------------------------------------------------------------------------------

TEST(Lora, BadOptionsAreErrors) {
  auto err = [](auto edit) {
    LoraOptions o = block_options();
    edit(o);
    return error_of([&] { add_lora(block(), o); });
  };
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.r = 0; }), "lora: r = 0 is invalid (need r > 0)"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.r = -3; }), "lora: r = -3 is invalid"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.alpha = 0; }), "lora: alpha = 0 is invalid (need alpha > 0)"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.alpha = -1; }), "lora: alpha = -1 is invalid"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.alpha = NAN; }), "lora: alpha = nan is invalid"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.dropout = 1; }), "lora: dropout = 1 is invalid (need 0 <= dropout < 1)"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.dropout = -0.1; }), "lora: dropout = -0.1 is invalid"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.dropout = NAN; }), "lora: dropout = nan is invalid"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.base_ops.clear(); }), "base_ops is empty"));
  EXPECT_TRUE(contains(err([](LoraOptions& o) { o.target_modules = {""}; }), "an empty target module pattern"));
  EXPECT_THROW(PassManager{lora(LoraOptions{})}.run(block()), Error);  // no targets

  std::map<std::string, Buffer> state = random_buffers(add_lora(block(), block_options()), 1);
  LoraOptions o = block_options();
  o.r = 0;
  EXPECT_TRUE(contains(error_of([&] { merge_lora(state, o); }), "merge_lora: r = 0 is invalid"));
  o = block_options();
  o.alpha = -2;
  EXPECT_TRUE(contains(error_of([&] { merge_lora(state, o); }), "merge_lora: alpha = -2 is invalid"));
  o = block_options();
  o.r = 3;  // the adapters have r = 2
  std::string e = error_of([&] { merge_lora(state, o); });
  EXPECT_TRUE(contains(e, "merge_lora: module 'fc1': weight f32[6, 7] with r = 3 needs 'fc1.lora_A.weight' f[3, 7]"))
      << e;
  EXPECT_TRUE(contains(e, "got f32[2, 7] and f32[6, 2]")) << e;
  auto no_b = state;
  no_b.erase("fc2.lora_B.weight");
  e = error_of([&] { merge_lora(no_b, block_options()); });
  EXPECT_TRUE(contains(e, "'fc2.lora_A.weight' has no partner 'fc2.lora_B.weight'")) << e;
  auto no_w = state;
  no_w.erase("fc1.weight");
  e = error_of([&] { merge_lora(no_w, block_options()); });
  EXPECT_TRUE(contains(e, "module 'fc1' has adapters but no weight 'fc1.weight'")) << e;

  // remove_lora refuses a joint graph, whose gradients read the adapters.
  const Graph adapted = add_lora(block(), block_options());
  e = error_of([&] { remove_lora(differentiate(adapted, lora_autodiff_options(adapted))); });
  EXPECT_TRUE(contains(e, "remove_lora: ")) << e;
  EXPECT_TRUE(contains(e, "lora")) << e;
}

}  // namespace
}  // namespace tessera
