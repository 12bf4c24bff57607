// Tests of reverse-mode autodiff (include/tessera/autodiff.h) and of the VJP
// rules of the elementwise, reduction, shape and linalg ops.
//
// Gradient checks: each case applies one op to f64 params of awkward shapes
// (size 1, odd, broadcasting), with loss = sum(op(x) * r) for a fixed random
// input r; all cases of an op share one graph, differentiated by
// differentiate() and run through compile().run() and the reference
// interpreter; each grad.<param> is compared with central finite differences
// (L(x + h e) - L(x - h e)) / 2h of the case's own forward graph, evaluated by
// the reference interpreter. The table is data-driven and a coverage test
// fails when an op of differentiable_ops() has no case here (the nn ops are
// checked in tests/test_autodiff_nn.cpp, a separate executable: see
// kNNOps). Also: tensors used several times, frozen and integer params,
// errors, and split_forward_backward on a small MLP (printed text asserted,
// and forward-then-backward equal to the joint graph). Seeds come from
// std::random_device or TESSERA_TEST_SEED and are named on failure.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "gradcheck.h"
#include "reference/reference.h"
#include "tessera/autodiff.h"
#include "tessera/tessera.h"
#include "vjp.h"
#include "test_util.h"

namespace tessera {
namespace {

// ---- gradient checks ------------------------------------------------------------

struct Arg {
  Shape shape;
  std::vector<double> values;
  DType dtype = DType::f64;
  bool param = true;  // a param (differentiated) or an input
};

using Forward = std::function<Tensor(const std::vector<Tensor>&)>;

struct Case {
  std::string label;
  std::vector<Arg> args;
  Forward f;
  double step = 1e-6, rtol = 1e-5, atol = 1e-7;
  std::vector<double> r;  // the loss weights
};

class GradCheck {
 public:
  GradCheck(std::string name, uint32_t seed) : name_(std::move(name)), rng_(seed) {}

  Arg real(Shape shape, double lo = -1, double hi = 1) {
    Arg a{std::move(shape), {}};
    a.values.resize(static_cast<size_t>(numel(a.shape)));
    for (double& v : a.values) v = std::uniform_real_distribution<double>(lo, hi)(rng_);
    return a;
  }
  // +-[lo, hi]: away from a kink at 0.
  Arg away(Shape shape, double lo, double hi) {
    Arg a = real(std::move(shape), lo, hi);
    for (double& v : a.values)
      if (std::bernoulli_distribution(0.5)(rng_)) v = -v;
    return a;
  }
  static Arg input(Arg a) {
    a.param = false;
    return a;
  }
  Arg coin(Shape shape) {
    Arg a{std::move(shape), {}, DType::boolean, false};
    a.values.resize(static_cast<size_t>(numel(a.shape)));
    for (double& v : a.values) v = std::bernoulli_distribution(0.5)(rng_) ? 1 : 0;
    return a;
  }

  Case& add(std::string label, std::vector<Arg> args, Forward f) {
    Case c;
    c.label = std::move(label);
    c.args = std::move(args);
    c.f = std::move(f);
    cases_.push_back(std::move(c));
    return cases_.back();
  }

  void run() {
    GraphBuilder b(name_);
    std::map<std::string, Buffer> args;
    Tensor total;
    for (size_t ci = 0; ci < cases_.size(); ++ci) {
      Case& c = cases_[ci];
      std::vector<Tensor> ins;
      for (size_t k = 0; k < c.args.size(); ++k) {
        const Arg& a = c.args[k];
        const std::string n = arg_name(ci, k);
        ins.push_back(a.param ? b.param(n, a.shape, a.dtype) : b.input(n, a.shape, a.dtype));
        args[n] = Buffer::from(a.values, a.shape, a.dtype);
      }
      Tensor y = c.f(ins);
      ASSERT_EQ(y.dtype(), DType::f64) << c.label;
      c.r = real(y.shape()).values;
      const std::string rn = "c" + std::to_string(ci) + ".r";
      args[rn] = Buffer::from(c.r, y.shape(), DType::f64);
      Tensor l = sum(y * b.input(rn, y.shape(), DType::f64));
      total = total.defined() ? total + l : l;
    }
    b.output("loss", total);
    Graph joint;
    try {
      joint = differentiate(b.build());
    } catch (const Error& e) {
      FAIL() << name_ << ": differentiate threw: " << e.what() << "\n" << print(b.graph());
    }
    std::map<std::string, Buffer> got;
    try {
      got = compile(joint).run(args);
    } catch (const Error& e) {
      FAIL() << name_ << ": compile/run threw: " << e.what() << "\n" << print(joint);
    }
    std::map<std::string, ref::RefTensor> want = ref::evaluate(joint, ref::from_buffers(args));
    const int failures = ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
    for (size_t ci = 0; ci < cases_.size(); ++ci) {
      const Case& c = cases_[ci];
      for (size_t k = 0; k < c.args.size(); ++k) {
        if (!c.args[k].param) continue;
        const std::string out = grad_name(arg_name(ci, k));
        ASSERT_TRUE(got.count(out)) << "no output " << out;
        std::vector<double> fd = finite_differences(c, k);
        const std::string what = c.label + ": " + out;
        compare(got.at(out).to_f64(), fd, c, what + " (compiled)");
        compare(want.at(out).data, fd, c, what + " (reference)");
      }
    }
    if (::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count() != failures)
      std::cout << "  joint graph of the failures above:\n" << print(joint);
  }

 private:
  static std::string arg_name(size_t ci, size_t k) { return "c" + std::to_string(ci) + ".x" + std::to_string(k); }

  // d L / d args[k] for L = sum(f(args) * r), by the reference interpreter.
  std::vector<double> finite_differences(const Case& c, size_t k) {
    GraphBuilder fb(name_ + "_fd");
    std::vector<Tensor> ins;
    std::map<std::string, ref::RefTensor> args;
    for (size_t i = 0; i < c.args.size(); ++i) {
      const std::string n = "x" + std::to_string(i);
      ins.push_back(fb.input(n, c.args[i].shape, c.args[i].dtype));
      args[n] = ref::RefTensor{c.args[i].shape, c.args[i].values, c.args[i].dtype};
    }
    fb.output("y", c.f(ins));
    return gradcheck::finite_differences(fb.build(), args, "x" + std::to_string(k), c.r, c.step);
  }

  static void compare(const std::vector<double>& got, const std::vector<double>& fd, const Case& c,
                      const std::string& what) {
    gradcheck::expect_close(got, fd, c.atol, c.rtol, what);
  }

  std::string name_;
  std::mt19937 rng_;
  std::vector<Case> cases_;
};

using CaseFn = std::function<void(GradCheck&)>;

const std::vector<Shape>& unary_shapes() {
  static const std::vector<Shape> s = {{}, {1}, {7}, {3, 5}};
  return s;
}
const std::vector<std::pair<Shape, Shape>>& binary_shapes() {
  static const std::vector<std::pair<Shape, Shape>> s = {
      {{}, {}}, {{1}, {7}}, {{3, 5}, {5}}, {{3, 1}, {1, 4}}, {{2, 1, 3}, {4, 1}}, {{}, {2, 3}}};
  return s;
}

std::string str(const Shape& s) { return to_string(s); }

// `op` on every unary shape; `make` draws the values.
CaseFn unary_cases(std::function<Tensor(Tensor)> op, std::function<Arg(GradCheck&, Shape)> make = {}) {
  return [=](GradCheck& gc) {
    for (const Shape& s : unary_shapes())
      gc.add(str(s), {make ? make(gc, s) : gc.real(s)}, [op](const std::vector<Tensor>& x) { return op(x[0]); });
  };
}
CaseFn binary_cases(std::function<Tensor(Tensor, Tensor)> op, double alo = -1, double ahi = 1, bool b_away = false,
                    double blo = -1, double bhi = 1) {
  return [=](GradCheck& gc) {
    for (const auto& [sa, sb] : binary_shapes()) {
      Arg a = gc.real(sa, alo, ahi);
      Arg b = b_away ? gc.away(sb, blo, bhi) : gc.real(sb, blo, bhi);
      gc.add(str(sa) + " with " + str(sb), {a, b}, [op](const std::vector<Tensor>& x) { return op(x[0], x[1]); });
    }
  };
}

struct RedCase {
  Shape shape;
  std::vector<int64_t> axes;
  bool keepdim;
};
CaseFn reduction_cases(std::function<Tensor(Tensor, std::vector<int64_t>, bool)> op) {
  return [=](GradCheck& gc) {
    const std::vector<RedCase> rc = {{{}, {}, false},      {{7}, {}, false},         {{7}, {0}, true},
                                     {{3, 5}, {-1}, false}, {{3, 5}, {0}, true},      {{2, 3, 4}, {0, 2}, false},
                                     {{2, 1, 3}, {1}, false}, {{2, 3, 4}, {}, true}};
    for (const RedCase& r : rc) {
      std::ostringstream l;
      l << str(r.shape) << " axes " << str(r.axes) << (r.keepdim ? " keepdim" : "");
      gc.add(l.str(), {gc.real(r.shape)}, [=](const std::vector<Tensor>& x) { return op(x[0], r.axes, r.keepdim); });
    }
  };
}

const std::map<std::string, CaseFn>& cases() {
  static const std::map<std::string, CaseFn> table = [] {
    std::map<std::string, CaseFn> m;
    auto positive = [](GradCheck& gc, Shape s) { return gc.real(std::move(s), 0.2, 3); };
    auto off_zero = [](GradCheck& gc, Shape s) { return gc.away(std::move(s), 0.05, 2); };
    auto wide = [](GradCheck& gc, Shape s) { return gc.real(std::move(s), -3, 3); };
    m["neg"] = unary_cases([](Tensor x) { return neg(x); });
    m["abs"] = unary_cases([](Tensor x) { return abs(x); }, off_zero);
    m["exp"] = unary_cases([](Tensor x) { return exp(x); }, wide);
    m["log"] = unary_cases([](Tensor x) { return log(x); }, positive);
    m["sqrt"] = unary_cases([](Tensor x) { return sqrt(x); }, positive);
    m["rsqrt"] = unary_cases([](Tensor x) { return rsqrt(x); }, positive);
    m["tanh"] = unary_cases([](Tensor x) { return tanh(x); }, wide);
    m["sigmoid"] = unary_cases([](Tensor x) { return sigmoid(x); }, wide);
    m["relu"] = unary_cases([](Tensor x) { return relu(x); }, off_zero);
    m["silu"] = unary_cases([](Tensor x) { return silu(x); }, wide);
    m["gelu"] = [wide](GradCheck& gc) {
      unary_cases([](Tensor x) { return gelu(x); }, wide)(gc);
      unary_cases([](Tensor x) { return gelu(x, "tanh"); }, wide)(gc);
    };
    m["cast"] = [](GradCheck& gc) {
      gc.add("f64 -> f64", {gc.real({3, 2})}, [](const std::vector<Tensor>& x) { return cast(x[0], DType::f64); });
      // Through f32: the rounding needs a larger step (the function is linear).
      Case& c = gc.add("f64 -> f32 -> f64", {gc.real({7})}, [](const std::vector<Tensor>& x) {
        return cast(cast(x[0], DType::f32), DType::f64);
      });
      c.step = 1e-2;
      c.rtol = 1e-4;
    };
    m["add"] = binary_cases([](Tensor a, Tensor b) { return add(a, b); });
    m["sub"] = binary_cases([](Tensor a, Tensor b) { return sub(a, b); });
    m["mul"] = binary_cases([](Tensor a, Tensor b) { return mul(a, b); });
    m["div"] = binary_cases([](Tensor a, Tensor b) { return div(a, b); }, -1, 1, true, 0.5, 2);
    m["pow"] = binary_cases([](Tensor a, Tensor b) { return pow(a, b); }, 0.3, 2, false, -2, 2);
    m["maximum"] = binary_cases([](Tensor a, Tensor b) { return maximum(a, b); });
    m["minimum"] = binary_cases([](Tensor a, Tensor b) { return minimum(a, b); });
    m["where"] = [](GradCheck& gc) {
      auto w = [](const std::vector<Tensor>& x) { return where(x[0], x[1], x[2]); };
      gc.add("[3, 4] ? [3, 1] : [1, 4]", {gc.coin({3, 4}), gc.real({3, 1}), gc.real({1, 4})}, w);
      gc.add("[4] ? [3, 4] : []", {gc.coin({4}), gc.real({3, 4}), gc.real({})}, w);
      gc.add("[] ? [2] : [2]", {gc.coin({}), gc.real({2}), gc.real({2})}, w);
    };
    m["sum"] = reduction_cases([](Tensor x, std::vector<int64_t> a, bool k) { return sum(x, a, k); });
    m["mean"] = reduction_cases([](Tensor x, std::vector<int64_t> a, bool k) { return mean(x, a, k); });
    m["max"] = reduction_cases([](Tensor x, std::vector<int64_t> a, bool k) { return max(x, a, k); });
    m["reshape"] = [](GradCheck& gc) {
      const std::vector<std::pair<Shape, Shape>> rs = {{{3, 4}, {2, 6}}, {{1}, {}}, {{}, {1, 1}}, {{2, 3, 4}, {4, -1}}};
      for (const auto& [from, to] : rs)
        gc.add(str(from) + " -> " + str(to), {gc.real(from)},
               [to = to](const std::vector<Tensor>& x) { return reshape(x[0], to); });
    };
    m["permute"] = [](GradCheck& gc) {
      gc.add("[2, 3, 4] (2, 0, 1)", {gc.real({2, 3, 4})},
             [](const std::vector<Tensor>& x) { return permute(x[0], {2, 0, 1}); });
      gc.add("[3, 5] transpose", {gc.real({3, 5})}, [](const std::vector<Tensor>& x) { return transpose(x[0], 0, 1); });
      gc.add("[1, 3, 2] (0, 2, 1)", {gc.real({1, 3, 2})},
             [](const std::vector<Tensor>& x) { return permute(x[0], {0, 2, 1}); });
    };
    m["broadcast_to"] = [](GradCheck& gc) {
      const std::vector<std::pair<Shape, Shape>> bs = {{{3, 1}, {2, 3, 5}}, {{}, {4}}, {{1}, {3}}, {{2}, {2}}};
      for (const auto& [from, to] : bs)
        gc.add(str(from) + " -> " + str(to), {gc.real(from)},
               [to = to](const std::vector<Tensor>& x) { return broadcast_to(x[0], to); });
    };
    m["slice"] = [](GradCheck& gc) {
      struct S {
        Shape shape;
        int64_t axis, start, end, step;
      };
      const std::vector<S> ss = {{{7}, 0, 1, 6, 1},     {{7}, 0, 0, 7, 2},      {{3, 8}, 1, -5, -1, 3},
                                 {{9, 2}, 0, 1, 100, 4}, {{1}, 0, 0, 1, 1},     {{5}, 0, 4, 5, 1},
                                 {{5}, -1, 1, 3, 3},     {{2, 6, 1}, 1, -100, 4, 2}};
      for (const S& s : ss) {
        std::ostringstream l;
        l << str(s.shape) << " axis " << s.axis << " [" << s.start << ":" << s.end << ":" << s.step << "]";
        gc.add(l.str(), {gc.real(s.shape)},
               [s](const std::vector<Tensor>& x) { return slice(x[0], s.axis, s.start, s.end, s.step); });
      }
    };
    m["concat"] = [](GradCheck& gc) {
      gc.add("[2, 3] [2, 1] [2, 4] axis -1", {gc.real({2, 3}), gc.real({2, 1}), gc.real({2, 4})},
             [](const std::vector<Tensor>& x) { return concat({x[0], x[1], x[2]}, -1); });
      gc.add("[1] [5] axis 0, one an input", {gc.real({1}), GradCheck::input(gc.real({5}))},
             [](const std::vector<Tensor>& x) { return concat({x[0], x[1]}, 0); });
      gc.add("[3, 2] alone", {gc.real({3, 2})}, [](const std::vector<Tensor>& x) { return concat({x[0]}, 1); });
    };
    m["squeeze"] = [](GradCheck& gc) {
      gc.add("[3, 1, 4, 1] axes [1]", {gc.real({3, 1, 4, 1})},
             [](const std::vector<Tensor>& x) { return squeeze(x[0], {1}); });
      gc.add("[3, 1, 4, 1] all", {gc.real({3, 1, 4, 1})}, [](const std::vector<Tensor>& x) { return squeeze(x[0], {}); });
      gc.add("[1] all", {gc.real({1})}, [](const std::vector<Tensor>& x) { return squeeze(x[0], {}); });
    };
    m["unsqueeze"] = [](GradCheck& gc) {
      gc.add("[3] axis 0", {gc.real({3})}, [](const std::vector<Tensor>& x) { return unsqueeze(x[0], 0); });
      gc.add("[3, 2] axis -1", {gc.real({3, 2})}, [](const std::vector<Tensor>& x) { return unsqueeze(x[0], -1); });
      gc.add("[] axis 0", {gc.real({})}, [](const std::vector<Tensor>& x) { return unsqueeze(x[0], 0); });
    };
    m["matmul"] = [](GradCheck& gc) {
      const std::vector<std::pair<Shape, Shape>> ms = {{{3, 4}, {4, 5}},       {{2, 3, 4}, {4, 5}},
                                                       {{3, 4}, {2, 4, 5}},    {{2, 1, 3, 4}, {3, 4, 2}},
                                                       {{1, 1}, {1, 1}},       {{1, 3}, {3, 1}}};
      for (const auto& [a, b] : ms)
        gc.add(str(a) + " x " + str(b), {gc.real(a), gc.real(b)},
               [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); });
    };
    m["linear"] = [](GradCheck& gc) {
      gc.add("x [3, 4], w [5, 4]", {gc.real({3, 4}), gc.real({5, 4})},
             [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); });
      gc.add("x [2, 3, 4], w [5, 4], b [5]", {gc.real({2, 3, 4}), gc.real({5, 4}), gc.real({5})},
             [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); });
      gc.add("x [4], w [1, 4], b [1]", {gc.real({4}), gc.real({1, 4}), gc.real({1})},
             [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); });
      gc.add("x [1, 1] input, w [3, 1]", {GradCheck::input(gc.real({1, 1})), gc.real({3, 1})},
             [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); });
    };
    return m;
  }();
  return table;
}

// The ops whose gradient checks live in tests/test_autodiff_nn.cpp (its own
// executable, which also checks that each has a rule).
const std::set<std::string> kNNOps = {"embedding",     "softmax", "log_softmax", "logsumexp", "layer_norm",
                                      "rms_norm",      "dropout", "attention",   "define",    "cross_entropy"};

class GradOp : public ::testing::TestWithParam<std::string> {};

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : cases()) names.push_back(name);
  return names;
}

TEST_P(GradOp, MatchesFiniteDifferences) {
  SEEDED(seed);
  GradCheck gc("grad_" + GetParam(), seed);
  cases().at(GetParam())(gc);
  gc.run();
}

INSTANTIATE_TEST_SUITE_P(Ops, GradOp, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// The quantized linears: their gradient checks (with respect to x; the
// packed weights are frozen) live in tests/test_quantize.cpp.
const std::set<std::string> kQuantOps = {"linear_int8", "linear_nf4"};

TEST(GradCoverage, EveryDifferentiableOpHasAGradientCheck) {
  for (const std::string& op : differentiable_ops())
    EXPECT_TRUE(cases().count(op) || kNNOps.count(op) || kQuantOps.count(op))
        << "op '" << op << "' has a VJP rule but no gradient check in tests/test_autodiff.cpp (or test_autodiff_nn.cpp, test_quantize.cpp)";
  for (const auto& [name, fn] : cases()) EXPECT_NE(find_vjp(name), nullptr) << "case '" << name << "' has no rule";
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

// ---- differentiate(): structure and errors ------------------------------------------

using test_util::error_of;
using test_util::has_output;

TEST(Autodiff, TensorUsedSeveralTimesAccumulates) {
  GraphBuilder b("multi");
  Tensor x = b.param("x", {5}, DType::f64);
  b.output("loss", sum(x * x + exp(x) * x));
  Graph j = differentiate(b.build());
  std::vector<double> xv = {-1.5, -0.25, 0, 0.5, 2};
  auto got = compile(j).run({{"x", Buffer::from(xv, {5}, DType::f64)}}).at("grad.x").to_f64();
  for (size_t i = 0; i < xv.size(); ++i)
    EXPECT_NEAR(got[i], 2 * xv[i] + std::exp(xv[i]) * (1 + xv[i]), 1e-12) << i;
}

// The cotangents of disjoint slices of one tensor (here its three thirds,
// as q, k and v are sliced from one projection) merge into one concat of the
// three, not a sum of zero-padded copies; with a fourth slice overlapping
// the first they add. The values are checked analytically either way.
TEST(Autodiff, DisjointSlicesMergeIntoOneConcat) {
  for (bool overlap : {false, true}) {
    GraphBuilder b("thirds");
    Tensor x = b.param("x", {2, 9}, DType::f64);
    Tensor q = slice(x, 1, 0, 3), k = slice(x, 1, 3, 6), v = slice(x, 1, 6, 9);
    Tensor loss = sum(q * q) + sum(exp(k)) + sum(v * 3.0);
    b.output("loss", overlap ? loss + sum(slice(x, 1, 1, 2)) : loss);
    Graph j = differentiate(b.build());
    int adds_of_concats = 0;
    for (const Node& n : j.nodes)
      if (n.op == "add")
        for (int in : n.inputs) adds_of_concats += j.node(in).op == "concat";
    if (!overlap) EXPECT_EQ(adds_of_concats, 0) << print(j);
    if (overlap) EXPECT_GT(adds_of_concats, 0) << print(j);
    std::mt19937 rng(17);
    std::uniform_real_distribution<double> u(-1, 1);
    std::vector<double> xv(18);
    for (double& e : xv) e = u(rng);
    auto got = compile(j).run({{"x", Buffer::from(xv, {2, 9}, DType::f64)}}).at("grad.x").to_f64();
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 9; ++c) {
        const double e = xv[r * 9 + c];
        const double want = c < 3 ? 2 * e + (overlap && c == 1 ? 1 : 0) : c < 6 ? std::exp(e) : 3.0;
        EXPECT_NEAR(got[r * 9 + c], want, 1e-12) << "overlap " << overlap << " at " << r << ", " << c;
      }
  }
}

// A graph with a trainable, a frozen and an integer param and an integer input.
Graph mixed(bool f_is_input) {
  GraphBuilder b("mixed");
  Tensor x = b.input("x", {3, 4});
  Tensor w = b.param("w", {2, 4});
  Tensor f = f_is_input ? b.input("f", {2}) : b.param("f", {2});
  Tensor k = b.param("k", {2}, DType::i32);
  Tensor n = b.input("n", {3}, DType::i64);
  Tensor y = linear(x, w) * f + cast(k, DType::f32);
  b.output("loss", mean(y) + sum(cast(n, DType::f32)));
  return b.build();
}

TEST(Autodiff, FrozenAndIntegerParamsGetNothing) {
  AutodiffOptions o;
  o.frozen = {"f"};
  Graph j = differentiate(mixed(false), o);
  EXPECT_TRUE(has_output(j, "grad.w"));
  EXPECT_FALSE(has_output(j, "grad.f"));
  EXPECT_FALSE(has_output(j, "grad.k"));
  EXPECT_FALSE(has_output(j, "grad.x"));
  EXPECT_FALSE(has_output(j, "grad.n"));
  // No backward node for f: the same backward as with f an input.
  Graph j2 = differentiate(mixed(true));
  EXPECT_EQ(j.nodes.size(), j2.nodes.size()) << print(j) << print(j2);
  // Listing params: only those.
  AutodiffOptions only;
  only.params = {"f"};
  Graph j3 = differentiate(mixed(false), only);
  EXPECT_TRUE(has_output(j3, "grad.f"));
  EXPECT_FALSE(has_output(j3, "grad.w"));
}

TEST(Autodiff, ParamWithoutPathGetsZeros) {
  GraphBuilder b("nopath");
  Tensor w = b.param("w", {3}, DType::f64);
  Tensor u = b.param("u", {2, 2}, DType::f64);
  b.output("other", u * 2.0);
  b.output("loss", sum(w * w) + sum(cast(cast(u, DType::i32), DType::f64)));  // u's path is cut by an integer cast
  Graph j = differentiate(b.build());
  auto out = compile(j).run({{"w", Buffer::from({1, 2, 3}, {3}, DType::f64)},
                             {"u", Buffer::from({1, 2, 3, 4}, {2, 2}, DType::f64)}});
  EXPECT_EQ(out.at("grad.u").to_f64(), std::vector<double>(4, 0.0));
  EXPECT_EQ(out.at("grad.w").to_f64(), (std::vector<double>{2, 4, 6}));
  EXPECT_EQ(out.at("other").to_f64(), (std::vector<double>{2, 4, 6, 8}));
}

TEST(Autodiff, Errors) {
  GraphBuilder b("bad");
  Tensor w = b.param("w", {3});
  b.output("vec", w * 2.0);
  b.output("count", sum(cast(w, DType::i32)));
  b.output("loss", sum(gelu_grad(w, w)));
  Graph g = b.build();
  auto with = [](std::string loss, std::vector<std::string> params = {}, std::vector<std::string> frozen = {}) {
    AutodiffOptions o;
    o.loss = std::move(loss);
    o.params = std::move(params);
    o.frozen = std::move(frozen);
    return o;
  };
  EXPECT_EQ(error_of([&] { differentiate(g, with("vec")); }),
            "autodiff: the loss 'vec' must be a float scalar (shape []), got f32[3] (node 't1')");
  EXPECT_EQ(error_of([&] { differentiate(g, with("count")); }),
            "autodiff: the loss 'count' must be a float scalar (shape []), got i32[] (node 't3')");
  EXPECT_EQ(error_of([&] { differentiate(g, with("nope")); }),
            "autodiff: the loss 'nope' is not an output of graph 'bad'");
  EXPECT_EQ(error_of([&] { differentiate(g, with("loss", {"v"})); }),
            "autodiff: 'v' is not a param of graph 'bad'");
  EXPECT_EQ(error_of([&] { differentiate(g, with("loss", {}, {"t1"})); }),
            "autodiff: 't1' is not a param of graph 'bad'");
  // gelu_grad has no rule (no second derivative of gelu).
  EXPECT_EQ(error_of([&] { differentiate(g, with("loss")); }),
            "autodiff: cannot differentiate 't4' (op gelu_grad) on the path from param 'w' to loss 'loss'");
  // Frozen, the same graph differentiates (nothing is on a path).
  EXPECT_EQ(error_of([&] { differentiate(g, with("loss", {}, {"w"})); }), "(no error)");
}

// ---- split_forward_backward ----------------------------------------------------------

Graph mlp() {
  GraphBuilder b("mlp");
  Tensor x = b.input("x", {4, 3});
  Tensor w1 = b.param("w1", {5, 3});
  Tensor b1 = b.param("b1", {5});
  Tensor w2 = b.param("w2", {2, 5});
  Tensor y = linear(tanh(linear(x, w1, b1)), w2);
  b.output("loss", mean(y * y));
  return b.build();
}

TEST(Split, MlpPrintsAndMatchesTheJointGraph) {
  Graph joint = differentiate(mlp());
  SplitGraphs s = split_forward_backward(joint);
  EXPECT_EQ(s.saved, (std::vector<std::string>{"x", "w2", "t1", "t2"}));
  EXPECT_EQ(print(s.forward), R"(graph mlp {
  x = input()  # f32[4, 3]
  w1 = param()  # f32[5, 3]
  b1 = param()  # f32[5]
  w2 = param()  # f32[2, 5]
  t0 = linear(x, w1, b1)  # f32[4, 5]
  t1 = tanh(t0)  # f32[4, 5]
  t2 = linear(t1, w2)  # f32[4, 2]
  t3 = mul(t2, t2)  # f32[4, 2]
  t4 = mean(t3, axes=[], keepdim=false)  # f32[]
  output loss = t4
  output x = x
  output w2 = w2
  output t1 = t1
  output t2 = t2
}
)");
  // d mean(y*y) = 2 y / 8 (both factors of the mul), through linear (g . w2,
  // g^T t1), tanh (1 - t1^2), linear (g^T x, sum of g for the bias).
  EXPECT_EQ(print(s.backward), R"(graph mlp {
  x = input()  # f32[4, 3]
  w2 = input()  # f32[2, 5]
  t1 = input()  # f32[4, 5]
  t2 = input()  # f32[4, 2]
  grad.loss = input()  # f32[]
  t5 = reshape(grad.loss, shape=[1, 1])  # f32[1, 1]
  t6 = constant(value=8)  # f32[]
  t7 = div(t5, t6)  # f32[1, 1]
  t8 = broadcast_to(t7, shape=[4, 2])  # f32[4, 2]
  t9 = mul(t8, t2)  # f32[4, 2]
  t10 = mul(t8, t2)  # f32[4, 2]
  t11 = add(t9, t10)  # f32[4, 2]
  t12 = permute(w2, dims=[1, 0])  # f32[5, 2]
  t13 = linear(t11, t12)  # f32[4, 5]
  t14 = permute(t11, dims=[1, 0])  # f32[2, 4]
  t15 = matmul(t14, t1)  # f32[2, 5]
  t16 = mul(t1, t1)  # f32[4, 5]
  t17 = constant(value=1)  # f32[]
  t18 = sub(t17, t16)  # f32[4, 5]
  t19 = mul(t13, t18)  # f32[4, 5]
  t20 = permute(t19, dims=[1, 0])  # f32[5, 4]
  t21 = matmul(t20, x)  # f32[5, 3]
  t22 = sum(t19, axes=[0], keepdim=true)  # f32[1, 5]
  t23 = reshape(t22, shape=[5])  # f32[5]
  output grad.w1 = t21
  output grad.b1 = t23
  output grad.w2 = t15
}
)");
  // Forward then backward gives the joint graph's gradients.
  SEEDED(seed);
  std::mt19937 rng(seed);
  std::map<std::string, Buffer> args;
  for (int id : joint.inputs()) {
    const Node& n = joint.node(id);
    std::vector<double> v(static_cast<size_t>(n.type.numel()));
    for (double& e : v) e = std::uniform_real_distribution<double>(-1, 1)(rng);
    args[n.name] = Buffer::from(v, n.type.shape);
  }
  for (int id : joint.params()) {
    const Node& n = joint.node(id);
    std::vector<double> v(static_cast<size_t>(n.type.numel()));
    for (double& e : v) e = std::uniform_real_distribution<double>(-1, 1)(rng);
    args[n.name] = Buffer::from(v, n.type.shape);
  }
  auto want = compile(joint).run(args);
  auto fwd = compile(s.forward).run(args);
  std::map<std::string, Buffer> bargs;
  for (const std::string& name : s.saved) bargs[name] = fwd.at(name);
  bargs["grad.loss"] = Buffer::from({1.0}, {});
  auto got = compile(s.backward).run(bargs);
  EXPECT_EQ(fwd.at("loss").to_f64(), want.at("loss").to_f64());
  for (const char* p : {"grad.w1", "grad.b1", "grad.w2"}) {
    std::vector<double> a = got.at(p).to_f64(), b = want.at(p).to_f64();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 + 1e-5 * std::fabs(b[i])) << p << " " << i;
  }
  // Both halves parse back and the autodiff pass runs in a PassManager.
  EXPECT_EQ(print(parse(print(s.backward))), print(s.backward));
  EXPECT_EQ(print(PassManager{autodiff()}.run(mlp())), print(joint));
}

}  // namespace
}  // namespace tessera
