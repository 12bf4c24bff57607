// GPU benchmark of the fused attention kernels (tessera/cuda/attention.h) at
// GPT-2 small's shape (batch 8 x 12 heads, seq 1024, head dim 64, causal)
// and at seq 2048: bf16 (the tensor-core kernels of attention_mma.cu),
// bf16 on cuDNN's fused kernels (CudnnAttention, when libcudnn.so.9 loads)
// and f32 with TF32 (the WMMA kernels), forward alone and backward alone
// (dq, dk, dv, reusing the forward's logsumexp). Reports the median time and
// TFLOP/s counted as flash-attention does (causal: half of 4 T^2 D per
// head forward, 2.5 times that backward). bench/pytorch_attention.py times
// PyTorch's scaled_dot_product_attention on the same shapes for the
// comparison. Usage: bench_attention_gpu [csv path]. Random inputs; asserts
// nothing.
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "gpu_timing.h"
#include "tessera/cuda/attention.h"
#include "tessera/cuda/cudnn_attention.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/device_stream.h"
#include "tessera/error.h"

using namespace tessera;
using namespace tessera::cuda;

namespace {

struct Variant {
  const char* name;
  DType dtype;
  bool tf32;
  bool cudnn;
};

// Random values in [-1, 1) of `dtype` (f32 or bf16 bits) at `p`.
void fill_random(void* p, size_t elements, DType dtype, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> f(elements);
  for (float& x : f) x = u(rng);
  if (dtype == DType::f32) {
    TESSERA_CUDA_CHECK(cudaMemcpy(p, f.data(), elements * 4, cudaMemcpyHostToDevice), "bench upload");
    return;
  }
  std::vector<uint16_t> h(elements);
  for (size_t i = 0; i < elements; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    h[i] = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
  }
  TESSERA_CUDA_CHECK(cudaMemcpy(p, h.data(), elements * 2, cudaMemcpyHostToDevice), "bench upload");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    cudaDeviceProp prop{};
    TESSERA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0), "bench device");
    std::printf("GPU: %s\n", prop.name);
    FILE* csv = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
    if (csv) std::fprintf(csv, "gpu,dtype,batch,seq,dim,causal,pass,median_ms,min_ms,tflops\n");
    const Variant variants[] = {
        {"bf16", DType::bf16, false, false}, {"cudnn", DType::bf16, false, true}, {"tf32", DType::f32, true, false}};
    std::mt19937 rng(1);
    DeviceStream stream(0);
    std::string why;
    const std::unique_ptr<CudnnAttention> cudnn = CudnnAttention::create(stream, &why);
    if (cudnn) std::printf("cudnn: %s\n", cudnn->version().c_str());
    else std::printf("cudnn: unavailable (%s), its rows are skipped\n", why.c_str());
    for (int64_t seq : {1024, 2048})
      for (const Variant& var : variants) {
        if (var.cudnn && !cudnn) continue;
        AttentionShape s;
        s.batch = 96;
        s.seq = seq;
        s.dim = 64;
        s.causal = true;
        s.scale = 0.125f;
        s.dtype = var.dtype;
        const size_t elements = static_cast<size_t>(s.batch * s.seq * s.dim);
        const size_t bytes = elements * (var.dtype == DType::f32 ? 4 : 2);
        const size_t stats = static_cast<size_t>(s.batch * s.seq) * 4, scratch = attention_backward_scratch_bytes(s);
        DeviceArena arena(8 * (bytes + 256) + stats + scratch + 1024, "attention bench");
        auto take = [&](size_t b) { return arena.at(arena.reserve(b, "tensor"), b); };
        void *q = take(bytes), *k = take(bytes), *v = take(bytes), *out = take(bytes), *grad = take(bytes);
        void *dq = take(bytes), *dk = take(bytes), *dv = take(bytes);
        float* lse = static_cast<float*>(take(stats));
        float* scr = static_cast<float*>(take(scratch));
        for (void* t : {q, k, v, grad}) fill_random(t, elements, var.dtype, rng);
        const AttentionLayout dense;
        const Timing fwd = time_on_stream(stream.stream(), [&] {
          if (!var.cudnn) attention_forward(s, q, k, v, out, lse, var.tf32, stream.stream());
          else if (!cudnn->forward(s, dense, q, k, v, out, lse)) throw Error("cuDNN refused " + s.text());
        });
        const Timing bwd = time_on_stream(stream.stream(), [&] {
          if (!var.cudnn) attention_backward(s, q, k, v, out, grad, dq, dk, dv, scr, lse, var.tf32, stream.stream());
          else if (!cudnn->backward(s, dense, q, k, v, out, grad, dq, dk, dv, lse)) throw Error("cuDNN refused " + s.text());
        });
        const double flops = 4.0 * s.batch * s.seq * s.seq * s.dim / (s.causal ? 2 : 1);
        for (auto [pass, t, f] : {std::tuple{"forward", fwd, flops}, std::tuple{"backward", bwd, 2.5 * flops}}) {
          const double tflops = f / (t.median_ms * 1e-3) / 1e12;
          std::printf("%-5s %s seq %5lld %-8s median %8.3f ms (min %8.3f)  %6.1f TFLOP/s\n", var.name,
                      s.text().c_str(), static_cast<long long>(seq), pass, t.median_ms, t.min_ms, tflops);
          if (csv)
            std::fprintf(csv, "%s,%s,%lld,%lld,%lld,%d,%s,%.4f,%.4f,%.2f\n", prop.name, var.name,
                         static_cast<long long>(s.batch), static_cast<long long>(seq), static_cast<long long>(s.dim),
                         s.causal ? 1 : 0, pass, t.median_ms, t.min_ms, tflops);
        }
      }
    if (csv) std::fclose(csv);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention_gpu: %s\n", e.what());
    return 1;
  }
}
