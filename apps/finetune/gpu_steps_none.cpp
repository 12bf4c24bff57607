// gpu_steps.h for a build without the CUDA toolkit: no generated GPU steps,
// no device. Every query says so; GpuStep::create throws. Nothing here
// touches CUDA (gpu_steps_cuda.cpp is the build with it).
#include <tessera/error.h>

#include "gpu_steps.h"

namespace finetune {

std::vector<GeneratedConfig> generated_gpu_configs() { return {}; }

CudaDevice cuda_device() {
  CudaDevice d;
  d.why_not = "this build has no CUDA support (the CUDA toolkit was not found when it was configured)";
  return d;
}

std::unique_ptr<GpuStep> GpuStep::create(StepKind, const RunConfig&) {
  throw tessera::Error("--device cuda: this build has no GPU training steps (it was built without the CUDA "
                       "toolkit; configure with CUDA at /usr/local/cuda to get them)");
}

size_t GpuStep::peak_device_bytes() { return 0; }

}  // namespace finetune
