// Ahead-of-time compilation into objects plus a generated runner (see aot.h).
#include "aot.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <sstream>

#include "bf16_storage.h"
#include "cuda_fast_math.h"
#include "compile_cuda.h"
#include "cpu_x86.h"
#include "cuda_common.h"
#include "decompose_attention.h"
#include "halide_util.h"
#include "dequantize_for_gemm.h"
#include "library_attention.h"
#include "library_embedding_grad.h"
#include "library_gemm.h"
#include "library_quant_linear.h"
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

// The kernels, memory plan and tensor table that a set of variants shares.
struct Family {
  Graph graph;  // the graph the family compiles (prepare_cpu_attention / prepare_gpu_graph)
  std::vector<Kernel> kernels;
  MemoryPlan plan;
  int num_inputs = 0, num_outputs = 0;
  // Inputs and params, then outputs (the public order, the same in every
  // family), then intermediates. buffer_of[node] is the tensor a kernel uses for it.
  std::vector<TensorEntry> tensors;
  std::vector<int> buffer_of;
  std::vector<std::pair<int, int>> copies;  // (output tensor, source tensor) copied after the kernels
  std::vector<std::pair<int, int>> in_place;  // (output tensor, input tensor) it may be written over
  std::vector<std::string> kernel_text;     // per kernel: its graph printed (equal texts compile once)
  std::vector<std::optional<LibraryGemm>> gemm;  // per kernel: the cuBLASLt GEMM it is, if any
  std::vector<std::optional<LibraryAttention>> attention;  // per kernel: the fused attention call it is, if any
  std::vector<std::optional<LibraryEmbeddingGrad>> embedding_grad;  // per kernel: the CUDA embedding gradient, if any
  std::vector<std::optional<LibraryQuantLinear>> quant_linear;  // per kernel: the CUDA quantized linear, if any
  bool library(size_t k) const { return gemm[k] || attention[k] || embedding_grad[k] || quant_linear[k]; }
  // Per kernel: the tensors of its Halide arguments (in Halide's order), then
  // of its outputs; filled when its first variant lowers it.
  std::vector<std::vector<int>> call_args;
};

Family build_family(const Graph& source, const CostModel& cost, bool library_gemm) {
  Family f;
  f.graph = library_gemm ? prepare_gpu_graph(source) : prepare_cpu_attention(source);
  const Graph& graph = f.graph;
  f.kernels = partition(graph, &cost, nullptr, library_gemm);
  f.plan = plan_memory(graph, f.kernels);
  f.buffer_of.assign(graph.nodes.size(), -1);
  for (const Node& n : graph.nodes)
    if (n.op == "input" || n.op == "param") {
      f.buffer_of[n.id] = static_cast<int>(f.tensors.size());
      f.tensors.push_back({n.name, n.id, 'i', 0});
    }
  f.num_inputs = static_cast<int>(f.tensors.size());
  for (const GraphOutput& o : graph.outputs) {
    int index = static_cast<int>(f.tensors.size());
    f.tensors.push_back({o.name, o.node, 'o', 0});
    if (f.buffer_of[o.node] >= 0) f.copies.emplace_back(index, f.buffer_of[o.node]);
    else f.buffer_of[o.node] = index;
  }
  f.num_outputs = static_cast<int>(f.tensors.size()) - f.num_inputs;
  for (const MemoryPlan::InPlaceUpdate& u : f.plan.updates)
    f.in_place.emplace_back(f.num_inputs + u.output, f.buffer_of[u.input]);
  for (const MemoryPlan::Slot& slot : f.plan.slots) {
    f.buffer_of[slot.node] = static_cast<int>(f.tensors.size());
    f.tensors.push_back({graph.nodes[slot.node].name, slot.node, 't', slot.offset});
  }
  for (const Kernel& k : f.kernels) {
    f.kernel_text.push_back(print(k.graph));
    f.gemm.push_back(library_gemm ? match_library_gemm(k) : std::nullopt);
    f.attention.push_back(library_gemm ? match_library_attention(k) : std::nullopt);
    f.embedding_grad.push_back(library_gemm ? match_library_embedding_grad(k) : std::nullopt);
    f.quant_linear.push_back(library_gemm ? match_library_quant_linear(k) : std::nullopt);
  }
  f.call_args.resize(f.kernels.size());
  return f;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  if (!f) fail("compile_aot: cannot write ", path);
}

// `x` printed so that it reads back as the same double.
std::string exact(double x) {
  std::ostringstream o;
  o << std::setprecision(17) << x;
  return o.str();
}

// The CUDA variants' plans, as tessera::cuda::PlanSpec tables (plan_executor.h):
// the CUDA family's tensors, each kernel's argument list or GEMM, and one
// step list and spec per CUDA variant. Inside #if TESSERA_AOT_CUDA.
std::string cuda_plan_tables(const std::string& name, const Family& f,
                             const std::vector<std::string>& targets, const std::vector<int>& cuda_sm,
                             const std::vector<std::vector<std::string>>& fn_names) {
  const Graph& graph = f.graph;
  std::ostringstream c;
  c << "#if TESSERA_AOT_CUDA\n// The GPU variants' plan: Halide CUDA kernels and cuBLASLt GEMMs over one device arena.\n"
    << "const tessera::cuda::PlanTensor kCudaTensors[] = {\n";
  for (const TensorEntry& t : f.tensors) {
    const Node& n = graph.nodes[t.node];
    Halide::Type ht = halide_type(n.type.dtype);
    c << "    {\"" << t.name << "\", \"" << dtype_name(n.type.dtype) << "\", " << static_cast<int>(ht.code()) << ", "
      << ht.bits() << ", " << n.type.rank() << ", {";
    for (size_t d = 0; d < n.type.shape.size(); ++d) c << (d ? ", " : "") << n.type.shape[d];
    c << "}, " << n.type.bytes() << ", '" << t.kind << "', " << t.offset << "},\n";
  }
  c << "};\n";
  for (size_t k = 0; k < f.kernels.size(); ++k) {
    const Kernel& kernel = f.kernels[k];
    if (const std::optional<LibraryGemm>& g = f.gemm[k]) {
      auto tensor = [&](int input) { return input < 0 ? -1 : f.buffer_of[kernel.inputs[input]]; };
      c << "const tessera::cuda::PlanGemm kCudaGemm" << k << " = {\"" << dtype_name(g->dtype) << "\", "
        << (g->trans_a ? "true" : "false") << ", " << (g->trans_b ? "true" : "false") << ", " << g->m << ", " << g->n
        << ", " << g->k << ", " << g->batch << ", " << g->stride_a << ", " << g->stride_b << ", " << tensor(g->a) << ", "
        << tensor(g->b) << ", " << f.buffer_of[kernel.roots[g->gelu ? 1 : 0]] << ", " << tensor(g->bias) << ", "
        << (g->gelu ? f.buffer_of[kernel.roots[0]] : -1) << ", " << tensor(g->dgelu) << ", "
        << (g->relu ? "true" : "false") << "};  // " << g->text() << "\n";
    } else if (const std::optional<LibraryAttention>& a = f.attention[k]) {
      auto input = [&](int i) { return i < 0 ? -1 : f.buffer_of[kernel.inputs[i]]; };
      auto root = [&](int r) { return r < 0 ? -1 : f.buffer_of[kernel.roots[r]]; };
      c << "const tessera::cuda::PlanAttention kCudaAttention" << k << " = {\"" << dtype_name(a->dtype) << "\", "
        << (a->backward ? "true" : "false")
        << ", " << a->batch << ", " << a->seq << ", " << a->dim << ", " << (a->causal ? "true" : "false") << ", "
        << exact(a->scale) << ", " << input(a->q) << ", " << input(a->k) << ", " << input(a->v) << ", "
        << (a->backward ? input(a->out) : root(0)) << ", " << input(a->grad) << ", " << root(a->dq) << ", "
        << root(a->dk) << ", " << root(a->dv) << ", " << a->heads << ", {";
      for (int t = 0; t < 8; ++t) {
        const AttentionPlacement& p = a->placement[t];
        c << (t ? ", {" : "{") << p.offset << ", " << p.batch << ", " << p.head << ", " << p.row << "}";
      }
      c << "}};  // " << a->text() << "\n";
    } else if (const std::optional<LibraryEmbeddingGrad>& e = f.embedding_grad[k]) {
      c << "const tessera::cuda::PlanEmbeddingGrad kCudaEmbeddingGrad" << k << " = {\"" << dtype_name(e->dtype)
        << "\", \"" << dtype_name(e->index) << "\", " << e->positions << ", " << e->vocab << ", " << e->dim << ", "
        << f.buffer_of[kernel.inputs[e->indices]] << ", " << f.buffer_of[kernel.inputs[e->grad]] << ", "
        << f.buffer_of[kernel.roots[0]] << "};  // " << e->text() << "\n";
    } else if (const std::optional<LibraryQuantLinear>& q = f.quant_linear[k]) {
      auto input = [&](int i) { return i < 0 ? -1 : f.buffer_of[kernel.inputs[i]]; };
      c << "const tessera::cuda::PlanQuantLinear kCudaQuantLinear" << k << " = {\"" << q->format << "\", "
        << (q->grad_input ? "true" : "false") << ", " << q->rows << ", " << q->out_features << ", " << q->in_features
        << ", " << input(q->x) << ", " << input(q->weight) << ", " << input(q->scale) << ", "
        << input(q->nested_absmax) << ", " << input(q->nested_quant_map) << ", " << input(q->nested_offset) << ", "
        << input(q->bias) << ", " << f.buffer_of[kernel.roots[0]] << "};  // " << q->text() << "\n";
    } else {
      c << "const int kCudaArgs" << k << "[] = {";
      for (int a : f.call_args[k]) c << a << ", ";
      c << "-1};\n";
    }
  }
  c << "const int kCudaCopies[][2] = {";
  for (const auto& [dst, src] : f.copies) c << "{" << dst << ", " << src << "}, ";
  c << "{-1, -1}};\nconst int kCudaInPlace[][2] = {";
  for (const auto& [out, in] : f.in_place) c << "{" << out << ", " << in << "}, ";
  c << "{-1, -1}};\n";
  for (size_t v = 0; v < targets.size(); ++v) {
    if (!cuda_sm[v]) continue;
    c << "const tessera::cuda::PlanStep kCudaSteps" << v << "[] = {\n";
    for (size_t k = 0; k < f.kernels.size(); ++k) {
      const Node& root = graph.nodes[f.kernels[k].roots.back()];
      c << "    {\"kernel " << k << " (" << root.name << ", " << root.op << ")\", ";
      if (f.gemm[k]) c << "nullptr, nullptr, &kCudaGemm" << k << "},\n";
      else if (f.attention[k]) c << "nullptr, nullptr, nullptr, &kCudaAttention" << k << "},\n";
      else if (f.embedding_grad[k]) c << "nullptr, nullptr, nullptr, nullptr, &kCudaEmbeddingGrad" << k << "},\n";
      else if (f.quant_linear[k])
        c << "nullptr, nullptr, nullptr, nullptr, nullptr, &kCudaQuantLinear" << k << "},\n";
      else c << fn_names[v][k] << "_argv, kCudaArgs" << k << ", nullptr},\n";
    }
    c << "};\nconst tessera::cuda::PlanSpec kCudaPlan" << v << " = {\"" << name << "\", kCudaTensors, "
      << f.tensors.size() << ", " << f.num_inputs << ", " << f.num_outputs << ", kCudaSteps" << v << ", "
      << f.kernels.size() << ", kCudaCopies, " << f.copies.size() << ", " << f.plan.peak << ", kCudaInPlace, "
      << f.in_place.size() << "};\n";
  }
  c << "const tessera::cuda::PlanSpec* cuda_plan(const char* target) {\n";
  for (size_t v = 0; v < targets.size(); ++v)
    if (cuda_sm[v]) c << "  if (std::string(target) == \"" << targets[v] << "\") return &kCudaPlan" << v << ";\n";
  c << "  return nullptr;\n}\n#endif  // TESSERA_AOT_CUDA\n\n";
  return c.str();
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
  // The CPU variants share one partition and memory plan, decided with the
  // first CPU target's cost model; the CUDA variants share another (with the
  // first CUDA target's), in which matrix products are cuBLASLt GEMMs.
  std::vector<Target> parsed;
  for (const std::string& t : targets) parsed.push_back(Target::parse(t));
  auto first_of = [&](bool cuda) {
    for (const Target& t : parsed)
      if ((t.cuda_sm != 0) == cuda) return &t;
    return static_cast<const Target*>(nullptr);
  };
  const Target* first_cpu = first_of(false);
  const Target* first_cuda = first_of(true);
  Family cpu = build_family(graph, first_cpu ? cost_model(*first_cpu) : cpu_x86_cost_model(), false);
  Family cuda;
  if (first_cuda) cuda = build_family(graph, cost_model(*first_cuda), true);
  const int num_inputs = cpu.num_inputs, num_outputs = cpu.num_outputs;
  const std::vector<TensorEntry>& tensors = cpu.tensors;  // the public ones are the same in both
  const std::vector<Kernel>& kernels = cpu.kernels;
  const MemoryPlan& plan = cpu.plan;
  const Graph& cpu_graph = cpu.graph;  // the CPU tables' node ids are this graph's (attention_grad decomposed)

  AotResult result;
  result.kernels = static_cast<int>(kernels.size());
  result.arena_bytes = plan.peak;
  bool any_cuda = false;
  std::vector<std::vector<std::string>> fn_names(targets.size());  // per kernel of the variant's family; "" for a GEMM
  std::vector<std::vector<std::string>> checks(targets.size());
  std::vector<int> cuda_sm(targets.size(), 0);
  for (size_t v = 0; v < targets.size(); ++v) {
    auto vstart = std::chrono::steady_clock::now();
    const Target& t = parsed[v];
    cuda_sm[v] = t.cuda_sm;
    any_cuda = any_cuda || t.cuda_sm;
    Family& family = t.cuda_sm ? cuda : cpu;
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
    for (size_t k = 0; k < family.kernels.size(); ++k) {
      const Kernel& kernel = family.kernels[k];
      const Node& root = family.graph.nodes[kernel.roots.back()];
      if (family.library(k)) {
        fn_names[v].push_back("");
        schedule << "kernel " << k << ": " << root.name << " (" << root.op
                 << "): "
                 << (family.gemm[k]             ? family.gemm[k]->text()
                     : family.attention[k]      ? family.attention[k]->text()
                     : family.embedding_grad[k] ? family.embedding_grad[k]->text()
                                                : family.quant_linear[k]->text())
                 << "\n";
        continue;
      }
      std::string& fn = compiled[family.kernel_text[k]];
      const bool first = fn.empty();
      if (first) fn = name + "_" + variant.id + "_k" + std::to_string(k);
      fn_names[v].push_back(fn);
      LoweredGraph L = lower_to_halide(kernel.graph);
      if (family.call_args[k].empty()) {
        for (size_t a = 0; a < L.args.size(); ++a)
          family.call_args[k].push_back(family.buffer_of[kernel.inputs[L.arg_nodes[a]]]);
        for (int r : kernel.roots) family.call_args[k].push_back(family.buffer_of[r]);
      }
      schedule << "kernel " << k << ": " << root.name << " (" << root.op << ")" << (first ? "" : ", same code as before")
               << "\n";
      if (!first) continue;
      try {
        schedule << schedule_for(L, kernel.graph, t, ht);
        std::vector<Halide::Argument> args(L.args.begin(), L.args.end());
        Halide::Pipeline pipeline(L.outputs);
        if (t.cuda_sm) {
          store_bf16_as_u16(pipeline);
          use_fast_math_on_gpu(pipeline);
        }
        Halide::Module m = pipeline.compile_to_module(args, fn, ht.with_feature(Halide::Target::NoRuntime));
        if (t.cuda_sm) check_cuda_module(m, L, kernel.graph, describe_kernel(family.graph, kernel.roots), t.cuda_sm);
        // One object per kernel: the GPU code of several pipelines in one
        // object would share one CUDA module holding one pipeline's kernels.
        kernel_objects.push_back(out_dir + "/" + fn + ".o");
        m.compile({{Halide::OutputFileType::object, kernel_objects.back()}});
        std::error_code ec;
        const auto size = std::filesystem::file_size(kernel_objects.back(), ec);
        if (ec || size == 0)
          fail("compile_aot: Halide left ", kernel_objects.back(), ec ? " missing" : " empty",
               " (is another generator writing into ", out_dir, "?)");
      } catch (const Halide::Error& e) {
        fail("compile_aot: Halide rejected kernel ", k, " (node '", root.name, "', ", root.op, ") of graph '",
             family.graph.name, "' for ", targets[v], ": ", e.what());
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
    << "#pragma once\n\n#include <cstddef>\n#include <cstdint>\n#include <string>\n\nnamespace tessera_aot {\n\n"
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
    const Node& n = cpu_graph.nodes[tensors[i].node];
    h << "    const " << c_type(n.type.dtype) << "* " << unique_field(tensors[i].name) << " = nullptr;  // "
      << to_string(n.type) << " '" << tensors[i].name << "'\n";
  }
  h << "  };\n  struct Outputs {\n";
  used_fields.clear();
  for (int i = num_inputs; i < num_inputs + num_outputs; ++i) {
    const Node& n = cpu_graph.nodes[tensors[i].node];
    h << "    " << c_type(n.type.dtype) << "* " << unique_field(tensors[i].name) << " = nullptr;  // "
      << to_string(n.type) << " '" << tensors[i].name << "'\n";
  }
  h << "  };\n\n  // The variant chosen for this machine (see variant()), or the one whose\n"
    << "  // target is given (throws std::runtime_error if there is none or it cannot run).\n"
    << "  // update_in_place: GPU variants write the outputs in_place_of() names over\n"
    << "  // those inputs' device tensors, so every step overwrites its params and\n"
    << "  // moments (PlanExecutor::Options::update_in_place); CPU variants ignore it.\n"
    << "  " << name << "();\n  explicit " << name << "(const char* target, bool update_in_place = false);\n  ~" << name
    << "();\n  " << name << "(const " << name << "&) = delete;\n  "
    << name << "& operator=(const " << name << "&) = delete;\n\n"
    << "  // Runs the graph; throws std::runtime_error naming the kernel that failed,\n"
    << "  // a missing pointer, or an output that overlaps an input other than as\n"
    << "  // in_place_of() allows.\n"
    << "  void run(const Inputs& in, const Outputs& out);\n"
    << "  // The same by position (inputs(), outputs() order).\n"
    << "  void run(const void* const* inputs, void* const* outputs);\n\n"
    << "  // The input that output i may be written over by this object's variant (an\n"
    << "  // optimizer's new.X over X: run() may be given one pointer for both), or nullptr.\n"
    << "  const char* in_place_of(int output) const;\n"
    << "  // The variant this machine runs (chosen once, printed to stderr once;\n"
    << "  // the environment variable TESSERA_AOT_VARIANT=<target> forces one).\n"
    << "  static const char* variant();\n"
    << "  // This object's variant.\n  const char* target() const;\n"
    << "  // The compute capability of GPU 0 (e.g. 90), or 0 without a GPU or driver.\n"
    << "  static int gpu_capability();\n"
    << "  // Whether GPU variants can run here: a GPU is present and the library was\n"
    << "  // built with the CUDA toolkit (which their executor needs).\n"
    << "  static bool gpu_variants_run();\n"
    << "  static constexpr size_t kArenaBytes = " << plan.peak << ";\n\n"
    << "  // GPU variants run on a tessera::cuda::PlanExecutor: every tensor at a fixed\n"
    << "  // device address in one arena, Halide CUDA kernels and cuBLASLt GEMMs on one\n"
    << "  // stream, the step captured into a CUDA Graph on its third run and replayed\n"
    << "  // after. run() above copies inputs in and outputs out; the calls below keep\n"
    << "  // the step on the device. All are no-ops (nullptr, false) for CPU variants.\n"
    << "  // Device address of tensor i (inputs(), then outputs(), by position).\n"
    << "  void* device_tensor(int i) const;\n"
    << "  // Stream-ordered copies of tensor i from or to the host (the host memory\n"
    << "  // must stay valid until synchronize()).\n"
    << "  void upload(int i, const void* host);\n  void download(int i, void* host);\n"
    << "  // Queues one step on the device over the tensors already there; returns at once.\n"
    << "  void run_device();\n  void synchronize();\n"
    << "  bool last_run_was_graph() const;\n"
    << "  void set_graphs(bool enabled);  // false: every step runs directly (default true)\n"
    << "  // true: each step ends by copying every output new.X onto input X (an\n"
    << "  // optimizer's new params and moments feed the next step); default false.\n"
    << "  void set_feed_back(bool enabled);\n"
    << "  // true: f32 matrix products on TF32 tensor cores (inputs rounded to 10-bit\n"
    << "  // mantissas, as PyTorch's allow_tf32); default false.\n"
    << "  void set_tf32(bool enabled);\n"
    << "  // true (default, where cuDNN 9 loads): bf16 attention on cuDNN's fused kernels,\n"
    << "  // whose backward is not bitwise repeatable; false: tessera's deterministic kernels.\n"
    << "  void set_cudnn_attention(bool enabled);\n"
    << "  std::string describe_device() const;  // one line per step: Halide kernel or cuBLASLt GEMM\n"
    << "  size_t device_arena_bytes() const;   // the one device allocation (cuBLASLt's workspace aside)\n"
    << "  // Each step timed alone with CUDA events (mean of `reps` direct runs), as CSV\n"
    << "  // lines \"what,kind,ms,bytes,flops\" (kind: halide, gemm, attention,\n"
    << "  // embedding_grad or quant_linear; bytes: tensors read and written, each once).\n"
    << "  std::string profile_device(int reps);\n\n private:\n  struct State;\n  State* state_;\n};\n\n"
    << "}  // namespace tessera_aot\n";
  write_file(out_dir + "/" + name + ".h", h.str());
  result.files.push_back(out_dir + "/" + name + ".h");

  // ---- the runner ----
  std::ostringstream c;
  c << "// Generated by tessera_generator" << (origin.empty() ? "" : " from " + origin)
    << ". Do not edit.\n// Runs the kernels of " << name << " in order over one arena; picks a variant at first use.\n"
    << "#include \"" << name << ".h\"\n\n#include <HalideRuntime.h>\n#include <dlfcn.h>\n\n#include <cstdio>\n"
    << "#include \"thread_pool.h\"\n"
    << "#include <cstdlib>\n#include <cstring>\n#include <memory>\n#include <stdexcept>\n#include <string>\n\n"
    << "// TESSERA_AOT_CUDA: built with the CUDA toolkit, so GPU variants run on a\n"
    << "// tessera::cuda::PlanExecutor (tessera_cuda_plan); without it they cannot run.\n"
    << "#ifndef TESSERA_AOT_CUDA\n#define TESSERA_AOT_CUDA 0\n#endif\n"
    << "#if TESSERA_AOT_CUDA\n#include \"tessera/cuda/plan_executor.h\"\n#endif\n\n"
    << "extern \"C\" {\n";
  std::map<std::string, bool> declared;
  for (const auto& fns : fn_names)
    for (const std::string& fn : fns)
      if (!fn.empty() && !declared[fn]) {
        declared[fn] = true;
        c << "int " << fn << "_argv(void**);\n";
      }
  c << "}\n\nnamespace tessera_aot {\nnamespace {\n\n"
    << "struct Entry {\n  TensorSpec spec;\n  char kind;  // 'i' input, 'o' output, 't' intermediate\n"
    << "  uint8_t code, bits;\n  size_t offset;\n};\n\nconst Entry kTensors[] = {\n";
  for (const TensorEntry& t : tensors) {
    const Node& n = cpu_graph.nodes[t.node];
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
         for (const auto& a : cpu.call_args) most = std::max(most, a.size());
         return most + 1;
       }()
    << "];\n};\nconst Call kCalls[] = {\n";
  for (size_t k = 0; k < kernels.size(); ++k) {
    const Node& root = cpu_graph.nodes[kernels[k].roots.back()];
    c << "    {\"kernel " << k << " (" << root.name << ", " << root.op << ")\", {";
    for (int a : cpu.call_args[k]) c << a << ", ";
    c << "-1}},\n";
  }
  c << "};\nconstexpr int kNumCalls = " << kernels.size() << ";\n\n// Outputs that are copies of inputs or of other outputs.\n"
    << "const int kCopies[][2] = {";
  for (const auto& [dst, src] : cpu.copies) c << "{" << dst << ", " << src << "}, ";
  c << "{-1, -1}};\n// Outputs the CPU variants may write over an input (output tensor, input tensor).\n"
    << "const int kInPlace[][2] = {";
  for (const auto& [out, in] : cpu.in_place) c << "{" << out << ", " << in << "}, ";
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
    if (!cuda_sm[v])
      for (const std::string& fn : fn_names[v]) c << fn << "_argv, ";
    c << "nullptr}},\n";
  }
  c << "};\nconstexpr int kNumVariants = " << targets.size() << ";\n\n";
  if (first_cuda)
    c << cuda_plan_tables(name, cuda, targets, cuda_sm, fn_names);
  else  // built with the CUDA toolkit all the same: no GPU plan to run
    c << "#if TESSERA_AOT_CUDA\nconst tessera::cuda::PlanSpec* cuda_plan(const char*) { return nullptr; }\n#endif\n\n";
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
    if (TESSERA_AOT_CUDA && v.cuda_sm && v.cuda_sm <= cc && v.cpu_ok() && (!best || v.cuda_sm > best->cuda_sm)) best = &v;
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

bool listed(const int (*pairs)[2], int a, int b) {
  for (; (*pairs)[0] >= 0; ++pairs)
    if ((*pairs)[0] == a && (*pairs)[1] == b) return true;
  return false;
}

// The CPU kernels may write an output over an input only where the memory
// plan allows it (kInPlace) and in the same array; an output that is a copy
// of an input may be that input.
void check_overlaps(const void* const* inputs, void* const* outputs) {
  constexpr int kNumInputs = )" << name << R"(::kNumInputs, kNumOutputs = )" << name << R"(::kNumOutputs;
  for (int o = kNumInputs; o < kNumInputs + kNumOutputs; ++o) {
    const char* po = static_cast<const char*>(outputs[o - kNumInputs]);
    const size_t bo = kTensors[o].spec.bytes;
    for (int i = 0; i < kNumInputs && bo; ++i) {
      const char* pi = static_cast<const char*>(inputs[i]);
      const size_t bi = kTensors[i].spec.bytes;
      if (!bi || po >= pi + bi || pi >= po + bo) continue;
      if (po == pi && bo == bi && (listed(kInPlace, o, i) || listed(kCopies, o, i))) continue;
      throw std::runtime_error(std::string(")" << name << R"(::run: output '") + kTensors[o].spec.name +
                               "' overlaps input '" + kTensors[i].spec.name + "', which it may not be written over");
    }
  }
}

}  // namespace

struct )" << name << R"(::State {
  const Variant* variant = nullptr;
  halide_buffer_t buffers[kNumTensors];
  halide_dimension_t dims[kNumTensors][8];
  uint8_t* arena = nullptr;
#if TESSERA_AOT_CUDA
  std::unique_ptr<tessera::cuda::PlanExecutor> gpu;  // GPU variants
#endif
};

)" << name << "::" << name << R"(() : )" << name << R"((nullptr) {}

)" << name << "::" << name << R"((const char* target, bool update_in_place) : state_(new State()) {
  if (!target) {
    state_->variant = &chosen();
  } else {
    for (const Variant& v : kVariants)
      if (std::string(target) == v.target) state_->variant = &v;
    const bool runs = state_->variant && state_->variant->cpu_ok() &&
                      (!state_->variant->cuda_sm || (TESSERA_AOT_CUDA && gpu_capability() >= state_->variant->cuda_sm));
    if (!runs) {
      delete state_;
      throw std::runtime_error(std::string(")" << name << R"(: variant ") + target +
                               "\" is not in this library or cannot run on this machine");
    }
  }
  halide_set_error_handler(record_error);
  halide_set_custom_do_par_for(do_par_for);
#if TESSERA_AOT_CUDA
  if (state_->variant->cuda_sm) {
    try {
      tessera::cuda::PlanExecutor::Options options;
      options.update_in_place = update_in_place;
      state_->gpu.reset(new tessera::cuda::PlanExecutor(*cuda_plan(state_->variant->target), options));
    } catch (...) {
      delete state_;
      throw;
    }
    return;
  }
#endif
  (void)update_in_place;
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
#if TESSERA_AOT_CUDA
  state_->gpu.reset();
#endif
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

bool )" << name << R"(::gpu_variants_run() { return TESSERA_AOT_CUDA && gpu_capability() > 0; }

const char* )" << name << R"(::in_place_of(int output) const {
  const int (*pairs)[2] = kInPlace;
#if TESSERA_AOT_CUDA
  if (state_->gpu) pairs = state_->gpu->spec().in_place;
#endif
  for (; pairs && (*pairs)[0] >= 0; ++pairs)
    if ((*pairs)[0] == kNumInputs + output) return kTensors[(*pairs)[1]].spec.name;
  return nullptr;
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
#if TESSERA_AOT_CUDA
  if (tessera::cuda::PlanExecutor* gpu = state_->gpu.get()) {
    for (int i = 0; i < kNumInputs; ++i) {
      if (!inputs[i] && kTensors[i].spec.bytes)
        throw std::runtime_error(std::string(")" << name << R"(::run: no pointer for input '") + kTensors[i].spec.name + "'");
      if (kTensors[i].spec.bytes) gpu->upload(i, inputs[i]);
    }
    gpu->run();
    for (int i = kNumInputs; i < kNumInputs + kNumOutputs; ++i) {
      if (!outputs[i - kNumInputs] && kTensors[i].spec.bytes)
        throw std::runtime_error(std::string(")" << name << R"(::run: no pointer for output '") + kTensors[i].spec.name + "'");
      if (kTensors[i].spec.bytes) gpu->download(i, outputs[i - kNumInputs]);
    }
    gpu->synchronize();
    return;
  }
#endif
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
  check_overlaps(inputs, outputs);
  void* args[)" << [&] {
         size_t most = 0;
         for (const auto& a : cpu.call_args) most = std::max(most, a.size());
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
      if (src >= kNumInputs || outputs[c[0] - kNumInputs] == inputs[src]) continue;  // outputs' copies below
      std::memcpy(outputs[c[0] - kNumInputs], inputs[src], kTensors[c[0]].spec.bytes);
    }
  for (const auto& c : kCopies)
    if (c[0] >= 0 && c[1] >= kNumInputs)
      std::memcpy(outputs[c[0] - kNumInputs], outputs[c[1] - kNumInputs], kTensors[c[0]].spec.bytes);
}

#if TESSERA_AOT_CUDA
void* )" << name << R"(::device_tensor(int i) const { return state_->gpu ? state_->gpu->device_ptr(i) : nullptr; }
void )" << name << R"(::upload(int i, const void* host) { if (state_->gpu) state_->gpu->upload(i, host); }
void )" << name << R"(::download(int i, void* host) { if (state_->gpu) state_->gpu->download(i, host); }
void )" << name << R"(::run_device() {
  if (!state_->gpu) throw std::runtime_error(std::string(")" << name << R"(::run_device: variant ") + target() + " is not a GPU variant");
  state_->gpu->run();
}
void )" << name << R"(::synchronize() { if (state_->gpu) state_->gpu->synchronize(); }
bool )" << name << R"(::last_run_was_graph() const { return state_->gpu && state_->gpu->last_run_was_graph(); }
void )" << name << R"(::set_graphs(bool enabled) { if (state_->gpu) state_->gpu->set_graphs(enabled); }
void )" << name << R"(::set_feed_back(bool enabled) { if (state_->gpu) state_->gpu->set_feed_back(enabled); }
void )" << name << R"(::set_tf32(bool enabled) { if (state_->gpu) state_->gpu->set_allow_tf32(enabled); }
void )" << name << R"(::set_cudnn_attention(bool enabled) {
  if (state_->gpu) state_->gpu->set_cudnn_attention(enabled);
}
std::string )" << name << R"(::describe_device() const { return state_->gpu ? state_->gpu->describe() : std::string(); }
size_t )" << name << R"(::device_arena_bytes() const { return state_->gpu ? state_->gpu->arena_bytes() : 0; }
std::string )" << name << R"(::profile_device(int reps) {
  std::string csv;
  if (!state_->gpu) return csv;
  for (const auto& p : state_->gpu->profile(reps))
    csv += "\"" + p.what + "\"," + (p.gemm ? "gemm," : p.attention ? "attention," : p.embedding_grad ? "embedding_grad," : p.quant_linear ? "quant_linear," : "halide,") + std::to_string(p.ms) + "," +
           std::to_string(p.bytes) + "," + std::to_string(p.flops) + "\n";
  return csv;
}
#else
void* )" << name << R"(::device_tensor(int) const { return nullptr; }
void )" << name << R"(::upload(int, const void*) {}
void )" << name << R"(::download(int, void*) {}
void )" << name << R"(::run_device() { throw std::runtime_error(")" << name << R"(::run_device: built without the CUDA toolkit"); }
void )" << name << R"(::synchronize() {}
bool )" << name << R"(::last_run_was_graph() const { return false; }
void )" << name << R"(::set_graphs(bool) {}
void )" << name << R"(::set_feed_back(bool) {}
void )" << name << R"(::set_tf32(bool) {}
void )" << name << R"(::set_cudnn_attention(bool) {}
std::string )" << name << R"(::describe_device() const { return std::string(); }
size_t )" << name << R"(::device_arena_bytes() const { return 0; }
std::string )" << name << R"(::profile_device(int) { return std::string(); }
#endif

}  // namespace tessera_aot
)";
  write_file(out_dir + "/" + name + ".cpp", c.str());
  result.files.push_back(out_dir + "/" + name + ".cpp");
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace tessera
