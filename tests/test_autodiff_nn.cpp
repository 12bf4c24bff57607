// Gradient checks of the neural-network VJP rules (src/transforms/vjp_nn.cpp)
// against central finite differences of the forward op, in float64.
//
// Each case applies one op to graph inputs with random values; the rule is
// called directly (a VjpContext built by hand, a random cotangent `ct`) and
// its gradients are run twice: through compile().run() (the Halide CPU path)
// and through the reference interpreter. Both are compared with
// (L(x + h e) - L(x - h e)) / 2h for L = sum(op(x) * ct), the forward
// evaluated by the reference interpreter (h = 1e-6). Shapes are awkward on
// purpose (size 1, odd). This file does not exercise differentiate() (that is
// tests/test_autodiff.cpp); several cases share one compiled graph to keep the
// number of JIT compiles down. Seeds come from std::random_device or
// TESSERA_TEST_SEED and are named on failure.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <sstream>

#include "gradcheck.h"
#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/tessera.h"
#include "vjp.h"
#include "test_util.h"

namespace tessera {
namespace {

struct Arg {
  Shape shape;
  DType dtype = DType::f64;
  std::vector<double> values;
  bool diff = true;  // perturbed by the finite differences (float args)
};

using Forward = std::function<Tensor(GraphBuilder&, const std::vector<Tensor>&)>;

struct Case {
  std::string label;
  std::vector<Arg> args;
  Forward f;
  std::vector<double> ct;
};

constexpr double kStep = 1e-6, kRtol = 1e-5, kAtol = 1e-6;

class GradCheck {
 public:
  GradCheck(const std::string& name, uint32_t seed) : name_(name), rng_(seed) {}

  Arg real(Shape shape, double lo = -1, double hi = 1) {
    Arg a{std::move(shape), DType::f64, {}, true};
    a.values.resize(static_cast<size_t>(numel(a.shape)));
    for (double& v : a.values) v = std::uniform_real_distribution<double>(lo, hi)(rng_);
    return a;
  }
  static Arg ints(Shape shape, DType t, std::vector<double> values) {
    return Arg{std::move(shape), t, std::move(values), false};
  }
  std::vector<double> random_ints(int64_t n, int64_t lo, int64_t hi) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = static_cast<double>(std::uniform_int_distribution<int64_t>(lo, hi)(rng_));
    return v;
  }

  // A case: `f` applies the op under test to the graph inputs made from `args`.
  void add(const std::string& label, std::vector<Arg> args, Forward f) {
    cases_.push_back(Case{label, std::move(args), std::move(f), {}});
  }

  // The compiled gradient of case `label` for arg `k` (after run()).
  const std::vector<double>& got(const std::string& label, size_t k) {
    return got_.at(label + ".g" + std::to_string(k));
  }

  void run() {
    GraphBuilder b(name_);
    std::map<std::string, Buffer> args;
    std::vector<std::pair<std::string, std::string>> checks;  // (output, case label + arg)
    for (size_t ci = 0; ci < cases_.size(); ++ci) {
      Case& c = cases_[ci];
      const std::string p = "c" + std::to_string(ci);
      std::vector<Tensor> ins;
      for (size_t k = 0; k < c.args.size(); ++k) {
        const std::string n = p + ".x" + std::to_string(k);
        ins.push_back(b.input(n, c.args[k].shape, c.args[k].dtype));
        args[n] = Buffer::from(c.args[k].values, c.args[k].shape, c.args[k].dtype);
      }
      Tensor y = c.f(b, ins);
      c.ct = real(y.shape()).values;
      Tensor ct = b.input(p + ".ct", y.shape(), DType::f64);
      args[p + ".ct"] = Buffer::from(c.ct, y.shape(), DType::f64);
      const Node fwd = y.node();  // a copy: the rule adds nodes
      const VjpRule* rule = find_vjp(fwd.op);
      ASSERT_NE(rule, nullptr) << "no VJP rule for " << fwd.op;
      std::vector<Tensor> fins;
      for (int id : fwd.inputs) fins.push_back(b.tensor(id));
      std::vector<Tensor> grads = (*rule)(VjpContext{b, fwd, fins, y, ct, std::vector<bool>(fins.size(), true)});
      ASSERT_EQ(grads.size(), fins.size()) << c.label;
      for (size_t j = 0; j < fins.size(); ++j) {
        size_t k = 0;
        while (k < ins.size() && ins[k].id() != fins[j].id()) ++k;
        ASSERT_LT(k, ins.size()) << c.label << ": the op's input " << j << " is not a case argument";
        if (!c.args[k].diff) {
          EXPECT_FALSE(grads[j].defined()) << c.label << ": integer input " << j << " got a gradient";
          continue;
        }
        ASSERT_TRUE(grads[j].defined()) << c.label << ": input " << j << " got no gradient";
        ASSERT_EQ(grads[j].type(), fins[j].type()) << c.label << ": gradient " << j << " has the wrong type";
        const std::string out = c.label + ".g" + std::to_string(k);
        b.output(out, grads[j]);
        checks.emplace_back(out, c.label);
      }
    }
    Graph g = b.build();
    std::map<std::string, Buffer> got;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      got = compile(g).run(args);
    } catch (const Error& e) {
      FAIL() << name_ << ": compile/run threw: " << e.what() << "\n" << print(g);
    }
    std::map<std::string, ref::RefTensor> want = ref::evaluate(g, ref::from_buffers(args));
    for (const auto& [out, buf] : got) got_[out] = buf.to_f64();
    const auto t1 = std::chrono::steady_clock::now();

    for (size_t ci = 0; ci < cases_.size(); ++ci) {
      const Case& c = cases_[ci];
      for (size_t k = 0; k < c.args.size(); ++k) {
        if (!c.args[k].diff) continue;
        const std::string out = c.label + ".g" + std::to_string(k);
        std::vector<double> fd = finite_differences(c, k);
        compare(got_.at(out), fd, out + " (compiled)");
        compare(want.at(out).data, fd, out + " (reference)");
      }
    }
    if (std::getenv("TESSERA_TEST_VERBOSE"))
      std::cout << "  " << name_ << ": compile+run+reference " << std::chrono::duration<double>(t1 - t0).count()
                << " s, finite differences "
                << std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count() << " s\n";
  }

 private:
  // d L / d args[k] by central differences, L = sum(f(args) * ct), evaluated by the reference.
  std::vector<double> finite_differences(const Case& c, size_t k) {
    GraphBuilder fb(name_ + "_fwd");
    std::vector<Tensor> ins;
    std::map<std::string, ref::RefTensor> args;
    for (size_t i = 0; i < c.args.size(); ++i) {
      const std::string n = "x" + std::to_string(i);
      ins.push_back(fb.input(n, c.args[i].shape, c.args[i].dtype));
      args[n] = ref::RefTensor{c.args[i].shape, c.args[i].values, c.args[i].dtype};
    }
    fb.output("y", c.f(fb, ins));
    return gradcheck::finite_differences(fb.build(), args, "x" + std::to_string(k), c.ct, kStep);
  }

  static void compare(const std::vector<double>& got, const std::vector<double>& fd, const std::string& what) {
    gradcheck::expect_close(got, fd, kAtol, kRtol, what);
  }

  std::string name_;
  std::mt19937 rng_;
  std::vector<Case> cases_;
  std::map<std::string, std::vector<double>> got_;
};

TEST(GradNN, Softmax) {
  SEEDED(seed);
  GradCheck gc("softmax", seed);
  struct S {
    Shape shape;
    int64_t axis;
  };
  for (const S& c : {S{{1}, -1}, S{{3, 5}, -1}, S{{2, 3, 1}, 0}}) {
    const int64_t axis = c.axis;
    const std::string l = to_string(c.shape) + " axis " + std::to_string(axis);
    gc.add("softmax " + l, {gc.real(c.shape, -3, 3)},
           [axis](GraphBuilder&, const std::vector<Tensor>& x) { return softmax(x[0], axis); });
    gc.add("log_softmax " + l, {gc.real(c.shape, -3, 3)},
           [axis](GraphBuilder&, const std::vector<Tensor>& x) { return log_softmax(x[0], axis); });
  }
  gc.run();
}

TEST(GradNN, Norms) {
  SEEDED(seed);
  GradCheck gc("norms", seed);
  // Plain forms at [1] and [3, 7], affine forms at [3, 7] and [2, 1, 3].
  for (Shape s : {Shape{1}, Shape{3, 7}, Shape{2, 1, 3}}) {
    const Shape w{s.back()};
    const std::string l = to_string(s);
    if (s.size() <= 2) {
      gc.add("layer_norm " + l, {gc.real(s)},
             [](GraphBuilder&, const std::vector<Tensor>& x) { return layer_norm(x[0], 1e-5); });
      gc.add("rms_norm " + l, {gc.real(s)},
             [](GraphBuilder&, const std::vector<Tensor>& x) { return rms_norm(x[0], 1e-5); });
    }
    if (s.size() >= 2) {
      gc.add("layer_norm affine " + l, {gc.real(s), gc.real(w), gc.real(w)},
             [](GraphBuilder&, const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-3); });
      gc.add("rms_norm weight " + l, {gc.real(s), gc.real(w)},
             [](GraphBuilder&, const std::vector<Tensor>& x) { return rms_norm(x[0], x[1], 1e-2); });
    }
  }
  gc.run();
}

TEST(GradNN, CrossEntropy) {
  SEEDED(seed);
  GradCheck gc("cross_entropy", seed);
  // The node as cross_entropy() builds it reads the row log-sum-exp as a
  // third input; here that input is a free argument of its own, so its
  // gradient is checked too (logsumexp's rule is checked below).
  auto ce = [](int64_t ignore) {
    return [ignore](GraphBuilder& b, const std::vector<Tensor>& x) {
      return b.add("cross_entropy", {x[0], x[1], x[2]}, {{"ignore_index", ignore}});
    };
  };
  // Some ignored rows, one out-of-range target (reads the clamped class).
  gc.add("ce ignored rows",
         {gc.real({5, 7}, -3, 3), GradCheck::ints({5}, DType::i64, {2, -100, 6, 9, -100}), gc.real({5}, 1, 3)},
         ce(-100));
  gc.add("ce [1, 1]", {gc.real({1, 1}), GradCheck::ints({1}, DType::i32, {0}), gc.real({1})}, ce(-100));
  gc.add("ce ignore 3",
         {gc.real({9, 4}, -2, 2), GradCheck::ints({9}, DType::i32, gc.random_ints(9, 0, 3)), gc.real({9})}, ce(3));
  // Every row ignored: the loss is 0 and the gradient is 0.
  gc.add("ce all ignored", {gc.real({3, 2}), GradCheck::ints({3}, DType::i64, {-1, -1, -1}), gc.real({3})}, ce(-1));
  // The node without its lse input: the rule reduces the rows itself.
  gc.add("ce without lse", {gc.real({6, 9}, -3, 3), GradCheck::ints({6}, DType::i64, {1, 8, -100, 0, 4, 4})},
         [](GraphBuilder& b, const std::vector<Tensor>& x) {
           return b.add("cross_entropy", {x[0], x[1]}, {{"ignore_index", int64_t{-100}}});
         });
  gc.run();
}

TEST(GradNN, Logsumexp) {
  SEEDED(seed);
  GradCheck gc("logsumexp", seed);
  for (Shape s : {Shape{1}, Shape{7}, Shape{3, 5}, Shape{2, 1, 4}})
    gc.add("logsumexp " + to_string(s), {gc.real(s, -4, 4)},
           [](GraphBuilder&, const std::vector<Tensor>& x) { return logsumexp(x[0]); });
  gc.run();
}

TEST(GradNN, Embedding) {
  SEEDED(seed);
  GradCheck gc("embedding", seed);
  auto emb = [](GraphBuilder&, const std::vector<Tensor>& x) { return embedding(x[0], x[1]); };
  // Repeated rows accumulate; out-of-range indices hit the clamped row.
  gc.add("emb [7]", {GradCheck::ints({7}, DType::i32, {0, 3, 3, -2, 9, 4, 3}), gc.real({5, 3})}, emb);
  gc.add("emb [2, 3]", {GradCheck::ints({2, 3}, DType::i64, gc.random_ints(6, 0, 6)), gc.real({7, 5})}, emb);
  gc.add("emb []", {GradCheck::ints({}, DType::i64, {1}), gc.real({2, 1})}, emb);
  gc.add("emb V = 1", {GradCheck::ints({3}, DType::u8, {0, 0, 5}), gc.real({1, 4})}, emb);
  gc.run();
}

TEST(GradNN, DropoutRegeneratesTheMask) {
  SEEDED(seed);
  GradCheck gc("dropout", seed);
  const uint64_t s64 = (uint64_t{seed} << 32) | 0x9e37u;
  gc.add("dropout [13, 7]", {gc.real({13, 7})},
         [s64](GraphBuilder&, const std::vector<Tensor>& x) { return dropout(x[0], 0.4, s64, 17); });
  gc.add("dropout [1]", {gc.real({1})},
         [s64](GraphBuilder&, const std::vector<Tensor>& x) { return dropout(x[0], 0.5, s64, 3); });
  gc.add("dropout p 0", {gc.real({5})},
         [s64](GraphBuilder&, const std::vector<Tensor>& x) { return dropout(x[0], 0.0, s64); });
  gc.run();
  // The gradient is ct * mask / (1 - p): the forward of a tensor of ones,
  // times the cotangent. Recomputed here from the forward alone.
  GraphBuilder b("dropout_mask");
  Tensor ones = b.input("ones", {13, 7}, DType::f64);
  Tensor ct = b.input("ct", {13, 7}, DType::f64);
  b.output("mask", dropout(ones, 0.4, s64, 17));
  Tensor y = dropout(ones, 0.4, s64, 17);
  const Node fwd = y.node();
  std::vector<Tensor> g = (*find_vjp("dropout"))(VjpContext{b, fwd, {ones}, y, ct, {true}});
  b.output("grad", g[0]);
  std::mt19937 rng(seed);
  std::vector<double> ctv(91);
  for (double& v : ctv) v = std::uniform_real_distribution<double>(-1, 1)(rng);
  auto out = compile(b.build()).run({{"ones", Buffer::from(std::vector<double>(91, 1.0), {13, 7}, DType::f64)},
                                     {"ct", Buffer::from(ctv, {13, 7}, DType::f64)}});
  std::vector<double> mask = out.at("mask").to_f64(), grad = out.at("grad").to_f64();
  int kept = 0;
  for (size_t e = 0; e < 91; ++e) {
    EXPECT_TRUE(mask[e] == 0.0 || mask[e] == 1.0 / 0.6) << e;
    EXPECT_EQ(grad[e], ctv[e] * mask[e]) << e;
    kept += mask[e] != 0.0;
  }
  EXPECT_GT(kept, 20);
  EXPECT_LT(kept, 85);
}

TEST(GradNN, Attention) {
  SEEDED(seed);
  GradCheck gc("attention", seed);
  struct A {
    Shape qk;
    int64_t dv;
    bool causal;
    double scale;
  };
  for (const A& a : {A{{1, 1}, 1, true, 0.0}, A{{2, 5, 3}, 2, true, 1.3}, A{{4, 3}, 3, false, 0.0}}) {
    Shape vs = a.qk;
    vs.back() = a.dv;
    const bool causal = a.causal;
    const double scale = a.scale;
    gc.add("attention " + to_string(a.qk) + (causal ? " causal" : "") + " scale " + std::to_string(scale),
           {gc.real(a.qk, -2, 2), gc.real(a.qk, -2, 2), gc.real(vs)},
           [causal, scale](GraphBuilder&, const std::vector<Tensor>& x) {
             return attention(x[0], x[1], x[2], causal, scale);
           });
  }
  gc.run();
}

// The rules together through differentiate(): a tiny transformer-like block
// whose params feed several nn ops (wte is used twice, so its gradient
// accumulates an embedding_grad and a matmul gradient).
TEST(GradNN, ThroughDifferentiate) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  auto randoms = [&](int64_t n) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = std::uniform_real_distribution<double>(-1, 1)(rng);
    return v;
  };
  const uint64_t s64 = (uint64_t{seed} << 32) | 77u;
  auto forward = [&](GraphBuilder& b) {
    Tensor ids = b.input("ids", {5}, DType::i64);
    Tensor targets = b.input("targets", {5}, DType::i64);
    Tensor wte = b.param("wte", {6, 4}, DType::f64);
    Tensor h = embedding(ids, wte);
    h = layer_norm(h, b.param("ln.weight", {4}, DType::f64), b.param("ln.bias", {4}, DType::f64), 1e-5);
    Tensor h3 = reshape(h, {1, 5, 4});
    Tensor a = reshape(attention(h3, h3, h3, true, 0.0), {5, 4});
    a = rms_norm(dropout(a, 0.25, s64, 5) + h, b.param("rms.weight", {4}, DType::f64), 1e-5);
    Tensor logits = log_softmax(matmul(a, transpose(wte, 0, 1)), -1);
    b.output("loss", cross_entropy(softmax(logits, 0) + logits, targets, 2));
  };
  std::map<std::string, ref::RefTensor> args = {
      {"ids", {{5}, {0, 3, 3, 5, 1}, DType::i64}}, {"targets", {{5}, {1, 2, 0, 5, 4}, DType::i64}},
      {"wte", {{6, 4}, randoms(24), DType::f64}},  {"ln.weight", {{4}, randoms(4), DType::f64}},
      {"ln.bias", {{4}, randoms(4), DType::f64}},  {"rms.weight", {{4}, randoms(4), DType::f64}}};
  GraphBuilder fb("block");
  forward(fb);
  Graph fwd = fb.build();
  Graph joint = differentiate(fwd);
  std::map<std::string, Buffer> bufs;
  for (const auto& [name, t] : args) bufs[name] = ref::to_buffer(t);
  std::map<std::string, Buffer> got = compile(joint).run(bufs);
  for (const char* p : {"wte", "ln.weight", "ln.bias", "rms.weight"}) {
    std::vector<double> g = got.at(grad_name(p)).to_f64();
    std::vector<double>& x = args.at(p).data;
    for (size_t e = 0; e < x.size(); ++e) {
      const double x0 = x[e];
      x[e] = x0 + kStep;
      const double lp = ref::evaluate(fwd, args).at("loss").data[0];
      x[e] = x0 - kStep;
      const double lm = ref::evaluate(fwd, args).at("loss").data[0];
      x[e] = x0;
      const double fd = (lp - lm) / (2 * kStep);
      EXPECT_NEAR(g[e], fd, kAtol + kRtol * std::fabs(fd)) << "grad." << p << "[" << e << "]";
    }
  }
}

// User ops (`define`): their gradients come from Halide's propagate_adjoints
// through define_grad nodes. Bodies of every kind a definition may have, at
// awkward shapes; values are kept away from kinks and ties.
TEST(GradNN, Define) {
  SEEDED(seed);
  GradCheck gc("define", seed);
  using Halide::Expr;
  using Halide::RDom;
  using Halide::Var;
  using F = std::function<Expr(const Expr&)>;
  const F exp_ = [](const Expr& v) { return Halide::exp(v); };
  // Pointwise: swish, at [1] and [3, 5].
  for (Shape s : {Shape{1}, Shape{3, 5}}) {
    const std::string l = to_string(s);
    gc.add("swish " + l, {gc.real(s, -3, 3)}, [s, exp_](GraphBuilder& b, const std::vector<Tensor>& x) {
      if (s.size() == 1) return b.define("swish1", s, [&](Var i) { Expr v = x[0](i); return v / (1 + exp_(-v)); });
      return b.define("swish2", s, [&](Var i, Var j) { Expr v = x[0](i, j); return v / (1 + exp_(-v)); });
    });
  }
  // Two tensors read with broadcasting by index, and a third elementwise.
  gc.add("outer", {gc.real({4, 1}), gc.real({5}), gc.real({4, 5})},
         [](GraphBuilder& b, const std::vector<Tensor>& x) {
           return b.define("outer", {4, 5}, [&](Var i, Var j) { return x[0](i, 0) * x[1](j) + x[2](i, j); });
         });
  // Sums over an RDom: a matmul (also at 1 x 1), a row sum, a 2-D RDom to a scalar.
  gc.add("matmul", {gc.real({3, 4}), gc.real({4, 5})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("mm", {3, 5}, [&](Var i, Var j) {
      RDom r(0, 4);
      return Halide::sum(x[0](i, r) * x[1](r, j));
    });
  });
  gc.add("matmul 1x1", {gc.real({1, 1}), gc.real({1, 1})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("mm1", {1, 1}, [&](Var i, Var j) {
      RDom r(0, 1);
      return Halide::sum(x[0](i, r) * x[1](r, j));
    });
  });
  gc.add("exp of a row sum", {gc.real({3, 7})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("rowsum", {3}, [&](Var i) {
      RDom r(0, 7);
      return Halide::exp(Halide::sum(x[0](i, r) * x[0](i, r)) * Expr(0.25));
    });
  });
  gc.add("scalar from a 2-D RDom", {gc.real({3, 4})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("total", {}, [&]() {
      RDom r(0, 4, 0, 3);
      return Halide::sum(x[0](r.y, r.x) * Halide::cast<double>(r.x + 1));
    });
  });
  // A diagonal walked by an RDom (a trace) and an index Halide cannot invert.
  gc.add("trace", {gc.real({4, 4})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("trace", {1}, [&](Var) {
      RDom r(0, 4);
      return Halide::sum(x[0](r, r));
    });
  });
  gc.add("x(i % 3, i)", {gc.real({3, 7})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("folded", {7}, [&](Var i) { return x[0](i % 3, i) * x[0](2 - i % 3, i); });
  });
  // The same tensor read twice at different indices: a transpose on a
  // square and a roll with Halide's Euclidean %.
  gc.add("x(i, j) * x(j, i)", {gc.real({3, 3})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("sym", {3, 3}, [&](Var i, Var j) { return x[0](i, j) * x[0](j, i); });
  });
  gc.add("roll", {gc.real({2, 5})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("roll", {2, 5}, [&](Var i, Var j) { return x[0](i, j) * x[0](i, (Expr(j) + 2) % 5); });
  });
  // Maximum over an RDom (the gradient goes to the argmax), alone and in a
  // numerically safe softmax; a minimum over a 2-D RDom.
  gc.add("row max", {gc.real({4, 6}, -3, 3)}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("rowmax", {4}, [&](Var i) { return Halide::maximum(x[0](i, RDom(0, 6))); });
  });
  gc.add("softmax", {gc.real({3, 5}, -3, 3)}, [exp_](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("softmax", {3, 5}, [&](Var i, Var j) {
      Expr m = Halide::maximum(x[0](i, RDom(0, 5)));
      RDom r(0, 5);
      return exp_(x[0](i, j) - m) / Halide::sum(exp_(x[0](i, r) - m));
    });
  });
  gc.add("min over 2-D RDom", {gc.real({2, 3, 4})}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("min2d", {2}, [&](Var i) {
      RDom r(0, 4, 0, 3);
      return Halide::minimum(x[0](i, r.y, r.x) + Expr(0.5));
    });
  });
  // Select, binary min/max, abs, pow, tanh, a float %.
  gc.add("mixed", {gc.real({2, 3}, 0.2, 1.5), gc.real({3}, -1, 1)}, [](GraphBuilder& b, const std::vector<Tensor>& x) {
    return b.define("mixed", {2, 3}, [&](Var i, Var j) {
      Expr v = x[0](i, j), w = x[1](j);
      Expr leaky = Halide::select(w > 0, w, w * Expr(0.1));
      return leaky + Halide::min(v, w) * Halide::tanh(w) + Halide::max(v * w, Expr(0.05)) +
             Halide::pow(Halide::abs(w) + Expr(0.5), v) + v % Expr(0.7);
    });
  });
  // An integer input: read as an index (it gets no gradient) into a table
  // whose gradient scatters; repeated and clamped rows accumulate.
  gc.add("gather", {GradCheck::ints({5}, DType::i32, {0, 3, 3, 7, -1}), gc.real({4, 3}), gc.real({3})},
         [](GraphBuilder& b, const std::vector<Tensor>& x) {
           return b.define("gather", {5, 3}, [&](Var i, Var j) {
             return x[1](Halide::clamp(x[0](i), 0, 3), j) * x[2](j);
           });
         });
  gc.run();
}

TEST(GradNNCoverage, EveryNNOpHasARule) {
  for (const char* op : {"embedding", "softmax", "log_softmax", "logsumexp", "layer_norm", "rms_norm", "cross_entropy",
                         "dropout", "attention", "define"})
    EXPECT_NE(find_vjp(op), nullptr) << op;
}

}  // namespace
}  // namespace tessera
