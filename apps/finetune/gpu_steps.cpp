// What the generated GPU steps support, compared with a run's settings
// (gpu_steps.h). Which steps exist is answered by gpu_steps_cuda.cpp or,
// without the CUDA toolkit, gpu_steps_none.cpp; the comparison and its
// messages are generated_configs.h's. A GPU run is all or nothing: both of
// its steps (pretraining and QLoRA) must exist, so a run is compared with
// the QLoRA step's settings. It runs nothing.
#include "gpu_steps.h"

#include "finetune_model.h"

namespace finetune {

std::string describe_generated_configs() {
  const std::vector<GeneratedConfig> configs = generated_gpu_configs();
  if (configs.empty()) return "nothing (this build has no GPU steps: it was built without the CUDA toolkit)";
  return describe_configs(configs, StepKind::qlora);
}

std::string gpu_config_mismatch(const RunConfig& rc) {
  const std::vector<GeneratedConfig> configs = generated_gpu_configs();
  if (configs.empty()) return "this build has no GPU training steps: it was built without the CUDA toolkit";
  return config_mismatch(configs, StepKind::qlora, rc, "GPU");
}

int matching_gpu_config(const RunConfig& rc) {
  return matching_config(generated_gpu_configs(), StepKind::qlora, rc);
}

}  // namespace finetune
