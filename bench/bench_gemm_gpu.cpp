// GPU GEMM benchmark: tessera's CublasLtGemm (cuBLASLt, the fastest of its
// heuristic candidates timed on first use, 32 MiB workspace) against classic
// cuBLAS (cublasGemmEx, its default algorithm) on the same data in the same
// run, in TFLOP/s, for bf16, f16 and f32 (TF32; plain f32 at 4096^3 for
// reference) at 4096^3 and GPT-2-small's MLP shapes (x[8192, 768] ->
// [8192, 3072]: forward, forward + bias + GELU, and the two backward
// products); plus the device-to-device copy bandwidth,
// the memory ceiling other GPU benchmarks compare to; and a step of 48 small
// GEMMs (12 GPT-2-small layers' linears at 256 rows, bf16) launched directly
// against its CUDA Graph replay (StepGraphs). CUDA events around each
// repetition, warm-up first, median of the repetitions; random inputs.
// Usage: bench_gemm_gpu [csv path]. Links no libHalide. Not a test: asserts nothing.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "half.h"
#include "tessera/cuda/check.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/device_stream.h"
#include "tessera/cuda/gemm.h"
#include "tessera/cuda/step_graphs.h"
#include "tessera/error.h"

using namespace tessera;
using namespace tessera::cuda;

namespace {

void check_cublas(cublasStatus_t s, const char* call) {
  if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLAS call ", call, " failed: ", cublasGetStatusName(s));
}

struct Problem {
  std::string name;
  bool trans_a, trans_b;
  int64_t m, n, k;
  GemmEpilogue epilogue;
};

struct Type {
  const char* name;
  DType dtype;
  bool tf32;
};

// Row-major C = op(A) op(B) through classic cuBLAS (column-major C^T = op(B)^T op(A)^T).
void cublas_gemm(cublasHandle_t h, const GemmShape& s, const void* a, const void* b, void* c) {
  const cudaDataType_t t = s.dtype == DType::f32 ? CUDA_R_32F : s.dtype == DType::f16 ? CUDA_R_16F : CUDA_R_16BF;
  const cublasComputeType_t compute = s.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const float alpha = 1, beta = 0;
  check_cublas(cublasGemmEx(h, s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            static_cast<int>(s.n), static_cast<int>(s.m), static_cast<int>(s.k), &alpha, b, t,
                            static_cast<int>(s.trans_b ? s.k : s.n), a, t, static_cast<int>(s.trans_a ? s.m : s.k),
                            &beta, c, t, static_cast<int>(s.n), compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string csv_path = argc > 1 ? argv[1] : "bench_gemm_gpu.csv";
    if (cuda_device_count() == 0) {
      std::printf("bench_gemm_gpu: no CUDA device; nothing measured\n");
      return 0;
    }
    DeviceStream stream(0);
    const std::string gpu = stream.device_name();
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::printf("GPU: %s (CUDA driver %d, runtime %d)\n", gpu.c_str(), driver, runtime);
    FILE* csv = std::fopen(csv_path.c_str(), "w");
    if (!csv) fail("bench_gemm_gpu: cannot write ", csv_path);
    std::fprintf(csv,
                 "gpu,benchmark,dtype,impl,m,n,k,trans_a,trans_b,epilogue,median_ms,min_ms,max_ms,tflops,gb_per_s\n");

    // Device-to-device copy: 1 GiB each way.
    {
      double gbs = 0;
      const Timing t = time_copy(stream.stream(), &gbs);
      std::printf("\ndevice-to-device copy of 1 GiB: %.3f ms median -> %.0f GB/s (read + write)\n\n", t.median_ms, gbs);
      std::fprintf(csv, "%s,d2d_copy_1GiB,u8,cudaMemcpyAsync,,,,,,,%.4f,%.4f,%.4f,,%.1f\n", gpu.c_str(), t.median_ms,
                   t.min_ms, t.max_ms, gbs);
    }

    const std::vector<Problem> problems = {
        {"square_4096", false, false, 4096, 4096, 4096, GemmEpilogue::none},
        {"gpt2_fc_fwd", false, true, 8192, 3072, 768, GemmEpilogue::none},  // x @ W^T
        {"gpt2_fc_fwd_bias_gelu", false, true, 8192, 3072, 768, GemmEpilogue::gelu_bias},
        {"gpt2_fc_bwd_dx", false, false, 8192, 768, 3072, GemmEpilogue::none},  // dy @ W
        {"gpt2_fc_bwd_dw", true, false, 3072, 768, 8192, GemmEpilogue::none},   // dy^T @ x
    };
    const std::vector<Type> types = {{"bf16", DType::bf16, false},
                                     {"f16", DType::f16, false},
                                     {"tf32", DType::f32, true},
                                     {"f32", DType::f32, false}};

    // Random inputs, large enough for every problem's A, B and bias.
    size_t max_elems = 0;
    for (const auto& p : problems)
      max_elems = std::max({max_elems, size_t(p.m * p.k), size_t(p.k * p.n), size_t(p.m * p.n)});
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> host(max_elems);
    for (auto& v : host) v = u(rng);

    DeviceArena arena(4 * max_elems * 4 + (size_t{64} << 20), "gemm bench");
    const size_t ws_offset = arena.reserve(CublasLtGemm::kDefaultWorkspaceBytes, "workspace");
    CublasLtGemm gemm(stream, arena.at(ws_offset, CublasLtGemm::kDefaultWorkspaceBytes),
                      CublasLtGemm::kDefaultWorkspaceBytes);
    void* a = arena.at(arena.reserve(max_elems * 4, "A"), max_elems * 4);
    void* b = arena.at(arena.reserve(max_elems * 4, "B"), max_elems * 4);
    void* c = arena.at(arena.reserve(max_elems * 4, "C"), max_elems * 4);
    void* bias = arena.at(arena.reserve(max_elems * 4, "bias"), 8192 * 4);
    const size_t cublas_ws_offset = arena.reserve(CublasLtGemm::kDefaultWorkspaceBytes, "cuBLAS workspace");

    cublasHandle_t handle = nullptr;
    check_cublas(cublasCreate(&handle), "cublasCreate");
    check_cublas(cublasSetStream(handle, stream.stream()), "cublasSetStream");
    check_cublas(cublasSetWorkspace(handle, arena.at(cublas_ws_offset, CublasLtGemm::kDefaultWorkspaceBytes),
                                    CublasLtGemm::kDefaultWorkspaceBytes),
                 "cublasSetWorkspace");

    // A, B and bias hold the random values in `dtype` (B shifted by 7 elements).
    auto upload_as = [&](DType dtype) {
      std::vector<uint8_t> bytes(max_elems * (dtype == DType::f32 ? 4 : 2));
      for (size_t i = 0; i < max_elems; ++i) {
        if (dtype == DType::f32) {
          std::memcpy(&bytes[i * 4], &host[i], 4);
        } else {
          const uint16_t h = dtype == DType::f16 ? float_to_f16(host[i]) : float_to_bf16(host[i]);
          std::memcpy(&bytes[i * 2], &h, 2);
        }
      }
      TESSERA_CUDA_CHECK(cudaMemcpy(a, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "bench upload");
      const size_t es = dtype == DType::f32 ? 4 : 2, shift = 7 * es;  // B: the same values, shifted
      TESSERA_CUDA_CHECK(cudaMemcpy(b, bytes.data() + shift, bytes.size() - shift, cudaMemcpyHostToDevice),
                         "bench upload");
      TESSERA_CUDA_CHECK(cudaMemcpy(bias, bytes.data(), 8192 * es, cudaMemcpyHostToDevice), "bench upload");
      TESSERA_CUDA_CHECK(cudaDeviceSynchronize(), "bench upload");
    };

    std::printf("%-24s %-5s %22s %22s %8s\n", "problem (m x n x k)", "dtype", "tessera cuBLASLt", "cublasGemmEx",
                "ratio");
    for (const Type& ty : types) {
      upload_as(ty.dtype);
      for (const Problem& p : problems) {
        if (!ty.tf32 && ty.dtype == DType::f32 && p.name != "square_4096") continue;  // plain f32: one reference point
        GemmShape s;
        s.dtype = ty.dtype, s.allow_tf32 = ty.tf32, s.trans_a = p.trans_a, s.trans_b = p.trans_b;
        s.m = p.m, s.n = p.n, s.k = p.k, s.epilogue = p.epilogue;
        const bool has_bias = epilogue_has_bias(p.epilogue);
        const double flop = 2.0 * p.m * p.n * p.k;
        const Timing lt = time_on_stream(stream.stream(), [&] { gemm.run(s, {a, b, c, has_bias ? bias : nullptr}); });
        const double lt_tflops = flop / (lt.median_ms * 1e-3) / 1e12;
        const char* epi = epilogue_name(p.epilogue);
        std::fprintf(csv, "%s,%s,%s,tessera_cublaslt,%ld,%ld,%ld,%d,%d,%s,%.4f,%.4f,%.4f,%.1f,\n", gpu.c_str(),
                     p.name.c_str(), ty.name, long(p.m), long(p.n), long(p.k), int(p.trans_a), int(p.trans_b), epi,
                     lt.median_ms, lt.min_ms, lt.max_ms, lt_tflops);
        char base[64] = "-";
        char ratio[16] = "-";
        if (!has_bias) {  // classic cuBLAS has no fused epilogue
          const Timing bt = time_on_stream(stream.stream(), [&] { cublas_gemm(handle, s, a, b, c); });
          const double bt_tflops = flop / (bt.median_ms * 1e-3) / 1e12;
          std::fprintf(csv, "%s,%s,%s,cublasGemmEx,%ld,%ld,%ld,%d,%d,%s,%.4f,%.4f,%.4f,%.1f,\n", gpu.c_str(),
                       p.name.c_str(), ty.name, long(p.m), long(p.n), long(p.k), int(p.trans_a), int(p.trans_b), epi,
                       bt.median_ms, bt.min_ms, bt.max_ms, bt_tflops);
          std::snprintf(base, sizeof base, "%.3f ms %6.1f TF/s", bt.median_ms, bt_tflops);
          std::snprintf(ratio, sizeof ratio, "%.3f", bt.median_ms / lt.median_ms);
        }
        char label[64];
        std::snprintf(label, sizeof label, "%s %ldx%ldx%ld", p.name.c_str(), long(p.m), long(p.n), long(p.k));
        std::printf("%-44s %-5s %.3f ms %6.1f TF/s %22s %8s\n", label, ty.name, lt.median_ms, lt_tflops, base, ratio);
      }
    }
    // Launch overhead: 12 layers x (qkv, proj, fc + bias + GELU, fc2) at 256 rows, bf16.
    {
      const int64_t rows = 256, d = 768;
      struct Linear {
        int64_t in, out;
        GemmEpilogue epilogue;
      };
      const Linear layer[] = {{d, 3 * d, GemmEpilogue::bias},
                              {d, d, GemmEpilogue::bias},
                              {d, 4 * d, GemmEpilogue::gelu_bias},
                              {4 * d, d, GemmEpilogue::bias}};
      auto step = [&](cudaStream_t) {
        for (int l = 0; l < 12; ++l)
          for (const Linear& lin : layer)  // inputs from A, weights from B, outputs to C: shapes, not a real model
            gemm.run(GemmShape::linear(DType::bf16, rows, lin.in, lin.out, lin.epilogue), {a, b, c, bias});
      };
      upload_as(DType::bf16);
      StepGraphs graphs(stream);
      double flop = 0;
      for (const Linear& lin : layer) flop += 12 * 2.0 * rows * lin.in * lin.out;
      const Timing direct = time_on_stream(stream.stream(), [&] { step(stream.stream()); });
      const Timing graph = time_on_stream(stream.stream(), [&] { graphs.run("gpt2_small_linears_256", step); });
      if (!graphs.last_ran_as_graph()) fail("bench: the step did not run as a graph");
      std::printf(
          "\n48-GEMM step (12 GPT-2-small layers' linears, 256 rows, bf16): direct launches %.3f ms (%.1f TF/s), "
          "CUDA Graph replay %.3f ms (%.1f TF/s), ratio %.2f\n",
          direct.median_ms, flop / (direct.median_ms * 1e-3) / 1e12, graph.median_ms,
          flop / (graph.median_ms * 1e-3) / 1e12, direct.median_ms / graph.median_ms);
      for (auto [impl, t] : {std::pair{"direct_launches", direct}, {"cuda_graph_replay", graph}})
        std::fprintf(csv, "%s,gpt2_small_48_linears_256rows,bf16,%s,256,,,,,,%.4f,%.4f,%.4f,%.1f,\n", gpu.c_str(), impl,
                     t.median_ms, t.min_ms, t.max_ms, flop / (t.median_ms * 1e-3) / 1e12);
    }
    cublasDestroy(handle);
    stream.synchronize("bench end");
    std::fclose(csv);
    std::printf("\nmedian of %d repetitions after %d warm-up runs each; ratio = cublasGemmEx time / tessera time\n",
                kReps, kWarmup);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_gemm_gpu: %s\n", e.what());
    return 1;
  }
}
