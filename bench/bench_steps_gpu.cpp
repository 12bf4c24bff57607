// GPU training steps from the generated libraries (generators/: mlp_step,
// gpt_step; gpt2_step and gpt2_bf16_step when built), run by the
// PlanExecutor with the state kept on the device and updated in place: the step
// time as a CUDA Graph replay and as direct launches, the device arena, and
// every step of the plan timed alone, with the achieved bandwidth of the
// Halide kernels and the TFLOP/s of the GEMMs and fused attention calls; the
// GPT-2-sized step again with TF32 GEMMs, and under bf16 autocast. The
// machine's limit comes from the same run: device-to-device copy bandwidth
// (cudaMemcpyAsync of 1 GiB, read + write).
//
// The PyTorch baselines of the same models are bench/pytorch_steps.py (run
// in the same session on the same GPU; scripts/gpu_steps.sh runs both).
// Usage: bench_steps_gpu [out_dir [label]]  (writes steps_gpu.csv, or
// steps_gpu_<label>.csv with a label, and profile_<label>.csv; label: mlp,
// gpt, gpt2, gpt2_tf32 or gpt2_bf16 to run only that one)
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gpt_step.h"
#include "gpu_step_driver.h"
#include "mlp_step.h"
#ifdef TESSERA_BENCH_GPT2
#include "gpt2_bf16_step.h"
#include "gpt2_step.h"
#endif

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Device-to-device copy bandwidth (bytes read + written per second), the best of 10.
double copy_gbps() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  check(cudaMalloc(&a, bytes), "cudaMalloc");
  check(cudaMalloc(&b, bytes), "cudaMalloc");
  check(cudaMemset(a, 1, bytes), "cudaMemset");
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  float best = 1e30f;
  for (int r = 0; r < 11; ++r) {
    cudaEventRecord(e0);
    check(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    if (r > 0) best = std::min(best, ms);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * bytes / (best * 1e-3) / 1e9;
}

std::string g_only;  // argv[2]: bench only the step of this label

struct Row {
  std::string step, mode;
  double median_ms, min_ms;
  size_t arena;
};

template <typename Step>
void bench(const char* label, const std::string& out_dir, double copy, std::vector<Row>& rows, bool tf32 = false) {
  if (!g_only.empty() && g_only != label) return;
  Step step(nullptr, /*update_in_place=*/true);  // the variant for this machine; params and moments updated in place
  step.set_tf32(tf32);
  if (!std::strstr(step.target(), "cuda")) {
    std::printf("%s: no GPU variant runs here (%s)\n", label, step.target());
    return;
  }
  // Which attention kernels run (cuDNN's or tessera's, and cuDNN's workspace), from the executor.
  const std::string described = step.describe_device();
  if (const size_t at = described.find("\nattention: "); at != std::string::npos)
    std::printf("%s %s\n", label, described.substr(at + 1, described.find('\n', at + 1) - at - 1).c_str());
  const int step_input = tessera_bench::upload_inputs(step);  // optim.step's position, or -1
  step.set_feed_back(true);
  float counter = 1;
  auto run_steps = [&](int n) {
    for (int k = 0; k < n; ++k) {
      counter += 1;
      if (step_input >= 0) step.upload(step_input, &counter);
      step.run_device();
    }
    step.synchronize();
  };
  // Steps per timed repetition: about 0.3 s of work, 3 to 100 steps.
  auto t0 = std::chrono::steady_clock::now();
  run_steps(3);
  const double first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 3;
  const int n = std::clamp(static_cast<int>(300 / first_ms), 3, 100);
  for (bool graphs : {true, false}) {
    step.set_graphs(graphs);
    run_steps(std::min(n, 20));  // warm-up (and capture)
    std::vector<double> per_step;
    for (int rep = 0; rep < 7; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      run_steps(n);
      per_step.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / n);
    }
    std::sort(per_step.begin(), per_step.end());
    rows.push_back({label, graphs ? "cuda_graph" : "direct", per_step[per_step.size() / 2], per_step[0],
                    step.device_arena_bytes()});
    std::printf("%-10s %-11s median %8.4f ms  min %8.4f ms  (graph: %s)\n", label, graphs ? "cuda_graph" : "direct",
                rows.back().median_ms, rows.back().min_ms, step.last_run_was_graph() ? "yes" : "no");
  }
  // Every step alone.
  const std::string csv = step.profile_device(std::min(n, 20));
  std::ofstream f(out_dir + "/profile_" + label + ".csv");
  f << "what,kind,ms,bytes,flops,gbps,fraction_of_copy,tflops\n";
  double halide_ms = 0, gemm_ms = 0, attention_ms = 0, embedding_ms = 0, quant_ms = 0;
  size_t pos = 0;
  std::printf("  steps of %s (Halide kernels: GB/s and fraction of copy bandwidth %.0f GB/s; GEMMs: TFLOP/s):\n", label,
              copy);
  while (pos < csv.size()) {
    const size_t end = csv.find('\n', pos);
    const std::string line = csv.substr(pos, end - pos);
    pos = end + 1;
    const size_t q = line.rfind('"');
    const std::string what = line.substr(1, q - 1);
    char kind[24] = {0};
    double ms = 0, flops = 0;
    unsigned long long bytes = 0;
    std::sscanf(line.c_str() + q + 2, "%23[^,],%lf,%llu,%lf", kind, &ms, &bytes, &flops);
    const double gbps = bytes / (ms * 1e-3) / 1e9, tflops = flops / (ms * 1e-3) / 1e12;
    const std::string k = kind;
    (k == "gemm"             ? gemm_ms
     : k == "attention"      ? attention_ms
     : k == "embedding_grad" ? embedding_ms
     : k == "quant_linear"   ? quant_ms
                             : halide_ms) += ms;
    f << '"' << what << "\"," << kind << "," << ms << "," << bytes << "," << flops << "," << gbps << ","
      << gbps / copy << "," << tflops << "\n";
    std::printf("    %-44s %-9s %9.4f ms %10llu B %8.1f GB/s (%5.1f%%) %7.2f TF/s\n", what.c_str(), kind, ms, bytes,
                gbps, 100 * gbps / copy, tflops);
  }
  std::printf("  %s: Halide kernels %.4f ms, GEMMs %.4f ms, fused attention %.4f ms, embedding gradients %.4f ms,"
              " quantized linears %.4f ms per step (timed alone)\n",
              label, halide_ms, gemm_ms, attention_ms, embedding_ms, quant_ms);
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string out_dir = argc > 1 ? argv[1] : ".";
  if (argc > 2) g_only = argv[2];
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("bench_steps_gpu: no CUDA device; nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  const double copy = copy_gbps();
  std::printf("GPU: %s (sm_%d%d), device-to-device copy %.0f GB/s\n", prop.name, prop.major, prop.minor, copy);
  std::vector<Row> rows;
  bench<tessera_aot::mlp_step>("mlp", out_dir, copy, rows);
  bench<tessera_aot::gpt_step>("gpt", out_dir, copy, rows);
#ifdef TESSERA_BENCH_GPT2
  bench<tessera_aot::gpt2_step>("gpt2", out_dir, copy, rows);
  bench<tessera_aot::gpt2_step>("gpt2_tf32", out_dir, copy, rows, true);
  bench<tessera_aot::gpt2_bf16_step>("gpt2_bf16", out_dir, copy, rows);
#endif
  std::ofstream f(out_dir + (g_only.empty() ? "/steps_gpu.csv" : "/steps_gpu_" + g_only + ".csv"));
  f << "step,mode,median_ms,min_ms,arena_bytes,device,copy_gbps\n";
  for (const Row& r : rows)
    f << r.step << "," << r.mode << "," << r.median_ms << "," << r.min_ms << "," << r.arena << ",\"" << prop.name
      << "\"," << copy << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_steps_gpu: %s\n", e.what());
  return 1;
}
