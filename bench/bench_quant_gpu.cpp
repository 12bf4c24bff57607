// bench_quant_gpu: the CUDA quantized linears (tessera/cuda/quant_linear.h)
// against cuBLASLt on dense weights, in one run on one GPU:
//  - GEMV, batch 1 (out x in: 4096x4096, 11008x4096, 4096x11008) and
//    batches 2, 3, 4 and 8 of 11008x4096: NF4,
//    NF4 double-quantized and int8 against cuBLASLt's bf16 and f32 GEMV of
//    the same shape; GB/s counts the bytes each reads and writes (packed
//    weight, scales, x, out) against the device-to-device copy measured
//    here;
//  - tiled products of a training step's shapes (forward and grad_input)
//    against cuBLASLt f32 and TF32 on the dense f32 weight (what the plan's
//    old path ran after dequantizing the whole weight, that kernel not
//    counted), with cuBLASLt's 32 MiB workspace for split products, as
//    the plan executor runs them; the f32 FMA tiles against cuBLASLt f32,
//    the TF32 tensor-core tiles (QuantLinearShape::tf32) against its TF32.
// Every kernel is launched 64 times in one CUDA Graph, cycling through
// copies of its weights: for the GEMVs enough to exceed the L2 cache twice
// over, so the weights come from device memory; for the tiles, bound by
// arithmetic, two. The time is the graph's median over 25 replays divided
// by 64. Usage: bench_quant_gpu [csv path [gemv|tiled]]
// (the second argument runs one part). Not a test.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gpu_timing.h"
#include "tessera/cuda/check.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/device_stream.h"
#include "tessera/cuda/gemm.h"
#include "tessera/cuda/quant_linear.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

constexpr int kLaunches = 64;
constexpr size_t kRotateBytes = size_t{256} << 20;  // weights cycled through: > 2x the H100/H200's 50 MB L2

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// Milliseconds per launch of launch(i), i = 0..kLaunches-1, replayed as one graph.
double ms_per_launch(DeviceStream& stream, const std::function<void(int)>& launch) {
  launch(0);  // outside capture first (cuBLASLt plans its problem)
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream.stream()), "bench warm-up");
  cudaGraph_t graph = nullptr;
  TESSERA_CUDA_CHECK(cudaStreamBeginCapture(stream.stream(), cudaStreamCaptureModeThreadLocal), "bench capture");
  for (int i = 0; i < kLaunches; ++i) launch(i);
  TESSERA_CUDA_CHECK(cudaStreamEndCapture(stream.stream(), &graph), "bench capture");
  cudaGraphExec_t exec = nullptr;
  TESSERA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0), "bench instantiate");
  const Timing t = time_on_stream(stream.stream(), [&] {
    TESSERA_CUDA_CHECK(cudaGraphLaunch(exec, stream.stream()), "bench replay");
  });
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return t.median_ms / kLaunches;
}

// `copies` copies of `bytes` random bytes (finite f32/bf16 values where
// asked), and the pointer to copy i.
struct Rotating {
  DeviceArena arena;
  size_t stride;
  int copies;
  Rotating(size_t bytes, int n, const std::vector<uint8_t>& host)
      : arena(align256(bytes) * n + 256, "bench weights"), stride(align256(bytes)), copies(n) {
    for (int i = 0; i < n; ++i)
      TESSERA_CUDA_CHECK(cudaMemcpy(arena.at(i * stride, bytes), host.data(), bytes, cudaMemcpyHostToDevice),
                         "bench upload");
  }
  void* at(int i) { return arena.at((i % copies) * stride, 1); }
};

std::vector<uint8_t> random_bytes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> b(n);
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& v : b) v = static_cast<uint8_t>(byte(rng));
  return b;
}

std::vector<uint8_t> random_floats(size_t n, float lo, float hi, std::mt19937& rng) {
  std::vector<float> f(n);
  std::uniform_real_distribution<float> d(lo, hi);
  for (float& v : f) v = d(rng);
  std::vector<uint8_t> b(n * 4);
  std::memcpy(b.data(), f.data(), b.size());
  return b;
}

std::vector<uint8_t> random_bf16(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> f = random_floats(n, -1, 1, rng), b(n * 2);
  for (size_t i = 0; i < n; ++i) std::memcpy(&b[2 * i], &f[4 * i + 2], 2);  // the high half: a bf16 of it
  return b;
}

int copies_for(size_t bytes) { return static_cast<int>(std::max<size_t>(2, kRotateBytes / bytes + 1)); }

struct Row {
  std::string what, kind;
  double ms, bytes, flops;
};

void report(FILE* csv, const std::string& gpu, const Row& r, double copy_gbs, double baseline_ms) {
  const double gbs = r.bytes / (r.ms * 1e6), tflops = r.flops / (r.ms * 1e9);
  std::printf("  %-52s %9.2f us  %7.0f GB/s (%3.0f%% of copy)  %6.1f TFLOP/s", r.what.c_str(), r.ms * 1e3, gbs,
              100 * gbs / copy_gbs, tflops);
  if (baseline_ms > 0)
    std::printf("  %5.2fx vs %s", baseline_ms / r.ms,
                r.kind.rfind("gemv", 0) == 0 ? "bf16 cuBLASLt" : r.kind == "tiled_tf32" ? "TF32 cuBLASLt" : "f32 cuBLASLt");
  std::printf("\n");
  if (csv)
    std::fprintf(csv, "%s,\"%s\",%s,%.5f,%.0f,%.0f,%.1f,%.3f,%.2f,%.3f\n", gpu.c_str(), r.what.c_str(), r.kind.c_str(),
                 r.ms, r.bytes, r.flops, gbs, gbs / copy_gbs, tflops, baseline_ms > 0 ? baseline_ms / r.ms : 0.0);
}

QuantWeight weight_of(QuantLinearFormat f, Rotating& packed, Rotating& scale, const float* nested_absmax,
                      const float* map, const float* offset, int i) {
  QuantWeight w{packed.at(i), scale.at(i)};
  if (f == QuantLinearFormat::nf4_nested) {
    w.nested_absmax = nested_absmax;
    w.nested_quant_map = map;
    w.nested_offset = offset;
  }
  return w;
}

int run(int argc, char** argv) {
  int device = 0;
  if (cudaGetDeviceCount(&device) != cudaSuccess || device == 0) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  TESSERA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0), "bench");
  const std::string gpu = prop.name;
  FILE* csv = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  const std::string part = argc > 2 ? argv[2] : "";
  if (csv) std::fprintf(csv, "gpu,what,kind,ms,bytes,flops,gbps,fraction_of_copy,tflops,speedup_vs_baseline\n");
  std::printf("%s, %d SMs, L2 %d MB\n", gpu.c_str(), prop.multiProcessorCount, prop.l2CacheSize >> 20);
  DeviceStream stream;
  std::mt19937 rng(7);

  double copy_gbs = 0;
  const Timing copy = time_copy(stream.stream(), &copy_gbs);
  std::printf("device-to-device copy of 1 GiB: %.3f ms -> %.0f GB/s (read + write)\n", copy.median_ms, copy_gbs);
  if (csv)
    std::fprintf(csv, "%s,d2d copy 1 GiB,copy,%.5f,%.0f,0,%.1f,1,0,0\n", gpu.c_str(), copy.median_ms,
                 2.0 * (size_t{1} << 30), copy_gbs);

  CublasLtGemm gemm(stream);
  // The nested format's small tensors, shared by every copy (they stay in L2 anyway).
  DeviceArena nested(align256(4 << 20) + 2 * 256 + 1024, "bench nested tensors");
  float* nested_absmax = static_cast<float*>(nested.at(0, 4 << 20));
  float* map = static_cast<float*>(nested.at(align256(4 << 20), 1024));
  float* offset = static_cast<float*>(nested.at(align256(4 << 20) + 1024, 4));
  {
    const std::vector<uint8_t> a = random_floats(1 << 20, 0.5f, 1.5f, rng), m = random_floats(256, -1, 1, rng),
                               o = random_floats(1, 0.1f, 0.2f, rng);
    TESSERA_CUDA_CHECK(cudaMemcpy(nested_absmax, a.data(), a.size(), cudaMemcpyHostToDevice), "bench upload");
    TESSERA_CUDA_CHECK(cudaMemcpy(map, m.data(), m.size(), cudaMemcpyHostToDevice), "bench upload");
    TESSERA_CUDA_CHECK(cudaMemcpy(offset, o.data(), o.size(), cudaMemcpyHostToDevice), "bench upload");
  }

  const QuantLinearFormat formats[] = {QuantLinearFormat::nf4, QuantLinearFormat::nf4_nested, QuantLinearFormat::int8};
  const char* format_names[] = {"NF4", "NF4 double-quantized", "int8"};

  std::printf("\nGEMV (batch: out x in), f32 x and out:\n");
  const int64_t gemv_shapes[][3] = {{1, 4096, 4096}, {1, 11008, 4096}, {1, 4096, 11008}, {2, 11008, 4096},
                                    {3, 11008, 4096}, {4, 11008, 4096}, {8, 11008, 4096}};
  for (const auto& shape : gemv_shapes) {
    if (part == "tiled") break;
    const int64_t B = shape[0], N = shape[1], K = shape[2];
    DeviceArena io(align256(B * K * 4) + align256(B * N * 4) + 256, "bench x/out");
    float* x = static_cast<float*>(io.at(0, B * K * 4));
    float* out = static_cast<float*>(io.at(align256(B * K * 4), B * N * 4));
    const std::vector<uint8_t> xh = random_floats(B * K, -1, 1, rng);
    TESSERA_CUDA_CHECK(cudaMemcpy(x, xh.data(), xh.size(), cudaMemcpyHostToDevice), "bench upload");
    const std::string dims = (B > 1 ? "batch " + std::to_string(B) + ": " : "") + std::to_string(N) + "x" + std::to_string(K);

    // cuBLASLt bf16 and f32 GEMVs on the dense weight.
    double bf16_ms = 0;
    for (DType t : {DType::bf16, DType::f32}) {
      const size_t es = t == DType::bf16 ? 2 : 4;
      const size_t wbytes = N * K * es;
      Rotating w(wbytes, copies_for(wbytes), t == DType::bf16 ? random_bf16(N * K, rng) : random_floats(N * K, -1, 1, rng));
      const GemmShape g = GemmShape::linear(t, B, K, N, GemmEpilogue::none);
      const double ms = ms_per_launch(stream, [&](int i) { gemm.run(g, GemmArgs{x, w.at(i), out}); });
      if (t == DType::bf16) bf16_ms = ms;
      report(csv, gpu, {std::string("cuBLASLt ") + (t == DType::bf16 ? "bf16" : "f32") + " GEMV " + dims, "gemv_baseline",
                        ms, double(wbytes + B * (K + N) * es), 2.0 * B * N * K},
             copy_gbs, 0);
    }
    for (size_t f = 0; f < 3; ++f) {
      const QuantLinearFormat fmt = formats[f];
      const bool nf4 = fmt != QuantLinearFormat::int8;
      const size_t packed_bytes = nf4 ? N * K / 2 : N * K;
      const size_t scale_bytes = fmt == QuantLinearFormat::nf4 ? N * K / 64 * 4 : nf4 ? N * K / 64 : N * 4;
      const int copies = copies_for(packed_bytes + scale_bytes);
      Rotating packed(packed_bytes, copies, random_bytes(packed_bytes, rng));
      Rotating scale(scale_bytes, copies,
                     fmt == QuantLinearFormat::nf4_nested ? random_bytes(scale_bytes, rng)
                                                          : random_floats(scale_bytes / 4, 0.01f, 1, rng));
      // Also with operands rounded to f16 (QuantLinearShape::tf32).
      for (bool rounded : {false, true}) {
        const QuantLinearShape s{fmt, false, B, N, K, false, rounded};
        const double ms = ms_per_launch(stream, [&](int i) {
          quant_linear(s, x, weight_of(fmt, packed, scale, nested_absmax, map, offset, i), nullptr, out,
                       stream.stream());
        });
        report(csv, gpu, {std::string(format_names[f]) + (rounded ? " GEMV, f16 operands " : " GEMV ") + dims,
                          rounded ? "gemv_f16" : "gemv", ms, double(packed_bytes + scale_bytes + B * (K + N) * 4),
                          2.0 * B * N * K},
               copy_gbs, bf16_ms);
      }
    }
  }

  std::printf("\nTiled products (rows x in -> out), f32 and TF32:\n");
  struct Tiled {
    int64_t rows, N, K;
    bool grad_input;
  };
  const Tiled tiled[] = {{8192, 3072, 768, false}, {8192, 3072, 768, true}, {8192, 768, 3072, false},
                         {8192, 768, 3072, true},  {4096, 1536, 384, false}, {4096, 1536, 384, true},
                         {4096, 384, 1536, false}};
  for (const Tiled& c : tiled) {
    if (part == "gemv") break;
    const int64_t in = c.grad_input ? c.N : c.K, result = c.grad_input ? c.K : c.N;
    DeviceArena io(align256(c.rows * in * 4) + align256(c.rows * result * 4) + 256, "bench x/out");
    float* x = static_cast<float*>(io.at(0, c.rows * in * 4));
    float* out = static_cast<float*>(io.at(align256(c.rows * in * 4), c.rows * result * 4));
    const std::vector<uint8_t> xh = random_floats(c.rows * in, -1, 1, rng);
    TESSERA_CUDA_CHECK(cudaMemcpy(x, xh.data(), xh.size(), cudaMemcpyHostToDevice), "bench upload");
    const std::string dims = std::to_string(c.rows) + "x" + std::to_string(in) + " -> " + std::to_string(result) +
                             (c.grad_input ? " (grad_input)" : "");
    const double flops = 2.0 * c.rows * c.N * c.K;
    const size_t act = (c.rows * in + c.rows * result) * 4;
    double f32_ms = 0, tf32_ms = 0;
    {
      const size_t wbytes = c.N * c.K * 4;
      Rotating w(wbytes, 2, random_floats(c.N * c.K, -1, 1, rng));
      for (bool tf32 : {false, true}) {
        GemmShape g = c.grad_input ? GemmShape::matmul(DType::f32, 1, c.rows, c.N, c.K)
                                   : GemmShape::linear(DType::f32, c.rows, c.K, c.N, GemmEpilogue::none);
        g.allow_tf32 = tf32;
        const double ms = ms_per_launch(stream, [&](int i) { gemm.run(g, GemmArgs{x, w.at(i), out}); });
        (tf32 ? tf32_ms : f32_ms) = ms;
        report(csv, gpu, {std::string("cuBLASLt ") + (tf32 ? "TF32 " : "f32 ") + dims, "tiled_baseline", ms,
                          double(act + wbytes), flops},
               copy_gbs, 0);
      }
    }
    for (size_t f = 0; f < 3; ++f) {
      const QuantLinearFormat fmt = formats[f];
      const bool nf4 = fmt != QuantLinearFormat::int8;
      const size_t packed_bytes = nf4 ? c.N * c.K / 2 : c.N * c.K;
      const size_t scale_bytes = fmt == QuantLinearFormat::nf4 ? c.N * c.K / 64 * 4 : nf4 ? c.N * c.K / 64 : c.N * 4;
      Rotating packed(packed_bytes, 2, random_bytes(packed_bytes, rng));
      Rotating scale(scale_bytes, 2,
                     fmt == QuantLinearFormat::nf4_nested ? random_bytes(scale_bytes, rng)
                                                          : random_floats(scale_bytes / 4, 0.01f, 1, rng));
      // Outputs of fewer tiles than SMs also without the workspace: unsplit
      // (f32 FMA tiles only).
      const bool few_tiles = ((c.rows + 127) / 128) * ((result + 127) / 128) < prop.multiProcessorCount;
      for (bool tf32 : {false, true})
        for (bool split : {false, true}) {
          if (!split && (tf32 || !few_tiles)) continue;
          const QuantLinearShape s{fmt, c.grad_input, c.rows, c.N, c.K, false, tf32};
          const double ms = ms_per_launch(stream, [&](int i) {
            quant_linear(s, x, weight_of(fmt, packed, scale, nested_absmax, map, offset, i), nullptr, out,
                         stream.stream(), split ? gemm.workspace() : nullptr, split ? gemm.workspace_bytes() : 0);
          });
          report(csv, gpu,
                 {std::string(format_names[f]) + (tf32 ? " TF32 " : " ") + dims + (split ? "" : " unsplit"),
                  tf32 ? "tiled_tf32" : split ? "tiled" : "tiled_unsplit", ms, double(act + packed_bytes + scale_bytes),
                  flops},
                 copy_gbs, tf32 ? tf32_ms : f32_ms);
        }
    }
  }
  if (csv) std::fclose(csv);
  return 0;
}

}  // namespace
}  // namespace tessera::cuda

int main(int argc, char** argv) {
  try {
    return tessera::cuda::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_quant_gpu: %s\n", e.what());
    return 1;
  }
}
