// compile_cuda: ahead-of-time compilation of a graph's kernels to CUDA PTX,
// without a GPU (an internal entry point; the public compile() still refuses
// CUDA targets until the CUDA runtime exists).
//
// The graph is partitioned into kernels (partition.h), each kernel lowered
// (lower_to_halide.h), scheduled with the target's CUDA schedule set
// (cuda_sm80 or cuda_sm90, see cuda_common.h) and compiled by Halide to a
// module whose GPU code is PTX (sm_86, Halide 14's highest; the driver
// JIT-compiles it for the real GPU). Nothing is run, linked or loaded.
// Identical kernels (the same block in every layer) compile once.
//
// Every kernel is also checked statically, for what would otherwise fail at
// run time on the GPU: the region of each input that its compiled code
// reads, and of each output that it writes, must lie within the tensor's
// shape; each launch must stay within CUDA's limits (1024 threads per
// block, 65535 blocks along y and z) and the architecture's shared memory
// per block; the host code must not read any tensor's elements (a GPU
// plan's buffers have no host memory). Failures, Halide's included, are
// tessera::Error naming the kernel's node, op and graph.
//
// With the environment variable TESSERA_CUDA_STMT=<dir>, each compiled
// kernel's lowered Halide statement (host code, GPU loops and PTX) is also
// written to <dir>/<graph>_<kernel index>_<schedule set>.stmt.
#pragma once

#include <Halide.h>

#include <map>
#include <string>
#include <vector>

#include "lower_to_halide.h"
#include "tessera/graph.h"
#include "tessera/runtime.h"

namespace tessera {

// One GPU kernel launch of a compiled kernel, as its host code makes it
// (static shapes make every figure a constant; -1 where one is not).
struct CudaLaunch {
  std::string name;           // the PTX entry point
  int64_t blocks[3] = {0, 0, 0};
  int64_t threads[3] = {0, 0, 0};
  int64_t shared_bytes = 0;   // dynamic shared memory per block
  std::string text() const;   // "1024 blocks of 32x4 threads, 32 B shared"
};

struct CudaKernelInfo {
  std::string name;      // "t3 (sum)", or "t60+t75 (add, sub)" for several outputs
  std::string header;    // "kernel t3 (sum) reads in0 = x, in1 = w"
  std::string schedule;  // what each node got, one "  name (op): ..." line each
  int gpu_kernels = 0;   // GPU kernels (PTX entry points) the pipeline launches
  int host_loops = 0;    // loops left on the CPU (computation the schedule did not put on the GPU)
  std::vector<CudaLaunch> launches;  // in the order the host code makes them
  size_t ptx_bytes = 0;  // size of its PTX
  std::string ptx;       // the PTX itself, when CudaCompileOptions::keep_ptx
  double seconds = 0;    // lowering + scheduling + code generation (0 when reused)
  bool reused = false;   // same kernel graph as an earlier one: compiled once
  // The architecture's cost model (CudaArch): launches + max(bytes moved at
  // DRAM bandwidth, FLOPs at the FP32 rate). Bytes count the kernel's inputs
  // and outputs once; FLOPs count matrix products only.
  double estimated_us = 0;
  // With CudaCompileOptions::library_gemm: the library call this kernel is
  // ("cuBLASLt gemm f32 [64 x 784] @ [784 x 256]^T + bias", "fused attention
  // forward ..."), or "" for a Halide kernel.
  std::string library;
};

// The static checks above for one compiled kernel (`L` lowered from
// `kernel`, `module` compiled for the cuda_sm<sm> schedule set): regions,
// host reads, launch limits. Throws Error naming `context` and the set;
// returns the launches. compile_cuda runs it, and so do the generated
// libraries' CUDA variants (aot.cpp), at build time.
std::vector<CudaLaunch> check_cuda_module(const Halide::Module& module, const LoweredGraph& L, const Graph& kernel,
                                          const std::string& context, int sm);

struct CudaCompileOptions {
  bool keep_ptx = false;  // keep each kernel's PTX text in CudaKernelInfo::ptx
  // As the PlanExecutor runs the graph (what generated GPU variants do):
  // f32/f16/bf16 products as cuBLASLt GEMMs (library_gemm.h), attention in the
  // fused kernels (library_attention.h, else decomposed), quantized linears
  // in their CUDA kernels (library_quant_linear.h) or dequantized before
  // their GEMMs (dequantize_for_gemm.h) and embedding gradients in their
  // CUDA kernel, reported rather than compiled. False
  // compiles every kernel, products included, with Halide's CUDA schedules.
  bool library_gemm = false;
};

struct CudaCompileResult {
  std::string graph;  // the graph's name
  Target target;
  std::string halide_target;  // e.g. x86-64-linux-avx2-...-cuda-cuda_capability_86
  std::string schedule_set;   // "cuda_sm80" or "cuda_sm90"
  std::string remat;                    // the kernel-level remat decisions (kernel_remat.h), as text
  std::vector<CudaKernelInfo> kernels;  // in execution order
  int distinct_kernels = 0;             // kernels compiled (the others reused)
  double seconds = 0;                   // the whole compile

  // The plan, as Executable::schedule_text() prints it for the CPU: a line
  // for the graph, then each kernel's header, its schedule lines and what
  // was compiled for it.
  std::string text() const;
};

// Compiles every kernel of `graph` for `target` (which must name a CUDA
// architecture: host-cuda-sm80, host-cuda-sm90), the library GEMMs aside
// (options.library_gemm). Throws Error on an invalid
// graph, a non-CUDA target, a bf16 tensor (Halide 14's PTX backend cannot
// compile BFloat(16); see DESIGN.md), or any failure of Halide's.
CudaCompileResult compile_cuda(const Graph& graph, const Target& target, const CudaCompileOptions& options = {});

// The static check compile_cuda applies to each compiled kernel: throws
// Error (naming `context` and `schedule_set`) unless every region that
// `module`'s bounds checks demand of a buffer lies within the buffer's shape.
// `shapes` maps Halide's names for the buffers ("Input buffer <param name>",
// "Output buffer <func name>") to row-major shapes; others are not checked.
void check_buffer_regions(const Halide::Module& module, const std::map<std::string, Shape>& shapes,
                          const std::string& context, const std::string& schedule_set);

}  // namespace tessera
