// The remat pass (include/tessera/remat.h): a rematerialized training step
// gives bitwise the same loss and gradients as the original on the CPU and
// agrees with the float64 reference; the saved bytes the pass reports are
// what the memory planner keeps live from the forward into the backward
// (measured here on the plan, independently of the pass's flow network);
// budgets are met and lower the planner's peak; matmuls stay saved at budget
// 1; checkpoint regions are honoured; cse keeps the clones apart; bad options
// give clear Errors.
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/remat.h>
#include <tessera/tessera.h>

#include <cstring>
#include <random>

#include "max_flow.h"
#include "memory_plan.h"
#include "op_registry.h"
#include "partition.h"
#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

GptConfig small_gpt() {
  GptConfig c;  // awkward sizes; dropout on, so random ops are recomputed too
  c.vocab_size = 13;
  c.block_size = 7;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 10;
  c.batch = 3;
  c.dropout = 0.1;
  c.dropout_seed = 5;
  return c;
}

bool bitwise_equal(const Buffer& a, const Buffer& b) {
  return a.type() == b.type() && std::memcmp(a.data(), b.data(), a.bytes()) == 0;
}

// Bytes of the arena slots written before the loss's kernel and read after
// it: what the planner keeps live across the forward/backward boundary.
size_t planner_saved_bytes(const Graph& g, const std::string& loss = "loss") {
  std::vector<Kernel> kernels = partition(g);
  MemoryPlan plan = plan_memory(g, kernels);
  int loss_node = -1;
  for (const GraphOutput& o : g.outputs)
    if (o.name == loss) loss_node = o.node;
  int boundary = -1;
  for (size_t s = 0; s < kernels.size(); ++s)
    for (int r : kernels[s].roots)
      if (r == loss_node) boundary = static_cast<int>(s);
  EXPECT_GE(boundary, 0);
  size_t bytes = 0;
  for (const MemoryPlan::Slot& slot : plan.slots)
    if (slot.first < boundary && slot.last > boundary) bytes += slot.bytes;
  return bytes;
}

std::vector<const Node*> clones(const Graph& g) {
  std::vector<const Node*> out;
  for (const Node& n : g.nodes)
    if (n.attrs.count("remat")) out.push_back(&n);
  return out;
}

// MaxFlow against a brute-force minimum cut (every vertex subset) on random
// small graphs with some uncuttable edges.
TEST(MaxFlow, MatchesBruteForceMinimumCut) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int n = 2 + static_cast<int>(rng() % 7);
    struct E {
      int from, to;
      int64_t cap;
    };
    std::vector<E> edges;
    const int m = static_cast<int>(rng() % (3 * n));
    for (int i = 0; i < m; ++i) {
      int a = static_cast<int>(rng() % n), b = static_cast<int>(rng() % n);
      if (a == b) continue;
      int64_t cap = rng() % 5 == 0 ? MaxFlow::kInfinite : static_cast<int64_t>(rng() % 10);
      edges.push_back({a, b, cap});
    }
    MaxFlow f(n);
    for (const E& e : edges) f.add_edge(e.from, e.to, e.cap);
    const int source = 0, sink = n - 1;
    int64_t best = MaxFlow::kInfinite;
    std::vector<int64_t> cut_of(1 << n, -1);
    for (int mask = 0; mask < (1 << n); ++mask) {
      if (!(mask & 1) || (mask >> sink & 1)) continue;
      int64_t cut = 0;
      for (const E& e : edges)
        if ((mask >> e.from & 1) && !(mask >> e.to & 1)) cut = std::min(MaxFlow::kInfinite, cut + e.cap);
      cut_of[mask] = cut;
      best = std::min(best, cut);
    }
    const int64_t flow = f.run(source, sink);
    if (best >= MaxFlow::kInfinite) {
      EXPECT_GE(flow, MaxFlow::kInfinite);
      continue;
    }
    ASSERT_EQ(flow, best) << "trial " << trial;
    std::vector<bool> side = f.source_side(source);
    EXPECT_TRUE(side[source]);
    EXPECT_FALSE(side[sink]);
    int64_t cut = 0;
    for (const E& e : edges)
      if (side[e.from] && !side[e.to]) cut += e.cap;
    EXPECT_EQ(cut, best);
    // The cut closest to the sink: a minimum cut whose source side holds
    // every minimum cut's source side.
    const std::vector<bool> reaches_sink = f.sink_side(sink);
    EXPECT_TRUE(reaches_sink[sink]);
    EXPECT_FALSE(reaches_sink[source]);
    int largest = 0;
    for (int v = 0; v < n; ++v)
      if (!reaches_sink[v]) largest |= 1 << v;
    EXPECT_EQ(cut_of[largest], best) << "trial " << trial;
    for (int mask = 0; mask < (1 << n); ++mask)
      if (cut_of[mask] == best) EXPECT_EQ(mask & ~largest, 0) << "trial " << trial << " mask " << mask;
  }
}

TEST(Remat, GptStepBitwiseIdenticalAndMatchesReference) {
  Graph joint = differentiate(gpt(small_gpt()));
  SEEDED(seed);
  auto args = test_util::random_args(joint, seed);
  Executable plain = compile(joint);
  auto want = plain.run(args);
  auto ref = ref::evaluate(joint, ref::from_buffers(args));
  for (double f : {1.0, 0.5, 0.25, 0.0}) {
    RematResult r = rematerialize(joint, {.budget = f});
    SCOPED_TRACE("budget " + std::to_string(f) + "\n" + r.report.text());
    verify(r.graph, {.allow_unused_args = true});
    EXPECT_FALSE(clones(r.graph).empty());
    auto got = compile(r.graph).run(args);
    ASSERT_EQ(got.size(), want.size());
    for (const auto& [name, buf] : want) EXPECT_TRUE(bitwise_equal(got.at(name), buf)) << name;
    test_util::expect_outputs_close(got, ref, 1e-4, "remat'd step vs the float64 reference");
  }
}

TEST(Remat, SavedBytesAndPeakFollowTheBudget) {
  for (bool with_optimizer : {false, true}) {
  Graph joint = differentiate(gpt(small_gpt()));
  Graph step = with_optimizer ? adamw(joint, AdamWOptions{}) : joint;
  SCOPED_TRACE(with_optimizer ? "with AdamW" : "forward and backward");
  const size_t everything = planner_saved_bytes(step);
  const size_t peak_without = compile(step).memory_stats().planned_peak;
  size_t best_peak = peak_without;
  for (double f : {1.0, 0.5, 0.25}) {
    RematResult r = rematerialize(step, {.budget = f});
    SCOPED_TRACE("budget " + std::to_string(f) + "\n" + r.report.text());
    EXPECT_EQ(r.report.saved_bytes_before, everything);
    EXPECT_TRUE(r.report.met);
    // The pass's accounting is what the planner keeps live across the boundary.
    EXPECT_EQ(planner_saved_bytes(r.graph), r.report.saved_bytes_after);
    EXPECT_LE(r.report.saved_bytes_after, f * everything);
    const size_t peak = compile(r.graph).memory_stats().planned_peak;
    EXPECT_EQ(peak, r.report.planned_peak_after);
    EXPECT_EQ(peak_without, r.report.planned_peak_before);
    // The peak is never above the peak without remat, and either stays within
    // what the budget implies (the budget plus the memory the step needs
    // besides saved activations) or the report says what holds the arena
    // instead. (It can rise as the budget falls: intermediates the
    // auto-scheduler materializes, recomputed, take buffers in the backward;
    // the cut does not weigh those yet.)
    EXPECT_LE(peak, peak_without);
    const size_t implied = r.report.budget_bytes + (peak_without - everything);
    EXPECT_EQ(r.report.peak_budget_bytes, implied);
    EXPECT_EQ(r.report.peak_met, peak <= implied);
    if (!r.report.peak_met) {
      EXPECT_NE(r.report.text().find("backward intermediates"), std::string::npos);
    }
    best_peak = std::min(best_peak, peak);
  }
  if (!with_optimizer) {
    EXPECT_LT(best_peak, peak_without * 3 / 4);
  }
  }
}

TEST(Remat, MatmulsAreNotRecomputedAtBudgetOne) {
  Graph joint = differentiate(gpt(small_gpt()));
  RematResult r = rematerialize(joint);
  for (const Node* c : clones(r.graph)) {
    EXPECT_NE(op_def(c->op).kind, OpKind::contraction) << c->name << " (" << c->op << ")";
    EXPECT_NE(c->op, "define");
  }
  for (const std::string& name : r.report.recomputed)
    EXPECT_NE(op_def(joint.node(name).op).kind, OpKind::contraction) << name;
  // Nor are reductions that shrink their input (the loss's row log-sum-exp):
  // saving them costs little.
  for (const Node* c : clones(r.graph))
    if (op_def(c->op).kind == OpKind::reduction)
      EXPECT_GT(8 * c->type.numel(), r.graph.node(c->inputs[0]).type.numel()) << c->name << " (" << c->op << ")";
  // Of the minimum cuts the pass takes the one closest to the sink: it saves
  // the residual stream that the layer norms' gradients read rather than the
  // blocks' outputs it is summed from, so no clone reads another clone (the
  // other cut recomputes the whole stream, clone by clone, at the start of
  // the backward). Without dropout, whose inlined masks change the cut.
  GptConfig plain = small_gpt();
  plain.dropout = 0;
  plain.n_layer = 3;
  plain.n_embd = 96;
  plain.block_size = 64;
  plain.batch = 4;
  RematResult p = rematerialize(differentiate(gpt(plain)));
  for (const Node* c : clones(p.graph))
    for (int in : c->inputs)
      EXPECT_EQ(p.graph.node(in).attrs.count("remat"), 0u) << c->name << " reads the clone " << p.graph.node(in).name;
  // At a budget of 0 everything may be recomputed, linear layers included.
  RematResult zero = rematerialize(joint, {.budget = 0.0});
  bool contraction = false;
  for (const Node* c : clones(zero.graph)) contraction = contraction || op_def(c->op).kind == OpKind::contraction;
  EXPECT_TRUE(contraction) << zero.report.text();
  EXPECT_EQ(zero.report.saved_bytes_after, 0u);
}

// A small block with a hand-written expected result: the softmax s is
// [3, 8] (128 arena bytes) but reads the [3, 1] linear output p (64 bytes)
// through an inlined add, so the minimum cut saves p and the backward
// recomputes s just before its first reader (t7), which then reads the clone.
TEST(Remat, SmallBlockPrintsAsExpected) {
  GraphBuilder b("block");
  Tensor x = b.input("x", {3, 4});
  Tensor w = b.param("w", {1, 4});
  Tensor r = b.param("r", {8});
  Tensor s = softmax(add(linear(x, w), r), 1);
  b.output("loss", sum(mul(s, s)));
  RematReport report;
  PassManager pm{autodiff(), remat({.budget = 1.0, .report = &report})};
  Graph g = pm.run(b.build());
  const std::string expected = R"(graph block {
  x = input()  # f32[3, 4]
  w = param()  # f32[1, 4]
  r = param()  # f32[8]
  t0 = linear(x, w)  # f32[3, 1]
  t1 = add(t0, r)  # f32[3, 8]
  t2 = softmax(t1, axis=1)  # f32[3, 8]
  t3 = mul(t2, t2)  # f32[3, 8]
  t4 = sum(t3, axes=[], keepdim=false)  # f32[]
  grad.loss = constant(value=1)  # f32[]
  t5 = reshape(grad.loss, shape=[1, 1])  # f32[1, 1]
  t6 = broadcast_to(t5, shape=[3, 8])  # f32[3, 8]
  t2.remat = softmax(t1, axis=1, remat="t2")  # f32[3, 8]
  t7 = mul(t6, t2.remat)  # f32[3, 8]
  t8 = mul(t6, t2.remat)  # f32[3, 8]
  t9 = add(t7, t8)  # f32[3, 8]
  t10 = mul(t9, t2.remat)  # f32[3, 8]
  t11 = sum(t10, axes=[1], keepdim=true)  # f32[3, 1]
  t12 = sub(t9, t11)  # f32[3, 8]
  t13 = mul(t2.remat, t12)  # f32[3, 8]
  t14 = sum(t13, axes=[1], keepdim=true)  # f32[3, 1]
  t15 = sum(t13, axes=[0], keepdim=true)  # f32[1, 8]
  t16 = reshape(t15, shape=[8])  # f32[8]
  t17 = permute(t14, dims=[1, 0])  # f32[1, 3]
  t18 = matmul(t17, x)  # f32[1, 4]
  output loss = t4
  output grad.w = t18
  output grad.r = t16
}
)";
  EXPECT_EQ(print(g), expected);
  EXPECT_EQ(print(parse(print(g))), expected);  // the clone's mark survives text
  EXPECT_EQ(report.saved_bytes_before, 128u);
  EXPECT_EQ(report.saved_bytes_after, 64u);
  EXPECT_EQ(report.recomputed, std::vector<std::string>{"t2"});
  EXPECT_EQ(report.saved, std::vector<std::string>{"t0"});
  EXPECT_DOUBLE_EQ(report.added_flops, 5.0 * 3 * 8);  // softmax: 5 FLOPs per input element
  // cse keeps the clone apart from its original (the remat mark differs);
  // it merges only autodiff's duplicate t7/t8.
  std::string merged = expected;
  const std::string t8_line = "  t8 = mul(t6, t2.remat)  # f32[3, 8]\n";
  merged.replace(merged.find(t8_line), t8_line.size(), "");
  merged.replace(merged.find("add(t7, t8)"), 11, "add(t7, t7)");
  EXPECT_EQ(print(PassManager{cse()}.run(g)), merged);
}

// A two-layer block with a checkpoint region over both linear layers: the
// backward reads nothing inside it, so both matmuls are recomputed; results
// stay bitwise equal.
TEST(Remat, CheckpointRegionIsRecomputed) {
  GraphBuilder b("mlp2");
  Tensor x = b.input("x", {5, 6});
  Tensor h1 = linear(x, b.param("w1", {7, 6}), b.param("b1", {7}));
  Tensor h2 = linear(gelu(h1), b.param("w2", {9, 7}));
  Tensor s = softmax(h2, 1);
  b.output("loss", sum(mul(s, s)));
  Graph joint = differentiate(b.build());
  const std::vector<std::string> inside = {h1.name(), h2.name()};
  auto recomputed = [](const RematReport& r, const std::string& name) {
    return std::find(r.recomputed.begin(), r.recomputed.end(), name) != r.recomputed.end();
  };

  RematResult plain = rematerialize(joint);
  for (const std::string& name : inside) EXPECT_FALSE(recomputed(plain.report, name)) << name;

  RematResult cp = rematerialize(joint, {.checkpoint = {{{"x"}, {s.name()}}}});
  SCOPED_TRACE(cp.report.text());
  for (const std::string& name : inside) EXPECT_TRUE(recomputed(cp.report, name)) << name;
  // The planner keeps no slot of the region's node live into the backward.
  std::vector<Kernel> kernels = partition(cp.graph);
  MemoryPlan plan = plan_memory(cp.graph, kernels);
  int loss_kernel = -1;
  for (size_t k = 0; k < kernels.size(); ++k)
    for (int r : kernels[k].roots)
      if (cp.graph.nodes[r].name == cp.graph.nodes[cp.graph.outputs[0].node].name) loss_kernel = static_cast<int>(k);
  for (const MemoryPlan::Slot& slot : plan.slots)
    for (const std::string& name : inside)
      if (cp.graph.nodes[slot.node].name == name) {
        EXPECT_LE(slot.last, loss_kernel) << name;
      }

  SEEDED(seed);
  auto args = test_util::random_args(joint, seed);
  auto want = compile(joint).run(args);
  auto got = compile(cp.graph).run(args);
  for (const auto& [name, buf] : want) EXPECT_TRUE(bitwise_equal(got.at(name), buf)) << name;
}

TEST(Remat, BadOptionsAreClearErrors) {
  GraphBuilder b("tiny");
  Tensor x = b.input("x", {2, 3});
  Tensor w = b.param("w", {4, 3});
  Tensor h = linear(x, w);
  b.output("loss", sum(softmax(h, 1)));
  Graph joint = differentiate(b.build());
  auto error = [&](RematOptions o) { return test_util::error_of([&] { rematerialize(joint, o); }); };
  EXPECT_NE(error({.budget = 1.5}).find("budget must be a fraction in [0, 1]"), std::string::npos);
  EXPECT_NE(error({.budget = -0.1}).find("budget must be a fraction in [0, 1]"), std::string::npos);
  EXPECT_NE(error({.budget = std::nan("")}).find("budget must be a fraction"), std::string::npos);
  EXPECT_NE(error({.budget_bytes = -5}).find("budget_bytes must be >= 0"), std::string::npos);
  EXPECT_NE(error({.loss = "nope"}).find("has no output 'nope'"), std::string::npos);
  EXPECT_NE(error({.checkpoint = {{{"ghost"}, {h.name()}}}}).find("'ghost', which is not a node"), std::string::npos);
  EXPECT_NE(error({.checkpoint = {{{"x"}, {"t5"}}}}).find("which is not in the forward"), std::string::npos);
  EXPECT_NE(error({.checkpoint = {{{}, {h.name()}}}}).find("needs at least one input and one output"),
            std::string::npos);
  EXPECT_NE(error({.checkpoint = {{{h.name()}, {h.name()}}}}).find("is empty"), std::string::npos);
  // An absolute budget works as the fraction does.
  RematResult r = rematerialize(joint, {.budget_bytes = 0});
  EXPECT_EQ(r.report.budget_bytes, 0u);
  EXPECT_EQ(r.report.saved_bytes_after, 0u);
}

TEST(Remat, StrictRefusesAPeakOverTheBudget) {
  Graph joint = differentiate(gpt(small_gpt()));
  RematResult lenient = rematerialize(joint, {.budget = 0.25});
  ASSERT_FALSE(lenient.report.peak_met) << lenient.report.text();
  std::string e = test_util::error_of([&] { rematerialize(joint, {.budget = 0.25, .strict = true}); });
  EXPECT_NE(e.find("over the " + std::to_string(lenient.report.peak_budget_bytes) + " bytes the budget implies"),
            std::string::npos)
      << e;
}

}  // namespace
