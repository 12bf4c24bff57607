// compile() and Executable: lowering, scheduling and JIT-compiling a Graph
// for the CPU, caching the result by signature, and running it on Buffers.
//
// This is the in-process (JIT) path. It does not allocate an arena or plan
// memory (Halide allocates intermediates per run), and it refuses CUDA
// targets until the CUDA runtime exists.
#include <chrono>
#include <mutex>

#include "cpu_x86.h"
#include "halide_util.h"
#include "lower_to_halide.h"
#include "target.h"
#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/runtime.h"
#include "tessera/text.h"

namespace tessera {

struct CompiledGraph {
  Graph graph;
  Target target;
  Halide::Target halide_target;
  LoweredGraph lowered;
  Halide::Pipeline pipeline;
  std::string schedule;
  double seconds = 0;
  mutable std::mutex run_mutex;  // a JIT pipeline runs one call at a time
};

namespace {

std::mutex cache_mutex;
std::map<std::string, std::shared_ptr<const CompiledGraph>>& cache() {
  static std::map<std::string, std::shared_ptr<const CompiledGraph>> c;
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

std::shared_ptr<CompiledGraph> build(const Graph& graph, const Target& target) {
  auto start = std::chrono::steady_clock::now();
  verify(graph, {true});
  if (graph.outputs.empty()) fail("compile: graph '", graph.name, "' has no outputs");
  auto c = std::make_shared<CompiledGraph>();
  c->graph = graph;
  c->target = target;
  c->halide_target = halide_target(target);
  try {
    c->lowered = lower_to_halide(graph);
    c->schedule = schedule_cpu_x86(c->lowered, graph, c->halide_target);
    c->pipeline = Halide::Pipeline(c->lowered.outputs);
    c->pipeline.compile_jit(c->halide_target);
  } catch (const Halide::Error& e) {
    fail("compile: Halide rejected graph '", graph.name, "' for ", target.str(), ": ", e.what());
  }
  c->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return c;
}

}  // namespace

Executable compile(const Graph& graph, const Target& target) {
  if (target.cuda_sm)
    fail("compile: target '", target.str(), "' needs the CUDA runtime, which this build does not have yet; use 'host'");
  std::string key = target.str() + "\n" + print(graph);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache().find(key);
    if (it != cache().end()) return Executable(it->second);
  }
  std::shared_ptr<CompiledGraph> c = build(graph, target);
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto [it, inserted] = cache().emplace(key, c);
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

std::map<std::string, Buffer> Executable::run(const std::map<std::string, Buffer>& args) const {
  std::map<std::string, Buffer> outputs;
  run(args, outputs);
  return outputs;
}

void Executable::run(const std::map<std::string, Buffer>& args, std::map<std::string, Buffer>& results) const {
  if (!impl_) fail("Executable::run: not compiled");
  const CompiledGraph& c = *impl_;
  const Graph& g = c.graph;
  Halide::ParamMap params;
  std::vector<Halide::Buffer<>> views;  // keep the views alive through realize
  size_t matched = 0;
  for (size_t i = 0; i < c.lowered.args.size(); ++i) {
    const Node& n = g.nodes[c.lowered.arg_nodes[i]];
    auto it = args.find(n.name);
    if (it == args.end())
      fail("run '", g.name, "': missing ", n.op, " '", n.name, "' (", to_string(n.type), ")");
    const Buffer& b = it->second;
    if (!b.defined()) fail("run '", g.name, "': ", n.op, " '", n.name, "' is an empty Buffer");
    if (b.type() != n.type)
      fail("run '", g.name, "': ", n.op, " '", n.name, "' is ", to_string(b.type()), " but the graph expects ",
           to_string(n.type));
    views.push_back(halide_view(b));
    params.set(c.lowered.args[i], views.back());
    ++matched;
  }
  if (matched != args.size()) {
    for (const auto& [name, b] : args) {
      int id = g.find(name);
      if (id < 0 || (g.nodes[id].op != "input" && g.nodes[id].op != "param"))
        fail("run '", g.name, "': '", name, "' is not an input or param of the graph");
    }
  }
  std::vector<Halide::Buffer<>> outs;
  for (const GraphOutput& o : g.outputs) {
    const TensorType& type = g.node(o.node).type;
    Buffer& b = results[o.name];
    if (!b.defined() || b.type() != type) b = Buffer(type.dtype, type.shape);
    outs.push_back(halide_view(b));
  }
  try {
    std::lock_guard<std::mutex> lock(c.run_mutex);
    Halide::Realization r(outs);
    const_cast<Halide::Pipeline&>(c.pipeline).realize(r, c.halide_target, params);
  } catch (const Halide::Error& e) {
    fail("run '", g.name, "': ", e.what());
  }
}

}  // namespace tessera
