// Tessera's schedules against other ways to schedule the same kernels, side
// by side in one run, for the MLP and GPT AdamW training steps: (a) naive:
// every node of every kernel its own root Func, scalar, one thread;
// (b), (c) Halide's own Adams2019 and Mullapudi2016 autoschedulers (shipped
// with Debian's Halide) applied to each kernel's pipeline, with estimates
// from the static shapes. All variants share Tessera's partition into
// kernels and its memory plan; only the schedule inside kernels differs
// (through compile() with CompileOptions::schedules). Reports the step time
// of each and the ratio to Tessera's, plus the compile time.
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

std::vector<Variant>& variants_for(const std::string& model) {
  static std::map<std::string, std::vector<Variant>> cache;
  auto it = cache.find(model);
  if (it != cache.end()) return it->second;
  Graph g = model == "mlp" ? registered_model("mlp_train_step")
                           : registered_model("gpt_train_step", {{"n_layer", "1"}, {"n_embd", "64"}, {"block_size", "64"}});
  std::vector<Variant> v;
  auto start = std::chrono::steady_clock::now();
  Executable tessera_exe = compile(g);
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  v.push_back({"tessera", tessera_exe, seconds()});
  const std::vector<std::string> names = kernel_names(tessera_exe);
  for (std::string which : {"naive", "Adams2019", "Mullapudi2016"}) {
    CompileOptions options;
    for (const std::string& n : names)
      options.schedules[n] = which == "naive" ? ScheduleOverride(naive) : autoscheduler(which);
    start = std::chrono::steady_clock::now();
    try {
      v.push_back({which, compile(g, Target::host(), options), seconds()});
    } catch (const Error& e) {
      std::fprintf(stderr, "%s on %s: %s\n", which.c_str(), model.c_str(), e.what());
    }
  }
  return cache[model] = v;
}

void BM_step(benchmark::State& state, const std::string& model, int variant) {
  std::vector<Variant>& v = variants_for(model);
  if (variant >= static_cast<int>(v.size())) {
    state.SkipWithError("this schedule failed to compile (see stderr)");
    return;
  }
  auto args = random_args(v[variant].exe.graph());
  std::map<std::string, Buffer> out;
  v[variant].exe.run(args, out);
  for (auto _ : state) v[variant].exe.run(args, out);
  state.SetLabel(v[variant].name);
  state.counters["compile_s"] = v[variant].compile_seconds;
}

}  // namespace

int main(int argc, char** argv) {
  Halide::load_plugin("/usr/lib/x86_64-linux-gnu/halide14/libautoschedule_adams2019.so");
  Halide::load_plugin("/usr/lib/x86_64-linux-gnu/halide14/libautoschedule_mullapudi2016.so");
  for (const char* model : {"mlp", "gpt"})
    for (int i = 0; i < 4; ++i) {
      static const char* names[] = {"tessera", "naive", "Adams2019", "Mullapudi2016"};
      benchmark::RegisterBenchmark((std::string(model) + "_step/" + names[i]).c_str(), BM_step, model, i)
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
