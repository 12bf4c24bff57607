// Target: parsing "host", "host-cuda-sm80", "host-cuda-sm90" or an explicit
// Halide CPU target string, and the matching Halide::Target. Both CUDA
// schedule sets compile for Halide's highest CUDA feature, cuda_capability_86
// (Halide 14 has none above it): the driver JIT-compiles that sm_86 PTX for
// the real GPU (sm_80 A100, sm_90 H100/H200); what differs between the sets
// is the schedule (src/schedules/cuda_sm80.cpp, cuda_sm90.cpp).
#include "target.h"

#include "tessera/error.h"

namespace tessera {

Target Target::parse(const std::string& text) {
  Target t;
  std::string cpu = text;
  for (int sm : {80, 90}) {
    std::string suffix = "-cuda-sm" + std::to_string(sm);
    if (cpu.size() > suffix.size() && cpu.compare(cpu.size() - suffix.size(), suffix.size(), suffix) == 0) {
      t.cuda_sm = sm;
      cpu.resize(cpu.size() - suffix.size());
    }
  }
  if (cpu.empty()) fail("target '", text, "': empty CPU part (expected e.g. host, host-cuda-sm90)");
  if (cpu != "host" && !Halide::Target::validate_target_string(cpu))
    fail("target '", text, "': '", cpu,
         "' is neither 'host' nor a Halide target string (e.g. x86-64-linux-avx2-fma); "
         "GPU targets are written host-cuda-sm80 or host-cuda-sm90");
  if (cpu != "host" && Halide::Target(cpu).has_gpu_feature())
    fail("target '", text, "': the CPU part '", cpu, "' names a GPU feature; GPU targets are written ",
         "host-cuda-sm80 or host-cuda-sm90 (or <cpu>-cuda-sm80, <cpu>-cuda-sm90)");
  t.cpu = cpu;
  return t;
}

std::string Target::str() const { return cpu + (cuda_sm ? "-cuda-sm" + std::to_string(cuda_sm) : ""); }

Halide::Target halide_target(const Target& t) {
  Halide::Target h;
  if (t.cpu != "host") {
    h = Halide::Target(t.cpu);
  } else {
    h = Halide::get_host_target();
    // Halide 14 reports avx512_sapphirerapids on CPUs (such as AMD Zen 4) that
    // have AVX512-BF16 but not AVX512-FP16; LLVM then emits FP16 instructions
    // for f16 math that raise SIGILL. Drop the feature where FP16 is missing.
    if (h.has_feature(Halide::Target::AVX512_SapphireRapids) && !__builtin_cpu_supports("avx512fp16"))
      h = h.without_feature(Halide::Target::AVX512_SapphireRapids);
  }
  if (t.cuda_sm) h = h.with_feature(Halide::Target::CUDA).with_feature(Halide::Target::CUDACapability86);
  return h;
}

}  // namespace tessera
