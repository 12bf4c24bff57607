// compile() and Executable: partitioning a Graph into kernels, lowering,
// scheduling and JIT-compiling each kernel for the CPU, caching them by
// signature, and running the kernels in order on Buffers.
//
// This is the in-process (JIT) path. Intermediate results live in one arena
// laid out by the MemoryPlan (memory_plan.h), allocated once per compiled
// graph; CUDA targets are refused until the CUDA runtime exists.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <sstream>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <unistd.h>

#include "bf16_storage.h"
#include "cpu_x86.h"
#include "decompose_attention.h"
#include "halide_util.h"
#include "lower_to_halide.h"
#include "memory_plan.h"
#include "partition.h"
#include "target.h"
#include "thread_pool.h"
#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"
#include "tessera/schedule.h"
#include "tessera/text.h"

namespace tessera {

namespace {

// The arena's fill: unwritten and freed bytes read as NaN (f32, f64), -1 or true.
constexpr uint8_t kPoison = 0xFF;

// One kernel: a JIT-compiled Halide pipeline with one output per root.
struct CompiledKernel {
  Graph graph;
  Halide::Target halide_target;
  LoweredGraph lowered;
  Halide::Pipeline pipeline;
  std::string schedule;
  mutable std::mutex run_mutex;  // a JIT pipeline runs one call at a time
};

}  // namespace

struct CompiledGraph {
  struct Step {
    std::shared_ptr<const CompiledKernel> kernel;
    std::vector<int> inputs;  // full-graph node ids, in the kernel's input order
    std::vector<int> roots;   // full-graph node ids of its outputs, in order
  };
  Graph graph;
  Target target;
  std::vector<Step> steps;
  std::string schedule;
  double seconds = 0;
  mutable std::mutex run_mutex;
  MemoryPlan memory;
  mutable Buffer arena;                // u8[memory.peak], filled with kPoison when allocated
  mutable std::vector<Buffer> intermediate;  // per node: its view of the arena, if it has a slot
  mutable std::vector<double> kernel_seconds;  // per step, summed over runs (TESSERA_PROFILE)
  mutable int64_t runs = 0;
};

namespace {

template <typename T>
using Cache = std::map<std::string, std::shared_ptr<const T>>;
std::mutex cache_mutex;
Cache<CompiledGraph>& graph_cache() {
  static Cache<CompiledGraph> c;
  return c;
}
Cache<CompiledKernel>& kernel_cache() {
  static Cache<CompiledKernel> c;
  return c;
}

// A Halide view of a tessera Buffer (no copy): dims reversed, row-major strides.
Halide::Buffer<> halide_view(const Buffer& b) {
  const Shape& s = b.shape();
  std::vector<halide_dimension_t> dims(s.size());
  int64_t stride = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    size_t d = s.size() - 1 - i;
    dims[i] = halide_dimension_t(0, static_cast<int32_t>(s[d]), static_cast<int32_t>(stride));
    stride *= s[d];
  }
  return Halide::Buffer<>(halide_type(b.dtype()), const_cast<void*>(b.data()), static_cast<int>(dims.size()),
                          dims.data());
}

// Parallel loops of JIT kernels run on Tessera's spinning pool (thread_pool.h).
int do_par_for(Halide::JITUserContext* ctx, int (*fn)(Halide::JITUserContext*, int, uint8_t*), int min, int size,
               uint8_t* closure) {
  return ThreadPool::global().parallel_for(ctx, fn, min, size, closure);
}

// Compiles one kernel, with the default schedule or `custom` (not cached).
std::shared_ptr<const CompiledKernel> compile_kernel(const Graph& kernel, const Target& target,
                                                     const std::string& context, const ScheduleOverride* custom,
                                                     bool bf16_as_u16) {
  std::string key = target.str() + (bf16_as_u16 ? " bf16_as_u16" : "") + "\n" + print(kernel);
  if (!custom) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = kernel_cache().find(key);
    if (it != kernel_cache().end()) return it->second;
  }
  auto k = std::make_shared<CompiledKernel>();
  k->graph = kernel;
  k->halide_target = halide_target(target);
  try {
    k->lowered = lower_to_halide(kernel);
    if (custom) {
      KernelSchedule view{kernel, k->lowered.funcs, k->lowered.stages, k->lowered.outputs, k->lowered.args,
                          k->halide_target};
      k->schedule = "  (override) " + (*custom)(view) + "\n";
    } else {
      k->schedule = schedule_cpu_x86(k->lowered, kernel, k->halide_target);
    }
    k->pipeline = Halide::Pipeline(k->lowered.outputs);
    if (bf16_as_u16) store_bf16_as_u16(k->pipeline);
    k->pipeline.jit_handlers().custom_do_par_for = &do_par_for;
    k->pipeline.compile_jit(k->halide_target);
  } catch (const Halide::Error& e) {
    fail("compile: Halide rejected ", context, custom ? " (its schedule override)" : "", " for ", target.str(), ": ",
         e.what());
  }
  if (custom) return k;
  std::lock_guard<std::mutex> lock(cache_mutex);
  return kernel_cache().emplace(key, k).first->second;
}

std::shared_ptr<CompiledGraph> build(const Graph& source, const Target& target, const CompileOptions& options) {
  auto start = std::chrono::steady_clock::now();
  verify(source, {true});
  if (source.outputs.empty()) fail("compile: graph '", source.name, "' has no outputs");
  const Graph graph = prepare_cpu_attention(source);
  auto c = std::make_shared<CompiledGraph>();
  std::set<std::string> overridden;
  c->graph = graph;
  c->target = target;
  const CostModel cost = cost_model(target);
  std::vector<RematDecision> remat;
  std::vector<Kernel> kernels = partition(graph, options.kernel_remat ? &cost : nullptr, &remat);
  c->memory = plan_memory(graph, kernels);
  c->arena = Buffer(DType::u8, {static_cast<int64_t>(std::max<size_t>(1, c->memory.peak))});
  std::memset(c->arena.data(), kPoison, c->arena.bytes());
  c->intermediate.resize(graph.nodes.size());
  for (const MemoryPlan::Slot& slot : c->memory.slots)
    c->intermediate[slot.node] = Buffer::view(c->arena, slot.offset, graph.nodes[slot.node].type);
  const Halide::Target ht = halide_target(target);
  c->schedule = "graph '" + graph.name + "': " + std::to_string(kernels.size()) + " kernels, cpu_x86 schedule for " +
                ht.to_string() + " (" + std::to_string(ht.natural_vector_size<float>()) + " f32 lanes)\n" +
                (options.kernel_remat ? remat_decisions_text(graph, remat, cost) : "kernel-level remat: off\n");
  for (Kernel& k : kernels) {
    std::string context = describe_kernel(graph, k.roots);
    std::string header = "kernel " + kernel_name(graph, k.roots);
    for (size_t i = 0; i < k.inputs.size(); ++i)
      header += (i ? ", in" : " reads in") + std::to_string(i) + " = " + graph.nodes[k.inputs[i]].name;
    if (k.roots.size() > 1) {
      header += "; writes";
      for (size_t i = 0; i < k.roots.size(); ++i)
        header += (i ? ", out" : " out") + std::to_string(i) + " = " + graph.nodes[k.roots[i]].name;
    }
    auto custom = options.schedules.find(graph.nodes[k.roots.back()].name);
    if (custom != options.schedules.end()) overridden.insert(custom->first);
    c->steps.push_back({compile_kernel(k.graph, target, context,
                                       custom != options.schedules.end() ? &custom->second : nullptr,
                                       options.bf16_as_u16),
                        std::move(k.inputs), std::move(k.roots)});
    c->schedule += header + "\n" + c->steps.back().kernel->schedule;
  }
  for (const auto& [name, fn] : options.schedules)
    if (!overridden.count(name))
      fail("compile: a schedule override names '", name, "', which is no kernel of graph '", graph.name,
           "' (kernels are named after the node they compute; see Executable::schedule_text())");
  std::string plan = c->memory.text(graph);
  c->schedule += plan.substr(0, plan.find('\n') + 1);  // the summary line
  c->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return c;
}

// Runs the kernel that computes `roots` of `g` on its input Buffers into `outs`.
void run_kernel(const CompiledKernel& k, const std::vector<const Buffer*>& inputs, const std::vector<Buffer*>& outs,
                const Graph& g, const std::vector<int>& roots) {
  Halide::ParamMap params;
  std::vector<Halide::Buffer<>> views;  // keep the views alive through realize
  views.reserve(k.lowered.args.size() + 1);
  for (size_t i = 0; i < k.lowered.args.size(); ++i) {
    views.push_back(halide_view(*inputs[k.lowered.arg_nodes[i]]));
    params.set(k.lowered.args[i], views.back());
  }
  std::vector<Halide::Buffer<>> out_views;
  for (Buffer* out : outs) out_views.push_back(halide_view(*out));
  try {
    std::lock_guard<std::mutex> lock(k.run_mutex);
    Halide::Realization r(out_views);
    const_cast<Halide::Pipeline&>(k.pipeline).realize(r, k.halide_target, params);
  } catch (const Halide::Error& e) {
    fail("run: ", describe_kernel(g, roots), ": ", e.what());
  }
}

// `b` if it already has `type`, else a new Buffer of that type.
Buffer& ensure(Buffer& b, const TensorType& type) {
  if (!b.defined() || b.type() != type) b = Buffer(type.dtype, type.shape);
  return b;
}

}  // namespace

Executable compile(const Graph& graph, const Target& target, const CompileOptions& options) {
  if (options.schedules.empty() && options.kernel_remat && !options.bf16_as_u16) return compile(graph, target);
  if (target.cuda_sm) return compile(graph, target);  // refused there
  std::shared_ptr<CompiledGraph> c = build(graph, target, options);
  Executable e(c);
  e.compile_seconds_ = c->seconds;
  return e;
}

std::string kernel_stmt(const Executable& exe, const std::string& kernel) {
  if (!exe.impl_) fail("kernel_stmt: not compiled");
  const CompiledGraph& c = *exe.impl_;
  for (const CompiledGraph::Step& step : c.steps) {
    if (c.graph.nodes[step.roots.back()].name != kernel) continue;
    char path[] = "/tmp/tessera_stmt_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) fail("kernel_stmt: cannot create a temporary file");
    close(fd);
    std::string text;
    try {
      std::vector<Halide::Argument> args(step.kernel->lowered.args.begin(), step.kernel->lowered.args.end());
      const_cast<Halide::Pipeline&>(step.kernel->pipeline).compile_to_lowered_stmt(path, args, Halide::Text,
                                                                                    step.kernel->halide_target);
      std::ifstream f(path);
      std::stringstream ss;
      ss << f.rdbuf();
      text = ss.str();
    } catch (const Halide::Error& e) {
      std::remove(path);
      fail("kernel_stmt: Halide could not lower kernel '", kernel, "': ", e.what());
    }
    std::remove(path);
    return text;
  }
  fail("kernel_stmt: graph '", c.graph.name, "' has no kernel '", kernel, "'");
}

Executable compile(const Graph& graph, const Target& target) {
  if (target.cuda_sm)
    fail("compile: target '", target.str(), "' needs the CUDA runtime, which this build does not have yet; use 'host' "
         "(CUDA kernels already compile ahead of time: tessera_add_generator, generators/)");
  std::string key = target.str() + "\n" + print(graph);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = graph_cache().find(key);
    if (it != graph_cache().end()) return Executable(it->second);
  }
  std::shared_ptr<CompiledGraph> c = build(graph, target, CompileOptions{});
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto [it, inserted] = graph_cache().emplace(key, c);
  Executable e(it->second);
  e.compile_seconds_ = inserted ? c->seconds : 0;
  return e;
}

const Graph& Executable::graph() const {
  if (!impl_) fail("Executable: not compiled");
  return impl_->graph;
}
const Target& Executable::target() const {
  if (!impl_) fail("Executable: not compiled");
  return impl_->target;
}
double Executable::compile_seconds() const { return compile_seconds_; }
std::string Executable::schedule_text() const {
  if (!impl_) fail("Executable: not compiled");
  return impl_->schedule;
}

std::string Executable::profile_text() const {
  if (!impl_) fail("Executable: not compiled");
  const CompiledGraph& c = *impl_;
  std::lock_guard<std::mutex> lock(c.run_mutex);
  if (c.runs == 0) return "no profile: set TESSERA_PROFILE=1 before running\n";
  std::vector<size_t> order(c.steps.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return c.kernel_seconds[a] > c.kernel_seconds[b]; });
  double total = 0;
  for (double t : c.kernel_seconds) total += t;
  std::ostringstream os;
  os << "graph '" << c.graph.name << "': " << c.runs << " runs, " << std::fixed << std::setprecision(1)
     << total / c.runs * 1e6 << " us per run in kernels\n";
  for (size_t i : order) {
    const Node& root = c.graph.nodes[c.steps[i].roots.back()];
    os << std::setw(10) << c.kernel_seconds[i] / c.runs * 1e6 << " us  " << std::setw(5)
       << 100 * c.kernel_seconds[i] / total << "%  " << kernel_name(c.graph, c.steps[i].roots) << " "
       << to_string(root.type) << "\n";
  }
  return os.str();
}

std::string Executable::memory_plan_text() const {
  if (!impl_) fail("Executable: not compiled");
  return impl_->memory.text(impl_->graph);
}

MemoryStats Executable::memory_stats() const {
  if (!impl_) fail("Executable: not compiled");
  const CompiledGraph& c = *impl_;
  std::lock_guard<std::mutex> lock(c.run_mutex);
  MemoryStats m;
  m.planned_peak = c.memory.peak;
  m.arena_bytes = c.memory.peak == 0 ? 0 : c.arena.bytes();
  m.without_reuse = c.memory.total;
  const uint8_t* a = static_cast<const uint8_t*>(c.arena.data());
  size_t end = m.arena_bytes;
  while (end > 0 && a[end - 1] == kPoison) --end;
  m.high_water = (end + kArenaAlignment - 1) / kArenaAlignment * kArenaAlignment;
  return m;
}

namespace {

bool overlap(const Buffer& a, const Buffer& b) {
  const uint8_t* pa = static_cast<const uint8_t*>(a.data());
  const uint8_t* pb = static_cast<const uint8_t*>(b.data());
  return pa < pb + b.bytes() && pb < pa + a.bytes();
}

// An output Buffer may share bytes with an argument only as the memory plan's
// in-place updates allow: exactly the argument's Buffer, for "new.X" over X.
void check_overlaps(const CompiledGraph& c, const std::map<std::string, Buffer>& args,
                    const std::map<std::string, Buffer>& results) {
  const Graph& g = c.graph;
  std::map<std::string, std::string> allowed;
  for (const MemoryPlan::InPlaceUpdate& u : c.memory.updates) allowed[g.outputs[u.output].name] = g.nodes[u.input].name;
  for (const GraphOutput& o : g.outputs) {
    const std::string& out = o.name;
    const Buffer& ob = results.at(out);
    for (const auto& [in, ib] : args) {
      if (!overlap(ob, ib)) continue;
      const bool same = ob.data() == ib.data() && ob.bytes() == ib.bytes();
      if (same && g.nodes[o.node].name == in) continue;  // an output that is this argument: nothing to copy
      auto a = allowed.find(out);
      if (same && a != allowed.end() && a->second == in) continue;
      fail("run '", g.name, "': output '", out, "' (", to_string(ob.type()), ") shares bytes with argument '", in, "' (",
           to_string(ib.type()), "); ",
           a != allowed.end() ? "it may only be written over '" + a->second + "', in the same Buffer"
                              : std::string("this output is not updated in place (Executable::in_place_updates())"));
    }
  }
}

}  // namespace

std::map<std::string, std::string> Executable::in_place_updates() const {
  if (!impl_) fail("Executable: not compiled");
  std::map<std::string, std::string> pairs;
  for (const MemoryPlan::InPlaceUpdate& u : impl_->memory.updates)
    pairs[impl_->graph.outputs[u.output].name] = impl_->graph.nodes[u.input].name;
  return pairs;
}

std::map<std::string, Buffer> Executable::run(const std::map<std::string, Buffer>& args) const {
  std::map<std::string, Buffer> outputs;
  run(args, outputs);
  return outputs;
}

void Executable::run(const std::map<std::string, Buffer>& args, std::map<std::string, Buffer>& results) const {
  if (!impl_) fail("Executable::run: not compiled");
  const CompiledGraph& c = *impl_;
  const Graph& g = c.graph;
  std::vector<const Buffer*> value(g.nodes.size(), nullptr);  // each node's result
  size_t matched = 0;
  for (const Node& n : g.nodes) {
    if (n.op != "input" && n.op != "param") continue;
    auto it = args.find(n.name);
    if (it == args.end()) fail("run '", g.name, "': missing ", n.op, " '", n.name, "' (", to_string(n.type), ")");
    const Buffer& b = it->second;
    if (!b.defined()) fail("run '", g.name, "': ", n.op, " '", n.name, "' is an empty Buffer");
    if (b.type() != n.type)
      fail("run '", g.name, "': ", n.op, " '", n.name, "' is ", to_string(b.type()), " but the graph expects ",
           to_string(n.type));
    value[n.id] = &b;
    ++matched;
  }
  if (matched != args.size()) {
    for (const auto& [name, b] : args) {
      int id = g.find(name);
      if (id < 0 || (g.nodes[id].op != "input" && g.nodes[id].op != "param"))
        fail("run '", g.name, "': '", name, "' is not an input or param of the graph");
    }
  }
  std::lock_guard<std::mutex> lock(c.run_mutex);
  // Each computed output is written straight into its result Buffer (the first
  // output of that node); every other node into its slot of the arena.
  std::vector<Buffer*> target(g.nodes.size(), nullptr);
  for (const GraphOutput& o : g.outputs) {
    Buffer& b = ensure(results[o.name], g.node(o.node).type);
    if (!target[o.node] && g.node(o.node).op != "input" && g.node(o.node).op != "param") target[o.node] = &b;
  }
  check_overlaps(c, args, results);
  static const bool profile = std::getenv("TESSERA_PROFILE") != nullptr;
  const bool poison_freed = std::getenv("TESSERA_POISON_FREED") != nullptr;
  if (profile) c.kernel_seconds.resize(c.steps.size(), 0.0), ++c.runs;
  for (size_t s = 0; s < c.steps.size(); ++s) {
    const CompiledGraph::Step& step = c.steps[s];
    auto start = std::chrono::steady_clock::now();
    std::vector<Buffer*> outs;
    for (int r : step.roots) outs.push_back(target[r] ? target[r] : &c.intermediate[r]);
    std::vector<const Buffer*> inputs;
    for (int id : step.inputs) inputs.push_back(value[id]);
    run_kernel(*step.kernel, inputs, outs, g, step.roots);
    for (size_t i = 0; i < outs.size(); ++i) value[step.roots[i]] = outs[i];
    if (poison_freed)
      for (int slot : c.memory.dead_after[s]) {
        const MemoryPlan::Slot& m = c.memory.slots[slot];
        std::memset(static_cast<uint8_t*>(c.arena.data()) + m.offset, kPoison, m.bytes);
      }
    if (profile) c.kernel_seconds[s] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  // Outputs that are graph arguments, or a node already written under another name: copies.
  for (const GraphOutput& o : g.outputs) {
    Buffer& b = ensure(results[o.name], g.node(o.node).type);
    if (b.data() != value[o.node]->data()) std::memcpy(b.data(), value[o.node]->data(), b.bytes());
  }
}

}  // namespace tessera
