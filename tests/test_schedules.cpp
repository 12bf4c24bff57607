// The CPU schedule's special paths against the float64 reference: register-
// tiled products (with operands computed in the kernel, tiles that span all
// rows or not, ragged edges), linears narrower than a vector, and kernels
// with several fused outputs (partition.h), including the ordering rule that
// keeps an output from being fused past a kernel that reads it, and small
// unrelated outputs joined within the cost model's launch budget.
//
// test_ops checks every op at awkward sizes; this file picks sizes that take
// each schedule path and asserts, through schedule_text(), that they did.
#include <gtest/gtest.h>

#include <cstring>
#include <tessera/tessera.h>

#include <cmath>
#include <random>

#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

// Runs `g` compiled for the host and through the reference; every output
// must agree within rtol/atol. Returns the schedule text.
std::string expect_matches_reference(const Graph& g, double tol) {
  SEEDED(seed);
  auto args = test_util::random_args(g, seed);
  Executable exe = compile(g, Target::host());
  auto got = exe.run(args);
  test_util::expect_outputs_close(got, ref::evaluate(g, ref::from_buffers(args)), tol, g.name);
  return exe.schedule_text();
}

Graph linear_graph(Shape x, int64_t out, bool relu_input) {
  GraphBuilder g("linear");
  Tensor in = g.input("x", x);
  if (relu_input) in = relu(in);
  g.output("y", linear(in, g.param("w", {out, x.back()}), g.param("b", {out})));
  return g.build();
}

TEST(CpuSchedule, TiledLinearSpanningAllRowsAndRaggedColumns) {
  // 100 columns: no 48- or 32-column tile divides them, so one-vector tiles;
  // 62 rows: no multiple of 4 divides them, so one tile spans all rows.
  std::string s = expect_matches_reference(linear_graph({62, 37}, 100, true), 1e-5);
  EXPECT_NE(s.find("register-tiled matmul, tiles 16x62"), std::string::npos) << s;
  EXPECT_NE(s.find("weight transposed per tile"), std::string::npos) << s;
  // 96 columns and 64 rows: 48-column tiles, one row tile.
  s = expect_matches_reference(linear_graph({64, 37}, 96, false), 1e-5);
  EXPECT_NE(s.find("register-tiled matmul, tiles 48x64"), std::string::npos) << s;
}

TEST(CpuSchedule, TiledLinearWithManyRows) {
  // 67 rows in each of 2 batches: no multiple of 4 divides them, so one tile
  // spans a batch's rows (the batch is fused with the tile index).
  std::string s = expect_matches_reference(linear_graph({2, 67, 19}, 49, false), 1e-5);
  EXPECT_NE(s.find("tiles 16x67"), std::string::npos) << s;
  // 512 rows and 64 columns: 32 x 32 tiles.
  s = expect_matches_reference(linear_graph({16, 32, 19}, 64, false), 1e-5);
  EXPECT_NE(s.find("tiles 32x32"), std::string::npos) << s;
}

// Parallel tiles must not overlap: Halide would shift a ragged last tile
// inwards, the shared elements would be computed at other register
// positions (which LLVM may round differently), and the result would depend
// on which task wrote last. A chain of two products with ragged tiles used to
// differ between runs about once in six.
TEST(CpuSchedule, TiledProductsGiveTheSameBitsOnEveryRun) {
  GraphBuilder g("chain");
  Tensor x = g.input("x", {16, 32, 64});
  Tensor h = linear(x, g.param("a", {8, 64}));
  g.output("y", linear(h, g.param("b", {64, 8})));
  const Graph graph = g.build();
  const Executable exe = compile(graph);
  SEEDED(seed);
  const auto args = test_util::random_args(graph, seed);
  const Buffer first = exe.run(args).at("y");
  for (int run = 0; run < 300; ++run) {
    const Buffer again = exe.run(args).at("y");
    ASSERT_EQ(std::memcmp(first.data(), again.data(), first.bytes()), 0) << "run " << run << " differs";
  }
}

TEST(CpuSchedule, NarrowLinearVectorizedAlongRows) {
  for (int64_t out : {1, 3, 10}) {
    std::string s = expect_matches_reference(linear_graph({33, 29}, out, true), 1e-5);
    EXPECT_NE(s.find("along rows, one thread"), std::string::npos) << s;
  }
  // Enough work for threads; rows not a multiple of the vector.
  std::string s = expect_matches_reference(linear_graph({3001, 70}, 5, false), 1e-5);
  EXPECT_NE(s.find("along rows, parallel"), std::string::npos) << s;
}

TEST(CpuSchedule, TiledMatmulWithComputedOperands) {
  // A weight gradient's shape: a transposed, masked operand times an input.
  GraphBuilder g("dw");
  Tensor dy = g.input("dy", {37, 65}), h = g.input("h", {37, 65}), x = g.input("x", {37, 101});
  Tensor masked = mul(dy, cast(gt(h, g.constant(0.0)), DType::f32));
  g.output("dw", matmul(permute(masked, {1, 0}), exp(x)));
  std::string s = expect_matches_reference(g.build(), 1e-5);
  EXPECT_NE(s.find("computed operands at root"), std::string::npos) << s;
}

// AdamW-like updates: three outputs of one shape that read common inputs and
// each other become one kernel.
Graph update_graph(Shape shape) {
  GraphBuilder g("update");
  Tensor p = g.param("p", shape), grad = g.input("g", shape), m = g.param("m", shape), v = g.param("v", shape);
  Tensor m2 = add(mul(m, g.constant(0.9)), mul(grad, g.constant(0.1)));
  Tensor v2 = add(mul(mul(v, v), g.constant(0.99)), mul(mul(grad, grad), g.constant(0.01)));
  Tensor p2 = sub(p, div(m2, add(sqrt(v2), g.constant(1e-3))));
  g.output("new.m", m2);
  g.output("new.v", v2);
  g.output("new.p", p2);
  return g.build();
}

TEST(CpuSchedule, SiblingOutputsFuseIntoOneKernel) {
  for (Shape shape : {Shape{1}, Shape{7, 33}, Shape{3, 5, 17}, Shape{140001}}) {
    std::string s = expect_matches_reference(update_graph(shape), 1e-6);
    EXPECT_NE(s.find("1 kernels"), std::string::npos) << s;
    EXPECT_NE(s.find("writes out0"), std::string::npos) << s;
    EXPECT_NE(s.find("all in one loop nest"), std::string::npos) << s;
  }
}

TEST(CpuSchedule, OutputReadByAKernelInBetweenIsNotFusedPastIt) {
  // `a` is read by the reduction `s`, which runs before `b`: a and b must
  // stay separate kernels (fusing them would compute `a` after `s` reads it).
  GraphBuilder g("order");
  Tensor x = g.input("x", {9, 21});
  Tensor a = exp(x);
  Tensor s = sum(a, {1}, true);
  Tensor b = add(x, s);
  g.output("a", a);
  g.output("b", b);
  std::string text = expect_matches_reference(g.build(), 1e-6);
  EXPECT_EQ(text.find("writes"), std::string::npos) << text;
}

TEST(CpuSchedule, DifferentShapesDoNotFuse) {
  GraphBuilder g("shapes");
  Tensor x = g.input("x", {4, 6});
  g.output("a", exp(x));
  g.output("b", sum(x, {1}));
  g.output("c", mul(x, g.constant(2.0)));
  g.output("d", permute(mul(x, g.constant(3.0)), {1, 0}));
  std::string text = expect_matches_reference(g.build(), 1e-6);
  // a and c fuse; the reduction b and the transposed d keep kernels of their own.
  EXPECT_NE(text.find("3 kernels"), std::string::npos) << text;
  EXPECT_NE(text.find("(exp, mul) reads in0 = x; writes"), std::string::npos) << text;
}

TEST(CpuSchedule, SmallUnrelatedUpdatesJoinWithinTheLaunchBudget) {
  // 30 updates of 5-element params, each moving 60 bytes (far below what
  // the CPU moves in one 3 us dispatch), and two of 300000 elements that
  // move megabytes. The small ones join in kernels of at most 64 buffers
  // (21 updates of 3 buffers, then 9); the large ones keep their own.
  GraphBuilder g("updates");
  std::vector<Tensor> small;
  for (int i = 0; i < 32; ++i) {
    const bool large = i == 10 || i == 20;
    const Shape shape = large ? Shape{300000} : Shape{5};
    Tensor p = g.param("p" + std::to_string(i), shape), grad = g.input("g" + std::to_string(i), shape);
    g.output("new.p" + std::to_string(i), sub(p, mul(grad, g.constant(0.1))));
  }
  const std::string text = expect_matches_reference(g.build(), 1e-6);
  EXPECT_NE(text.find("graph 'updates': 4 kernels"), std::string::npos) << text;
  size_t joined = 0;
  for (size_t at = text.find("(sub, sub, "); at != std::string::npos; at = text.find("(sub, sub, ", at + 1)) ++joined;
  EXPECT_EQ(joined, 2u) << text;
  EXPECT_NE(text.find("writes out0 = t"), std::string::npos) << text;
  EXPECT_EQ(text.find("out21 ="), std::string::npos) << "a kernel of more than 64 buffers:\n" << text;
}

TEST(CpuSchedule, SmallKernelsReadingOnlyParamsJoinAnEarlierKernel) {
  // Five small products of params, each read by a reduction before the next
  // one is computed: they cannot run later, in the next one's kernel, but as
  // they read only params they can run earlier, all in the first one's.
  GraphBuilder g("params");
  Tensor x = g.input("x", {9, 21}), y = x;
  for (int i = 0; i < 5; ++i) {
    Tensor c = mul(g.param("b" + std::to_string(i), {21}), g.constant(2.0 + i));
    g.output("c" + std::to_string(i), c);
    y = add(y, mean(mul(x, c), {1}, true));
  }
  g.output("y", y);
  const std::string text = expect_matches_reference(g.build(), 1e-6);
  EXPECT_NE(text.find("(mul, mul, mul, mul, mul) reads in0 = b0, in1 = b1, in2 = b2, in3 = b3, in4 = b4; writes"),
            std::string::npos)
      << text;
}

}  // namespace
