// Tests of the gradients of user ops (`define` nodes, differentiated through
// define_grad and Halide's propagate_adjoints; src/frontend/define_grad.h)
// beyond the per-body gradient checks of tests/test_autodiff_nn.cpp and the
// compiled-versus-reference cases of tests/test_ops.cpp: the Errors autodiff
// gives for bodies it cannot differentiate correctly (diagonal reads, product
// reductions, functions without a derivative), integer inputs and inputs
// read only in conditions getting no gradient, CSE keeping the gradients of
// different bodies apart, an MLP whose activation and second layer are user
// ops checked against finite differences through differentiate(), split into
// forward and backward graphs, and trained by the Trainer. The text form of
// define_grad is tested in tests/test_text.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>

#include "gradcheck.h"
#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/tessera.h"
#include "tessera/trainer.h"
#include "test_util.h"

namespace tessera {
namespace {

using Halide::Expr;

using test_util::error_of;
using test_util::has_output;

// A graph whose loss is the sum of one define over param x of shape `xs`.
Graph one_define(const Shape& xs, const Shape& out, const std::function<Expr(Tensor, const std::vector<Var>&)>& body) {
  GraphBuilder b("g");
  Tensor x = b.param("x", xs);
  Tensor d;
  if (out.size() == 1) d = b.define("d", out, [&](Var i) { return body(x, {i}); });
  else d = b.define("d", out, [&](Var i, Var j) { return body(x, {i, j}); });
  b.output("loss", sum(d));
  return b.build();
}

TEST(DefineGrad, DiagonalReadsAreRefused) {
  const std::string why =
      "reads input 0 with two indices that are each a function of the index variable 'i' alone (a diagonal such as "
      "x(i, i)); Halide's propagate_adjoints gives wrong gradients for such reads (Halide issue 7385), so they are "
      "not differentiated";
  Graph diag = one_define({4, 4}, {4}, [](Tensor x, const std::vector<Var>& v) { return x(v[0], v[0]) * 2.0f; });
  EXPECT_EQ(error_of([&] { differentiate(diag); }),
            "autodiff: the gradient of 'd' (op define) failed: define 'd': no gradient for input 0 ('x', f32[4, 4]): " +
                why);
  // An anti-diagonal and a shifted one are the same mistake.
  Graph anti = one_define({4, 4}, {4}, [](Tensor x, const std::vector<Var>& v) { return x(v[0], 3 - v[0]); });
  EXPECT_NE(error_of([&] { differentiate(anti); }).find(why), std::string::npos);
  Graph shifted = one_define({5, 4}, {4}, [](Tensor x, const std::vector<Var>& v) { return x(v[0] + 1, v[0]); });
  EXPECT_NE(error_of([&] { differentiate(shifted); }).find(why), std::string::npos);
  // Frozen, x needs no gradient and nothing is refused.
  AutodiffOptions frozen;
  frozen.frozen = {"x"};
  EXPECT_EQ(error_of([&] { differentiate(diag, frozen); }), "(no error)");
  // Reads that are not diagonals: a transpose, an index Halide cannot invert
  // (i % 3), and a diagonal walked by an RDom (a trace) differentiate.
  EXPECT_EQ(error_of([&] {
              differentiate(one_define({3, 3}, {3, 3}, [](Tensor x, const std::vector<Var>& v) {
                return x(v[0], v[1]) * x(v[1], v[0]);
              }));
            }),
            "(no error)");
  EXPECT_EQ(error_of([&] {
              differentiate(one_define({3, 6}, {6}, [](Tensor x, const std::vector<Var>& v) { return x(v[0] % 3, v[0]); }));
            }),
            "(no error)");
  EXPECT_EQ(error_of([&] {
              differentiate(one_define({4, 4}, {1}, [](Tensor x, const std::vector<Var>&) {
                Halide::RDom r(0, 4);
                return Halide::sum(x(r, r));
              }));
            }),
            "(no error)");
}

TEST(DefineGrad, UnsupportedBodiesAreRefused) {
  Graph product = one_define({3, 4}, {3}, [](Tensor x, const std::vector<Var>& v) {
    return Halide::product(x(v[0], Halide::RDom(0, 4)));
  });
  EXPECT_EQ(error_of([&] { differentiate(product); }),
            "autodiff: the gradient of 'd' (op define) failed: define 'd': no gradient for input 0 ('x', f32[3, 4]): "
            "uses a product reduction, whose gradient Halide's propagate_adjoints refuses; for positive terms write "
            "exp(sum(log(...))) instead");
  // A math function Halide has no derivative for.
  Graph unknown = one_define({3}, {3}, [](Tensor x, const std::vector<Var>& v) {
    return Halide::Internal::Call::make(Halide::Float(32), "my_erfc_f32", {x(v[0])},
                                       Halide::Internal::Call::PureExtern);
  });
  EXPECT_EQ(error_of([&] { differentiate(unknown); }),
            "autodiff: the gradient of 'd' (op define) failed: define 'd': no gradient for input 0 ('x', f32[3]): "
            "calls 'my_erfc_f32', which has no derivative in Halide's propagate_adjoints");
}

TEST(DefineGrad, IntegerAndConditionReadsGetNoGradient) {
  GraphBuilder b("ints");
  Tensor w = b.param("w", {3}, DType::f64);
  Tensor k = b.param("k", {2}, DType::i32);
  Tensor d = b.define("d", {2, 3}, [&](Var i, Var j) { return w(j) * Halide::cast<double>(k(i)); });
  b.output("loss", sum(d));
  Graph j = differentiate(b.build());
  EXPECT_TRUE(has_output(j, "grad.w"));
  EXPECT_FALSE(has_output(j, "grad.k"));
  int grads = 0;
  for (const Node& n : j.nodes) grads += n.op == "define_grad";
  EXPECT_EQ(grads, 1);
  auto out = compile(j).run({{"w", Buffer::from({1, 2, 3}, {3}, DType::f64)},
                             {"k", Buffer::from({4, -7}, {2}, DType::i32)}});
  EXPECT_EQ(out.at("grad.w").to_f64(), (std::vector<double>{-3, -3, -3}));  // sum_i k(i)

  // A float input read only in a condition has a zero gradient.
  GraphBuilder c("cond");
  Tensor x = c.param("x", {3}, DType::f64);
  Tensor v = c.param("v", {3}, DType::f64);
  Tensor s = c.define("s", {3}, [&](Var i) { return Halide::select(x(i) > 0, v(i), -v(i)); });
  c.output("loss", sum(s));
  auto got = compile(differentiate(c.build()))
                 .run({{"x", Buffer::from({-1, 0.5, 2}, {3}, DType::f64)}, {"v", Buffer::from({1, 2, 3}, {3}, DType::f64)}});
  EXPECT_EQ(got.at("grad.x").to_f64(), (std::vector<double>{0, 0, 0}));
  EXPECT_EQ(got.at("grad.v").to_f64(), (std::vector<double>{-1, 1, 1}));
}

// Two defines with different bodies over the same input get define_grad
// nodes with equal inputs and attributes: CSE must compare their bodies.
TEST(DefineGrad, CseKeepsDifferentBodiesApart) {
  GraphBuilder b("two");
  Tensor x = b.param("x", {4}, DType::f64);
  Tensor sq = b.define("sq", {4}, [&](Var i) { return x(i) * x(i); });
  Tensor cube = b.define("cube", {4}, [&](Var i) { return x(i) * x(i) * x(i); });
  b.output("loss", sum(sq) + sum(cube));
  Graph j = PassManager{autodiff(), cse(), dce()}.run(b.build());
  int grads = 0;
  for (const Node& n : j.nodes) grads += n.op == "define_grad";
  EXPECT_EQ(grads, 2) << print(j);
  const std::vector<double> xv = {-1.5, 0.25, 1, 2};
  auto got = compile(j).run({{"x", Buffer::from(xv, {4}, DType::f64)}}).at("grad.x").to_f64();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(got[i], 2 * xv[i] + 3 * xv[i] * xv[i], 1e-12) << i;
}

// An MLP whose activation is a user op (swish), and whose second layer is a
// user op with an RDom sum: differentiate() and the compiled gradients of
// every param against central finite differences of the loss, in f64.
Graph swish_mlp(int64_t n, int64_t d, int64_t h, int64_t c, DType t) {
  GraphBuilder b("swish_mlp");
  Tensor x = b.input("x", {n, d}, t);
  Tensor y = b.input("y", {n}, DType::i32);
  Tensor pre = linear(x, b.param("fc1.weight", {h, d}, t), b.param("fc1.bias", {h}, t));
  Tensor act = b.define("swish", {n, h}, [&](Var i, Var j) {
    Expr v = pre(i, j);
    return v / (1 + Halide::exp(-v));
  });
  Tensor w2 = b.param("fc2.weight", {c, h}, t);
  Tensor logits = b.define("fc2", {n, c}, [&](Var i, Var j) {
    Halide::RDom r(0, static_cast<int>(h));
    return Halide::sum(act(i, r) * w2(j, r));
  });
  b.output("logits", logits);
  b.output("loss", cross_entropy(logits, y));
  return b.build();
}

TEST(DefineGrad, MlpWithUserOpsMatchesFiniteDifferences) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  const Graph fwd = swish_mlp(5, 3, 7, 4, DType::f64);
  const Graph joint = differentiate(fwd);
  std::map<std::string, ref::RefTensor> args;
  for (const Node& n : fwd.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(static_cast<size_t>(n.type.numel()));
    for (double& e : v)
      e = n.type.dtype == DType::i32 ? std::uniform_int_distribution<int>(0, 3)(rng)
                                     : std::uniform_real_distribution<double>(-1, 1)(rng);
    args[n.name] = ref::RefTensor{n.type.shape, v, n.type.dtype};
  }
  std::map<std::string, Buffer> bufs;
  for (const auto& [name, tensor] : args) bufs[name] = ref::to_buffer(tensor);
  auto got = compile(joint).run(bufs);
  auto want = ref::evaluate(joint, args);
  // The loss as output "y", for gradcheck.
  Graph loss_only = fwd;
  loss_only.outputs = {{"y", fwd.node(fwd.outputs[1].node).id}};
  for (const char* p : {"fc1.weight", "fc1.bias", "fc2.weight"}) {
    std::vector<double> fd = gradcheck::finite_differences(loss_only, args, p, {1.0}, 1e-6);
    gradcheck::expect_close(got.at(grad_name(p)).to_f64(), fd, 1e-7, 1e-5, std::string(p) + " (compiled)");
    gradcheck::expect_close(want.at(grad_name(p)).data, fd, 1e-7, 1e-5, std::string(p) + " (reference)");
  }
}

// split_forward_backward: the backward graph's define_grad nodes read the
// define's inputs as saved tensors, and forward-then-backward gives the
// joint graph's gradients.
TEST(DefineGrad, SplitsIntoForwardAndBackward) {
  const Graph joint = differentiate(swish_mlp(6, 3, 5, 2, DType::f32));
  SplitGraphs s = split_forward_backward(joint);
  int grads = 0;
  for (const Node& n : s.backward.nodes) grads += n.op == "define_grad";
  EXPECT_EQ(grads, 3);  // swish's input and fc2's two
  std::map<std::string, Buffer> args;
  std::mt19937 rng(3);
  for (const Node& n : joint.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(static_cast<size_t>(n.type.numel()));
    for (double& e : v)
      e = n.type.dtype == DType::i32 ? std::uniform_int_distribution<int>(0, 1)(rng)
                                     : std::uniform_real_distribution<double>(-1, 1)(rng);
    args[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
  }
  auto want = compile(joint).run(args);
  auto fwd = compile(s.forward).run(args);
  std::map<std::string, Buffer> bargs;
  for (const std::string& name : s.saved) bargs[name] = fwd.at(name);
  bargs["grad.loss"] = Buffer::from({1.0}, {});
  auto got = compile(s.backward).run(bargs);
  for (const char* p : {"grad.fc1.weight", "grad.fc1.bias", "grad.fc2.weight"}) {
    std::vector<double> a = got.at(p).to_f64(), b = want.at(p).to_f64();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 + 1e-5 * std::fabs(b[i])) << p << " " << i;
  }
  EXPECT_EQ(print(parse(print(s.backward))), print(s.backward));
}

// The same MLP in f32, trained by the Trainer (AdamW) on a separable task.
TEST(DefineGrad, MlpWithUserOpsTrains) {
  constexpr int64_t n = 64, d = 4, hidden = 16;
  const Graph joint = differentiate(swish_mlp(n, d, hidden, 2, DType::f32));
  std::mt19937 rng(7);
  std::vector<double> xs, ys;
  for (int64_t i = 0; i < n; ++i) {
    const double u[d] = {1.0, -2.0, 0.5, 1.5};
    double s = 0;
    for (int64_t k = 0; k < d; ++k) {
      xs.push_back(std::uniform_real_distribution<double>(-1, 1)(rng));
      s += u[k] * xs.back();
    }
    ys.push_back(s > 0 ? 1 : 0);
  }
  std::map<std::string, Buffer> batch{{"x", Buffer::from(xs, {n, d})}, {"y", Buffer::from(ys, {n}, DType::i32)}};
  TrainerOptions o;
  o.optimizer = AdamWOptions{0.05};
  o.seed = 5;
  o.init["fc2.weight"] = Init::uniform(-0.25, 0.25);  // used by a define, so no rule from `linear` applies
  Trainer t(joint, o);
  double first = 0, last = 0;
  for (int i = 0; i < 100; ++i) {
    last = t.step(batch);
    if (i == 0) first = last;
  }
  EXPECT_LT(last, 0.25 * first) << "first loss " << first;
  auto out = t.evaluate(batch);
  const Buffer& lg = out.at("logits");
  int correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += (lg.get(2 * i + 1) > lg.get(2 * i)) == (ys[i] == 1);
  EXPECT_GE(correct, n - 2);
}

}  // namespace
}  // namespace tessera
