// QLoRA against plain LoRA and full fine-tuning on a GPU (issue 6): one
// GPT-2-small-like model (vocab 50304, block 1024, 12 layers, 12 heads,
// d 768, batch 8; f32, the step returns the loss) trained three ways, each
// a generated step run by the PlanExecutor with its state on the device and
// updated in place (a CUDA Graph replay after warm-up):
//   qlora  every linear but the LM head in NF4, LoRA r=8 alpha=16 on
//          c_attn, c_proj and c_fc, AdamW on the adapters (bench/CMakeLists.txt:
//          gpt2_qlora_step; its products in the CUDA quantized linears);
//   lora   the same adapters on the f32 base (gpt2_lora_step, quantize=false);
//   full   every param trained with AdamW (gpt2_step).
// Each also with TF32 products (set_tf32; the variants qlora_tf32,
// lora_tf32, full_tf32): cuBLASLt's TF32 GEMMs and the quantized linears'
// TF32 tensor-core tiles.
// Per variant: the memory plan's peak, the device arena, the measured device
// memory the step holds, the median and min step time and the losses
// (gpu_step_driver.h's measure_step). The inputs are fixed fill values, not
// a trained model: the losses only show the steps ran. It does not run
// PyTorch or bitsandbytes.
//
// Usage: bench_qlora_gpu [out_dir [variant]]  (writes qlora_gpu.csv, or
// qlora_gpu_<variant>.csv for one of the six variants, run alone in a fresh
// process for the cleanest memory figure)
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <string>
#include <vector>

#include "gpt2_lora_step.h"
#include "gpt2_qlora_step.h"
#include "gpt2_step.h"
#include "gpu_step_driver.h"

namespace {

constexpr int kWarmupSteps = 5;
constexpr int kTimedSteps = 20;

struct Row : tessera_bench::StepMeasurement {
  std::string variant;
};

const char* const kVariants[] = {"qlora", "lora", "full", "qlora_tf32", "lora_tf32", "full_tf32"};

template <typename Step>
void bench(const std::string& variant, const std::string& only, std::vector<Row>& rows) {
  for (bool tf32 : {false, true}) {
    const std::string name = variant + (tf32 ? "_tf32" : "");
    if (!only.empty() && only != name) continue;
    Row row;
    static_cast<tessera_bench::StepMeasurement&>(row) =
        tessera_bench::measure_step<Step>(kWarmupSteps, kTimedSteps, tf32);
    row.variant = name;
    tessera_bench::print_measurement(name, row);
    if (row.ran) rows.push_back(row);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string out_dir = argc > 1 ? argv[1] : ".";
  const std::string only = argc > 2 ? argv[2] : "";
  if (!only.empty() && std::find(std::begin(kVariants), std::end(kVariants), only) == std::end(kVariants)) {
    std::fprintf(stderr, "bench_qlora_gpu: no variant '%s' (qlora, lora, full, each also _tf32)\n", only.c_str());
    return 2;
  }
  cudaDeviceProp prop;
  if (!tessera_bench::open_device("bench_qlora_gpu", &prop)) return 0;
  std::printf("GPT-2-small-like step (vocab 50304, block 1024, 12 layers, 12 heads, d 768, batch 8), f32; "
              "%d warm-up + %d timed steps per variant, f32 and TF32 products\n",
              kWarmupSteps, kTimedSteps);
  std::vector<Row> rows;
  bench<tessera_aot::gpt2_qlora_step>("qlora", only, rows);
  bench<tessera_aot::gpt2_lora_step>("lora", only, rows);
  bench<tessera_aot::gpt2_step>("full", only, rows);

  std::ofstream f(out_dir + (only.empty() ? "/qlora_gpu.csv" : "/qlora_gpu_" + only + ".csv"));
  f << std::setprecision(9)
    << "variant,planned_peak_bytes,device_arena_bytes,measured_peak_bytes,median_ms,min_ms,steps,loss_step1,"
       "loss_last,cuda_graph,target,device\n";
  for (const Row& r : rows)
    f << r.variant << "," << r.planned_peak << "," << r.device_arena << "," << r.measured << "," << r.median_ms << ","
      << r.min_ms << "," << kTimedSteps << "," << r.loss_first << "," << r.loss_last << ","
      << (r.graph ? "yes" : "no") << "," << r.target << ",\"" << prop.name << "\"\n";
  if (!f) {
    std::fprintf(stderr, "bench_qlora_gpu: cannot write the CSV in %s\n", out_dir.c_str());
    return 1;
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_qlora_gpu: %s\n", e.what());
  return 1;
}
