// The remat pass on the CPU: one GPT training step (forward, backward, AdamW)
// at two sizes, without remat and with remat at budgets 1.0, 0.5 and 0.25 of
// the save-everything bytes, in one run. Each benchmark times the compiled
// step (Executable::run) and reports, as counters, the memory planner's peak
// (memory_stats().planned_peak), the saved bytes and the FLOPs remat adds.
// Compile time is excluded (every variant compiles once, before timing).
#include <benchmark/benchmark.h>
#include <tessera/models.h>
#include <tessera/remat.h>
#include <tessera/tessera.h>

#include <random>

using namespace tessera;

namespace {

GptConfig size_config(int64_t size) {
  GptConfig c;
  c.vocab_size = 256;
  c.n_head = 4;
  c.batch = 8;
  if (size == 0) {
    c.block_size = 64;
    c.n_layer = 2;
    c.n_embd = 64;
  } else {
    c.block_size = 128;
    c.n_layer = 4;
    c.n_embd = 128;
  }
  return c;
}

// Every input and param: floats U(-0.02, 0.02), token ids in range, AdamW's
// step 1 and non-negative second moments.
std::map<std::string, Buffer> step_args(const Graph& g, int64_t vocab) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-0.02, 0.02);
  std::map<std::string, Buffer> args;
  for (const Node& n : g.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    std::vector<double> v(n.type.numel());
    for (double& x : v) x = is_float(n.type.dtype) ? u(rng) : static_cast<double>(rng() % vocab);
    if (n.name == "optim.step") v.assign(v.size(), 1);
    if (n.name.find("exp_avg_sq") != std::string::npos)
      for (double& x : v) x = x * x;
    args[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
  }
  return args;
}

// state.range(0): the size; state.range(1): the budget in percent, or -1 for no remat.
void BM_gpt_step(benchmark::State& state) {
  const GptConfig c = size_config(state.range(0));
  Graph step = adamw(differentiate(gpt(c)), AdamWOptions{});
  RematReport report;
  if (state.range(1) >= 0) {
    RematResult r = rematerialize(step, {.budget = state.range(1) / 100.0});
    step = std::move(r.graph);
    report = std::move(r.report);
  }
  Executable exe = compile(step);
  auto args = step_args(step, c.vocab_size);
  std::map<std::string, Buffer> outputs;
  exe.run(args, outputs);  // warm up
  for (auto _ : state) exe.run(args, outputs);
  state.counters["planned_peak_KiB"] = exe.memory_stats().planned_peak / 1024.0;
  if (state.range(1) >= 0) {
    state.counters["saved_KiB"] = report.saved_bytes_after / 1024.0;
    state.counters["save_all_KiB"] = report.saved_bytes_before / 1024.0;
    state.counters["added_MFLOP"] = report.added_flops * 1e-6;
    state.counters["recomputed"] = static_cast<double>(report.recomputed.size());
  }
  state.SetLabel("L" + std::to_string(c.n_layer) + " T" + std::to_string(c.block_size) + " C" +
                 std::to_string(c.n_embd) + " B" + std::to_string(c.batch) +
                 (state.range(1) < 0 ? " no remat" : " budget " + std::to_string(state.range(1)) + "%"));
}

BENCHMARK(BM_gpt_step)
    ->ArgsProduct({{0, 1}, {-1, 100, 50, 25}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);

}  // namespace

BENCHMARK_MAIN();
