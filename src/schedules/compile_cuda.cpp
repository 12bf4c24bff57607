// compile_cuda (see compile_cuda.h): partition, lower, schedule with the
// target's CUDA schedule set, and let Halide generate each kernel's PTX;
// then check the compiled kernel's input and output regions statically.
// It neither runs, links nor loads the code, and needs no GPU or CUDA driver.
#include "compile_cuda.h"

#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "bf16_storage.h"
#include "cuda_fast_math.h"
#include "cuda_common.h"
#include "dequantize_for_gemm.h"
#include "library_attention.h"
#include "library_embedding_grad.h"
#include "library_gemm.h"
#include "library_quant_linear.h"
#include "lower_to_halide.h"
#include "partition.h"
#include "target.h"
#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/text.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The constant regions that a module's bounds checks demand of its buffers:
// Halide asserts, before running anything, that each input covers what the
// schedule reads of it and each output what it writes
// (halide_error_access_out_of_bounds(name, dim, min, max, ...)). With static
// output bounds these regions are constants.
class RequiredRegions : public Halide::Internal::IRVisitor {
 public:
  struct Region {
    std::string buffer;  // "Input buffer n3_x_arg", "Output buffer n7_t3"
    int dim;
    int64_t min, max;
  };
  std::vector<Region> regions;

  using IRVisitor::visit;
  void visit(const Halide::Internal::Call* c) override {
    if (c->name == "halide_error_access_out_of_bounds" && c->args.size() >= 4) {
      const Halide::Internal::StringImm* name = c->args[0].as<Halide::Internal::StringImm>();
      const int64_t* dim = Halide::Internal::as_const_int(c->args[1]);
      const int64_t* lo = Halide::Internal::as_const_int(c->args[2]);
      const int64_t* hi = Halide::Internal::as_const_int(c->args[3]);
      if (name && dim && lo && hi) regions.push_back({name->value, static_cast<int>(*dim), *lo, *hi});
    }
    IRVisitor::visit(c);
  }
};

// Loops of a module's host code: after Halide offloads the GPU loops, any
// left is computation running on the CPU.
class HostLoops : public Halide::Internal::IRVisitor {
 public:
  int count = 0;
  using IRVisitor::visit;
  void visit(const Halide::Internal::For* op) override {
    ++count;
    IRVisitor::visit(op);
  }
};

// Reads of an argument buffer's elements in a module's host code (its GPU
// code is PTX by now). The PlanExecutor gives kernels device pointers with
// no host memory, so such a read would dereference null: Halide makes one
// where bounds depend on data, e.g. a table lookup whose index is read from
// a one-element region of an input.
class HostReads : public Halide::Internal::IRVisitor {
 public:
  explicit HostReads(std::set<std::string> buffers) : buffers_(std::move(buffers)) {}
  std::set<std::string> found;
  using IRVisitor::visit;
  void visit(const Halide::Internal::Load* op) override {
    if (buffers_.count(op->name)) found.insert(op->name);
    IRVisitor::visit(op);
  }

 private:
  std::set<std::string> buffers_;
};

// The GPU kernel launches in a module's host code:
// halide_cuda_run(state, name, blocks x, y, z, threads x, y, z, shared bytes, ...),
// with each figure as a constant (-1 where it is not one).
class Launches : public Halide::Internal::IRVisitor {
 public:
  std::vector<CudaLaunch> found;
  using IRVisitor::visit;
  void visit(const Halide::Internal::Call* c) override {
    if (c->name == "halide_cuda_run" && c->args.size() >= 9) {
      CudaLaunch l;
      if (const Halide::Internal::StringImm* n = c->args[1].as<Halide::Internal::StringImm>()) l.name = n->value;
      auto constant = [&](int i) {
        const int64_t* v = Halide::Internal::as_const_int(Halide::Internal::simplify(c->args[i]));
        return v ? *v : -1;
      };
      for (int d = 0; d < 3; ++d) {
        l.blocks[d] = constant(2 + d);
        l.threads[d] = constant(5 + d);
      }
      l.shared_bytes = constant(8);
      found.push_back(l);
    }
    IRVisitor::visit(c);
  }
};

// Fails if a launch breaks a CUDA limit that would make it fail on the GPU:
// more than 1024 threads per block (64 along z), a grid's y or z above
// 65535, or more shared memory than the architecture lets one block use.
void check_launches(const std::vector<CudaLaunch>& launches, const CudaArch& a, const std::string& context) {
  for (const CudaLaunch& l : launches) {
    const int64_t threads = l.threads[0] * l.threads[1] * l.threads[2];
    std::string problem;
    if (l.threads[0] > 1024 || l.threads[1] > 1024 || l.threads[2] > 64 || threads > 1024)
      problem = "more than 1024 threads per block";
    else if (l.blocks[1] > 65535 || l.blocks[2] > 65535)
      problem = "a grid above 65535 blocks along y or z";
    else if (l.shared_bytes > static_cast<int64_t>(a.smem_per_block_kb) * 1024)
      problem = "more than " + std::to_string(a.smem_per_block_kb) + " KB of shared memory";
    if (!problem.empty())
      fail("compile_cuda: the ", a.name, " schedule of ", context, " launches GPU kernel ", l.name, " with ", problem,
           " (", l.text(), ")");
  }
}

// The PTX in a compiled module (Halide embeds it as a buffer), or "".
std::string ptx_of(const Halide::Module& module) {
  for (const Halide::Buffer<>& b : module.buffers()) {
    const std::string& n = b.name();
    const std::string suffix = "_gpu_source_kernels";
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      return std::string(static_cast<const char*>(b.data()), b.size_in_bytes());
  }
  return "";
}

int count_entries(const std::string& ptx) {
  int count = 0;
  for (size_t p = ptx.find(".entry"); p != std::string::npos; p = ptx.find(".entry", p + 1)) ++count;
  return count;
}

// The cost model's estimate for one kernel (see CudaKernelInfo::estimated_us).
double estimate_us(const Kernel& k, const Graph& g, int launches, const CudaArch& a) {
  double bytes = 0, flops = 0;
  for (int id : k.inputs) bytes += static_cast<double>(g.nodes[id].type.bytes());
  for (int id : k.roots) bytes += static_cast<double>(g.nodes[id].type.bytes());
  for (const Node& n : k.graph.nodes)
    if (n.op == "matmul" || n.op == "linear" || n.op.rfind("linear_", 0) == 0)  // quantized linears too
      flops += 2.0 * static_cast<double>(n.type.numel()) *
               static_cast<double>(k.graph.node(n.inputs[0]).type.shape.back());
  const double memory_us = bytes / (a.dram_gbps * 1e3);
  const double compute_us = flops / (a.fp32_tflops * 1e6);
  return launches * a.launch_us + std::max(memory_us, compute_us);
}

}  // namespace

void check_buffer_regions(const Halide::Module& module, const std::map<std::string, Shape>& shapes,
                          const std::string& context, const std::string& set) {
  RequiredRegions found;
  for (const Halide::Internal::LoweredFunc& f : module.functions()) f.body.accept(&found);
  for (const RequiredRegions::Region& r : found.regions) {
    auto it = shapes.find(r.buffer);
    if (it == shapes.end()) continue;
    const Shape& s = it->second;
    if (r.dim < 0 || r.dim >= static_cast<int>(s.size())) continue;
    const int64_t extent = s[s.size() - 1 - r.dim];  // Halide dim 0 is the innermost
    if (r.min < 0 || r.max >= extent)
      fail("compile_cuda: the ", set, " schedule of ", context, " reaches outside a tensor: ", r.buffer,
           " is ", to_string(s), " but its row-major dim ", s.size() - 1 - r.dim, " is accessed over [", r.min, ", ",
           r.max, "]");
  }
}

std::vector<CudaLaunch> check_cuda_module(const Halide::Module& module, const LoweredGraph& L, const Graph& kernel,
                                          const std::string& context, int sm) {
  const CudaArch& arch = cuda_arch(sm);
  std::map<std::string, Shape> shapes;
  for (size_t i = 0; i < L.args.size(); ++i)
    shapes["Input buffer " + L.args[i].name()] = kernel.node(L.arg_nodes[i]).type.shape;
  for (size_t i = 0; i < L.outputs.size(); ++i)
    shapes["Output buffer " + L.outputs[i].name()] = kernel.node(L.output_nodes[i]).type.shape;
  check_buffer_regions(module, shapes, context, arch.name);
  std::set<std::string> buffers;
  for (const Halide::ImageParam& p : L.args) buffers.insert(p.name());
  for (const Halide::Func& out : L.outputs) buffers.insert(out.name());
  HostReads reads(buffers);
  for (const Halide::Internal::LoweredFunc& f : module.functions()) f.body.accept(&reads);
  for (const std::string& b : reads.found)
    fail("compile_cuda: the ", arch.name, " schedule of ", context, " reads elements of ", b,
         " in host code, where a GPU plan's buffers have no host memory (a bound that depends on data?)");
  Launches launches;
  for (const Halide::Internal::LoweredFunc& f : module.functions()) f.body.accept(&launches);
  check_launches(launches.found, arch, context);
  return launches.found;
}

CudaCompileResult compile_cuda(const Graph& source, const Target& target, const CudaCompileOptions& options) {
  const auto start = Clock::now();
  if (!target.cuda_sm)
    fail("compile_cuda: target '", target.str(), "' names no CUDA architecture (use host-cuda-sm80 or host-cuda-sm90)");
  const CudaArch& arch = cuda_arch(target.cuda_sm);
  verify(source, {true});
  if (source.outputs.empty()) fail("compile_cuda: graph '", source.name, "' has no outputs");
  const Halide::Target ht = halide_target(target);

  CudaCompileResult result;
  result.graph = source.name;
  result.target = target;
  result.halide_target = ht.to_string();
  result.schedule_set = arch.name;
  std::map<std::string, size_t> compiled;  // printed kernel graph -> index of its first compile
  int index = 0;
  const CostModel cost = cost_model(target);
  std::vector<RematDecision> remat;
  const Graph decomposed = options.library_gemm ? prepare_gpu_graph(source) : Graph();
  const Graph& graph = options.library_gemm ? decomposed : source;
  const std::vector<Kernel> kernels = partition(graph, &cost, &remat, options.library_gemm);
  result.remat = remat_decisions_text(graph, remat, cost);
  for (const Kernel& k : kernels) {
    CudaKernelInfo info;
    info.name = kernel_name(graph, k.roots);
    info.header = "kernel " + info.name;
    for (size_t i = 0; i < k.inputs.size(); ++i)
      info.header += (i ? ", in" : " reads in") + std::to_string(i) + " = " + graph.nodes[k.inputs[i]].name;
    if (k.roots.size() > 1) {
      info.header += "; writes";
      for (size_t i = 0; i < k.roots.size(); ++i)
        info.header += (i ? ", out" : " out") + std::to_string(i) + " = " + graph.nodes[k.roots[i]].name;
    }
    const std::string key = print(k.graph);
    auto seen = compiled.find(key);
    std::optional<LibraryGemm> gemm;
    std::optional<LibraryAttention> attention;
    std::optional<LibraryEmbeddingGrad> embedding_grad;
    std::optional<LibraryQuantLinear> quant_linear;
    if (options.library_gemm) {
      gemm = match_library_gemm(k);
      attention = match_library_attention(k);
      embedding_grad = match_library_embedding_grad(k);
      quant_linear = match_library_quant_linear(k);
    }
    if (gemm || attention || embedding_grad || quant_linear) {
      info.library = gemm             ? gemm->text()
                     : attention      ? attention->text()
                     : embedding_grad ? embedding_grad->text()
                                      : quant_linear->text();
      info.estimated_us = estimate_us(k, graph, 1, arch);
      result.kernels.push_back(std::move(info));
      ++index;
      continue;
    }
    if (seen != compiled.end()) {
      const CudaKernelInfo& first = result.kernels[seen->second];
      info.schedule = first.schedule;
      info.gpu_kernels = first.gpu_kernels;
      info.host_loops = first.host_loops;
      info.launches = first.launches;
      info.ptx_bytes = first.ptx_bytes;
      info.ptx = first.ptx;
      info.reused = true;
    } else {
      const std::string context = describe_kernel(graph, k.roots);
      const auto t0 = Clock::now();
      try {
        LoweredGraph L = lower_to_halide(k.graph);
        info.schedule = arch.sm == 80 ? schedule_cuda_sm80(L, k.graph, ht) : schedule_cuda_sm90(L, k.graph, ht);
        std::vector<Halide::Argument> args(L.args.begin(), L.args.end());
        Halide::Pipeline pipeline(L.outputs);
        store_bf16_as_u16(pipeline);
        use_fast_math_on_gpu(pipeline);
        Halide::Module module = pipeline.compile_to_module(args, "tessera_kernel" + std::to_string(index), ht);
        if (const char* dir = std::getenv("TESSERA_CUDA_STMT"))
          pipeline.compile_to_lowered_stmt(std::string(dir) + "/" + graph.name + "_" + std::to_string(index) + "_" +
                                               arch.name + ".stmt",
                                           args, Halide::StmtOutputFormat::Text, ht);
        info.launches = check_cuda_module(module, L, k.graph, context, arch.sm);
        const std::string ptx = ptx_of(module);
        info.gpu_kernels = count_entries(ptx);
        HostLoops loops;
        for (const Halide::Internal::LoweredFunc& f : module.functions()) f.body.accept(&loops);
        info.host_loops = loops.count;
        info.ptx_bytes = ptx.size();
        if (options.keep_ptx) info.ptx = ptx;
      } catch (const Halide::Error& e) {
        fail("compile_cuda: Halide rejected the ", arch.name, " schedule of ", context, " for ", target.str(), ": ",
             e.what());
      }
      info.seconds = since(t0);
      compiled.emplace(key, result.kernels.size());
      ++result.distinct_kernels;
    }
    info.estimated_us = estimate_us(k, graph, info.gpu_kernels, arch);
    result.kernels.push_back(std::move(info));
    ++index;
  }
  result.seconds = since(start);
  return result;
}

std::string CudaCompileResult::text() const {
  if (!target.cuda_sm) return "";  // not a compile_cuda result
  const CudaArch& arch = cuda_arch(target.cuda_sm);
  std::ostringstream os;
  os << std::fixed << std::setprecision(1);
  double estimate = 0;
  for (const CudaKernelInfo& k : kernels) estimate += k.estimated_us;
  int gemms = 0, attention = 0;
  for (const CudaKernelInfo& k : kernels) {
    gemms += k.library.rfind("cuBLASLt", 0) == 0;
    attention += k.library.rfind("fused attention", 0) == 0;
  }
  os << "graph '" << graph << "': " << kernels.size() << " kernels (";
  if (gemms) os << gemms << " cuBLASLt GEMMs, ";
  if (attention) os << attention << " fused attention calls, ";
  os << distinct_kernels << " compiled), " << schedule_set
     << " schedule (" << arch.gpu << ", " << arch.sm_count << " SMs) for " << halide_target << ", PTX for sm_86; "
     << "estimated " << estimate << " us per run\n"
     << remat;
  for (const CudaKernelInfo& k : kernels) {
    if (!k.library.empty()) {
      os << k.header << "\n  => library call: " << k.library << ", estimated " << k.estimated_us << " us\n";
      continue;
    }
    os << k.header << "\n" << k.schedule << "  => " << k.gpu_kernels << " GPU kernel" << (k.gpu_kernels == 1 ? "" : "s")
       << " (";
    for (size_t i = 0; i < k.launches.size(); ++i) os << (i ? "; " : "") << k.launches[i].text();
    os << "), " << k.ptx_bytes << " bytes of PTX, ";
    if (k.host_loops) os << k.host_loops << " loops on the CPU, ";
    if (k.reused) os << "reused";
    else os << std::setprecision(2) << k.seconds << " s" << std::setprecision(1);
    os << ", estimated " << k.estimated_us << " us\n";
  }
  return os.str();
}

}  // namespace tessera

namespace tessera {

std::string CudaLaunch::text() const {
  auto dims = [](const int64_t (&v)[3]) {
    std::string t;
    for (int d = 0; d < 3; ++d) {
      if (d > 0 && v[d] == 1 && (d == 2 || v[2] == 1)) break;
      t += (d ? "x" : "") + (v[d] < 0 ? std::string("?") : std::to_string(v[d]));
    }
    return t;
  };
  const bool one_block = blocks[0] == 1 && blocks[1] == 1 && blocks[2] == 1;
  const bool one_thread = threads[0] == 1 && threads[1] == 1 && threads[2] == 1;
  std::string t = dims(blocks) + (one_block ? " block of " : " blocks of ") + dims(threads) +
                  (one_thread ? " thread" : " threads");
  if (shared_bytes != 0) t += ", " + (shared_bytes < 0 ? std::string("?") : std::to_string(shared_bytes)) + " B shared";
  return t;
}

}  // namespace tessera
