// The training steps tessera-finetune runs on a CUDA GPU: the generated
// (ahead-of-time) libraries of apps/CMakeLists.txt, one pretraining step
// (gpt_train_step) and one QLoRA step (gpt_qlora_train_step) per supported
// preset, each with an sm80 and an sm90 variant. Their sizes, LoRA settings
// and batch are fixed at build time, so a run on the GPU must use exactly
// those; gpu_config_mismatch() says which flag differs.
//
// GpuStep hides the generated classes behind one interface: tensors by name,
// uploads and downloads, a training step whose new params and AdamW moments
// stay on the device (the generated feed-back), and the same step run for its
// forward outputs only (logits for evaluation, nothing updated).
//
// Without the CUDA toolkit the build has no generated steps
// (gpu_steps_none.cpp): every query answers "none" and create() throws.
// This file does not decide where a run goes (finetune_model.cpp does) nor
// own the host copy of the training state (gpu_backend.cpp does); the
// comparison of settings is generated_configs.h's.
#pragma once

#include <tessera/runtime.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "generated_configs.h"
#include "step_tensors.h"

namespace finetune {

struct RunConfig;

// The configurations this build has GPU steps for (empty without the CUDA
// toolkit); their PARAMS come from apps/CMakeLists.txt (generated_configs.h).
std::vector<GeneratedConfig> generated_gpu_configs();
// "--preset tiny or gpu with --lora-r 8 ...", for messages.
std::string describe_generated_configs();

// Empty when `rc` (its model, batch and LoRA settings) equals a generated
// configuration; else a message naming the preset or flag that differs and
// what the generated steps support.
std::string gpu_config_mismatch(const RunConfig& rc);
// The index in generated_gpu_configs() of the configuration `rc` equals, or -1.
int matching_gpu_config(const RunConfig& rc);

// CUDA device 0 as the CUDA runtime sees it. `capability` is 0 when there is
// none (no driver, no device, or a build without the CUDA toolkit), and
// `why_not` then says which. Never throws.
struct CudaDevice {
  int capability = 0;  // e.g. 90 for an H100
  std::string name;    // "NVIDIA H100 80GB HBM3"
  std::string why_not;
};
CudaDevice cuda_device();

class GpuStep {
 public:
  // The generated step of `kind` for `rc` (which must match one:
  // gpu_config_mismatch), on device 0, in the variant its compute capability
  // runs (sm90 from 9.0, else sm80; TESSERA_AOT_VARIANT=host-cuda-sm80
  // forces one). Throws tessera::Error naming the step and the reason.
  static std::unique_ptr<GpuStep> create(StepKind kind, const RunConfig& rc);
  virtual ~GpuStep() = default;

  virtual std::string name() const = 0;     // the generated library, e.g. "finetune_qlora_gpu"
  virtual std::string variant() const = 0;  // "host-cuda-sm90"
  virtual const std::vector<StepTensor>& inputs() const = 0;
  virtual const std::vector<StepTensor>& outputs() const = 0;

  // Copies host values into input `name` on the device (sizes must match),
  // and back. Both wait for the copy. Errors name the tensor.
  virtual void upload(const std::string& name, const tessera::Buffer& value) = 0;
  virtual tessera::Buffer download(const std::string& name) = 0;
  // Several at once with one wait (name -> host buffer of the input's type).
  virtual void upload_all(const std::map<std::string, tessera::Buffer>& values) = 0;
  virtual void download_all(std::map<std::string, tessera::Buffer>& into) = 0;

  // One optimizer step over the state already on the device: uploads the
  // batch (idx, targets), optim.step = `step` and optim.lr = `lr`, runs,
  // feeds every new.X back into X on the device, and returns the loss.
  virtual double train(const std::map<std::string, tessera::Buffer>& batch, int64_t step, double lr) = 0;
  // The same graph run without feeding anything back (so no param or moment
  // changes): the forward outputs for `batch`, e.g. "logits".
  virtual tessera::Buffer forward(const std::map<std::string, tessera::Buffer>& batch, const std::string& output) = 0;

  virtual size_t arena_bytes() const = 0;  // the step's one device allocation
  virtual std::string describe_device() const = 0;
  // Tensors in f32 matrix products on TF32 tensor cores (default off: plain f32).
  virtual void set_tf32(bool enabled) = 0;

  // Device memory in use by this process beyond what it used before its
  // first GpuStep (the CUDA context), at its highest since the last create()
  // as sampled (cudaMemGetInfo after steps and evaluations), in bytes.
  static size_t peak_device_bytes();
};

}  // namespace finetune
