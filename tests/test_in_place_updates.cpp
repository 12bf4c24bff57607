// Optimizer updates in place (memory_plan.h's `updates`,
// Executable::in_place_updates): which "new.X" outputs the plan lets a
// runtime write over X, that a run doing so gives bitwise the results of a
// run into separate buffers, that any other overlap of an output with an
// argument is an Error, that updates joined into one kernel stay in place,
// and that the Trainer keeps one copy of its state.
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "memory_plan.h"
#include "partition.h"
#include "test_util.h"

using namespace tessera;

namespace {

std::set<std::string> new_outputs(const Graph& g) {
  std::set<std::string> names;
  for (const GraphOutput& o : g.outputs)
    if (o.name.rfind("new.", 0) == 0) names.insert(o.name);
  return names;
}

std::set<std::string> planned_in_place(const Graph& g) {
  std::set<std::string> names;
  for (const MemoryPlan::InPlaceUpdate& u : plan_memory(g, partition(g)).updates) {
    EXPECT_EQ(g.outputs[u.output].name, "new." + g.nodes[u.input].name);
    names.insert(g.outputs[u.output].name);
  }
  return names;
}

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

Graph mlp_joint() { return differentiate(mlp({{13, 33, 7}, 5, "gelu"})); }

// Runs `g` once into fresh output Buffers and once with every in-place output
// given its argument's Buffer (a copy of the same values); every output must
// be bitwise equal, freed arena buffers poisoned.
void expect_in_place_run_equal(const Graph& g) {
  SEEDED(seed);
  const std::map<std::string, Buffer> args = test_util::random_args(g, seed);
  Executable exe = compile(g);
  setenv("TESSERA_POISON_FREED", "1", 1);
  const std::map<std::string, Buffer> separate = exe.run(args);
  std::map<std::string, Buffer> own_args, outputs;
  for (const auto& [name, b] : args) own_args[name] = b.clone();
  for (const auto& [out, in] : exe.in_place_updates()) outputs[out] = own_args.at(in);
  exe.run(own_args, outputs);
  unsetenv("TESSERA_POISON_FREED");
  EXPECT_FALSE(exe.in_place_updates().empty()) << exe.memory_plan_text();
  for (const auto& [out, in] : exe.in_place_updates())
    EXPECT_EQ(outputs.at(out).data(), own_args.at(in).data()) << out << " was not written over " << in;
  for (const auto& [name, want] : separate) {
    const Buffer& got = outputs.at(name);
    ASSERT_EQ(got.bytes(), want.bytes()) << name;
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.bytes()), 0) << g.name << ": output " << name << " differs in place";
  }
}

TEST(InPlaceUpdates, EveryAdamWParamAndMomentOfTheMlpStep) {
  Graph step = adamw(mlp_joint(), AdamWOptions{});
  EXPECT_EQ(planned_in_place(step), new_outputs(step)) << plan_memory(step, partition(step)).text(step);
  EXPECT_EQ(new_outputs(step).size(), 12u);  // 2 layers x (weight, bias) x (param, exp_avg, exp_avg_sq)
}

// Every param and moment of the GPT step, the token table included: its
// gradient recomputes the embedding lookup (a gather from the table, kernel
// remat), and partition() does not join an update "new.X" to a kernel whose
// other outputs read X, so the table's update is written over the table.
TEST(InPlaceUpdates, TheGptStepTheTableItGathersFromIncluded) {
  Graph step = adamw(differentiate(gpt(small_gpt())), AdamWOptions{});
  EXPECT_EQ(planned_in_place(step), new_outputs(step)) << plan_memory(step, partition(step)).text(step);
}

// Four 5-element params whose AdamW updates partition() joins into shared
// kernels (each moves far fewer bytes than a launch costs): every update
// stays in place, and the joined kernels compute what separate ones do.
Graph small_params_step() {
  GraphBuilder b("small_params");
  Tensor x = b.input("x", {5});
  Tensor w1 = b.param("w1", {5}), w2 = b.param("w2", {5}), w3 = b.param("w3", {5}), w4 = b.param("w4", {5});
  b.output("loss", sum(add(mul(mul(x, w1), w2), mul(w3, exp(mul(x, w4)))), {0}));
  return adamw(differentiate(b.build()), AdamWOptions{});
}

TEST(InPlaceUpdates, JoinedUpdatesOfSmallParamsStayInPlace) {
  const Graph step = small_params_step();
  size_t widest = 0;
  for (const Kernel& k : partition(step)) widest = std::max(widest, k.roots.size());
  EXPECT_GE(widest, 6u) << "the updates of w1..w4 should share kernels";
  EXPECT_EQ(planned_in_place(step), new_outputs(step)) << plan_memory(step, partition(step)).text(step);
  expect_in_place_run_equal(step);
}

TEST(InPlaceUpdates, RunsInPlaceEqualRunsIntoSeparateBuffers) {
  expect_in_place_run_equal(adamw(mlp_joint(), AdamWOptions{}));
  expect_in_place_run_equal(adamw(differentiate(gpt(small_gpt())), AdamWOptions{}));
  expect_in_place_run_equal(sgd(mlp_joint(), SGDOptions{0.1, 0.9, 0, 0.01, true, 1.0}));  // momentum, clipping
  // f16 loss scaling: each update is where(optim.skip, X, X's update).
  expect_in_place_run_equal(adamw(apply_loss_scaling(apply_autocast(mlp_joint(), {DType::f16}), {}), AdamWOptions{}));
}

TEST(InPlaceUpdates, OnlyUpdatesThatReadTheirInputAtTheirOwnIndex) {
  GraphBuilder b("views");
  Tensor x = b.param("x", {4, 4});
  Tensor y = b.param("y", {4, 4});
  Tensor z = b.param("z", {4});
  b.output("new.x", permute(x, {1, 0}));          // reads x transposed
  b.output("new.y", sub(y, mean(y, {1}, true)));  // reads y pointwise; its mean is another kernel's
  b.output("new.z", cast(z, DType::f16));         // another type
  Graph g = b.build();
  EXPECT_EQ(planned_in_place(g), std::set<std::string>{"new.y"}) << plan_memory(g, partition(g)).text(g);
}

TEST(InPlaceUpdates, NotWhenALaterKernelStillReadsTheInput) {
  GraphBuilder b("later");
  Tensor x = b.param("x", {3, 5});
  Tensor w = b.input("w", {5, 2});
  Tensor nx = mul(x, b.constant(0.5));
  b.output("new.x", nx);
  // Reads x after new.x: a reduction over new.x and x together.
  b.output("s", sum(mul(matmul(nx, w), matmul(x, w))));
  Graph g = b.build();
  const std::vector<Kernel> kernels = partition(g);
  bool x_read_after = false;
  int written = -1;
  for (int s = 0; s < static_cast<int>(kernels.size()); ++s) {
    for (int r : kernels[s].roots)
      if (g.nodes[r].name == g.nodes[g.outputs[0].node].name) written = s;
    for (int in : kernels[s].inputs)
      if (written >= 0 && s > written && g.nodes[in].name == "x") x_read_after = true;
  }
  ASSERT_TRUE(x_read_after) << "the partition no longer reads x after new.x; pick another graph";
  EXPECT_TRUE(planned_in_place(g).empty()) << plan_memory(g, partition(g)).text(g);
}

TEST(InPlaceUpdates, OtherOverlapsOfOutputsAndArgumentsAreErrors) {
  Graph step = adamw(mlp_joint(), AdamWOptions{});
  SEEDED(seed);
  std::map<std::string, Buffer> args = test_util::random_args(step, seed);
  Executable exe = compile(step);
  // new.layers.0.weight over a moment of the same type: not the pair the plan allows.
  std::map<std::string, Buffer> outputs;
  outputs["new.layers.0.weight"] = args.at("layers.0.weight.exp_avg");
  EXPECT_NE(test_util::error_of([&] { exe.run(args, outputs); })
                .find("output 'new.layers.0.weight' (f32[33, 13]) shares bytes with argument "
                      "'layers.0.weight.exp_avg' (f32[33, 13]); it may only be written over 'layers.0.weight'"),
            std::string::npos);
  // The loss over the step count: no in-place update at all.
  outputs.clear();
  outputs["loss"] = args.at("optim.step");
  EXPECT_NE(test_util::error_of([&] { exe.run(args, outputs); })
                .find("output 'loss' (f32[]) shares bytes with argument 'optim.step' (f32[]); this output is not "
                      "updated in place"),
            std::string::npos);
}

TEST(InPlaceUpdates, TrainerKeepsOneCopyOfItsState) {
  Trainer t(mlp_joint());
  const void* weight = t.params().at("layers.0.weight").data();
  const void* moment = t.state().at("layers.0.weight.exp_avg_sq").data();
  SEEDED(seed);
  std::map<std::string, Buffer> batch = test_util::random_args(mlp({{13, 33, 7}, 5, "gelu"}), seed);
  for (auto it = batch.begin(); it != batch.end();)
    it = t.params().count(it->first) ? batch.erase(it) : std::next(it);
  const std::vector<double> before = t.params().at("layers.0.weight").to_f64();
  for (int i = 0; i < 3; ++i) t.step(batch);
  EXPECT_EQ(t.params().at("layers.0.weight").data(), weight);
  EXPECT_EQ(t.state().at("layers.0.weight.exp_avg_sq").data(), moment);
  EXPECT_NE(t.params().at("layers.0.weight").to_f64(), before);  // and it did train
}

}  // namespace
