// Runs a compiled plan on one CUDA stream (see plan_executor.h).
#include "tessera/cuda/plan_executor.h"

#include <HalideRuntime.h>
#include <HalideRuntimeCuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "float_dtype.h"
#include "tessera/cuda/check.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/attention.h"
#include "tessera/cuda/cudnn_attention.h"
#include "tessera/cuda/embedding_grad.h"
#include "tessera/cuda/gemm.h"
#include "tessera/cuda/quant_linear.h"
#include "tessera/error.h"

namespace tessera::cuda {

namespace {

// Halide's CUDA hooks answer with the running executor's context and stream.
void* g_context = nullptr;
cudaStream_t g_stream = nullptr;
thread_local std::string g_halide_error;

int acquire_context(void*, void** ctx, bool) {
  *ctx = g_context;
  return g_context ? 0 : -1;
}
int release_context(void*) { return 0; }
int get_stream(void*, void*, void** stream) {
  *stream = g_stream;
  return 0;
}
void record_error(void*, const char* message) { g_halide_error = message ? message : ""; }

// The current CUDA context (cudart's primary context of the current device),
// through the driver loaded with dlopen: no link dependency on libcuda.
void* current_context(const std::string& plan) {
  TESSERA_CUDA_CHECK(cudaFree(nullptr), "initializing the CUDA context of plan '" + plan + "'");
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!lib) fail("plan '", plan, "': cannot load libcuda.so.1 for the CUDA context: ", dlerror());
  using GetCurrent = int (*)(void**);
  auto get = reinterpret_cast<GetCurrent>(dlsym(lib, "cuCtxGetCurrent"));
  void* ctx = nullptr;
  if (!get || get(&ctx) != 0 || !ctx) fail("plan '", plan, "': cuCtxGetCurrent gave no context");
  return ctx;
}

// Device memory for the buffers that Halide kernels allocate themselves:
// intermediates kept on the device (a reduction's partial results), freed
// at the end of each run, and the device copies of constant tables, made in
// a kernel's first run and kept for the life of the process. Buffers are
// allocated by cudaMalloc when no returned one of the same size is free, and
// kept for reuse, so that after two runs (the first also places the
// constants) a step allocates nothing, its capture into a CUDA Graph
// included. (Halide's own free list keeps at most 32 buffers and frees the
// rest, which breaks the capture of a plan with more.) All are freed when the
// last executor goes, the constants' buffers detached first.
struct ScratchPool {
  std::mutex mutex;
  struct Allocation {
    size_t bytes = 0;
    halide_buffer_t* holder = nullptr;  // the buffer it is handed out to, or nullptr when returned
  };
  std::multimap<size_t, void*> free;      // returned, by size
  std::map<void*, Allocation> allocations;  // every one made
  int executors = 0;
};
ScratchPool& scratch() {
  static ScratchPool* pool = new ScratchPool();  // outlives static destructors that might free into it
  return *pool;
}

// The dtype of a PlanGemm or PlanAttention (the inverse of float_dtype_name).
DType parse_float_dtype(const std::string& name, const std::string& where) {
  if (name == "f32") return DType::f32;
  if (name == "f16") return DType::f16;
  if (name == "bf16") return DType::bf16;
  fail(where, ": dtype '", name, "' is not f32, f16 or bf16");
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

// The Halide runtime's device allocation for CUDA buffers, replaced (its
// definitions are weak) by the pool above; buffers wrapped by the executor
// never come here.
extern "C" int halide_cuda_device_malloc(void*, halide_buffer_t* buf) {
  if (buf->device) return 0;
  const size_t bytes = (buf->size_in_bytes() + 255) / 256 * 256;
  ScratchPool& pool = scratch();
  std::lock_guard<std::mutex> lock(pool.mutex);
  void* p = nullptr;
  if (auto it = pool.free.find(bytes); it != pool.free.end()) {
    p = it->second;
    pool.free.erase(it);
  } else {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (g_stream && cudaStreamIsCapturing(g_stream, &capturing) == cudaSuccess &&
        capturing != cudaStreamCaptureStatusNone) {
      g_halide_error = "a kernel asked for " + std::to_string(bytes) +
                       " bytes of device memory during the CUDA Graph capture, more than in the warm-up runs";
      return halide_error_code_device_malloc_failed;
    }
    if (cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess) {
      g_halide_error = "cudaMalloc of " + std::to_string(bytes) + " bytes for a kernel's intermediate: " +
                       cudaGetErrorString(e);
      return halide_error_code_device_malloc_failed;
    }
  }
  pool.allocations[p] = {bytes, buf};
  buf->device = reinterpret_cast<uint64_t>(p);
  buf->device_interface = halide_cuda_device_interface();
  return 0;
}

extern "C" int halide_cuda_device_free(void*, halide_buffer_t* buf) {
  if (!buf->device) return 0;
  ScratchPool& pool = scratch();
  std::lock_guard<std::mutex> lock(pool.mutex);
  void* p = reinterpret_cast<void*>(buf->device);
  auto it = pool.allocations.find(p);
  if (it == pool.allocations.end()) {
    g_halide_error = "device free of a buffer that the executor's pool did not allocate";
    return halide_error_code_device_free_failed;
  }
  it->second.holder = nullptr;
  pool.free.emplace(it->second.bytes, p);
  buf->device = 0;
  buf->device_interface = nullptr;
  return 0;
}

struct PlanExecutor::State {
  const PlanSpec* spec = nullptr;
  Options options;
  DeviceStream stream;
  std::unique_ptr<DeviceArena> arena;
  std::unique_ptr<CublasLtGemm> gemm;
  std::unique_ptr<StepGraphs> graphs;
  void* context = nullptr;
  std::vector<size_t> offset;  // per tensor
  std::vector<halide_buffer_t> buffers;
  std::vector<std::vector<halide_dimension_t>> dims;
  std::vector<GemmShape> shapes;                     // per step (GEMM steps)
  std::vector<AttentionShape> attention;             // per step (attention steps)
  std::vector<AttentionLayout> attention_layout;     // per step (attention steps)
  std::vector<EmbeddingGradShape> embedding_grad;    // per step (embedding gradient steps)
  std::vector<QuantLinearShape> quant_linear;        // per step (quantized linear steps)
  float* attention_scratch = nullptr;                // attention backward's row statistics, after the tensors
  std::vector<float*> attention_lse;                 // per step: the forward's logsumexp that a backward reuses, or null
  std::unique_ptr<CudnnAttention> cudnn;             // when Options::cudnn_attention and cuDNN loads
  std::vector<char> on_cudnn;                        // per step: attention prepared on cuDNN
  std::string cudnn_note;                            // describe(): which attention kernels run, and why
  std::vector<std::pair<int, int>> feedback;         // (input, output "new.<input>"), used when options.feed_back
  std::vector<int> alias;                            // per tensor: the input an in-place output shares, or -1
  bool counted = false;  // among scratch().executors

  explicit State(int device) : stream(device) {}
  void prepare_cudnn_attention();
};

// Builds cuDNN's plans for the attention steps it takes (all of them at
// setup: its workspace is allocated here, never during a run) and says in
// cudnn_note what attention runs on.
void PlanExecutor::State::prepare_cudnn_attention() {
  const PlanSpec& plan = *spec;
  on_cudnn.assign(plan.num_steps, 0);
  int steps = 0, bf16 = 0, taken = 0;
  for (int k = 0; k < plan.num_steps; ++k)
    if (plan.steps[k].attention) ++steps, bf16 += attention[k].dtype == DType::bf16;
  if (!steps) return;
  if (!bf16) {  // cuDNN's fused attention is half precision only: no handle is made
    cudnn_note = "attention: tessera's kernels (cuDNN's take bf16 attention; this plan has none)";
    return;
  }
  const char* env = std::getenv("TESSERA_CUDNN_ATTENTION");
  if (!options.cudnn_attention || (env && std::string(env) == "0")) {
    cudnn_note = "attention: tessera's kernels (cuDNN's switched off)";
    return;
  }
  std::string why;
  cudnn = CudnnAttention::create(stream, &why);
  if (!cudnn) {
    cudnn_note = "attention: tessera's kernels (cuDNN unavailable: " + why + ")";
    return;
  }
  for (int k = 0; k < plan.num_steps; ++k) {
    const PlanAttention* at = plan.steps[k].attention;
    if (!at) continue;
    if (at->backward && (at->dq < 0 || at->dk < 0 || at->dv < 0 || !attention_lse[k])) {
      why = "a backward without all three gradients or without its forward's logsumexp";
      continue;
    }
    const auto pass = at->backward        ? CudnnAttention::Pass::backward
                      : attention_lse[k] ? CudnnAttention::Pass::forward_lse
                                         : CudnnAttention::Pass::forward;
    std::string refused;
    if (cudnn->prepare(pass, attention[k], attention_layout[k], &refused)) {
      on_cudnn[k] = 1;
      ++taken;
    } else {
      why = refused;
    }
  }
  cudnn_note = "attention: " + std::to_string(taken) + " of " + std::to_string(steps) + " steps on " +
               cudnn->version() + " (workspace " + std::to_string(cudnn->workspace_bytes()) + " bytes)" +
               (taken < steps ? "; the others on tessera's kernels: " + why : "");
  if (!taken) cudnn.reset();
}

PlanExecutor::PlanExecutor(const PlanSpec& spec, const Options& options)
    : s_(std::make_unique<State>(options.device)) {
  State& s = *s_;
  s.spec = &spec;
  s.options = options;
  const std::string plan = spec.name;
  s.context = current_context(plan);

  // In-place outputs (Options::update_in_place) share their input's tensor.
  s.alias.assign(spec.num_tensors, -1);
  if (options.update_in_place)
    for (int p = 0; p < spec.num_in_place; ++p) {
      const int out = spec.in_place[p][0], in = spec.in_place[p][1];
      const bool valid = out >= spec.num_inputs && out < spec.num_inputs + spec.num_outputs && in >= 0 &&
                         in < spec.num_inputs && spec.tensors[out].bytes == spec.tensors[in].bytes;
      if (!valid) fail("plan '", plan, "': in-place pair ", p, " (tensors ", out, " over ", in, ") is not an output over an input of its size");
      s.alias[out] = in;
    }
  // Intermediates where the memory plan puts them; inputs and outputs after.
  s.offset.assign(spec.num_tensors, 0);
  size_t end = round_up(spec.intermediate_bytes, DeviceArena::kDefaultAlignment);
  for (int t = 0; t < spec.num_tensors; ++t) {
    const PlanTensor& e = spec.tensors[t];
    if (s.alias[t] >= 0) {
      s.offset[t] = s.offset[s.alias[t]];  // inputs come first
    } else if (e.kind == 't') {
      s.offset[t] = e.offset;
      if (e.offset + e.bytes > spec.intermediate_bytes)
        fail("plan '", plan, "': intermediate '", e.name, "' at ", e.offset, " + ", e.bytes,
             " bytes lies outside the memory plan's ", spec.intermediate_bytes, " bytes");
    } else {
      s.offset[t] = end;
      end += round_up(e.bytes ? e.bytes : 1, DeviceArena::kDefaultAlignment);
    }
  }
  // Library steps validated now rather than in the first step, and before
  // anything is allocated or wrapped (which only the destructor undoes).
  // Each operand is a tensor of the plan of at least the bytes it needs
  // (an attention operand: exactly).
  auto check_operand = [&](const std::string& where, int t, size_t bytes, const char* operand, bool exact) {
    const bool present = t >= 0 && t < spec.num_tensors;
    if (!present || spec.tensors[t].bytes < bytes || (exact && spec.tensors[t].bytes != bytes))
      fail(where, ": operand ", operand, " needs ", bytes, " bytes, tensor ",
           present ? std::string("'") + spec.tensors[t].name + "' has " + std::to_string(spec.tensors[t].bytes)
                   : std::string("missing"));
  };
  size_t attention_scratch = 0;
  s.shapes.resize(spec.num_steps);
  s.attention.resize(spec.num_steps);
  s.attention_layout.resize(spec.num_steps);
  s.embedding_grad.resize(spec.num_steps);
  s.quant_linear.resize(spec.num_steps);
  for (int k = 0; k < spec.num_steps; ++k) {
    const PlanStep& step = spec.steps[k];
    const std::string where = "plan '" + plan + "' " + step.what;
    if (const PlanGemm* g = step.gemm) {
      GemmShape& sh = s.shapes[k];
      sh.dtype = parse_float_dtype(g->dtype, where);
      sh.allow_tf32 = options.allow_tf32 && sh.dtype == DType::f32;
      sh.trans_a = g->trans_a;
      sh.trans_b = g->trans_b;
      sh.m = g->m;
      sh.n = g->n;
      sh.k = g->k;
      sh.batch = g->batch;
      sh.stride_a = g->stride_a;
      sh.stride_b = g->stride_b;
      if (g->dgelu >= 0 && (g->aux >= 0 || g->bias >= 0 || g->relu))
        fail(where, ": a GELU-gradient epilogue takes no bias and no activation");
      if (g->relu && g->aux >= 0) fail(where, ": a ReLU epilogue keeps no aux tensor");
      if (g->aux >= 0) sh.epilogue = g->bias >= 0 ? GemmEpilogue::gelu_aux_bias : GemmEpilogue::gelu_aux;
      else if (g->dgelu >= 0) sh.epilogue = GemmEpilogue::dgelu;
      else if (g->relu) sh.epilogue = g->bias >= 0 ? GemmEpilogue::relu_bias : GemmEpilogue::relu;
      else sh.epilogue = g->bias >= 0 ? GemmEpilogue::bias : GemmEpilogue::none;
      sh.validate();
      check_operand(where, g->a, sh.a_bytes(), "A", false);
      check_operand(where, g->b, sh.b_bytes(), "B", false);
      check_operand(where, g->c, sh.c_bytes(), "C", false);
      if (g->aux >= 0) check_operand(where, g->aux, sh.aux_bytes(), "aux", false);
      if (g->dgelu >= 0) check_operand(where, g->dgelu, sh.c_bytes(), "the GELU-gradient input", false);
      if (g->bias >= 0)
        check_operand(where, g->bias, static_cast<size_t>(sh.n) * float_dtype_size(sh.dtype), "bias", false);
    } else if (const PlanAttention* at = step.attention) {
      AttentionShape& sh = s.attention[k];
      sh.batch = at->batch;
      sh.seq = at->seq;
      sh.dim = at->dim;
      sh.causal = at->causal;
      sh.scale = static_cast<float>(at->scale);
      sh.dtype = parse_float_dtype(at->dtype, where);
      if (!fused_attention_supports(at->dim, at->dim) || at->batch < 1 || at->seq < 1 || sh.dtype == DType::f16)
        fail(where, ": the fused attention kernels do not take ", sh.text());
      AttentionLayout& layout = s.attention_layout[k];
      layout.heads = at->heads;
      if (at->heads < 1 || at->batch % at->heads != 0)
        fail(where, ": ", at->heads, " heads do not divide the attention batch ", at->batch);
      AttentionStrides* strides[8] = {&layout.q, &layout.k, &layout.v, &layout.out,
                                      &layout.grad, &layout.dq, &layout.dk, &layout.dv};
      const int tensors[8] = {at->q, at->k, at->v, at->out, at->grad, at->dq, at->dk, at->dv};
      const char* names[8] = {"q", "k", "v", "out", "grad", "dq", "dk", "dv"};
      for (int i = 0; i < 8; ++i) {
        if (i == 4 && !at->backward) continue;
        if (i >= 5 && tensors[i] < 0) continue;  // the gradients not wanted are -1
        const int64_t* p = at->placement[i];
        *strides[i] = {p[1], p[2], p[3]};
        const AttentionStrides st = layout.of(*strides[i], sh);
        // Bytes up to the last element it reads or writes; a dense tensor is exactly that.
        const int64_t last = p[0] + (at->batch / at->heads - 1) * st.batch + (at->heads - 1) * st.head +
                             (at->seq - 1) * st.row + at->dim;
        const bool dense = p[0] == 0 && st == layout.of(AttentionStrides{}, sh);
        check_operand(where, tensors[i], static_cast<size_t>(last) * float_dtype_size(sh.dtype), names[i], dense);
      }
      if (at->backward) attention_scratch = std::max(attention_scratch, attention_backward_scratch_bytes(sh));
    } else if (const PlanEmbeddingGrad* e = step.embedding_grad) {
      EmbeddingGradShape& sh = s.embedding_grad[k];
      sh.dtype = parse_float_dtype(e->dtype, where);
      sh.index = std::string(e->index) == "i64" ? DType::i64 : DType::i32;
      sh.positions = e->positions;
      sh.vocab = e->vocab;
      sh.dim = e->dim;
      if (!embedding_grad_supports(sh.dtype, sh.index) || (std::string(e->index) != "i32" && std::string(e->index) != "i64"))
        fail(where, ": the embedding gradient kernel does not take ", e->dtype, " rows with ", e->index, " indices");
      const size_t row = static_cast<size_t>(e->dim) * float_dtype_size(sh.dtype);
      check_operand(where, e->indices, static_cast<size_t>(e->positions) * (sh.index == DType::i64 ? 8 : 4), "indices", true);
      check_operand(where, e->grad, e->positions * row, "grad", true);
      check_operand(where, e->out, e->vocab * row, "out", true);
    } else if (const PlanQuantLinear* q = step.quant_linear) {
      QuantLinearShape& sh = s.quant_linear[k];
      const std::string format = q->format;
      if (format == "int8") sh.format = QuantLinearFormat::int8;
      else if (format == "nf4") sh.format = QuantLinearFormat::nf4;
      else if (format == "nf4_nested") sh.format = QuantLinearFormat::nf4_nested;
      else fail(where, ": no quantized weight format '", format, "' (int8, nf4 or nf4_nested)");
      sh.grad_input = q->grad_input;
      sh.rows = q->rows;
      sh.out_features = q->out_features;
      sh.in_features = q->in_features;
      sh.bias = q->bias >= 0;
      sh.tf32 = options.allow_tf32;
      if (const std::string why = quant_linear_unsupported(sh); !why.empty())
        fail(where, ": the quantized linear kernels do not take ", sh.text(), ": ", why);
      const size_t weights = static_cast<size_t>(q->out_features * q->in_features);  // K % 64 == 0: no padding
      const size_t f32 = sizeof(float);
      const int64_t in = q->grad_input ? q->out_features : q->in_features;
      const int64_t out = q->grad_input ? q->in_features : q->out_features;
      check_operand(where, q->x, static_cast<size_t>(q->rows * in) * f32, "x", true);
      check_operand(where, q->out, static_cast<size_t>(q->rows * out) * f32, "out", true);
      if (sh.format == QuantLinearFormat::int8) {
        check_operand(where, q->weight, weights, "weight (i8)", true);
        check_operand(where, q->scale, static_cast<size_t>(q->out_features) * f32, "scale", true);
      } else {
        const size_t blocks = weights / 64;
        const bool nested = sh.format == QuantLinearFormat::nf4_nested;
        check_operand(where, q->weight, weights / 2, "weight (packed NF4)", true);
        check_operand(where, q->scale, blocks * (nested ? 1 : f32), nested ? "absmax (u8 codes)" : "absmax", true);
        if (nested) {
          check_operand(where, q->nested_absmax, (blocks + 255) / 256 * f32, "nested_absmax", true);
          check_operand(where, q->nested_quant_map, 256 * f32, "nested_quant_map", true);
          check_operand(where, q->nested_offset, f32, "nested_offset", true);
        }
      }
      if (sh.bias) check_operand(where, q->bias, static_cast<size_t>(q->out_features) * f32, "bias", true);
    } else if (!step.kernel) {
      fail(where, ": neither a kernel, a GEMM, attention, an embedding gradient nor a quantized linear");
    }
  }
  const size_t scratch_offset = end;
  end += round_up(attention_scratch, DeviceArena::kDefaultAlignment);
  // A forward attention whose q, k, v and out a later backward reads (its own forward)
  // writes each row's logsumexp to a region of its own, which that backward
  // reads instead of recomputing it.
  std::vector<std::pair<int, size_t>> lse_offset(spec.num_steps, {-1, 0});  // (forward step, offset)
  for (int k = 0; k < spec.num_steps; ++k) {
    const PlanAttention* b = spec.steps[k].attention;
    if (!b || !b->backward) continue;
    for (int f = k - 1; f >= 0; --f) {
      const PlanAttention* a = spec.steps[f].attention;
      if (!a || a->backward || a->out != b->out || a->q != b->q || a->k != b->k || a->v != b->v ||
          !std::equal(&a->placement[0][0], &a->placement[4][0], &b->placement[0][0]))
        continue;
      if (lse_offset[f].first < 0) {
        lse_offset[f] = {f, end};
        end += round_up(static_cast<size_t>(a->batch * a->seq) * sizeof(float), DeviceArena::kDefaultAlignment);
      }
      lse_offset[k] = lse_offset[f];
      break;
    }
  }
  s.arena = std::make_unique<DeviceArena>(end, plan + " arena");
  if (attention_scratch)
    s.attention_scratch = static_cast<float*>(s.arena->at(scratch_offset, attention_scratch));
  s.attention_lse.assign(spec.num_steps, nullptr);
  for (int k = 0; k < spec.num_steps; ++k)
    if (auto [f, at] = lse_offset[k]; f >= 0) {
      const PlanAttention* a = spec.steps[f].attention;
      s.attention_lse[k] = static_cast<float*>(s.arena->at(at, static_cast<size_t>(a->batch * a->seq) * sizeof(float)));
    }
  s.prepare_cudnn_attention();
  s.gemm = std::make_unique<CublasLtGemm>(s.stream);
  // Two direct runs before the capture: see ScratchPool.
  s.graphs = std::make_unique<StepGraphs>(s.stream, 2, options.graphs);

  // Every tensor as a Halide buffer on its device address.
  s.buffers.assign(spec.num_tensors, halide_buffer_t{});
  s.dims.resize(spec.num_tensors);
  for (int t = 0; t < spec.num_tensors; ++t) {
    const PlanTensor& e = spec.tensors[t];
    halide_buffer_t& b = s.buffers[t];
    s.dims[t].resize(std::max(e.rank, 1));
    b.type.code = static_cast<halide_type_code_t>(e.code);
    b.type.bits = e.bits;
    b.type.lanes = 1;
    b.dimensions = e.rank;
    b.dim = s.dims[t].data();
    int64_t stride = 1;
    for (int d = 0; d < e.rank; ++d) {  // Halide's dim 0 is the innermost (last) one
      const int64_t extent = e.shape[e.rank - 1 - d];
      b.dim[d] = halide_dimension_t(0, static_cast<int32_t>(extent), static_cast<int32_t>(stride));
      stride *= extent;
    }
    void* p = s.arena->at(s.offset[t], e.bytes);
    g_halide_error.clear();
    halide_set_error_handler(record_error);
    if (int err = halide_cuda_wrap_device_ptr(nullptr, &b, reinterpret_cast<uint64_t>(p))) {
      for (int u = 0; u < t; ++u) halide_cuda_detach_device_ptr(nullptr, &s.buffers[u]);
      fail("plan '", plan, "': Halide could not wrap tensor '", e.name, "' (", e.bytes, " bytes, error ", err,
           "): ", g_halide_error);
    }
  }

  // Outputs "new.X" that can feed input "X" (Options::feed_back).
  for (int o = spec.num_inputs; o < spec.num_inputs + spec.num_outputs; ++o) {
    const std::string name = spec.tensors[o].name;
    if (name.rfind("new.", 0) != 0) continue;
    const int i = find(name.substr(4));
    if (i >= 0 && i < spec.num_inputs && spec.tensors[i].bytes == spec.tensors[o].bytes && s.alias[o] != i)
      s.feedback.emplace_back(i, o);
  }
  std::lock_guard<std::mutex> lock(scratch().mutex);
  ++scratch().executors;
  s.counted = true;
}

PlanExecutor::~PlanExecutor() {
  if (!s_) return;
  cudaStreamSynchronize(s_->stream.stream());
  for (halide_buffer_t& b : s_->buffers)
    if (b.device) halide_cuda_detach_device_ptr(nullptr, &b);
  if (!s_->counted) return;
  ScratchPool& pool = scratch();
  std::lock_guard<std::mutex> lock(pool.mutex);
  if (--pool.executors > 0) return;
  // Constant tables still hold theirs: detached here, and put on the device
  // again (host_dirty) by the next run that needs them.
  for (auto& [p, a] : pool.allocations) {
    if (a.holder) {
      a.holder->device = 0;
      a.holder->device_interface = nullptr;
      a.holder->set_host_dirty(true);
    }
    cudaFree(p);
  }
  pool.allocations.clear();
  pool.free.clear();
}

void* PlanExecutor::device_ptr(int t) const {
  if (t < 0 || t >= s_->spec->num_tensors)
    fail("plan '", s_->spec->name, "': no tensor ", t, " (it has ", s_->spec->num_tensors, ")");
  return static_cast<uint8_t*>(s_->arena->base()) + s_->offset[t];
}

int PlanExecutor::find(const std::string& name) const {
  const PlanSpec& spec = *s_->spec;
  for (int t = 0; t < spec.num_inputs + spec.num_outputs; ++t)
    if (name == spec.tensors[t].name) return t;
  return -1;
}

void PlanExecutor::upload(int t, const void* host) {
  const PlanTensor& e = s_->spec->tensors[t];
  TESSERA_CUDA_CHECK(cudaMemcpyAsync(device_ptr(t), host, e.bytes, cudaMemcpyHostToDevice, s_->stream.stream()),
                     std::string("plan '") + s_->spec->name + "' upload of '" + e.name + "' (" +
                         std::to_string(e.bytes) + " bytes)");
}

void PlanExecutor::download(int t, void* host) {
  const PlanTensor& e = s_->spec->tensors[t];
  TESSERA_CUDA_CHECK(cudaMemcpyAsync(host, device_ptr(t), e.bytes, cudaMemcpyDeviceToHost, s_->stream.stream()),
                     std::string("plan '") + s_->spec->name + "' download of '" + e.name + "' (" +
                         std::to_string(e.bytes) + " bytes)");
}

void PlanExecutor::queue_steps(const std::function<void(int)>& after_step) {
  State& s = *s_;
  const PlanSpec& spec = *s.spec;
  const cudaStream_t stream = s.stream.stream();
  void* args[64];
  for (int k = 0; k < spec.num_steps; ++k) {
    if (after_step && k > 0) after_step(k - 1);
    const PlanStep& step = spec.steps[k];
    if (step.gemm) {
      const PlanGemm& g = *step.gemm;
      GemmArgs a;
      a.a = device_ptr(g.a);
      a.b = device_ptr(g.b);
      a.c = device_ptr(g.c);
      if (g.bias >= 0) a.bias = device_ptr(g.bias);
      if (g.aux >= 0) a.aux = device_ptr(g.aux);
      if (g.dgelu >= 0) a.aux = device_ptr(g.dgelu);
      try {
        s.gemm->run(s.shapes[k], a);
      } catch (const Error& e) {
        fail("plan '", spec.name, "' ", step.what, ": ", e.what());
      }
      continue;
    }
    if (const PlanAttention* at = step.attention) {
      // Tensor t at element offset `placement[i][0]`.
      const size_t element = float_dtype_size(s.attention[k].dtype);
      auto ptr = [&](int t, int i) -> void* {
        return t < 0 ? nullptr : static_cast<char*>(device_ptr(t)) + at->placement[i][0] * element;
      };
      const AttentionLayout* layout = &s.attention_layout[k];
      try {
        const bool cudnn = s.on_cudnn[k] && s.options.cudnn_attention;
        if (cudnn && at->backward) {
          if (s.cudnn->backward(s.attention[k], *layout, ptr(at->q, 0), ptr(at->k, 1), ptr(at->v, 2), ptr(at->out, 3),
                                ptr(at->grad, 4), ptr(at->dq, 5), ptr(at->dk, 6), ptr(at->dv, 7), s.attention_lse[k]))
            continue;
        } else if (cudnn) {
          if (s.cudnn->forward(s.attention[k], *layout, ptr(at->q, 0), ptr(at->k, 1), ptr(at->v, 2), ptr(at->out, 3),
                               s.attention_lse[k]))
            continue;
        }
        if (at->backward)
          attention_backward(s.attention[k], ptr(at->q, 0), ptr(at->k, 1), ptr(at->v, 2), ptr(at->out, 3),
                             ptr(at->grad, 4), ptr(at->dq, 5), ptr(at->dk, 6), ptr(at->dv, 7), s.attention_scratch,
                             s.attention_lse[k], s.options.allow_tf32, stream, layout);
        else
          attention_forward(s.attention[k], ptr(at->q, 0), ptr(at->k, 1), ptr(at->v, 2), ptr(at->out, 3),
                            s.attention_lse[k], s.options.allow_tf32, stream, layout);
      } catch (const Error& e) {
        fail("plan '", spec.name, "' ", step.what, ": ", e.what());
      }
      continue;
    }
    if (const PlanEmbeddingGrad* e = step.embedding_grad) {
      try {
        embedding_grad(s.embedding_grad[k], device_ptr(e->indices), device_ptr(e->grad), device_ptr(e->out), stream);
      } catch (const Error& err) {
        fail("plan '", spec.name, "' ", step.what, ": ", err.what());
      }
      continue;
    }
    if (const PlanQuantLinear* q = step.quant_linear) {
      auto ptr = [&](int t) -> const void* { return t < 0 ? nullptr : device_ptr(t); };
      QuantWeight w;
      w.weight = ptr(q->weight);
      w.scale = ptr(q->scale);
      w.nested_absmax = static_cast<const float*>(ptr(q->nested_absmax));
      w.nested_quant_map = static_cast<const float*>(ptr(q->nested_quant_map));
      w.nested_offset = static_cast<const float*>(ptr(q->nested_offset));
      try {
        // cuBLASLt's workspace holds the split products' partial sums (stream-ordered, never both at once).
        quant_linear(s.quant_linear[k], static_cast<const float*>(ptr(q->x)), w,
                     static_cast<const float*>(ptr(q->bias)), static_cast<float*>(device_ptr(q->out)), stream,
                     s.gemm->workspace(), s.gemm->workspace_bytes());
      } catch (const Error& err) {
        fail("plan '", spec.name, "' ", step.what, ": ", err.what());
      }
      continue;
    }
    int n = 0;
    for (const int* t = step.tensors; *t >= 0; ++t) {
      if (n == 64) fail("plan '", spec.name, "' ", step.what, ": more than 64 buffers");
      args[n++] = &s.buffers[*t];
    }
    g_halide_error.clear();
    if (int err = step.kernel(args))
      fail("plan '", spec.name, "' ", step.what, " failed (Halide error ", err, "): ", g_halide_error);
  }
  if (after_step && spec.num_steps > 0) after_step(spec.num_steps - 1);
  for (int c = 0; c < spec.num_copies; ++c) {
    const int dst = spec.copies[c][0], src = spec.copies[c][1];
    TESSERA_CUDA_CHECK(cudaMemcpyAsync(device_ptr(dst), device_ptr(src), spec.tensors[dst].bytes,
                                       cudaMemcpyDeviceToDevice, stream),
                       std::string("plan '") + spec.name + "' copy to output '" + spec.tensors[dst].name + "'");
  }
  if (s.options.feed_back)
    for (const auto& [in, out] : s.feedback)
      TESSERA_CUDA_CHECK(cudaMemcpyAsync(device_ptr(in), device_ptr(out), spec.tensors[in].bytes,
                                         cudaMemcpyDeviceToDevice, stream),
                         std::string("plan '") + spec.name + "' feeding '" + spec.tensors[out].name + "' back");
}

void PlanExecutor::use_this_stream() {
  State& s = *s_;
  s.stream.make_current();
  g_context = s.context;
  g_stream = s.stream.stream();
  halide_set_cuda_acquire_context(acquire_context);
  halide_set_cuda_release_context(release_context);
  halide_set_cuda_get_stream(get_stream);
  halide_set_error_handler(record_error);
}

void PlanExecutor::run() {
  State& s = *s_;
  use_this_stream();
  // Feeding state back, TF32 or cuDNN changes the captured work: a graph of its own.
  s.graphs->run(std::string(s.spec->name) + (s.options.feed_back ? " +feed_back" : "") +
                    (s.options.allow_tf32 ? " +tf32" : "") + (s.options.cudnn_attention ? " +cudnn" : ""),
                [this](cudaStream_t) { queue_steps(nullptr); });
}

void PlanExecutor::synchronize() { s_->stream.synchronize(std::string("plan '") + s_->spec->name + "'"); }

bool PlanExecutor::last_run_was_graph() const { return s_->graphs->last_ran_as_graph(); }
StepGraphs::Ran PlanExecutor::last_run() const { return s_->graphs->last_run(); }
void PlanExecutor::set_graphs(bool enabled) { s_->graphs->set_enabled(enabled); }
void PlanExecutor::set_feed_back(bool enabled) { s_->options.feed_back = enabled; }
bool PlanExecutor::updated_in_place(int t) const {
  return t >= 0 && t < s_->spec->num_inputs && std::count(s_->alias.begin(), s_->alias.end(), t) > 0;
}
void PlanExecutor::set_cudnn_attention(bool enabled) { s_->options.cudnn_attention = enabled; }
void PlanExecutor::set_allow_tf32(bool enabled) {
  s_->options.allow_tf32 = enabled;
  for (GemmShape& sh : s_->shapes) sh.allow_tf32 = enabled && sh.dtype == DType::f32;
  for (QuantLinearShape& sh : s_->quant_linear) sh.tf32 = enabled;
}
const DeviceStream& PlanExecutor::stream() const { return s_->stream; }
size_t PlanExecutor::arena_bytes() const { return s_->arena->size(); }
size_t PlanExecutor::high_water() const { return s_->arena->high_water(); }
const PlanSpec& PlanExecutor::spec() const { return *s_->spec; }

std::vector<PlanExecutor::StepProfile> PlanExecutor::profile(int reps) {
  State& s = *s_;
  const PlanSpec& spec = *s.spec;
  use_this_stream();
  const cudaStream_t stream = s.stream.stream();
  const std::string where = std::string("profiling plan '") + spec.name + "'";
  std::vector<cudaEvent_t> events(spec.num_steps + 1);
  for (cudaEvent_t& e : events) TESSERA_CUDA_CHECK(cudaEventCreate(&e), where);
  std::vector<StepProfile> out(spec.num_steps);
  try {
    queue_steps(nullptr);  // warm-up: modules loaded, GEMMs planned
    for (int r = 0; r < reps; ++r) {
      TESSERA_CUDA_CHECK(cudaEventRecord(events[0], stream), where);
      queue_steps([&](int k) { TESSERA_CUDA_CHECK(cudaEventRecord(events[k + 1], stream), where); });
      TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream), where);
      for (int k = 0; k < spec.num_steps; ++k) {
        float ms = 0;
        TESSERA_CUDA_CHECK(cudaEventElapsedTime(&ms, events[k], events[k + 1]), where);
        out[k].ms += ms / reps;
      }
    }
  } catch (...) {
    for (cudaEvent_t e : events) cudaEventDestroy(e);
    throw;
  }
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  for (int k = 0; k < spec.num_steps; ++k) {
    const PlanStep& step = spec.steps[k];
    StepProfile& p = out[k];
    p.what = step.what;
    std::vector<int> touched;
    if (step.gemm) {
      const PlanGemm& g = *step.gemm;
      p.gemm = true;
      p.flops = 2.0 * g.m * g.n * g.k * g.batch;
      touched = {g.a, g.b, g.c};
      if (g.bias >= 0) touched.push_back(g.bias);
      if (g.aux >= 0) touched.push_back(g.aux);
      if (g.dgelu >= 0) touched.push_back(g.dgelu);
    } else if (const PlanAttention* a = step.attention) {
      p.attention = true;
      const double forward = 4.0 * a->batch * a->seq * a->seq * a->dim * (a->causal ? 0.5 : 1.0);
      p.flops = a->backward ? 2.5 * forward : forward;
      for (int t : {a->q, a->k, a->v, a->out, a->grad, a->dq, a->dk, a->dv})
        if (t >= 0) touched.push_back(t);
    } else if (const PlanEmbeddingGrad* e = step.embedding_grad) {
      p.embedding_grad = true;
      touched = {e->indices, e->grad, e->out};
    } else if (const PlanQuantLinear* q = step.quant_linear) {
      p.quant_linear = true;
      p.flops = 2.0 * q->rows * q->out_features * q->in_features;
      for (int t :
           {q->x, q->weight, q->scale, q->nested_absmax, q->nested_quant_map, q->nested_offset, q->bias, q->out})
        if (t >= 0) touched.push_back(t);
    } else {
      for (const int* t = step.tensors; *t >= 0; ++t) touched.push_back(*t);
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (int t : touched) p.bytes += spec.tensors[t].bytes;
  }
  return out;
}

std::string PlanExecutor::describe() const {
  std::ostringstream o;
  const PlanSpec& spec = *s_->spec;
  for (int k = 0; k < spec.num_steps; ++k) {
    const PlanStep& step = spec.steps[k];
    o << step.what << ": ";
    if (step.gemm) o << s_->shapes[k].describe() << "\n";
    else if (step.attention)
      o << "fused attention " << (step.attention->backward ? "backward " : "forward ")
        << (s_->on_cudnn[k] && s_->options.cudnn_attention ? "(cuDNN) " : "") << s_->attention[k].text()
        << (s_->options.allow_tf32 ? " (TF32)" : "")
        << (s_->attention_layout[k].dense(s_->attention[k]) ? "" : "; " + s_->attention_layout[k].text()) << "\n";
    else if (step.embedding_grad) o << "embedding gradient " << s_->embedding_grad[k].text() << "\n";
    else if (step.quant_linear) o << "quantized linear " << s_->quant_linear[k].text() << "\n";
    else o << "Halide CUDA kernel\n";
  }
  if (!s_->cudnn_note.empty()) o << s_->cudnn_note << "\n";
  const auto in_place = std::count_if(s_->alias.begin(), s_->alias.end(), [](int a) { return a >= 0; });
  o << spec.num_copies << " output copies, " << s_->feedback.size() << " state copies fed back, " << in_place
    << " updated in place; arena "
    << s_->arena->size() << " bytes (intermediates " << spec.intermediate_bytes << ")\n";
  return o.str();
}

}  // namespace tessera::cuda
