// Tessera's schedules against other ways to schedule the same kernels, side
// by side in one run, for the MLP and GPT AdamW training steps: (a) naive:
// every node of every kernel its own root Func, scalar, one thread;
// (b), (c) Halide's own Adams2019 and Mullapudi2016 autoschedulers (shipped
// with Debian's Halide) applied to each kernel's pipeline, with estimates
// from the static shapes. All variants share Tessera's partition into
// kernels and its memory plan; only the schedule inside kernels differs
// (through compile() with CompileOptions::schedules). A fourth variant,
// tessera_no_kernel_remat, is Tessera's schedule with the auto-scheduler's
// kernel-level remat turned off (every shared intermediate recomputed).
// Reports the step time of each and the compile time; each variant compiles
// only when a benchmark that runs it is selected (--benchmark_filter).
#include <benchmark/benchmark.h>
#include <tessera/models.h>
#include <tessera/schedule.h>
#include <tessera/tessera.h>

#include <chrono>
#include <random>
#include <sstream>

using namespace tessera;

namespace {

std::map<std::string, Buffer> random_args(const Graph& g) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> u(-1, 1);
  std::map<std::string, Buffer> args;
  for (const Node& n : g.nodes)
    if (n.op == "input" || n.op == "param") {
      std::vector<double> v(numel(n.type.shape));
      for (double& x : v) x = is_float(n.type.dtype) ? u(rng) : static_cast<double>(rng() % 5);
      if (n.name == "optim.step") v.assign(v.size(), 1);
      if (n.name.find("exp_avg_sq") != std::string::npos) v.assign(v.size(), 0);
      args[n.name] = Buffer::from(v, n.type.shape, n.type.dtype);
    }
  return args;
}

// The kernel names of a compiled graph, from its schedule text ("kernel t3 (sum) ...",
// "kernel t60+t75 (add, sub) ..." is named t75).
std::vector<std::string> kernel_names(const Executable& exe) {
  std::vector<std::string> names;
  std::istringstream in(exe.schedule_text());
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("kernel ", 0) != 0) continue;
    std::string roots = line.substr(7, line.find(' ', 7) - 7);
    names.push_back(roots.substr(roots.rfind('+') == std::string::npos ? 0 : roots.rfind('+') + 1));
  }
  return names;
}

std::string naive(KernelSchedule& k) {
  for (size_t i = 0; i < k.funcs.size(); ++i)
    if (!k.graph.nodes[i].is_leaf()) k.funcs[i].compute_root();
  for (auto& stages : k.stages)
    for (Halide::Func s : stages) s.compute_root();
  for (Halide::Func out : k.outputs) out.compute_root();
  return "naive";
}

ScheduleOverride autoscheduler(const std::string& name) {
  return [name](KernelSchedule& k) {
    // Estimates from the static shapes (Halide's dim 0 is the innermost); the
    // kernel graph's input nodes come in the order of its args.
    int arg = 0;
    for (const Node& n : k.graph.nodes) {
      if (n.op != "input") continue;
      Halide::ImageParam p = k.args[arg++];
      const Shape& s = n.type.shape;
      for (int d = 0; d < p.dimensions(); ++d) p.dim(d).set_estimate(0, static_cast<int>(s[s.size() - 1 - d]));
    }
    for (size_t o = 0; o < k.outputs.size(); ++o) {
      const Shape& s = k.graph.node(k.graph.outputs[o].node).type.shape;
      Halide::Region region;
      for (size_t d = 0; d < s.size(); ++d) region.emplace_back(0, static_cast<int>(s[s.size() - 1 - d]));
      k.outputs[o].set_estimates(region);
    }
    Halide::Pipeline(k.outputs).auto_schedule(name, k.target, Halide::MachineParams(2, 32 << 20, 40));
    return name;
  };
}

struct Variant {
  std::string name;
  Executable exe;
  double compile_seconds = 0;
};

const char* const kVariants[] = {"tessera", "tessera_no_kernel_remat", "naive", "Adams2019", "Mullapudi2016"};

Graph model_graph(const std::string& model) {
  return model == "mlp" ? registered_model("mlp_train_step")
                        : registered_model("gpt_train_step", {{"n_layer", "1"}, {"n_embd", "64"}, {"block_size", "64"}});
}

// Compiled on first use, so that a --benchmark_filter compiles only what it runs.
const Variant* variant_for(const std::string& model, const std::string& which) {
  static std::map<std::string, std::unique_ptr<Variant>> cache;
  const std::string key = model + "/" + which;
  if (auto it = cache.find(key); it != cache.end()) return it->second.get();
  const Graph g = model_graph(model);
  CompileOptions options;
  if (which == "tessera_no_kernel_remat") options.kernel_remat = false;
  if (which == "naive" || which == "Adams2019" || which == "Mullapudi2016")
    for (const std::string& n : kernel_names(compile(g)))
      options.schedules[n] = which == "naive" ? ScheduleOverride(naive) : autoscheduler(which);
  auto start = std::chrono::steady_clock::now();
  try {
    Executable exe = which == "tessera" ? compile(g) : compile(g, Target::host(), options);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    cache[key] = std::make_unique<Variant>(Variant{which, exe, s});
  } catch (const Error& e) {
    std::fprintf(stderr, "%s on %s: %s\n", which.c_str(), model.c_str(), e.what());
    cache[key] = nullptr;
  }
  return cache[key].get();
}

void BM_step(benchmark::State& state, const std::string& model, const std::string& which) {
  const Variant* v = variant_for(model, which);
  if (!v) {
    state.SkipWithError("this schedule failed to compile (see stderr)");
    return;
  }
  auto args = random_args(v->exe.graph());
  std::map<std::string, Buffer> out;
  v->exe.run(args, out);
  for (auto _ : state) v->exe.run(args, out);
  state.SetLabel(v->name);
  state.counters["compile_s"] = v->compile_seconds;
}

}  // namespace

int main(int argc, char** argv) {
  Halide::load_plugin("/usr/lib/x86_64-linux-gnu/halide14/libautoschedule_adams2019.so");
  Halide::load_plugin("/usr/lib/x86_64-linux-gnu/halide14/libautoschedule_mullapudi2016.so");
  for (const char* model : {"mlp", "gpt"})
    for (const char* which : kVariants) {
      benchmark::RegisterBenchmark((std::string(model) + "_step/" + which).c_str(), BM_step, model, which)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
