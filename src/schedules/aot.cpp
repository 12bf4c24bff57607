// Ahead-of-time compilation into objects plus a generated runner (see aot.h).
#include "aot.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "cpu_x86.h"
#include "cuda_common.h"
#include "halide_util.h"
#include "lower_to_halide.h"
#include "memory_plan.h"
#include "partition.h"
#include "target.h"
#include "tessera/error.h"
#include "tessera/passes.h"
#include "tessera/text.h"

namespace tessera {

namespace {

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

// A C identifier for a tensor name ("layers.0.weight" -> "layers_0_weight").
std::string field_name(const std::string& name) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) s = "_" + s;
  return s;
}

const char* c_type(DType t) {
  switch (t) {
    case DType::f64: return "double";
    case DType::f32: return "float";
    case DType::f16:
    case DType::bf16: return "uint16_t";
    case DType::i64: return "int64_t";
    case DType::i32: return "int32_t";
    case DType::i8: return "int8_t";
    case DType::u8:
    case DType::boolean: return "uint8_t";
  }
  return "void";
}

// What the runner needs about each buffer it hands to kernels.
struct TensorEntry {
  std::string name;
  int node = -1;
  char kind = 'i';  // 'i' input or param, 'o' output, 't' intermediate (arena)
  size_t offset = 0;
};

std::string schedule_for(LoweredGraph& L, const Graph& g, const Target& t, const Halide::Target& ht) {
  if (t.cuda_sm == 80) return schedule_cuda_sm80(L, g, ht);
  if (t.cuda_sm == 90) return schedule_cuda_sm90(L, g, ht);
  return schedule_cpu_x86(L, g, ht);
}

// The checks a generated runner makes before choosing a CPU variant:
// __builtin_cpu_supports names of the x86 features the target uses.
std::vector<std::string> cpu_feature_checks(const Halide::Target& t) {
  using F = Halide::Target::Feature;
  const std::vector<std::pair<F, std::vector<std::string>>> table = {
      {F::SSE41, {"sse4.1"}},
      {F::AVX, {"avx"}},
      {F::AVX2, {"avx2"}},
      {F::FMA, {"fma"}},
      {F::F16C, {"f16c"}},
      {F::AVX512, {"avx512f", "avx512cd"}},
      {F::AVX512_Skylake, {"avx512bw", "avx512dq", "avx512vl"}},
      {F::AVX512_Cannonlake, {"avx512ifma", "avx512vbmi"}},
      {F::AVX512_SapphireRapids, {"avx512bf16", "avx512fp16"}},
  };
  std::vector<std::string> out;
  for (const auto& [feature, names] : table)
    if (t.has_feature(feature)) out.insert(out.end(), names.begin(), names.end());
  return out;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) fail("compile_aot: cannot write ", path);
}

}  // namespace

std::string aot_variant_id(const std::string& target) { return field_name(target); }

AotResult compile_aot(const Graph& graph, const std::string& name, const std::vector<std::string>& targets,
                      const std::string& out_dir, const std::string& origin) {
  auto start = std::chrono::steady_clock::now();
  if (!is_identifier(name)) fail("compile_aot: '", name, "' is not a C identifier");
  if (targets.empty()) fail("compile_aot: no targets for '", name, "'");
  verify(graph, {true});
  if (graph.outputs.empty()) fail("compile_aot: graph '", graph.name, "' has no outputs");
  // One partition and memory plan serve every variant: decided with the
  // first target's cost model.
  const CostModel cost = cost_model(Target::parse(targets[0]));
  std::vector<Kernel> kernels = partition(graph, &cost);
  MemoryPlan plan = plan_memory(graph, kernels);

  // The tensor table: inputs and params, then outputs (the public order),
  // then intermediates. buffer_of[node] is the tensor a kernel uses for it.
  std::vector<TensorEntry> tensors;
  std::vector<int> buffer_of(graph.nodes.size(), -1);
  std::vector<std::pair<int, int>> copies;  // (output tensor, source tensor) copied after the kernels
  for (const Node& n : graph.nodes)
    if (n.op == "input" || n.op == "param") {
      buffer_of[n.id] = static_cast<int>(tensors.size());
      tensors.push_back({n.name, n.id, 'i', 0});
    }
  const int num_inputs = static_cast<int>(tensors.size());
  for (const GraphOutput& o : graph.outputs) {
    int index = static_cast<int>(tensors.size());
    tensors.push_back({o.name, o.node, 'o', 0});
    if (buffer_of[o.node] >= 0) copies.emplace_back(index, buffer_of[o.node]);
    else buffer_of[o.node] = index;
  }
  const int num_outputs = static_cast<int>(tensors.size()) - num_inputs;
  for (const MemoryPlan::Slot& s : plan.slots) {
    buffer_of[s.node] = static_cast<int>(tensors.size());
    tensors.push_back({graph.nodes[s.node].name, s.node, 't', s.offset});
  }

  // Per kernel: the tensors of its arguments (in Halide's argument order), then its outputs.
  std::vector<std::vector<int>> call_args(kernels.size());
  std::vector<std::string> kernel_text(kernels.size());
  for (size_t k = 0; k < kernels.size(); ++k) kernel_text[k] = print(kernels[k].graph);

  AotResult result;
  result.kernels = static_cast<int>(kernels.size());
  result.arena_bytes = plan.peak;
  bool any_cuda = false;
  std::vector<std::vector<std::string>> fn_names(targets.size());
  std::vector<std::vector<std::string>> checks(targets.size());
  std::vector<int> cuda_sm(targets.size(), 0);
  for (size_t v = 0; v < targets.size(); ++v) {
    auto vstart = std::chrono::steady_clock::now();
    Target t = Target::parse(targets[v]);
    cuda_sm[v] = t.cuda_sm;
    any_cuda = any_cuda || t.cuda_sm;
    const Halide::Target ht = halide_target(t);
    checks[v] = cpu_feature_checks(ht);
    AotVariant variant;
    variant.target = targets[v];
    variant.id = aot_variant_id(targets[v]);
    for (const AotVariant& other : result.variants)
      if (other.id == variant.id) fail("compile_aot: target '", targets[v], "' is given twice");
    variant.object = out_dir + "/" + name + "_" + variant.id + ".a";
    std::vector<std::string> kernel_objects;
    std::map<std::string, std::string> compiled;  // kernel text -> function name
    std::ostringstream schedule;
    for (size_t k = 0; k < kernels.size(); ++k) {
      const Kernel& kernel = kernels[k];
      std::string& fn = compiled[kernel_text[k]];
      const bool first = fn.empty();
      if (first) fn = name + "_" + variant.id + "_k" + std::to_string(k);
      fn_names[v].push_back(fn);
      LoweredGraph L = lower_to_halide(kernel.graph);
      if (v == 0) {
        for (size_t a = 0; a < L.args.size(); ++a) call_args[k].push_back(buffer_of[kernel.inputs[L.arg_nodes[a]]]);
        for (int r : kernel.roots) call_args[k].push_back(buffer_of[r]);
      }
      const Node& root = graph.nodes[kernel.roots.back()];
      schedule << "kernel " << k << ": " << root.name << " (" << root.op << ")" << (first ? "" : ", same code as before")
               << "\n";
      if (!first) continue;
      try {
        schedule << schedule_for(L, kernel.graph, t, ht);
        std::vector<Halide::Argument> args(L.args.begin(), L.args.end());
        Halide::Module m =
            Halide::Pipeline(L.outputs).compile_to_module(args, fn, ht.with_feature(Halide::Target::NoRuntime));
        // One object per kernel: the GPU code of several pipelines in one
        // object would share one CUDA module holding one pipeline's kernels.
        kernel_objects.push_back(out_dir + "/" + fn + ".o");
        m.compile({{Halide::OutputFileType::object, kernel_objects.back()}});
      } catch (const Halide::Error& e) {
        fail("compile_aot: Halide rejected kernel ", k, " (node '", root.name, "', ", root.op, ") of graph '",
             graph.name, "' for ", targets[v], ": ", e.what());
      }
    }
    try {
      Halide::create_static_library(kernel_objects, ht, variant.object);
    } catch (const Halide::Error& e) {
      fail("compile_aot: Halide could not write ", variant.object, ": ", e.what());
    }
    for (const std::string& o : kernel_objects) std::remove(o.c_str());
    variant.schedule = schedule.str();
    variant.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - vstart).count();
    result.files.push_back(variant.object);
    result.variants.push_back(variant);
  }

  // One runtime for every variant: the plain CPU of the first variant's
  // architecture, plus CUDA if any variant needs it.
  const Halide::Target first = halide_target(Target::parse(targets[0]));
  Halide::Target rt(first.os, first.arch, first.bits);
  if (any_cuda) rt = rt.with_feature(Halide::Target::CUDA).with_feature(Halide::Target::CUDACapability86);
  const std::string runtime_object = out_dir + "/" + name + "_runtime.o";
  Halide::compile_standalone_runtime(runtime_object, rt);
  result.files.push_back(runtime_object);

  // ---- the header ----
  std::ostringstream h;
  h << "// Generated by tessera_generator" << (origin.empty() ? "" : " from " + origin) << ". Do not edit.\n"
    << "//\n// " << name << ": the compiled graph '" << graph.name << "' (" << kernels.size() << " kernels, an arena of "
    << plan.peak << " bytes), variants:";
  for (const std::string& t : targets) h << " " << t;
  h << ".\n// Inputs and outputs are dense row-major host arrays owned by the caller;\n"
    << "// f16 and bf16 values are their 16-bit patterns. run() is not reentrant:\n"
    << "// use one object per thread. Needs no libHalide.\n"
    << "#pragma once\n\n#include <cstddef>\n#include <cstdint>\n\nnamespace tessera_aot {\n\n"
    << "#ifndef TESSERA_AOT_TENSOR_SPEC\n#define TESSERA_AOT_TENSOR_SPEC\n"
    << "struct TensorSpec {\n  const char* name;   // the graph's name for it\n"
    << "  const char* dtype;  // f32, i32, ...\n  int rank;\n  int64_t shape[8];\n  size_t bytes;\n};\n#endif\n\n"
    << "class " << name << " {\n public:\n"
    << "  static constexpr int kNumInputs = " << num_inputs << ";   // inputs and params, in graph order\n"
    << "  static constexpr int kNumOutputs = " << num_outputs << ";\n"
    << "  static const TensorSpec* inputs();\n  static const TensorSpec* outputs();\n\n  struct Inputs {\n";
  std::map<std::string, int> used_fields;
  auto unique_field = [&](const std::string& n) {
    std::string f = field_name(n);
    int count = used_fields[f]++;
    return count ? f + "_" + std::to_string(count) : f;
  };
  for (int i = 0; i < num_inputs; ++i) {
    const Node& n = graph.nodes[tensors[i].node];
    h << "    const " << c_type(n.type.dtype) << "* " << unique_field(tensors[i].name) << " = nullptr;  // "
      << to_string(n.type) << " '" << tensors[i].name << "'\n";
  }
  h << "  };\n  struct Outputs {\n";
  used_fields.clear();
  for (int i = num_inputs; i < num_inputs + num_outputs; ++i) {
    const Node& n = graph.nodes[tensors[i].node];
    h << "    " << c_type(n.type.dtype) << "* " << unique_field(tensors[i].name) << " = nullptr;  // "
      << to_string(n.type) << " '" << tensors[i].name << "'\n";
  }
  h << "  };\n\n  // The variant chosen for this machine (see variant()), or the one whose\n"
    << "  // target is given (throws std::runtime_error if there is none or it cannot run).\n"
    << "  " << name << "();\n  explicit " << name << "(const char* target);\n  ~" << name << "();\n  " << name << "(const " << name << "&) = delete;\n  "
    << name << "& operator=(const " << name << "&) = delete;\n\n"
    << "  // Runs the graph; throws std::runtime_error naming the kernel that failed\n"
    << "  // or a missing pointer.\n"
    << "  void run(const Inputs& in, const Outputs& out);\n"
    << "  // The same by position (inputs(), outputs() order).\n"
    << "  void run(const void* const* inputs, void* const* outputs);\n\n"
    << "  // The variant this machine runs (chosen once, printed to stderr once;\n"
    << "  // the environment variable TESSERA_AOT_VARIANT=<target> forces one).\n"
    << "  static const char* variant();\n"
    << "  // This object's variant.\n  const char* target() const;\n"
    << "  // The compute capability of GPU 0 (e.g. 90), or 0 without a GPU or driver.\n"
    << "  static int gpu_capability();\n"
    << "  static constexpr size_t kArenaBytes = " << plan.peak << ";\n\n private:\n  struct State;\n  State* state_;\n};\n\n"
    << "}  // namespace tessera_aot\n";
  write_file(out_dir + "/" + name + ".h", h.str());
  result.files.push_back(out_dir + "/" + name + ".h");

  // ---- the runner ----
  std::ostringstream c;
  c << "// Generated by tessera_generator" << (origin.empty() ? "" : " from " + origin)
    << ". Do not edit.\n// Runs the kernels of " << name << " in order over one arena; picks a variant at first use.\n"
    << "#include \"" << name << ".h\"\n\n#include <HalideRuntime.h>\n#include <dlfcn.h>\n\n#include <cstdio>\n"
    << "#include \"thread_pool.h\"\n"
    << "#include <cstdlib>\n#include <cstring>\n#include <stdexcept>\n#include <string>\n\n"
    << "extern \"C\" {\n";
  std::map<std::string, bool> declared;
  for (const auto& fns : fn_names)
    for (const std::string& fn : fns)
      if (!declared[fn]) {
        declared[fn] = true;
        c << "int " << fn << "_argv(void**);\n";
      }
  c << "}\n\nnamespace tessera_aot {\nnamespace {\n\n"
    << "struct Entry {\n  TensorSpec spec;\n  char kind;  // 'i' input, 'o' output, 't' intermediate\n"
    << "  uint8_t code, bits;\n  size_t offset;\n};\n\nconst Entry kTensors[] = {\n";
  for (const TensorEntry& t : tensors) {
    const Node& n = graph.nodes[t.node];
    Halide::Type ht = halide_type(n.type.dtype);
    c << "    {{\"" << t.name << "\", \"" << dtype_name(n.type.dtype) << "\", " << n.type.rank() << ", {";
    for (size_t d = 0; d < n.type.shape.size(); ++d) c << (d ? ", " : "") << n.type.shape[d];
    c << "}, " << n.type.bytes() << "}, '" << t.kind << "', " << static_cast<int>(ht.code()) << ", " << ht.bits() << ", "
      << t.offset << "},\n";
  }
  c << "};\nconstexpr int kNumTensors = " << tensors.size() << ";\n\n";
  c << "// Per kernel: its name, then the tensors of its Halide arguments and outputs, -1 ended.\n"
    << "struct Call {\n  const char* what;\n  int tensors[" << [&] {
         size_t most = 0;
         for (const auto& a : call_args) most = std::max(most, a.size());
         return most + 1;
       }()
    << "];\n};\nconst Call kCalls[] = {\n";
  for (size_t k = 0; k < kernels.size(); ++k) {
    const Node& root = graph.nodes[kernels[k].roots.back()];
    c << "    {\"kernel " << k << " (" << root.name << ", " << root.op << ")\", {";
    for (int a : call_args[k]) c << a << ", ";
    c << "-1}},\n";
  }
  c << "};\nconstexpr int kNumCalls = " << kernels.size() << ";\n\n// Outputs that are copies of inputs or of other outputs.\n"
    << "const int kCopies[][2] = {";
  for (const auto& [dst, src] : copies) c << "{" << dst << ", " << src << "}, ";
  c << "{-1, -1}};\n\n";
  c << "using KernelFn = int (*)(void**);\nstruct Variant {\n  const char* target;\n  int cuda_sm;  // 0: CPU only\n"
    << "  bool (*cpu_ok)();\n  KernelFn fns[" << kernels.size() + 1 << "];\n};\n\n";
  for (size_t v = 0; v < targets.size(); ++v) {
    c << "bool cpu_ok_" << v << "() {\n  __builtin_cpu_init();\n  return true";
    for (const std::string& f : checks[v]) c << " && __builtin_cpu_supports(\"" << f << "\")";
    c << ";\n}\n";
  }
  c << "\nconst Variant kVariants[] = {\n";
  for (size_t v = 0; v < targets.size(); ++v) {
    c << "    {\"" << targets[v] << "\", " << cuda_sm[v] << ", cpu_ok_" << v << ", {";
    for (const std::string& fn : fn_names[v]) c << fn << "_argv, ";
    c << "nullptr}},\n";
  }
  c << "};\nconstexpr int kNumVariants = " << targets.size() << ";\n\n";
  c << R"(// The compute capability (major * 10 + minor) of GPU 0, or 0 without a
// driver or a device. The driver is loaded with dlopen: no link dependency.
int gpu_capability() {
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!lib) return 0;
  using Init = int (*)(unsigned);
  using Count = int (*)(int*);
  using Attr = int (*)(int*, int, int);
  auto init = reinterpret_cast<Init>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<Count>(dlsym(lib, "cuDeviceGetCount"));
  auto attr = reinterpret_cast<Attr>(dlsym(lib, "cuDeviceGetAttribute"));
  int n = 0, major = 0, minor = 0;
  if (!init || !count || !attr || init(0) != 0 || count(&n) != 0 || n < 1) return 0;
  if (attr(&major, 75, 0) != 0 || attr(&minor, 76, 0) != 0) return 0;  // COMPUTE_CAPABILITY_MAJOR / MINOR
  return major * 10 + minor;
}

// Parallel loops run on Tessera's spinning pool (thread_pool.h), as in the JIT:
// waking Halide's parked workers costs tens of microseconds per kernel.
int do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  return tessera::ThreadPool::global().parallel_for(user_context, task, min, size, closure);
}

// Halide's runtime reports errors through this handler (its default one
// aborts); the message is thrown by the call that failed.
thread_local std::string last_error;
void record_error(void*, const char* message) { last_error = message ? message : ""; }

const Variant* choose() {
  if (const char* forced = std::getenv("TESSERA_AOT_VARIANT")) {
    for (const Variant& v : kVariants)
      if (std::string(forced) == v.target) return &v;
    throw std::runtime_error(std::string("TESSERA_AOT_VARIANT=") + forced + " names no variant of this library");
  }
  const int cc = gpu_capability();
  const Variant* best = nullptr;
  for (const Variant& v : kVariants)  // the newest GPU schedule set the device can run
    if (v.cuda_sm && v.cuda_sm <= cc && v.cpu_ok() && (!best || v.cuda_sm > best->cuda_sm)) best = &v;
  if (best) return best;
  for (const Variant& v : kVariants)
    if (!v.cuda_sm && v.cpu_ok()) return &v;
  return nullptr;
}

const Variant& chosen() {
  static const Variant* v = [] {
    const Variant* c = choose();
    if (c) std::fprintf(stderr, "tessera: )" << name << R"( runs variant %s\n", c->target);
    return c;
  }();
  if (!v) throw std::runtime_error(")" << name << R"(: no variant runs on this machine : CPU features or GPU missing");
  return *v;
}

}  // namespace

struct )" << name << R"(::State {
  const Variant* variant = nullptr;
  halide_buffer_t buffers[kNumTensors];
  halide_dimension_t dims[kNumTensors][8];
  uint8_t* arena = nullptr;
};

)" << name << "::" << name << R"(() : )" << name << R"((nullptr) {}

)" << name << "::" << name << R"((const char* target) : state_(new State()) {
  if (!target) {
    state_->variant = &chosen();
  } else {
    for (const Variant& v : kVariants)
      if (std::string(target) == v.target) state_->variant = &v;
    const bool runs = state_->variant && state_->variant->cpu_ok() &&
                      (!state_->variant->cuda_sm || gpu_capability() >= state_->variant->cuda_sm);
    if (!runs) {
      delete state_;
      throw std::runtime_error(std::string(")" << name << R"(: variant ") + target +
                               "\" is not in this library or cannot run on this machine");
    }
  }
  halide_set_error_handler(record_error);
  halide_set_custom_do_par_for(do_par_for);
  if (kArenaBytes) {
    state_->arena = static_cast<uint8_t*>(std::aligned_alloc(64, (kArenaBytes + 63) / 64 * 64));
    if (!state_->arena) {
      delete state_;
      throw std::runtime_error(")" << name << R"(: cannot allocate the arena");
    }
  }
  for (int i = 0; i < kNumTensors; ++i) {
    const Entry& e = kTensors[i];
    halide_buffer_t& b = state_->buffers[i];
    b.type.code = static_cast<halide_type_code_t>(e.code);
    b.type.bits = e.bits;
    b.type.lanes = 1;
    b.dimensions = e.spec.rank;
    b.dim = state_->dims[i];
    int64_t stride = 1;
    for (int d = 0; d < e.spec.rank; ++d) {  // Halide's dim 0 is the innermost (last) one
      int64_t extent = e.spec.shape[e.spec.rank - 1 - d];
      b.dim[d] = halide_dimension_t(0, static_cast<int32_t>(extent), static_cast<int32_t>(stride));
      stride *= extent;
    }
    if (e.kind == 't') b.host = state_->arena + e.offset;
  }
}

)" << name << "::~" << name << R"(() {
  for (halide_buffer_t& b : state_->buffers)
    if (b.device) halide_device_free(nullptr, &b);
  std::free(state_->arena);
  delete state_;
}

const char* )" << name << R"(::variant() { return chosen().target; }

const char* )" << name << R"(::target() const { return state_->variant->target; }

int )" << name << R"(::gpu_capability() {
  static const int cc = tessera_aot::gpu_capability();
  return cc;
}

const TensorSpec* )" << name << R"(::inputs() {
  static const TensorSpec* specs = [] {
    static TensorSpec s[kNumInputs > 0 ? kNumInputs : 1];
    for (int i = 0; i < kNumInputs; ++i) s[i] = kTensors[i].spec;
    return s;
  }();
  return specs;
}

const TensorSpec* )" << name << R"(::outputs() {
  static const TensorSpec* specs = [] {
    static TensorSpec s[kNumOutputs];
    for (int i = 0; i < kNumOutputs; ++i) s[i] = kTensors[kNumInputs + i].spec;
    return s;
  }();
  return specs;
}

void )" << name << R"(::run(const Inputs& in, const Outputs& out) {
  static_assert(sizeof(Inputs) == sizeof(const void*) * (kNumInputs > 0 ? kNumInputs : 1) || kNumInputs == 0, "");
  run(reinterpret_cast<const void* const*>(&in), reinterpret_cast<void* const*>(&out));
}

void )" << name << R"(::run(const void* const* inputs, void* const* outputs) {
  const Variant& v = *state_->variant;
  for (int i = 0; i < kNumInputs + kNumOutputs; ++i) {
    const bool input = i < kNumInputs;
    void* p = input ? const_cast<void*>(inputs[i]) : outputs[i - kNumInputs];
    if (!p && kTensors[i].spec.bytes)
      throw std::runtime_error(std::string(")" << name << R"(::run: no pointer for ") + (input ? "input '" : "output '") +
                               kTensors[i].spec.name + "'");
    halide_buffer_t& b = state_->buffers[i];
    b.host = static_cast<uint8_t*>(p);
    b.flags = input ? halide_buffer_flag_host_dirty : 0;  // a GPU variant uploads inputs again
  }
  void* args[)" << [&] {
         size_t most = 0;
         for (const auto& a : call_args) most = std::max(most, a.size());
         return most + 1;
       }()
    << R"(];
  for (int k = 0; k < kNumCalls; ++k) {
    int n = 0;
    for (const int* t = kCalls[k].tensors; *t >= 0; ++t) args[n++] = &state_->buffers[*t];
    last_error.clear();
    if (int err = v.fns[k](args))
      throw std::runtime_error(std::string(")" << name << R"(: ") + kCalls[k].what + " failed in variant " + v.target +
                               " (Halide error " + std::to_string(err) + "): " + last_error);
  }
  for (int i = kNumInputs; i < kNumInputs + kNumOutputs; ++i)
    if (int err = halide_copy_to_host(nullptr, &state_->buffers[i]))
      throw std::runtime_error(std::string(")" << name << R"(: copying output '") + kTensors[i].spec.name +
                               "' to the host failed (Halide error " + std::to_string(err) + "): " + last_error);
  for (const auto& c : kCopies)
    if (c[0] >= 0) {
      int src = c[1];
      if (src >= kNumInputs) continue;  // copies of outputs come after the inputs' copies below
      std::memcpy(outputs[c[0] - kNumInputs], inputs[src], kTensors[c[0]].spec.bytes);
    }
  for (const auto& c : kCopies)
    if (c[0] >= 0 && c[1] >= kNumInputs)
      std::memcpy(outputs[c[0] - kNumInputs], outputs[c[1] - kNumInputs], kTensors[c[0]].spec.bytes);
}

}  // namespace tessera_aot
)";
  write_file(out_dir + "/" + name + ".cpp", c.str());
  result.files.push_back(out_dir + "/" + name + ".cpp");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace tessera
