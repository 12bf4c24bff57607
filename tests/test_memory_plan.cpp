// The memory planner (src/schedules/memory_plan.h) and the arena the
// executable runs in: no two live intermediates overlap, the plan's peak is
// the arena's size and the high-water mark runs measure, and whole training
// steps give the float64 reference's results while every freed buffer is
// overwritten with NaN (so a buffer reused while still live would show).
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <cmath>
#include <cstdlib>
#include <random>

#include "memory_plan.h"
#include "partition.h"
#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

// Every pair of slots whose lifetimes overlap occupies disjoint bytes, except
// a slot written in place over an input that dies there.
void expect_valid(const Graph& g, const MemoryPlan& plan) {
  for (size_t i = 0; i < plan.slots.size(); ++i) {
    const MemoryPlan::Slot& a = plan.slots[i];
    EXPECT_LE(a.offset + a.bytes, plan.peak) << g.nodes[a.node].name;
    EXPECT_EQ(a.offset % kArenaAlignment, 0u);
    EXPECT_GE(a.bytes, g.nodes[a.node].type.bytes());
    for (size_t j = i + 1; j < plan.slots.size(); ++j) {
      const MemoryPlan::Slot& b = plan.slots[j];
      const bool live_together = a.first <= b.last && b.first <= a.last;
      const bool share = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
      const bool in_place = a.in_place_of == b.node || b.in_place_of == a.node;
      if (live_together && share && !in_place)
        ADD_FAILURE() << g.nodes[a.node].name << " and " << g.nodes[b.node].name << " are live together (steps "
                      << a.first << ".." << a.last << " and " << b.first << ".." << b.last
                      << ") and share bytes";
    }
  }
}

// Runs `g` with freed buffers poisoned, then without (the arena keeps what
// the last readers left, so the high-water mark shows), comparing both runs
// with the reference; checks the plan and the measured high-water mark.
void check_graph(const Graph& g, double tol) {
  expect_valid(g, plan_memory(g, partition(g)));
  SEEDED(seed);
  auto args = test_util::random_args(g, seed);
  auto want = ref::evaluate(g, ref::from_buffers(args));
  Executable exe = compile(g);
  setenv("TESSERA_POISON_FREED", "1", 1);
  test_util::expect_outputs_close(exe.run(args), want, tol, g.name + " with freed buffers poisoned");
  unsetenv("TESSERA_POISON_FREED");
  test_util::expect_outputs_close(exe.run(args), want, tol, g.name + " without poisoning");
  MemoryStats m = exe.memory_stats();
  EXPECT_EQ(m.arena_bytes, m.planned_peak) << exe.memory_plan_text();
  EXPECT_EQ(m.high_water, m.planned_peak) << exe.memory_plan_text();
  EXPECT_LE(m.planned_peak, m.without_reuse);
}

TEST(MemoryPlan, MlpTrainingStep) {
  Graph step = adamw(differentiate(mlp({{13, 33, 7}, 5, "gelu"})), AdamWOptions{});
  check_graph(step, 1e-5);
}

TEST(MemoryPlan, GptTrainingStepReusesBuffers) {
  GptConfig c;
  c.vocab_size = 11;
  c.block_size = 5;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 8;
  c.batch = 3;
  Graph step = adamw(differentiate(gpt(c)), AdamWOptions{});
  check_graph(step, 1e-4);
  MemoryPlan plan = plan_memory(step, partition(step));
  // Most intermediates die young: reuse saves at least 40% (the attention
  // gradient recomputes its probabilities inside one kernel, so the short-lived
  // score matrices that used to make the saving larger are gone).
  EXPECT_LT(plan.peak, plan.total * 6 / 10) << plan.text(step);
}

TEST(MemoryPlan, ScalarChainIsComputedInPlace) {
  // sum -> exp -> log: each scalar kernel is elementwise and its input dies there.
  GraphBuilder b("chain");
  Tensor x = b.input("x", {3, 7});
  Tensor s = log(exp(sum(x)));
  b.output("y", mul(x, s));
  Graph g = b.build();
  MemoryPlan plan = plan_memory(g, partition(g));
  expect_valid(g, plan);
  EXPECT_NE(plan.text(g).find("in place of"), std::string::npos) << plan.text(g);
  check_graph(g, 1e-6);
}

// A kernel that reads a dying intermediate only through reshapes and
// elementwise ops (a cross-entropy gradient over the logits) writes over it;
// through a permute, which reads other elements, it does not.
TEST(MemoryPlan, ReshapedElementwiseKernelWritesInPlace) {
  for (bool permuted : {false, true}) {
    GraphBuilder b(permuted ? "permuted" : "reshaped");
    Tensor x = b.input("x", {96, 80}), w = b.input("w", {80, 80});
    Tensor m = matmul(x, w);  // an intermediate [96, 80]
    Tensor s = sum(m);        // read before the kernel below
    Tensor y = permuted ? reshape(permute(m, {1, 0}), {120, 64}) : reshape(m, {120, 64});
    for (int i = 0; i < 16; ++i) y = tanh(mul(exp(neg(y)), s));  // costly: materialized once for its two readers
    b.output("rows", sum(y, {1}));
    b.output("columns", sum(y, {0}));
    Graph g = b.build();
    MemoryPlan plan = plan_memory(g, partition(g));
    expect_valid(g, plan);
    const bool in_place = plan.text(g).find("in place of " + m.name()) != std::string::npos;
    EXPECT_EQ(in_place, !permuted) << plan.text(g);
    check_graph(g, 1e-5);
  }
}

TEST(MemoryPlan, DisjointLifetimesShareBytes) {
  // Two reductions in sequence, each read once, then dead: one slot's bytes serve both.
  GraphBuilder b("seq");
  Tensor x = b.input("x", {64, 64});
  Tensor a = softmax(x, 1);
  Tensor c = softmax(matmul(a, x), 1);
  Tensor d = softmax(matmul(c, x), 1);
  b.output("y", sum(d));
  Graph g = b.build();
  MemoryPlan plan = plan_memory(g, partition(g));
  expect_valid(g, plan);
  EXPECT_LT(plan.peak, plan.total) << plan.text(g);
  check_graph(g, 1e-4);
}

TEST(MemoryPlan, GraphOutputsAreNotInTheArena) {
  GraphBuilder b("outs");
  Tensor x = b.input("x", {4, 5});
  b.output("s", sum(x, {1}));
  Graph g = b.build();
  MemoryPlan plan = plan_memory(g, partition(g));
  EXPECT_TRUE(plan.slots.empty()) << plan.text(g);
  EXPECT_EQ(plan.peak, 0u);
  check_graph(g, 1e-6);
}

}  // namespace
