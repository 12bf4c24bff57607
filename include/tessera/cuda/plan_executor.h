// PlanExecutor: runs a compiled plan (a training step, say) on one CUDA
// stream: Halide CUDA kernels on device pointers, matrix products through
// cuBLASLt, every tensor in one device arena, and the whole step captured
// once into a CUDA Graph and replayed.
//
// The plan comes as a PlanSpec: static tables that generated code
// (src/schedules/aot.cpp's CUDA variants) writes. Tensors are the plan's
// inputs (params included), its outputs and its intermediates; intermediates
// have offsets from the memory plan, and the executor places the inputs and
// outputs after them, so every tensor has a fixed device address for the
// executor's life (the user copies a batch in, or writes there directly).
// One cudaMalloc at construction (the arena plus cuBLASLt's workspace);
// none during a step, except that a Halide kernel which keeps an
// intermediate of its own on the device (a reduction's partial results)
// gets it from a pool that keeps it for later runs and the capture (this
// file replaces the Halide runtime's weak CUDA allocator).
//
// A step queues each plan step in order on the stream: a Halide kernel
// (its AOT argv function, given buffers wrapped with
// halide_cuda_wrap_device_ptr, on the executor's context and stream through
// Halide's CUDA hooks), a GEMM (CublasLtGemm) or a fused attention call
// (attention.h; its backward's row statistics live in a scratch area after
// the arena's tensors), an embedding gradient (embedding_grad.h) or a
// quantized linear from its packed weight (quant_linear.h). Then outputs that are
// copies of inputs or of other outputs are copied on the device, and, with
// Options::feed_back, each output "new.X" is copied onto input "X" (an
// optimizer's new params and moments become the next step's), unless
// Options::update_in_place made it X's own tensor. The first two
// runs are direct (they load the CUDA modules, plan the GEMMs and fill the
// pool of the kernels' own device buffers); the third captures the step into
// a graph that later runs replay (StepGraphs).
//
// Halide's CUDA hooks are process-wide: one executor runs at a time (runs
// are not thread-safe). The Halide runtime itself comes from the generated
// library that links this. This does not compile anything or choose a
// variant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/cuda/device_stream.h"
#include "tessera/cuda/step_graphs.h"

namespace tessera::cuda {

// ---- the plan, as static tables ----

struct PlanTensor {
  const char* name;
  const char* dtype;      // "f32", "i32", ... (tessera's dtype names)
  uint8_t code, bits;     // Halide's halide_type_code_t and bits
  int rank;
  int64_t shape[8];       // row-major
  size_t bytes;
  char kind;              // 'i' input or param, 'o' output, 't' intermediate
  size_t offset;          // intermediates: bytes from the arena's start
};

struct PlanGemm {
  const char* dtype;  // "f32", "f16" or "bf16"
  bool trans_a, trans_b;
  int64_t m, n, k, batch;
  int64_t stride_a, stride_b;  // elements; 0 broadcasts; -1 packed
  int a, b, c, bias;           // tensors (bias -1 when there is none)
  // -1, or the GELU epilogue (cuBLASLt's GELU_AUX): C gets gelu (tanh form)
  // of the product and tensor `aux` the product itself, for the backward.
  int aux = -1;
  // -1, or the GELU gradient epilogue (cuBLASLt's DGELU): C gets the product
  // times gelu'(tensor dgelu) (tanh form), elementwise.
  int dgelu = -1;
  // The ReLU epilogue (cuBLASLt's RELU or RELU_BIAS): C gets relu of the product.
  bool relu = false;
};

// A fused attention call (attention.h) on [batch, seq, dim] tensors, dense
// or placed in other tensors' buffers.
struct PlanAttention {
  const char* dtype;  // of every tensor: "f32" or "bf16"
  bool backward;
  int64_t batch, seq, dim;
  bool causal;
  double scale;
  int q, k, v, out, grad;  // tensors (forward: out is its result, grad -1)
  int dq, dk, dv;          // backward: the gradients it writes (-1: not wanted)
  // Where q, k, v, out, grad, dq, dk, dv lie in their tensors: {offset,
  // batch, head, row} in elements (AttentionStrides); all zero: dense.
  int64_t heads = 1;
  int64_t placement[8][4] = {};
};

// The CUDA embedding gradient (embedding_grad.h): out [vocab, dim] from
// indices [positions] and grad [positions, dim].
struct PlanEmbeddingGrad {
  const char* dtype;  // grad and out: "f32" or "bf16"
  const char* index;  // "i32" or "i64"
  int64_t positions, vocab, dim;
  int indices, grad, out;  // tensors
};

// A quantized linear on the CUDA kernels (quant_linear.h): forward out
// [rows, N] = x [rows, K] @ W^T (+ bias), grad_input out [rows, K] = x
// [rows, N] @ W, with W [N, K] the dequantized weight.
struct PlanQuantLinear {
  const char* format;  // "int8", "nf4" or "nf4_nested"
  bool grad_input;
  int64_t rows, out_features, in_features;
  // Tensors, -1 when absent: x, the packed weight, its scale (int8) or
  // absmax (NF4), the nested tensors (nf4_nested), the bias (forward) and out.
  int x, weight, scale, nested_absmax, nested_quant_map, nested_offset, bias, out;
};

using HalideKernelFn = int (*)(void**);

struct PlanStep {
  const char* what;       // "kernel 3 (t5, sum)" for errors and reports
  HalideKernelFn kernel;  // a Halide kernel, or nullptr for a library call
  const int* tensors;     // the kernel's arguments then outputs, -1 ended
  const PlanGemm* gemm;   // a GEMM, or nullptr
  const PlanAttention* attention = nullptr;  // a fused attention call, or nullptr
  const PlanEmbeddingGrad* embedding_grad = nullptr;  // an embedding gradient, or nullptr
  const PlanQuantLinear* quant_linear = nullptr;      // a quantized linear, or nullptr
};

struct PlanSpec {
  const char* name;  // the generated class, for errors
  const PlanTensor* tensors;
  int num_tensors, num_inputs, num_outputs;  // inputs first, then outputs
  const PlanStep* steps;
  int num_steps;
  const int (*copies)[2];  // (output tensor, source tensor), after the steps
  int num_copies;
  size_t intermediate_bytes;  // the memory plan's peak
  // (output tensor, input tensor) pairs the plan may write in place: the
  // memory plan's optimizer updates, "new.X" over X (memory_plan.h).
  const int (*in_place)[2] = nullptr;
  int num_in_place = 0;
};

// ---- the executor ----

class PlanExecutor {
 public:
  struct Options {
    int device = 0;
    bool graphs = true;      // capture and replay; false runs every step directly
    bool feed_back = false;  // copy each output "new.X" onto input "X" after the step
    bool allow_tf32 = false; // f32 GEMMs and quantized linears' tiles on TF32 tensor cores
    // bf16 attention on cuDNN's fused kernels (CudnnAttention) when
    // libcudnn.so.9 loads and takes the shape: faster, but its backward is
    // not bitwise repeatable. Their plans and workspace are made here, at
    // construction. false (or TESSERA_CUDNN_ATTENTION=0 in the
    // environment): tessera's own kernels, deterministic. describe() says
    // which run.
    bool cudnn_attention = true;
    // The spec's in-place outputs share their input's device tensor: each
    // run overwrites those inputs (an optimizer's params and moments, fed
    // back without a copy and without a second copy on the device),
    // whatever feed_back says. Fixed for the executor's life.
    bool update_in_place = false;
  };

  // Allocates the arena and wraps every tensor for Halide. Throws Error
  // naming the plan when the device, a tensor or a GEMM is unusable.
  PlanExecutor(const PlanSpec& spec, const Options& options);
  ~PlanExecutor();
  PlanExecutor(const PlanExecutor&) = delete;
  PlanExecutor& operator=(const PlanExecutor&) = delete;

  // Device address of tensor `t` (inputs 0.., then outputs), fixed for the executor's life.
  void* device_ptr(int t) const;
  // Position of the input or output named `name`, or -1.
  int find(const std::string& name) const;

  // Stream-ordered copies of a whole tensor (the host memory must stay valid
  // until the stream reaches them: synchronize() before reusing it).
  void upload(int t, const void* host);
  void download(int t, void* host);

  // Queues one step on the stream; returns at once. Errors of Halide or
  // cuBLASLt are Errors naming the plan step; errors inside kernels show at
  // synchronize().
  void run();
  void synchronize();

  bool last_run_was_graph() const;
  StepGraphs::Ran last_run() const;
  void set_graphs(bool enabled);
  // Whether input t is overwritten by every run (Options::update_in_place).
  bool updated_in_place(int t) const;
  // Options::feed_back and Options::allow_tf32 for later runs (each
  // combination captures a graph of its own).
  void set_feed_back(bool enabled);
  void set_allow_tf32(bool enabled);
  // Options::cudnn_attention for later runs: false runs tessera's kernels
  // (deterministic); true returns to cuDNN's where they were prepared at
  // construction (nothing is prepared later).
  void set_cudnn_attention(bool enabled);

  const DeviceStream& stream() const;
  size_t arena_bytes() const;  // the one allocation (without cuBLASLt's workspace)
  size_t high_water() const;   // bytes of the arena touched by the plan so far
  const PlanSpec& spec() const;
  // One line per step: "kernel 3 (t5, sum): Halide" / "kernel 4 (t6, linear): cuBLASLt gemm f32 [...]"
  // / "kernel 9 (t20, attention): fused attention forward [...]".
  std::string describe() const;

  // Each step timed alone with CUDA events (direct launches, `reps` runs of
  // the whole plan after one warm-up; the mean per step). bytes: the sizes
  // of the tensors it reads and writes, each once (a lower bound on its
  // traffic); flops: 2mnk per GEMM and quantized linear; for attention the
  // useful products (forward 4 B T^2 D, halved when causal; backward 2.5
  // times that), 0 for Halide kernels.
  struct StepProfile {
    std::string what;
    bool gemm = false;
    bool attention = false;
    bool embedding_grad = false;
    bool quant_linear = false;
    double ms = 0;
    size_t bytes = 0;
    double flops = 0;
  };
  std::vector<StepProfile> profile(int reps);

 private:
  struct State;
  std::unique_ptr<State> s_;
  void use_this_stream();  // current device, Halide's hooks on this executor
  // Queues the steps; after_step(k), when given, runs after queuing step k.
  void queue_steps(const std::function<void(int)>& after_step);
};

}  // namespace tessera::cuda
