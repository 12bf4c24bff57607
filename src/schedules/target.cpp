// Target: parsing "host", "host-cuda-sm80", "host-cuda-sm90" or an explicit
// Halide CPU target string, and the matching Halide::Target.
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
  t.cpu = cpu;
  return t;
}

std::string Target::str() const { return cpu + (cuda_sm ? "-cuda-sm" + std::to_string(cuda_sm) : ""); }

Halide::Target halide_target(const Target& t) {
  if (t.cpu != "host") return Halide::Target(t.cpu);
  Halide::Target h = Halide::get_host_target();
  // Halide 14 reports avx512_sapphirerapids on CPUs (such as AMD Zen 4) that
  // have AVX512-BF16 but not AVX512-FP16; LLVM then emits FP16 instructions
  // for f16 math that raise SIGILL. Drop the feature where FP16 is missing.
  if (h.has_feature(Halide::Target::AVX512_SapphireRapids) && !__builtin_cpu_supports("avx512fp16"))
    h = h.without_feature(Halide::Target::AVX512_SapphireRapids);
  return h;
}

}  // namespace tessera
