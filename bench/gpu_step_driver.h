// Driving one generated training step (a tessera_add_generator class) on a
// GPU for a benchmark: fills its inputs on the device with fixed values (each
// tensor's values depend only on its name, so steps of one model compiled
// differently, with and without remat say, get the same inputs), runs steps
// with the optimizer's outputs fed back, reads a scalar output, and reads the
// device memory in use and the memory plan's peak; measure_step does all of
// that for one generated step and times its steps. It writes no files; the
// benchmarks do (bench_steps_gpu.cpp, bench_remat_gpu.cpp, bench_qlora_gpu.cpp).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera_bench {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Device memory in use on the current device (cudaMemGetInfo: total - free),
// every process and the CUDA context included; differences of it are what a
// step allocates.
inline size_t device_memory_used() {
  size_t free = 0, total = 0;
  check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return total - free;
}

// The memory plan's peak of a GPU variant (its intermediates in the device
// arena), from describe_device()'s last line "... arena N bytes
// (intermediates M)"; 0 when it is not there.
inline size_t planned_intermediate_bytes(const std::string& describe_device) {
  const std::string key = "(intermediates ";
  const size_t at = describe_device.rfind(key);
  return at == std::string::npos ? 0 : std::strtoull(describe_device.c_str() + at + key.size(), nullptr, 10);
}

inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);  // round to nearest even
}

inline float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Uploads every input of `step`: "optim.lr" 1e-3, "optim.step" 1, AdamW
// moments 0, other floats U(-0.05, 0.05), integers (token ids, labels) in
// [0, 10); the values of each tensor drawn from a generator seeded by its
// name. Returns the position of "optim.step" (to advance it each step), or -1.
template <typename Step>
int upload_inputs(Step& step) {
  int step_input = -1;
  for (int i = 0; i < Step::kNumInputs; ++i) {
    const auto& s = Step::inputs()[i];
    const std::string name = s.name, dtype = s.dtype;
    std::mt19937 rng(static_cast<uint32_t>(std::hash<std::string>{}(name)));
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    int64_t n = 1;
    for (int d = 0; d < s.rank; ++d) n *= s.shape[d];
    std::vector<uint8_t> bytes(s.bytes);
    for (int64_t j = 0; j < n; ++j) {
      const float v = name == "optim.lr" ? 1e-3f : name == "optim.step" ? 1.0f
                      : name.find(".exp_avg") != std::string::npos ? 0.0f : u(rng);
      if (dtype == "f32") {
        std::memcpy(&bytes[j * 4], &v, 4);
      } else if (dtype == "bf16") {
        const uint16_t b = to_bf16(v);
        std::memcpy(&bytes[j * 2], &b, 2);
      } else if (dtype == "i32") {
        const int32_t t = static_cast<int32_t>(rng() % 10);
        std::memcpy(&bytes[j * 4], &t, 4);
      }
    }
    if (name == "optim.step") step_input = i;
    step.upload(i, bytes.data());
  }
  step.synchronize();
  return step_input;
}

// The scalar output `name` (f32 or bf16) of the last step, read back.
template <typename Step>
float read_scalar_output(Step& step, const std::string& name) {
  for (int o = 0; o < Step::kNumOutputs; ++o) {
    const auto& s = Step::outputs()[o];
    if (name != s.name) continue;
    if (s.bytes > 8) throw std::runtime_error("output '" + name + "' is not a scalar");
    uint8_t bytes[8] = {0};
    step.download(Step::kNumInputs + o, bytes);
    step.synchronize();
    if (std::string(s.dtype) == "bf16") {
      uint16_t b;
      std::memcpy(&b, bytes, 2);
      return from_bf16(b);
    }
    float f;
    std::memcpy(&f, bytes, 4);
    return f;
  }
  throw std::runtime_error(std::string("the step has no output '") + name + "'");
}

// What measure_step saw of one generated step.
struct StepMeasurement {
  bool ran = false;  // false: no GPU variant runs here (target says which ran instead)
  std::string target;
  size_t planned_peak = 0, device_arena = 0, cpu_planned_peak = 0, measured = 0;
  double median_ms = 0, min_ms = 0;
  float loss_first = 0, loss_last = 0;
  bool graph = false;
};

// Runs `Step` (the variant for this machine, params and moments updated in
// place and fed back) for `warmup` then `timed` steps, each synchronized
// and timed alone on the host clock (the third run is captured into a CUDA
// Graph). measured: the most device memory in use during its steps beyond
// what was in use before the step object existed (arena, Halide's scratch
// pool, cuBLASLt's workspace, the CUDA Graph). The loss of step 1 and of the
// last step from its scalar output "loss". tf32: its f32 products on TF32
// tensor cores (Step::set_tf32).
template <typename Step>
StepMeasurement measure_step(int warmup, int timed, bool tf32 = false) {
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  const size_t before = device_memory_used();
  StepMeasurement m;
  Step step(nullptr, /*update_in_place=*/true);
  m.target = step.target();
  if (m.target.find("cuda") == std::string::npos) return m;
  m.ran = true;
  m.planned_peak = planned_intermediate_bytes(step.describe_device());
  m.device_arena = step.device_arena_bytes();
  m.cpu_planned_peak = Step::kArenaBytes;
  step.set_tf32(tf32);
  const int step_input = upload_inputs(step);
  step.set_feed_back(true);
  size_t used = device_memory_used();
  float counter = 0;
  auto one_step = [&] {
    counter += 1;
    if (step_input >= 0) step.upload(step_input, &counter);
    step.run_device();
    step.synchronize();
    used = std::max(used, device_memory_used());
  };
  one_step();
  m.loss_first = read_scalar_output(step, "loss");
  for (int k = 1; k < warmup; ++k) one_step();
  std::vector<double> ms;
  for (int k = 0; k < timed; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    one_step();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  m.loss_last = read_scalar_output(step, "loss");
  m.graph = step.last_run_was_graph();
  std::sort(ms.begin(), ms.end());
  m.median_ms = ms[ms.size() / 2];
  m.min_ms = ms[0];
  m.measured = used - std::min(used, before);
  return m;
}

// One line for measurement `m` of `label`.
inline void print_measurement(const std::string& label, const StepMeasurement& m) {
  if (!m.ran) {
    std::printf("%-11s no GPU variant runs here (%s)\n", label.c_str(), m.target.c_str());
    return;
  }
  const double mib = 1.0 / (1 << 20);
  std::printf("%-11s planned peak %9.1f MiB  arena %9.1f MiB  measured %9.1f MiB  median %9.3f ms  min %9.3f ms"
              "  loss %.6f -> %.6f  (%s, graph: %s)\n",
              label.c_str(), m.planned_peak * mib, m.device_arena * mib, m.measured * mib, m.median_ms, m.min_ms,
              m.loss_first, m.loss_last, m.target.c_str(), m.graph ? "yes" : "no");
}

// Device 0 with its context created (before any measurement), its
// properties printed; false when there is no CUDA device (nothing to measure).
inline bool open_device(const char* program, cudaDeviceProp* prop) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("%s: no CUDA device; nothing to measure\n", program);
    return false;
  }
  check_cuda(cudaSetDevice(0), "cudaSetDevice");
  check_cuda(cudaFree(nullptr), "cudaFree(nullptr)");
  check_cuda(cudaGetDeviceProperties(prop, 0), "cudaGetDeviceProperties");
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("GPU: %s (sm_%d%d, %.1f GiB), driver %d, runtime %d; %.1f MiB in use before the steps\n", prop->name,
              prop->major, prop->minor, prop->totalGlobalMem / double(1 << 30), driver, runtime,
              device_memory_used() / double(1 << 20));
  return true;
}

}  // namespace tessera_bench
