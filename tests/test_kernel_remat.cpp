// The auto-scheduler's kernel-level remat decisions (kernel_remat.h): an
// expensive intermediate read by several kernels is materialized once, a
// cheap one is recomputed by each reader, the decisions and their estimates
// are printed in the plan, the estimates follow the documented formula, a
// row statistic broadcast over wide rows is materialized, and
// results equal the float64 reference either way (and with remat off).
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/schedule.h>
#include <tessera/tessera.h>

#include <random>
#include <regex>

#include "cost_model.h"
#include "partition.h"
#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

// x -> a long transcendental chain (expensive) and a cheap add, each read by
// three reductions along different axes, so by three kernels.
Graph shared_chains(int64_t rows, int64_t cols) {
  GraphBuilder g("shared");
  Tensor x = g.input("x", {rows, cols});
  Tensor y = g.input("y", {rows, cols});
  Tensor deep = x;
  for (int i = 0; i < 6; ++i) deep = tanh(exp(deep) * 0.5);
  Tensor cheap = x + y;
  g.output("deep_rows", sum(deep, {1}));
  g.output("deep_cols", sum(deep, {0}));
  g.output("deep_max", max(deep, {1}));
  g.output("cheap_rows", sum(cheap, {1}));
  g.output("cheap_cols", sum(cheap, {0}));
  g.output("cheap_max", max(cheap, {1}));
  return g.build();
}

const RematDecision* decision_for(const Graph& g, const std::vector<RematDecision>& ds, const std::string& op,
                                  int64_t last_of_op = -1) {
  const RematDecision* found = nullptr;
  for (const RematDecision& d : ds)
    if (g.nodes[d.node].op == op && (last_of_op < 0 || d.node <= last_of_op)) found = &d;
  return found;
}

// The outputs are f32 sums of up to 300 terms of magnitude up to 2 whose
// total may cancel to near 0, so the tolerance is absolute-ish: 1e-4 (a
// 1e-5 one failed on a row summing to 0.033 with an f32 rounding error of
// 1.1e-5). A wrong remat decision moves results by whole terms.
void expect_matches_reference(const Executable& exe, const Graph& g) {
  SEEDED(seed);
  auto args = test_util::random_args(g, seed);
  auto want = ref::evaluate(g, ref::from_buffers(args));
  test_util::expect_outputs_close(exe.run(args), want, 1e-4, "kernel remat");
}

}  // namespace

TEST(KernelRemat, ExpensiveSharedChainIsMaterializedCheapOneRecomputed) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {37, 129}, {300, 211}}) {
    const Graph g = shared_chains(rows, cols);
    const CostModel cost = cpu_x86_cost_model();
    std::vector<RematDecision> ds;
    partition(g, &cost, &ds);
    // The last node of the chain (the last tanh) and the add are read by three kernels.
    const RematDecision* deep = decision_for(g, ds, "tanh");
    const RematDecision* cheap = decision_for(g, ds, "add");
    ASSERT_NE(deep, nullptr);
    ASSERT_NE(cheap, nullptr);
    EXPECT_EQ(deep->readers, 3);
    EXPECT_EQ(cheap->readers, 3);
    EXPECT_FALSE(cheap->materialize) << rows << "x" << cols;
    // Materializing pays for the deep chain once there is enough work to beat a launch.
    if (rows * cols >= 1000) {
      EXPECT_TRUE(deep->materialize) << rows << "x" << cols;
    }
    // Results are the reference's, with the decisions and without them.
    expect_matches_reference(compile(g), g);
    CompileOptions off;
    off.kernel_remat = false;
    const Executable plain = compile(g, Target::host(), off);
    expect_matches_reference(plain, g);
    EXPECT_NE(plain.schedule_text().find("kernel-level remat: off"), std::string::npos);
  }
}

TEST(KernelRemat, EstimatesFollowTheDocumentedFormula) {
  // cheap = x + y (f32[R, C], 1 FLOP per element), read by 3 kernels.
  const int64_t R = 64, C = 48;
  const Graph g = shared_chains(R, C);
  const CostModel cost{"test", 10.0, 100.0, 5.0};
  std::vector<RematDecision> ds;
  partition(g, &cost, &ds);
  const RematDecision* cheap = decision_for(g, ds, "add");
  ASSERT_NE(cheap, nullptr);
  const double bytes = R * C * 4.0, reads = 2 * bytes, flops = R * C * 1.0;
  const double us_per_byte = 1 / (10.0 * 1e3), us_per_flop = 1 / (100.0 * 1e3);
  EXPECT_NEAR(cheap->recompute_us, 3 * (reads * us_per_byte + flops * us_per_flop), 1e-9);
  EXPECT_NEAR(cheap->materialize_us, 5.0 + (reads + bytes + 3 * bytes) * us_per_byte + flops * us_per_flop, 1e-9);
  EXPECT_EQ(cheap->materialize, cheap->materialize_us < cheap->recompute_us);
}

// A row statistic (log of a row sum: a logsumexp) read by one kernel that
// broadcasts it over wide rows is recomputed per element of that kernel:
// its FLOPs count once per element read, so with wide rows it gets a kernel
// of its own; with one column there is nothing to save and it stays inline.
TEST(KernelRemat, BroadcastStatisticIsMaterializedForWideRows) {
  for (auto [cols, wide] : {std::pair<int64_t, bool>{1, false}, {4096, true}}) {
    GraphBuilder b("lse");
    Tensor x = b.input("x", {64, cols});
    Tensor lse = log(sum(exp(x), {1}, true));
    b.output("p", exp(x - lse));
    const Graph g = b.build();
    const CostModel cost = cpu_x86_cost_model();
    std::vector<RematDecision> ds;
    partition(g, &cost, &ds);
    const RematDecision* d = decision_for(g, ds, "log");
    if (!wide) {
      EXPECT_TRUE(d == nullptr || !d->materialize) << cols;
    } else {
      ASSERT_NE(d, nullptr);
      EXPECT_EQ(d->readers, 1);
      EXPECT_TRUE(d->materialize) << d->recompute_us << " vs " << d->materialize_us;
    }
    expect_matches_reference(compile(g), g);
  }
}

// A LoRA linear's sum of two products, s = x w1 + x w2, read by the
// forward (gelu, feeding the next product) and by the backward (gelu's
// gradient). Recomputed in both, it keeps both products alive until the
// backward; materialized, only itself: twice its bytes freed, so it is
// materialized (the estimates here are within 1.5x). When the backward
// reads one product anyway it would free only its own bytes, and it is
// recomputed. Results are the reference's either way.
TEST(KernelRemat, SumReadAcrossTheLossIsMaterializedWhenThatFreesMemory) {
  for (bool product_read_after_loss : {false, true}) {
    GraphBuilder b("lora_like");
    Tensor x = b.input("x", {33, 24});
    Tensor w1 = b.param("w1", {24, 40}), w2 = b.param("w2", {24, 40}), w3 = b.param("w3", {40, 7});
    Tensor a = matmul(x, w1);
    Tensor s = a + matmul(x, w2);
    Tensor h = gelu(s);
    Tensor y = matmul(h, w3);
    b.output("h", h);  // a kernel of its own, as a GPU product's operand is
    // a * a's gradient reads a after the loss.
    b.output("loss", product_read_after_loss ? sum(y * y, {0, 1}) + sum(a * a, {0, 1}) : sum(y * y, {0, 1}));
    const Graph step = differentiate(b.build());
    const CostModel cost{"test", 10.0, 100.0, 0.0};
    std::vector<RematDecision> ds;
    partition(step, &cost, &ds);
    const std::string plan = remat_decisions_text(step, ds, cost);
    int loss = -1;
    for (const GraphOutput& o : step.outputs)
      if (o.name == "loss") loss = o.node;
    const RematDecision* d = nullptr;  // s's: the forward's only add of that shape
    for (const RematDecision& r : ds)
      if (step.nodes[r.node].op == "add" && step.nodes[r.node].type.shape == Shape{33, 40} && r.node < loss) d = &r;
    ASSERT_NE(d, nullptr) << plan;
    EXPECT_EQ(d->readers, 2);
    EXPECT_LE(d->materialize_us, 1.5 * d->recompute_us);
    const double own = 33 * 40 * 4.0;
    EXPECT_EQ(d->frees_bytes, product_read_after_loss ? own : 2 * own);
    const bool by_time = d->materialize_us < d->recompute_us;
    EXPECT_EQ(d->materialize, !product_read_after_loss || by_time) << d->recompute_us << " vs " << d->materialize_us;
    if (product_read_after_loss) {
      EXPECT_FALSE(by_time) << "the case meant to show memory deciding";
    } else {
      EXPECT_NE(plan.find("-> materialize (read across the loss: materializing it frees 10.3 KiB there)"),
                std::string::npos)
          << plan;
    }
    expect_matches_reference(compile(step), step);
  }
}

TEST(KernelRemat, PlanPrintsEachDecisionWithItsEstimates) {
  const Graph g = shared_chains(300, 211);
  const std::string text = compile(g).schedule_text();
  EXPECT_NE(text.find("kernel-level remat (cpu_x86 cost model: "), std::string::npos) << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(t\d+ \(tanh\) f32\[300, 211\]: 3 readers, recompute [0-9.]+ us vs )"
                                                 R"(materialize [0-9.]+ us -> materialize)")))
      << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(\(add\) f32\[300, 211\]: 3 readers, .* -> recompute)"))) << text;
  // The materialized chain is a kernel of its own, which the reductions read.
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(kernel t\d+ \(tanh\) reads in0 = x)"))) << text;
}

TEST(KernelRemat, TrainingStepsMatchTheReferenceWithDecisionsForEachTarget) {
  const Graph step = registered_model("gpt_train_step", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                                         {"n_head", "2"}, {"n_embd", "8"}, {"batch", "3"}});
  expect_matches_reference(compile(step), step);
  // The CUDA cost models decide too (their figures come from cuda_sm80/cuda_sm90).
  for (int sm : {80, 90}) {
    Target t;
    t.cuda_sm = sm;
    const CostModel cost = cost_model(t);
    EXPECT_EQ(cost.name, sm == 80 ? "cuda_sm80" : "cuda_sm90");
    std::vector<RematDecision> ds;
    partition(step, &cost, &ds);
    EXPECT_FALSE(ds.empty());
  }
}
