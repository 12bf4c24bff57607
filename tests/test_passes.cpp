// Tests of the graph passes (dce, cse, fold, simplify) and the PassManager.
//
// Each pass is checked twice: its exact result, written out by hand in the
// printed form (text.h), and its numerical neutrality: the graph before and
// after the pass is run through compile().run() on random inputs and the
// outputs compared with each other and with the float64 reference
// interpreter (tests/reference). The PassManager tests check its records,
// the TESSERA_DUMP files and that a broken pass is named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <unistd.h>

#include "reference/reference.h"
#include "tessera/ops.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"
#include "tessera/text.h"

namespace tessera {
namespace {

// ---- helpers ----------------------------------------------------------------

std::string lines(std::initializer_list<const char*> ls) {
  std::string s;
  for (const char* l : ls) s += std::string(l) + "\n";
  return s;
}

std::map<std::string, Buffer> random_args(const Graph& g, uint32_t seed) {
  std::mt19937 rng(seed);
  std::map<std::string, Buffer> args;
  for (const Node& n : g.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(n.type.numel());
    for (double& x : v) {
      if (is_float(n.type.dtype)) x = std::uniform_real_distribution<double>(-2.0, 2.0)(rng);
      else if (n.type.dtype == DType::boolean) x = std::uniform_int_distribution<int>(0, 1)(rng);
      else if (n.type.dtype == DType::u8) x = std::uniform_int_distribution<int>(0, 255)(rng);
      else x = std::uniform_int_distribution<int>(-100, 100)(rng);
    }
    args[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
  }
  return args;
}

double tolerance(DType t) {
  switch (t) {
    case DType::f64: return 1e-9;
    case DType::f32: return 1e-5;
    case DType::f16:
    case DType::bf16: return 1e-2;
    default: return 0;
  }
}

void expect_close(const std::vector<double>& want, const std::vector<double>& got, DType t, double scale,
                  const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  const double tol = tolerance(t) * scale;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(want[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " element " << i;
      continue;
    }
    EXPECT_NEAR(want[i], got[i], tol * (1 + std::fabs(want[i]))) << what << " element " << i;
  }
}

// Runs `before` and `after` on the same random inputs and compares every
// output with each other and with the reference interpreter's value of `after`.
void expect_same_results(const Graph& before, const Graph& after, int trials = 2) {
  verify(after, {true});
  for (int trial = 0; trial < trials; ++trial) {
    auto args = random_args(before, 1234 + trial);
    auto want = compile(before).run(args);
    auto got = compile(after).run(args);
    auto ref = ref::evaluate(after, ref::from_buffers(args));
    ASSERT_EQ(want.size(), got.size());
    for (const auto& [name, buf] : want) {
      ASSERT_TRUE(got.count(name)) << "output " << name << " is missing after the pass";
      ASSERT_EQ(buf.type(), got.at(name).type()) << name;
      // Before and after compute the same ops on the same values.
      expect_close(buf.to_f64(), got.at(name).to_f64(), buf.dtype(), 1, "output " + name + " (compiled)");
      ASSERT_TRUE(ref.count(name)) << name;
      expect_close(ref.at(name).data, got.at(name).to_f64(), buf.dtype(), 10, "output " + name + " (reference)");
    }
  }
}

// ---- dce ----------------------------------------------------------------------

Graph dce_graph() {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor w = b.param("w", {3});
  Tensor a = x * w;             // t0
  Tensor dead = exp(x);         // t1
  Tensor c = b.constant(2.0);   // t2
  Tensor dead2 = dead * c;      // t3
  Tensor unused = b.constant(5.0);  // t4
  (void)dead2;
  (void)unused;
  b.output("y", exp(a));  // t5
  return b.build();
}

TEST(Dce, RemovesWhatNoOutputNeeds) {
  Graph g = dce().run(dce_graph());
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  w = param()  # f32[3]",
                          "  t0 = mul(x, w)  # f32[3]",
                          "  t5 = exp(t0)  # f32[3]",
                          "  output y = t5",
                          "}",
                      }));
  for (size_t i = 0; i < g.nodes.size(); ++i) EXPECT_EQ(g.nodes[i].id, static_cast<int>(i));
}

TEST(Dce, KeepsInputsAndParamsEvenWhenUnread) {
  // p and q are read only by dead code: dce removes that code but keeps p and
  // q (the graph's interface). The result verifies with unused args allowed,
  // as the PassManager checks it, and not under the strict user-graph check.
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor p = b.param("p", {3});
  Tensor q = b.param("q", {3});
  Tensor c = b.constant(2.0);   // t0
  Tensor r = p * c;             // t1
  Tensor s = exp(r);            // t2
  Tensor t = q + r;             // t3
  (void)s;
  (void)t;
  b.output("y", neg(x));  // t4
  Graph before = b.build();
  Graph g = dce().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  p = param()  # f32[3]",
                          "  q = param()  # f32[3]",
                          "  t4 = neg(x)  # f32[3]",
                          "  output y = t4",
                          "}",
                      }));
  EXPECT_NO_THROW(verify(g, {true}));
  EXPECT_THROW(verify(g), Error);
  expect_same_results(before, g);
}

TEST(Dce, LeavesALiveGraphAlone) {
  Graph g = dce().run(dce_graph());
  EXPECT_EQ(print(dce().run(g)), print(g));
}

TEST(Dce, ResultsUnchanged) {
  Graph before = dce_graph();
  expect_same_results(before, dce().run(before));
}

// ---- cse ----------------------------------------------------------------------

TEST(Cse, MergesEqualNodesKeepingTheFirst) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor e1 = exp(x);    // t0
  Tensor e2 = exp(x);    // t1
  Tensor n1 = neg(e1);   // t2
  Tensor n2 = neg(e2);   // t3
  Tensor m = n1 * n2;    // t4
  b.output("y", m);
  b.output("z", n2);
  Graph before = b.build();
  Graph g = cse().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  t0 = exp(x)  # f32[3]",
                          "  t2 = neg(t0)  # f32[3]",
                          "  t4 = mul(t2, t2)  # f32[3]",
                          "  output y = t4",
                          "  output z = t2",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Cse, MergesEqualConstantsOnly) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor c1 = b.constant(2.0);                          // t0
  Tensor c2 = b.constant(2.0);                          // t1
  Tensor nz = b.constant(-0.0);                         // t2
  Tensor z = b.constant(0.0);                           // t3
  Tensor v1 = b.constant({2, 2, 2}, {3});               // t4: same values as a splat of 2, but a [3]
  Tensor v2 = b.constant({2}, {3});                     // t5: splat [3] of 2 == t4
  Tensor i2 = b.constant(2.0, DType::i32);              // t6: another dtype
  b.output("a", x * c1);                                // t7
  b.output("b", x * c2);                                // t8 == t7
  b.output("c", x + nz);                                // t9
  b.output("d", x + z);                                 // t10: 0 is not -0
  b.output("e", x * v1);                                // t11
  b.output("f", x * v2);                                // t12 == t11
  b.output("g", cast(x, DType::i32) * i2);              // t13, t14
  Graph before = b.build();
  Graph g = cse().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  t0 = constant(value=2)  # f32[]",
                          "  t2 = constant(value=-0)  # f32[]",
                          "  t3 = constant(value=0)  # f32[]",
                          "  t4 = constant(values=[2, 2, 2])  # f32[3]",
                          "  t6 = constant(value=2)  # i32[]",
                          "  t7 = mul(x, t0)  # f32[3]",
                          "  t9 = add(x, t2)  # f32[3]",
                          "  t10 = add(x, t3)  # f32[3]",
                          "  t11 = mul(x, t4)  # f32[3]",
                          "  t13 = cast(x, dtype=\"i32\")  # i32[3]",
                          "  t14 = mul(t13, t6)  # i32[3]",
                          "  output a = t7",
                          "  output b = t7",
                          "  output c = t9",
                          "  output d = t10",
                          "  output e = t11",
                          "  output f = t11",
                          "  output g = t14",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Cse, NeverMergesDropoutsOrInputs) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {4, 8});
  Tensor x2 = b.input("x2", {4, 8});
  Tensor d1 = dropout(x, 0.5, 7);  // t0
  Tensor d2 = dropout(x, 0.5, 7);  // t1: identical, but random ops are never merged
  b.output("y", d1 + d2 + x2);     // t2, t3
  Graph before = b.build();
  Graph g = cse().run(before);
  EXPECT_EQ(print(g), print(before));
  EXPECT_EQ(g.nodes.size(), 6u);
  EXPECT_EQ(g.node("t0").op, "dropout");
  EXPECT_EQ(g.node("t1").op, "dropout");
}

TEST(Cse, MergesEqualDefinitions) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor s1 = b.define("sq1", {3}, [&](Var i) { return x(i) * x(i); });
  Tensor s2 = b.define("sq2", {3}, [&](Var i) { return x(i) * x(i); });
  Tensor s3 = b.define("cube", {3}, [&](Var i) { return x(i) * x(i) * x(i); });
  b.output("a", s1 + s2 + s3);
  Graph before = b.build();
  Graph g = cse().run(before);
  ASSERT_EQ(g.nodes.size(), before.nodes.size() - 1);
  EXPECT_EQ(g.find("sq2"), -1);
  EXPECT_EQ(g.node("t0").inputs, (std::vector<int>{g.find("sq1"), g.find("sq1")}));
  EXPECT_NE(g.find("cube"), -1);
  expect_same_results(before, g);
}

Graph cse_graph() {
  GraphBuilder b("g");
  Tensor x = b.input("x", {4, 5});
  Tensor w = b.param("w", {5, 5});
  Tensor h1 = relu(matmul(x, w)) * 2.0;
  Tensor h2 = relu(matmul(x, w)) * 2.0;
  Tensor s = softmax(h1 + h2);
  Tensor t = softmax(h2 + h1);  // add(h1, h1) once h2 is merged into h1
  b.output("y", s - t + sum(h1, {1}, true));
  b.output("z", sum(h2, {1}, true));
  return b.build();
}

TEST(Cse, ResultsUnchanged) {
  Graph before = cse_graph();
  Graph after = cse().run(before);
  EXPECT_LT(after.nodes.size(), before.nodes.size());
  expect_same_results(before, after);
}

// ---- fold ---------------------------------------------------------------------

TEST(Fold, EvaluatesConstantSubgraphs) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor c1 = b.constant({1, 2, 3}, {3});  // t0
  Tensor c2 = b.constant(2.0);             // t1
  Tensor m = c1 * c2;                      // t2 = [2, 4, 6]
  Tensor s = m - 1.0;                      // t3 = 1, t4 = [1, 3, 5]
  b.output("y", x + s);                    // t5
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  t4 = constant(values=[1, 3, 5])  # f32[3]",
                          "  t5 = add(x, t4)  # f32[3]",
                          "  output y = t5",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Fold, SplatResultsHoldOneValue) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 2});
  Tensor s = b.constant(3.0) + b.constant(4.0);  // t0, t1, t2
  Tensor t = broadcast_to(s, {2, 2});            // t3: all 7
  b.output("y", x * t);                          // t4
  b.output("c", t);
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[2, 2]",
                          "  t3 = constant(value=7)  # f32[2, 2]",
                          "  t4 = mul(x, t3)  # f32[2, 2]",
                          "  output y = t4",
                          "  output c = t3",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Fold, IntegerAndBoolResults) {
  GraphBuilder b("g");
  Tensor k = b.input("k", {2}, DType::i32);
  Tensor num = b.constant({7, 9}, {2}, DType::i32);  // t0
  Tensor den = b.constant(2.0, DType::i32);          // t1
  Tensor q = div(num, den);                          // t2 = [3, 4]
  Tensor odd = gt(q, b.constant(3.0, DType::i32));   // t3, t4 = [false, true]
  b.output("y", where(odd, k, q));                   // t5
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  k = input()  # i32[2]",
                          "  t2 = constant(values=[3, 4])  # i32[2]",
                          "  t4 = constant(values=[0, 1])  # bool[2]",
                          "  t5 = where(t4, k, t2)  # i32[2]",
                          "  output y = t5",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Fold, IntegerDivisionTruncates) {
  // Integer div rounds toward zero (ops.h). fold evaluates it with the
  // compiled op, so this checks the op's lowering through fold.
  GraphBuilder b("g");
  Tensor k = b.input("k", {4}, DType::i32);
  Tensor num = b.constant({-7, 7, -7, 7}, {4}, DType::i32);  // t0
  Tensor den = b.constant({2, -2, -2, 2}, {4}, DType::i32);  // t1
  b.output("y", k + div(num, den));                          // t2, t3
  Graph g = fold().run(b.build());
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  k = input()  # i32[4]",
                          "  t2 = constant(values=[-3, -3, 3, 3])  # i32[4]",
                          "  t3 = add(k, t2)  # i32[4]",
                          "  output y = t3",
                          "}",
                      }));
}

TEST(Fold, SkipsRandomLargeAndDeadNodes) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {});
  Tensor d = dropout(b.constant({1, 2, 3, 4}, {4}), 0.5, 3);  // t0, t1: random, not folded
  Tensor big = broadcast_to(b.constant(1.0), {300, 300});    // t2, t3: 90000 elements, not folded
  Tensor total = sum(big);                                   // t4: reads a non-constant
  Tensor dead = exp(b.constant(1.0));                        // t5, t6: dead, left for dce
  (void)dead;
  b.output("y", x + total + sum(d));  // t7, t8, t9
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(print(g), print(before));
}

TEST(Fold, KeepsWhatDeadCodeReads) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor c = b.constant(2.0);  // t0: read by the folded t1 and by the dead t2
  Tensor e = exp(c);           // t1
  Tensor dead = neg(c);        // t2
  (void)dead;
  b.output("y", x * e);  // t3
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(g.node("t1").op, "constant");
  ASSERT_EQ(g.node("t1").values.size(), 1u);
  EXPECT_EQ(static_cast<float>(g.node("t1").values[0]), std::exp(2.0f));
  EXPECT_EQ(g.nodes.size(), 5u);  // x, t0, t1, t2, t3
  EXPECT_EQ(g.node("t2").op, "neg");
  expect_same_results(before, g);
}

TEST(Fold, EvaluatesDefinitionsThatReadOnlyConstants) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {4});
  Tensor c = b.constant({1, 2, 3, 4}, {4});  // t0
  Tensor ramp = b.define("ramp", {4}, [&](Var i) { return Halide::cast<float>(i) * 2.0f + c(i); });
  Tensor iota = b.define("iota", {4}, [&](Var i) { return Halide::cast<float>(i); });  // reads no tensor
  b.output("y", x * ramp + iota);  // t1, t2
  Graph before = b.build();
  Graph g = fold().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[4]",
                          "  ramp = constant(values=[1, 4, 7, 10])  # f32[4]",
                          "  iota = constant(values=[0, 1, 2, 3])  # f32[4]",
                          "  t1 = mul(x, ramp)  # f32[4]",
                          "  t2 = add(t1, iota)  # f32[4]",
                          "  output y = t2",
                          "}",
                      }));
  expect_same_results(before, g);
}

Graph fold_graph() {
  GraphBuilder b("g");
  Tensor x = b.input("x", {4, 6});
  Tensor w = b.constant(std::vector<double>{0.5, -1, 2, 0.25, 3, -0.75}, {6});
  Tensor scale = softmax(reshape(w, {2, 3})) * 2.0;
  Tensor bias = sum(matmul(reshape(w, {3, 2}), reshape(w, {2, 3})), {0});
  Tensor gate = sigmoid(cast(cast(b.constant({1, 2, 3}, {3}, DType::i32), DType::f32), DType::f32));
  Tensor h = reshape(x, {4, 2, 3}) * scale + bias * gate;
  b.output("y", h);
  b.output("k", layer_norm(h));
  return b.build();
}

TEST(Fold, ResultsUnchanged) {
  Graph before = fold_graph();
  Graph after = fold().run(before);
  int constants = 0;
  for (const Node& n : after.nodes) constants += n.op == "constant";
  EXPECT_EQ(constants, 2);  // scale and bias * gate
  expect_same_results(before, after);
}

// ---- simplify -----------------------------------------------------------------

TEST(Simplify, ArithmeticIdentities) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 3});
  Tensor one = b.constant(1.0);   // t0
  Tensor zero = b.constant(0.0);  // t1
  Tensor v = ((zero + ((one * (x * one)) + zero)) - zero) / one;  // t2..t7
  b.output("y", exp(v));          // t8
  Tensor ones = b.constant({1, 1, 1, 1, 1, 1}, {2, 3});  // t9
  b.output("a", ones * x);                               // t10 -> x
  Tensor row = b.input("row", {3});
  b.output("b", row * ones);                             // t11: broadcast enlarges row: stays
  b.output("c", one - x);                                // t12: 1 - x stays
  b.output("d", one / x);                                // t13: 1 / x stays
  b.output("e", x * b.constant(2.0));                    // t14, t15 stays
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[2, 3]",
                          "  t0 = constant(value=1)  # f32[]",
                          "  t8 = exp(x)  # f32[2, 3]",
                          "  t9 = constant(values=[1, 1, 1, 1, 1, 1])  # f32[2, 3]",
                          "  row = input()  # f32[3]",
                          "  t11 = mul(row, t9)  # f32[2, 3]",
                          "  t12 = sub(t0, x)  # f32[2, 3]",
                          "  t13 = div(t0, x)  # f32[2, 3]",
                          "  t14 = constant(value=2)  # f32[]",
                          "  t15 = mul(x, t14)  # f32[2, 3]",
                          "  output y = t8",
                          "  output a = x",
                          "  output b = t11",
                          "  output c = t12",
                          "  output d = t13",
                          "  output e = t15",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, IntegerIdentities) {
  GraphBuilder b("g");
  Tensor k = b.input("k", {4}, DType::i64);
  Tensor v = (k * 1.0 + 0.0) / 1.0;  // t0..t5
  b.output("y", v - b.constant(0.0, DType::i64) + 3.0);  // t6, t7, t8, t9
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  k = input()  # i64[4]",
                          "  t8 = constant(value=3)  # i64[]",
                          "  t9 = add(k, t8)  # i64[4]",
                          "  output y = t9",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, PermuteChains) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 3, 4});
  Tensor p = permute(permute(x, {1, 2, 0}), {2, 0, 1});  // t0, t1: the identity
  b.output("a", exp(p));                                  // t2
  Tensor q = permute(permute(x, {1, 0, 2}), {0, 2, 1});  // t3, t4 = permute(x, [1, 2, 0])
  b.output("b", q);
  b.output("c", transpose(transpose(x, 0, 2), 2, 0));   // t5, t6: the identity
  b.output("d", neg(permute(x, {0, 1, 2})));            // t7 (identity), t8
  b.output("e", permute(x, {2, 0, 1}));                 // t9: stays
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[2, 3, 4]",
                          "  t2 = exp(x)  # f32[2, 3, 4]",
                          "  t4 = permute(x, dims=[1, 2, 0])  # f32[3, 4, 2]",
                          "  t8 = neg(x)  # f32[2, 3, 4]",
                          "  t9 = permute(x, dims=[2, 0, 1])  # f32[4, 2, 3]",
                          "  output a = t2",
                          "  output b = t4",
                          "  output c = x",
                          "  output d = t8",
                          "  output e = t9",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, ReshapeChains) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 3, 4});
  Tensor r = unsqueeze(reshape(reshape(x, {6, 4}), {24}), 0);  // t0, t1, t2
  b.output("a", r);
  Tensor back = reshape(squeeze(r, {0}), {2, 3, 4});           // t3, t4 -> x
  b.output("b", exp(back));                                    // t5
  b.output("c", neg(reshape(x, {2, 3, 4})));                   // t6 -> x, t7
  Tensor y = b.input("y", {1, 3});
  b.output("d", squeeze(y, {0}));                              // t8: one squeeze stays
  b.output("e", unsqueeze(squeeze(y, {0}), 1));                // t9, t10 = reshape(y, [3, 1])
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[2, 3, 4]",
                          "  t2 = reshape(x, shape=[1, 24])  # f32[1, 24]",
                          "  t5 = exp(x)  # f32[2, 3, 4]",
                          "  t7 = neg(x)  # f32[2, 3, 4]",
                          "  y = input()  # f32[1, 3]",
                          "  t8 = squeeze(y, axes=[0])  # f32[3]",
                          "  t10 = reshape(y, shape=[3, 1])  # f32[3, 1]",
                          "  output a = t2",
                          "  output b = t5",
                          "  output c = t7",
                          "  output d = t8",
                          "  output e = t10",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, CastChains) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor k = b.input("k", {3}, DType::i8);
  Tensor d = b.input("d", {3}, DType::f64);
  Tensor u = b.input("u", {3}, DType::u8);
  b.output("a", exp(cast(cast(x, DType::f64), DType::f32)));  // t0, t1 -> x, t2
  b.output("b", cast(cast(k, DType::i32), DType::i64));      // t3, t4 = cast(k -> i64)
  b.output("c", cast(cast(x, DType::i32), DType::f32));      // t5, t6: f32 -> i32 is not exact: stays
  b.output("e", cast(cast(d, DType::f32), DType::f64));      // t7, t8: stays
  b.output("f", neg(cast(x, DType::f32)));                   // t9 -> x, t10
  b.output("g", cast(cast(u, DType::i8), DType::i32));       // t11, t12: u8 -> i8 is not exact: stays
  b.output("h", cast(cast(cast(u, DType::bf16), DType::f32), DType::f64));  // t13..t15 = cast(u -> f64)
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  k = input()  # i8[3]",
                          "  d = input()  # f64[3]",
                          "  u = input()  # u8[3]",
                          "  t2 = exp(x)  # f32[3]",
                          "  t4 = cast(k, dtype=\"i64\")  # i64[3]",
                          "  t5 = cast(x, dtype=\"i32\")  # i32[3]",
                          "  t6 = cast(t5, dtype=\"f32\")  # f32[3]",
                          "  t7 = cast(d, dtype=\"f32\")  # f32[3]",
                          "  t8 = cast(t7, dtype=\"f64\")  # f64[3]",
                          "  t10 = neg(x)  # f32[3]",
                          "  t11 = cast(u, dtype=\"i8\")  # i8[3]",
                          "  t12 = cast(t11, dtype=\"i32\")  # i32[3]",
                          "  t15 = cast(u, dtype=\"f64\")  # f64[3]",
                          "  output a = t2",
                          "  output b = t4",
                          "  output c = t6",
                          "  output e = t8",
                          "  output f = t10",
                          "  output g = t12",
                          "  output h = t15",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, Broadcasts) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 3});
  Tensor bias = b.param("bias", {3});
  Tensor v = b.param("v", {3});
  Tensor two = b.constant(2.0);                        // t0
  b.output("a", x * broadcast_to(two, {2, 3}));        // t1, t2 = mul(x, t0)
  Tensor bb = broadcast_to(bias, {2, 3});              // t3: used only by elementwise ops
  Tensor plus = x + bb;                                // t4
  Tensor minus = x - bb;                               // t5
  b.output("b", plus * minus);                         // t6
  Tensor vb = broadcast_to(v, {2, 3});                 // t7: also read by sum: stays
  b.output("c", x + vb);                               // t8
  b.output("d", sum(vb, {0}));                         // t9
  b.output("e", exp(broadcast_to(two, {2, 3})));       // t10, t11: exp does not broadcast: stays
  b.output("f", x * broadcast_to(b.constant(1.0), {2, 3}));  // t12, t13, t14 -> x
  b.output("g", broadcast_to(x, {2, 3}));              // t15 -> x
  b.output("h", broadcast_to(broadcast_to(bias, {1, 3}), {4, 3}));  // t16, t17 = broadcast_to(bias)
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[2, 3]",
                          "  bias = param()  # f32[3]",
                          "  v = param()  # f32[3]",
                          "  t0 = constant(value=2)  # f32[]",
                          "  t2 = mul(x, t0)  # f32[2, 3]",
                          "  t4 = add(x, bias)  # f32[2, 3]",
                          "  t5 = sub(x, bias)  # f32[2, 3]",
                          "  t6 = mul(t4, t5)  # f32[2, 3]",
                          "  t7 = broadcast_to(v, shape=[2, 3])  # f32[2, 3]",
                          "  t8 = add(x, t7)  # f32[2, 3]",
                          "  t9 = sum(t7, axes=[0], keepdim=false)  # f32[3]",
                          "  t10 = broadcast_to(t0, shape=[2, 3])  # f32[2, 3]",
                          "  t11 = exp(t10)  # f32[2, 3]",
                          "  t17 = broadcast_to(bias, shape=[4, 3])  # f32[4, 3]",
                          "  output a = t2",
                          "  output b = t6",
                          "  output c = t8",
                          "  output d = t9",
                          "  output e = t11",
                          "  output f = x",
                          "  output g = x",
                          "  output h = t17",
                          "}",
                      }));
  expect_same_results(before, g);
}

TEST(Simplify, LeavesExistingDeadCodeForDce) {
  GraphBuilder b("g");
  Tensor x = b.input("x", {3});
  Tensor one = b.constant(1.0);  // t0
  Tensor dead = exp(x * one);    // t1 -> x, t2: dead before the pass, kept
  (void)dead;
  b.output("y", neg(x * one));   // t3 -> x, t4
  Graph before = b.build();
  Graph g = simplify().run(before);
  EXPECT_EQ(print(g), lines({
                          "graph g {",
                          "  x = input()  # f32[3]",
                          "  t2 = exp(x)  # f32[3]",
                          "  t4 = neg(x)  # f32[3]",
                          "  output y = t4",
                          "}",
                      }));  expect_same_results(before, g);
}

Graph simplify_graph() {
  GraphBuilder b("g");
  Tensor x = b.input("x", {2, 3, 4});
  Tensor w = b.param("w", {4});
  Tensor k = b.input("k", {2, 3}, DType::i8);
  Tensor h = permute(permute(x, {2, 0, 1}), {1, 2, 0}) * 1.0 + broadcast_to(w, {2, 3, 4});
  Tensor r = reshape(unsqueeze(reshape(h, {6, 4}), 0), {2, 12});
  Tensor c = cast(cast(cast(k, DType::i32), DType::f64), DType::f32);
  Tensor s = reshape(cast(cast(r, DType::f64), DType::f32), {2, 3, 4}) - 0.0;
  b.output("y", s / 1.0 + broadcast_to(reshape(c, {2, 3, 1}), {2, 3, 4}));
  b.output("z", transpose(s, 1, 2) * broadcast_to(b.constant(1.0), {2, 4, 3}));
  return b.build();
}

TEST(Simplify, ResultsUnchanged) {
  Graph before = simplify_graph();
  Graph after = simplify().run(before);
  EXPECT_LT(after.nodes.size(), before.nodes.size() / 2);
  expect_same_results(before, after);
}

TEST(Simplify, ReachesAFixedPoint) {
  Graph once = simplify().run(simplify_graph());
  EXPECT_EQ(print(simplify().run(once)), print(once));
}

// ---- all passes together ------------------------------------------------------

TEST(Passes, PipelineResultsUnchanged) {
  for (Graph before : {dce_graph(), cse_graph(), fold_graph(), simplify_graph()}) {
    PassManager pm{simplify(), fold(), cse(), dce()};
    Graph after = pm.run(before);
    expect_same_results(before, after);
  }
}

TEST(Passes, KeepNamesAndInterface) {
  Graph before = simplify_graph();
  PassManager pm{simplify(), fold(), cse(), dce()};
  Graph after = pm.run(before);
  for (const Node& n : after.nodes) {
    EXPECT_GE(before.find(n.name), 0) << n.name << " is a new name";
    EXPECT_EQ(before.node(n.name).type, n.type) << n.name;
  }
  EXPECT_EQ(after.inputs().size(), before.inputs().size());
  EXPECT_EQ(after.params().size(), before.params().size());
}

// ---- PassManager ----------------------------------------------------------------

TEST(PassManager, RecordsEachPass) {
  PassManager pm;
  pm.add(simplify()).add(cse()).add(dce()).add(verifier());
  Graph g = pm.run(dce_graph());
  ASSERT_EQ(pm.records().size(), 4u);
  const char* names[] = {"simplify", "cse", "dce", "verify"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(pm.records()[i].name, names[i]);
    EXPECT_GE(pm.records()[i].seconds, 0);
  }
  EXPECT_EQ(pm.records()[0].nodes_before, 8u);
  EXPECT_EQ(pm.records()[2].nodes_before, 8u);
  EXPECT_EQ(pm.records()[2].nodes_after, 4u);
  EXPECT_EQ(pm.records()[3].nodes_after, 4u);
  std::string report = pm.report();
  for (const char* n : names) EXPECT_NE(report.find(n), std::string::npos) << report;
  EXPECT_NE(report.find("total"), std::string::npos) << report;
  // A second run starts a fresh record.
  pm.run(g);
  EXPECT_EQ(pm.records().size(), 4u);
}

struct ScopedDumpDir {
  std::filesystem::path dir;
  ScopedDumpDir() {
    dir = std::filesystem::temp_directory_path() /
          ("tessera_dump_" + std::to_string(::getpid()) + "_" + std::to_string(std::rand()));
    std::filesystem::remove_all(dir);
    setenv("TESSERA_DUMP", (dir / "nested").c_str(), 1);
  }
  ~ScopedDumpDir() {
    unsetenv("TESSERA_DUMP");
    std::filesystem::remove_all(dir);
  }
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(PassManager, DumpsEachGraph) {
  ScopedDumpDir scoped;
  Graph input = dce_graph();
  PassManager pm{cse(), dce()};
  Graph out = pm.run(input);
  std::filesystem::path d = scoped.dir / "nested";
  ASSERT_TRUE(std::filesystem::is_directory(d));
  EXPECT_EQ(read_file(d / "00-input.txt"), print(input));
  EXPECT_EQ(read_file(d / "01-cse.txt"), print(cse().run(input)));
  EXPECT_EQ(read_file(d / "02-dce.txt"), print(out));
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(d)) files += e.is_regular_file();
  EXPECT_EQ(files, 3);
}

TEST(PassManager, NoDumpWithoutTheVariable) {
  unsetenv("TESSERA_DUMP");
  PassManager pm{dce()};
  EXPECT_NO_THROW(pm.run(dce_graph()));
}

TEST(PassManager, NamesAPassThatBreaksTheGraph) {
  // Drops the last node: the output then names no node.
  Pass broken{"drop-last", [](const Graph& g) {
                Graph r = g;
                r.nodes.pop_back();
                return r;
              }};
  PassManager pm{dce(), broken, cse()};
  try {
    pm.run(dce_graph());
    FAIL() << "expected a verification error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("drop-last"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 of 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("names no node"), std::string::npos) << msg;
  }
  ASSERT_EQ(pm.records().size(), 2u);
  EXPECT_EQ(pm.records()[1].name, "drop-last");
}

TEST(PassManager, NamesAPassThatBreaksTypes) {
  Pass retype{"retype", [](const Graph& g) {
                Graph r = g;
                r.nodes.back().type.shape = {7};
                return r;
              }};
  PassManager pm{retype};
  try {
    pm.run(dce_graph());
    FAIL() << "expected a verification error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("retype"), std::string::npos) << msg;
    EXPECT_NE(msg.find("stored type"), std::string::npos) << msg;
  }
}

TEST(PassManager, NamesAPassThatThrows) {
  Pass thrower{"thrower", [](const Graph&) -> Graph { fail("something went wrong"); }};
  PassManager pm{dce(), thrower};
  try {
    pm.run(dce_graph());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("thrower"), std::string::npos) << msg;
    EXPECT_NE(msg.find("something went wrong"), std::string::npos) << msg;
  }
}

TEST(PassManager, RejectsAnInvalidInput) {
  Graph g = dce_graph();
  g.nodes[2].inputs = {5};  // breaks SSA order
  PassManager pm{dce()};
  EXPECT_THROW(pm.run(g), Error);
}

}  // namespace
}  // namespace tessera
