// Rematerialization on a GPU (issue 7): the GPT-2-small-like training step
// under bf16 autocast (bench/CMakeLists.txt: gpt2_bf16_step, no remat, and
// gpt2_bf16_remat100/50/25, registry.cpp's remat=1.0/0.5/0.25), each run by
// the PlanExecutor with the state kept on the device and updated in place (the step
// a CUDA Graph replay after warm-up). Per variant: the memory plan's peak
// (the intermediates of the device arena), the device arena, the CPU plan's
// peak (kArenaBytes), the measured device memory the step holds (cudaMemGetInfo
// before the step object exists against the most in use after its steps:
// arena, Halide's scratch pool, cuBLASLt's workspace, the CUDA Graph), the
// median and min step time over the timed steps (each step synchronized and
// timed alone; host clock), and the loss of step 1 and of the last step (the
// variants compute the same thing). It does not run PyTorch: that is
// bench/pytorch_steps.py --modes eager,compile,checkpoint (scripts/gpu_remat.sh
// runs both on the same GPU), and it does not profile single kernels
// (bench_steps_gpu does).
//
// Usage: bench_remat_gpu [out_dir [variant]]  (writes remat_gpu.csv, or
// remat_gpu_<variant>.csv with a variant: none, 1.0, 0.5 or 0.25 to run only
// that one, in a fresh process for the cleanest memory figure)
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <string>
#include <vector>

#include "gpt2_bf16_remat100.h"
#include "gpt2_bf16_remat25.h"
#include "gpt2_bf16_remat50.h"
#include "gpt2_bf16_step.h"
#include "gpu_step_driver.h"

namespace {

constexpr int kWarmupSteps = 5;  // the third run is captured into a CUDA Graph
constexpr int kTimedSteps = 20;

struct Row : tessera_bench::StepMeasurement {
  std::string variant;
};

std::string g_only;  // argv[2]: run only this variant

template <typename Step>
void bench(const std::string& variant, std::vector<Row>& rows) {
  if (!g_only.empty() && g_only != variant) return;
  Row row;
  static_cast<tessera_bench::StepMeasurement&>(row) = tessera_bench::measure_step<Step>(kWarmupSteps, kTimedSteps);
  row.variant = variant;
  tessera_bench::print_measurement("remat " + variant, row);
  if (row.ran) rows.push_back(row);
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string out_dir = argc > 1 ? argv[1] : ".";
  if (argc > 2) g_only = argv[2];
  if (!g_only.empty() && g_only != "none" && g_only != "1.0" && g_only != "0.5" && g_only != "0.25") {
    std::fprintf(stderr, "bench_remat_gpu: no variant '%s' (none, 1.0, 0.5, 0.25)\n", g_only.c_str());
    return 2;
  }
  cudaDeviceProp prop;
  if (!tessera_bench::open_device("bench_remat_gpu", &prop)) return 0;
  std::printf("GPT-2-small-like step (vocab 50304, block 1024, 12 layers, 12 heads, d 768, batch 8), bf16 autocast, "
              "AdamW; %d warm-up + %d timed steps per variant\n",
              kWarmupSteps, kTimedSteps);
  std::vector<Row> rows;
  bench<tessera_aot::gpt2_bf16_step>("none", rows);
  bench<tessera_aot::gpt2_bf16_remat100>("1.0", rows);
  bench<tessera_aot::gpt2_bf16_remat50>("0.5", rows);
  bench<tessera_aot::gpt2_bf16_remat25>("0.25", rows);

  // Against no remat (when it ran in this process).
  const Row* base = nullptr;
  for (const Row& r : rows)
    if (r.variant == "none") base = &r;
  if (base)
    for (const Row& r : rows)
      std::printf("remat %-5s  planned peak x%.3f, measured x%.3f, median step time x%.3f of no remat\n",
                  r.variant.c_str(), double(r.planned_peak) / base->planned_peak, double(r.measured) / base->measured,
                  r.median_ms / base->median_ms);

  std::ofstream f(out_dir + (g_only.empty() ? "/remat_gpu.csv" : "/remat_gpu_" + g_only + ".csv"));
  f << std::setprecision(9) << "remat,planned_peak_bytes,device_arena_bytes,cpu_planned_peak_bytes,measured_peak_bytes,median_ms,min_ms,steps,"
       "loss_step1,loss_last,cuda_graph,target,device\n";
  for (const Row& r : rows)
    f << r.variant << "," << r.planned_peak << "," << r.device_arena << "," << r.cpu_planned_peak << ","
      << r.measured << "," << r.median_ms << "," << r.min_ms << "," << kTimedSteps << "," << r.loss_first << ","
      << r.loss_last << "," << (r.graph ? "yes" : "no") << "," << r.target << ",\"" << prop.name << "\"\n";
  if (!f) {
    std::fprintf(stderr, "bench_remat_gpu: cannot write the CSV in %s\n", out_dir.c_str());
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_remat_gpu: %s\n", e.what());
  return 1;
}
