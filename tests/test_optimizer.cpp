// Tests of the optimizer transforms (optimizer.h): SGD and AdamW step graphs
// against a hand-written float64 loop of PyTorch's documented algorithms.
//
// The joint graph is hand-built (linear regression with its gradient written
// out), so these tests do not depend on autodiff. Each configuration runs the
// step graph for several steps in f64 and in f32, feeding the "new.*" outputs
// back, and compares every param and state with the reference loop, whose
// gradients come from the reference interpreter (tests/reference) on the
// reference's own params. Also: the exact printed form of a tiny AdamW step,
// gradients_as_inputs, and the errors for bad graphs and hyperparameters.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/ops.h"
#include "tessera/optimizer.h"
#include "tessera/runtime.h"
#include "tessera/text.h"

namespace tessera {
namespace {

using Values = std::map<std::string, std::vector<double>>;

constexpr int64_t kN = 6, kIn = 3, kOut = 2;

// loss = mean((x w + b - y)^2), with grad.w and grad.b written by hand.
Graph regression_joint(DType dt) {
  GraphBuilder b("regression");
  Tensor x = b.input("x", {kN, kIn}, dt);
  Tensor y = b.input("y", {kN, kOut}, dt);
  Tensor w = b.param("w", {kIn, kOut}, dt);
  Tensor bias = b.param("b", {kOut}, dt);
  Tensor r = matmul(x, w) + bias - y;
  b.output("loss", mean(r * r));
  Tensor s = r * (2.0 / (kN * kOut));
  b.output("grad.w", matmul(transpose(x, 0, 1), s));
  b.output("grad.b", sum(s, {0}));
  return b.build();
}

std::vector<double> random_values(std::mt19937& rng, int64_t n, double scale) {
  std::vector<double> v(n);
  for (double& x : v) x = std::uniform_real_distribution<double>(-scale, scale)(rng);
  return v;
}

// Values representable in f32, so that the f32 and f64 runs start equal.
std::vector<double> f32_values(std::vector<double> v) {
  for (double& x : v) x = static_cast<float>(x);
  return v;
}

// ---- the reference loop: PyTorch's algorithms, written from their docs ------

struct RefOptim {
  bool adam = false;
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double max_norm = 0;
};

// One step on `p` (w, b) with gradients `g`; `s` holds the state by name.
// Returns the total gradient norm before clipping.
double ref_step(const RefOptim& o, int t, Values& p, Values g, Values& s) {
  double total = 0;
  for (auto& [name, gv] : g)
    for (double x : gv) total += x * x;
  total = std::sqrt(total);
  if (o.max_norm > 0) {
    const double coef = std::min(1.0, o.max_norm / (total + 1e-6));
    for (auto& [name, gv] : g)
      for (double& x : gv) x *= coef;
  }
  for (auto& [name, pv] : p) {
    std::vector<double>& gv = g.at(name);
    for (size_t i = 0; i < pv.size(); ++i) {
      if (!o.adam) {
        double d = gv[i] + o.weight_decay * pv[i];
        if (o.momentum != 0) {
          std::vector<double>& buf = s[name + ".momentum_buffer"];
          buf.resize(pv.size(), 0.0);
          buf[i] = t == 1 ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
          d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
        }
        pv[i] -= o.lr * d;
      } else {
        std::vector<double>& m = s[name + ".exp_avg"];
        std::vector<double>& v = s[name + ".exp_avg_sq"];
        m.resize(pv.size(), 0.0);
        v.resize(pv.size(), 0.0);
        pv[i] *= 1 - o.lr * o.weight_decay;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * gv[i];
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * gv[i] * gv[i];
        const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
        const double m_hat = m[i] / bc1, v_hat = v[i] / bc2;
        pv[i] -= o.lr * m_hat / (std::sqrt(v_hat) + o.eps);
      }
    }
  }
  return total;
}

Values ref_grads(const Values& p, const Values& data) {
  static const Graph g = regression_joint(DType::f64);
  std::map<std::string, ref::RefTensor> args;
  args["x"] = {{kN, kIn}, data.at("x")};
  args["y"] = {{kN, kOut}, data.at("y")};
  args["w"] = {{kIn, kOut}, p.at("w")};
  args["b"] = {{kOut}, p.at("b")};
  auto out = ref::evaluate(g, args);
  return {{"w", out.at("grad.w").data}, {"b", out.at("grad.b").data}};
}

void expect_near(const std::vector<double>& want, const std::vector<double>& got, double tol, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(want[i], got[i], tol * (1 + std::fabs(want[i]))) << what << " element " << i;
}

// Runs `options` for `steps` steps in f64 and f32 and compares with the reference.
void check_against_reference(const OptimizerOptions& options, const RefOptim& ro_in, int steps = 5) {
  std::mt19937 rng(7);
  Values data{{"x", f32_values(random_values(rng, kN * kIn, 1.0))}, {"y", f32_values(random_values(rng, kN * kOut, 1.0))}};
  Values init{{"w", f32_values(random_values(rng, kIn * kOut, 0.5))}, {"b", f32_values(random_values(rng, kOut, 0.5))}};
  const double lr = std::visit([](const auto& o) { return o.lr; }, options);
  RefOptim ro = ro_in;
  ro.lr = static_cast<float>(lr);  // optim.lr is an f32 input
  const double max_norm = std::visit([](const auto& o) { return o.max_grad_norm; }, options);

  for (DType dt : {DType::f64, DType::f32}) {
    SCOPED_TRACE(dtype_name(dt));
    const double tol = dt == DType::f64 ? 1e-10 : 2e-5;
    Graph step_graph = apply_optimizer(regression_joint(dt), options);
    Executable exe = compile(step_graph);

    std::map<std::string, Buffer> args;
    args["x"] = Buffer::from(data["x"], {kN, kIn}, dt);
    args["y"] = Buffer::from(data["y"], {kN, kOut}, dt);
    args["w"] = Buffer::from(init["w"], {kIn, kOut}, dt);
    args["b"] = Buffer::from(init["b"], {kOut}, dt);
    for (int id : step_graph.params()) {
      const Node& n = step_graph.nodes[id];
      if (!args.count(n.name)) args[n.name] = Buffer(n.type.dtype, n.type.shape);  // zero state
    }
    Values p = init, s;
    for (int t = 1; t <= steps; ++t) {
      SCOPED_TRACE("step " + std::to_string(t));
      args[kOptimStep] = Buffer::from({double(t)}, {}, DType::f32);
      args[kOptimLr] = Buffer::from({lr}, {}, DType::f32);
      auto out = exe.run(args);
      const double total = ref_step(ro, t, p, ref_grads(p, data), s);
      if (max_norm > 0) {
        ASSERT_TRUE(out.count(kOptimGradNorm));
        EXPECT_NEAR(total, out.at(kOptimGradNorm).get(0), 1e-5 * (1 + total));
      } else {
        EXPECT_FALSE(out.count(kOptimGradNorm));
      }
      EXPECT_FALSE(out.count("grad.w"));
      EXPECT_TRUE(out.count("loss"));
      for (const auto& [name, want] : p) expect_near(want, out.at(new_name(name)).to_f64(), tol, name);
      for (const auto& [name, want] : s) expect_near(want, out.at(new_name(name)).to_f64(), tol, name);
      // Write every "new.X" back into X (what a runtime does).
      size_t written = 0;
      for (auto& [name, b] : out)
        if (name.rfind("new.", 0) == 0) {
          ASSERT_TRUE(args.count(name.substr(4))) << name;
          args[name.substr(4)] = b;
          ++written;
        }
      EXPECT_EQ(written, p.size() + s.size());
    }
  }
}

// ---- SGD ------------------------------------------------------------------------

TEST(Sgd, PlainMatchesReference) {
  SGDOptions o;
  o.lr = 0.1;
  check_against_reference(o, RefOptim{});
}

TEST(Sgd, MomentumAndWeightDecayMatchReference) {
  SGDOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  o.weight_decay = 0.1;
  RefOptim r;
  r.momentum = 0.9;
  r.weight_decay = 0.1;
  check_against_reference(o, r);
}

TEST(Sgd, NesterovMatchesReference) {
  SGDOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  o.nesterov = true;
  RefOptim r;
  r.momentum = 0.9;
  r.nesterov = true;
  check_against_reference(o, r);
}

TEST(Sgd, DampeningFirstStepAndClippingMatchReference) {
  // Step 1 sets buf = grad (no dampening), as PyTorch does; clipping is active.
  SGDOptions o;
  o.lr = 0.1;
  o.momentum = 0.8;
  o.dampening = 0.3;
  o.max_grad_norm = 0.5;
  RefOptim r;
  r.momentum = 0.8;
  r.dampening = 0.3;
  r.max_norm = 0.5;
  check_against_reference(o, r);
}

// ---- AdamW ------------------------------------------------------------------------

TEST(AdamW, MatchesReferenceWithWeightDecay) {
  AdamWOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  RefOptim r;
  r.adam = true;
  r.weight_decay = 0.1;
  check_against_reference(o, r);
}

TEST(AdamW, MatchesReferenceWithClippingAndOtherBetas) {
  AdamWOptions o;
  o.lr = 0.02;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.01;
  o.max_grad_norm = 0.3;
  RefOptim r;
  r.adam = true;
  r.beta1 = 0.8;
  r.beta2 = 0.95;
  r.eps = 1e-6;
  r.weight_decay = 0.01;
  r.max_norm = 0.3;
  check_against_reference(o, r, 6);
}

std::string lines(std::initializer_list<const char*> ls) {
  std::string s;
  for (const char* l : ls) s += std::string(l) + "\n";
  return s;
}

Graph tiny_joint() {
  GraphBuilder b("tiny");
  Tensor x = b.input("x", {2});
  Tensor w = b.param("w", {2});
  b.output("loss", sum(w * x));
  b.output("grad.w", x);
  return b.build();
}

// The scalar hyperparameter arithmetic in f64 (t2..t17), then per param:
// decay (t19), exp_avg lerp (t23), exp_avg_sq (t29), denom (t34), update (t38).
TEST(AdamW, PrintedStepGraph) {
  AdamWOptions o;
  o.weight_decay = 0.01;
  EXPECT_EQ(print(adamw(tiny_joint(), o)), lines({
      "graph tiny {",
      "  x = input()  # f32[2]",
      "  w = param()  # f32[2]",
      "  t0 = mul(w, x)  # f32[2]",
      "  t1 = sum(t0, axes=[], keepdim=false)  # f32[]",
      "  optim.step = input()  # f32[]",
      "  optim.lr = input()  # f32[]",
      "  t2 = cast(optim.step, dtype=\"f64\")  # f64[]",
      "  t3 = cast(optim.lr, dtype=\"f64\")  # f64[]",
      "  t4 = constant(value=0.9)  # f64[]",
      "  t5 = pow(t4, t2)  # f64[]",
      "  t6 = constant(value=1)  # f64[]",
      "  t7 = sub(t6, t5)  # f64[]",
      "  t8 = constant(value=0.999)  # f64[]",
      "  t9 = pow(t8, t2)  # f64[]",
      "  t10 = constant(value=1)  # f64[]",
      "  t11 = sub(t10, t9)  # f64[]",
      "  t12 = div(t3, t7)  # f64[]",
      "  t13 = sqrt(t11)  # f64[]",
      "  t14 = constant(value=0.01)  # f64[]",
      "  t15 = mul(t3, t14)  # f64[]",
      "  t16 = constant(value=1)  # f64[]",
      "  t17 = sub(t16, t15)  # f64[]",
      "  w.exp_avg = param()  # f32[2]",
      "  w.exp_avg_sq = param()  # f32[2]",
      "  t18 = cast(t17, dtype=\"f32\")  # f32[]",
      "  t19 = mul(w, t18)  # f32[2]",
      "  t20 = sub(x, w.exp_avg)  # f32[2]",
      "  t21 = constant(value=0.09999999999999998)  # f32[]",
      "  t22 = mul(t20, t21)  # f32[2]",
      "  t23 = add(w.exp_avg, t22)  # f32[2]",
      "  t24 = mul(x, x)  # f32[2]",
      "  t25 = constant(value=0.0010000000000000009)  # f32[]",
      "  t26 = mul(t24, t25)  # f32[2]",
      "  t27 = constant(value=0.999)  # f32[]",
      "  t28 = mul(w.exp_avg_sq, t27)  # f32[2]",
      "  t29 = add(t28, t26)  # f32[2]",
      "  t30 = cast(t13, dtype=\"f32\")  # f32[]",
      "  t31 = sqrt(t29)  # f32[2]",
      "  t32 = div(t31, t30)  # f32[2]",
      "  t33 = constant(value=1e-08)  # f32[]",
      "  t34 = add(t32, t33)  # f32[2]",
      "  t35 = cast(t12, dtype=\"f32\")  # f32[]",
      "  t36 = div(t23, t34)  # f32[2]",
      "  t37 = mul(t36, t35)  # f32[2]",
      "  t38 = sub(t19, t37)  # f32[2]",
      "  output loss = t1",
      "  output new.w = t38",
      "  output new.w.exp_avg = t23",
      "  output new.w.exp_avg_sq = t29",
      "}",
  }));
}

// ---- gradients_as_inputs, frozen params, errors -----------------------------------

TEST(Optimizer, UpdateOnlyGraphFromGradientInputs) {
  Graph u = sgd(gradients_as_inputs(regression_joint(DType::f32)), SGDOptions{});
  std::map<std::string, Buffer> args;
  args["w"] = Buffer::from({1, 2, 3, 4, 5, 6}, {kIn, kOut});
  args["b"] = Buffer::from({1, 2}, {kOut});
  args["grad.w"] = Buffer::from({1, 1, 1, 1, 1, 1}, {kIn, kOut});
  args["grad.b"] = Buffer::from({10, -10}, {kOut});
  args[kOptimStep] = Buffer::from({1}, {});
  args[kOptimLr] = Buffer::from({0.5}, {});
  auto out = compile(u).run(args);
  EXPECT_EQ(out.at("new.w").to_f64(), (std::vector<double>{0.5, 1.5, 2.5, 3.5, 4.5, 5.5}));
  EXPECT_EQ(out.at("new.b").to_f64(), (std::vector<double>{-4, 7}));
  EXPECT_EQ(out.size(), 2u);
}

TEST(Optimizer, ParamsWithoutGradientAreNotUpdated) {
  GraphBuilder b("frozen");
  Tensor x = b.input("x", {2});
  Tensor w = b.param("w", {2});
  Tensor f = b.param("f", {2});
  b.output("loss", sum(w * x + f));
  b.output("grad.w", x);
  Graph g = adamw(b.build(), AdamWOptions{});
  EXPECT_GE(g.find("w.exp_avg"), 0);
  EXPECT_LT(g.find("f.exp_avg"), 0);
  std::vector<std::string> outs;
  for (const GraphOutput& o : g.outputs) outs.push_back(o.name);
  EXPECT_EQ(outs, (std::vector<std::string>{"loss", "new.w", "new.w.exp_avg", "new.w.exp_avg_sq"}));
}

// With an "optim.skip" output, a true flag leaves params and state bitwise
// unchanged and a false one gives the unskipped update (SGD with momentum,
// then AdamW), in the compiled graph and in the reference.
TEST(Optimizer, SkipOutputLeavesEverythingUnchanged) {
  auto with_skip = [](const Graph& joint) {
    GraphBuilder b(joint);
    Tensor flag = b.input("skip_flag", {}, DType::boolean);
    Graph g = b.graph();
    g.outputs.push_back({kOptimSkip, flag.id()});
    return g;
  };
  const Graph joint = regression_joint(DType::f32);
  SGDOptions momentum;
  momentum.momentum = 0.9;
  momentum.lr = 0.1;
  for (const OptimizerOptions& o : {OptimizerOptions{momentum}, OptimizerOptions{AdamWOptions{}}}) {
    const Graph plain = apply_optimizer(joint, o), skipping = apply_optimizer(with_skip(joint), o);
    std::mt19937 rng(17);
    std::map<std::string, Buffer> args;
    for (int id : plain.inputs()) {
      const Node& n = plain.nodes[id];
      args[n.name] = Buffer::from(random_values(rng, n.type.numel(), 1), n.type.shape);
    }
    for (int id : plain.params()) {
      const Node& n = plain.nodes[id];
      std::vector<double> v = random_values(rng, n.type.numel(), 1);
      for (double& x : v) x = std::fabs(x);  // second moments are non-negative
      args[n.name] = Buffer::from(v, n.type.shape);
    }
    args[kOptimStep] = Buffer::from({2}, {});
    const auto want = compile(plain).run(args);
    for (bool skip : {false, true}) {
      args["skip_flag"] = Buffer::from({skip ? 1.0 : 0.0}, {}, DType::boolean);
      const auto got = compile(skipping).run(args);
      const auto ref_got = ref::evaluate(skipping, ref::from_buffers(args));
      EXPECT_EQ(got.at(kOptimSkip).get(0), skip ? 1 : 0);
      for (const auto& [name, w] : want) {
        if (name.rfind("new.", 0) != 0) continue;
        const std::vector<double> a = got.at(name).to_f64();
        const std::vector<double> e = skip ? args.at(name.substr(4)).to_f64() : w.to_f64();
        const std::vector<double>& r = ref_got.at(name).data;
        for (size_t i = 0; i < a.size(); ++i) {
          if (skip) {
            EXPECT_EQ(a[i], e[i]) << name << "[" << i << "]";
            EXPECT_EQ(r[i], e[i]) << "reference " << name << "[" << i << "]";
          } else {
            // The same update, fused differently: equal up to contraction.
            EXPECT_NEAR(a[i], e[i], 1e-6 * (1 + std::fabs(e[i]))) << name << "[" << i << "]";
            EXPECT_NEAR(r[i], e[i], 1e-5 * (1 + std::fabs(e[i]))) << "reference " << name << "[" << i << "]";
          }
        }
      }
    }
  }
  GraphBuilder b(joint);
  Tensor bad = b.input("skip_flag", {2}, DType::boolean);
  Graph g = b.graph();
  g.outputs.push_back({kOptimSkip, bad.id()});
  EXPECT_THROW(sgd(g, SGDOptions{}), Error);
}

void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning: " << part;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Optimizer, Errors) {
  const Graph joint = regression_joint(DType::f32);
  SGDOptions neg;
  neg.lr = -0.1;
  expect_error([&] { sgd(joint, neg); }, "lr = -0.1 is invalid");
  SGDOptions nest;
  nest.nesterov = true;
  expect_error([&] { sgd(joint, nest); }, "nesterov momentum needs momentum > 0");
  nest.momentum = 0.9;
  nest.dampening = 0.1;
  expect_error([&] { sgd(joint, nest); }, "dampening == 0");
  AdamWOptions beta;
  beta.beta1 = 1.0;
  expect_error([&] { adamw(joint, beta); }, "beta1 = 1 is invalid");
  AdamWOptions eps;
  eps.eps = 0;
  expect_error([&] { adamw(joint, eps); }, "eps = 0 is invalid");
  AdamWOptions clip;
  clip.max_grad_norm = -1;
  expect_error([&] { adamw(joint, clip); }, "max_grad_norm = -1 is invalid");

  // No gradient at all.
  GraphBuilder nb("nograd");
  Tensor w = nb.param("w", {2});
  nb.output("loss", sum(w));
  expect_error([&] { sgd(nb.build(), SGDOptions{}); }, "has no \"grad.<param>\" output");

  // A gradient of something that is not a param.
  GraphBuilder ib("notparam");
  Tensor x = ib.input("x", {2});
  Tensor v = ib.param("v", {2});
  ib.output("loss", sum(v * x));
  ib.output("grad.x", x);
  expect_error([&] { adamw(ib.build(), AdamWOptions{}); }, "'x', which is not a param");

  // A gradient of the wrong type.
  GraphBuilder tb("badtype");
  Tensor y = tb.input("y", {3});
  Tensor p = tb.param("p", {2});
  tb.output("loss", sum(p) + sum(y));
  tb.output("grad.p", y);
  expect_error([&] { sgd(tb.build(), SGDOptions{}); }, "'grad.p' is f32[3] but param 'p' is f32[2]");

  // A name the transform adds is taken.
  GraphBuilder cb("clash");
  Tensor q = cb.param("q", {2});
  Tensor qa = cb.param("q.exp_avg", {2});
  cb.output("loss", sum(q * qa));
  cb.output("grad.q", q);
  expect_error([&] { adamw(cb.build(), AdamWOptions{}); }, "already has a node named 'q.exp_avg'");
}

TEST(Optimizer, PassAndStateNames) {
  Pass p = optimizer(SGDOptions{0.1, 0.9});
  EXPECT_EQ(p.name, "sgd");
  Graph g = p.run(tiny_joint());
  EXPECT_GE(g.find("w.momentum_buffer"), 0);
  EXPECT_EQ(optimizer_state_names(SGDOptions{}, "w"), std::vector<std::string>{});
  EXPECT_EQ(optimizer_state_names(SGDOptions{0.1, 0.9}, "w"), std::vector<std::string>{"w.momentum_buffer"});
  EXPECT_EQ(optimizer_state_names(AdamWOptions{}, "w"), (std::vector<std::string>{"w.exp_avg", "w.exp_avg_sq"}));
}

}  // namespace
}  // namespace tessera
