// gpu_steps.h with the CUDA toolkit: the generated steps of
// apps/CMakeLists.txt (finetune_{pretrain,qlora}_{tiny,gpu}, variants
// host-cuda-sm80 and host-cuda-sm90) wrapped as GpuStep, and the CUDA
// runtime's view of device 0. The generated configurations come from the
// same PARAMS strings CMake passed to the generators (compile definitions,
// read by generated_configs.h), so they cannot drift apart. It does not keep
// a host copy of the training state (gpu_backend.cpp) or decide where a run
// goes.
#include <cuda_runtime.h>
#include <tessera/error.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>

#include "finetune_model.h"
#include "finetune_pretrain_gpu.h"
#include "finetune_pretrain_tiny.h"
#include "finetune_qlora_gpu.h"
#include "finetune_qlora_tiny.h"
#include "gpu_steps.h"

#if !defined(TESSERA_FINETUNE_TINY_PARAMS) || !defined(TESSERA_FINETUNE_GPU_PARAMS) || \
    !defined(TESSERA_FINETUNE_LORA_PARAMS)
#error "apps/CMakeLists.txt passes the generators' PARAMS as TESSERA_FINETUNE_{TINY,GPU,LORA}_PARAMS"
#endif

using tessera::Buffer;
using tessera::fail;

namespace finetune {

namespace {

// Device memory in use beyond the CUDA context, at its highest when sampled.
size_t g_baseline_used = 0, g_peak = 0;
bool g_baseline_taken = false;

size_t device_used() {
  size_t free_b = 0, total = 0;
  if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return total - free_b;
}

void take_baseline() {
  if (g_baseline_taken) return;
  cudaFree(nullptr);  // creates the context, so that it is in the baseline
  cudaGetLastError();
  g_baseline_used = device_used();
  g_baseline_taken = true;
}

void sample_memory() {
  const size_t used = device_used();
  if (used > g_baseline_used) g_peak = std::max(g_peak, used - g_baseline_used);
}

// One generated class behind GpuStep. The generated calls throw
// std::runtime_error (or tessera::Error); each is rethrown as a tessera::Error
// naming the step, its variant and what was being done.
template <typename Step>
class Generated final : public GpuStep {
 public:
  Generated(std::string lib, const std::string& target) : lib_(std::move(lib)), target_(target) {
    guard("starting", [&] { step_ = std::make_unique<Step>(target.c_str()); });
    StepTensors t = step_tensors<Step>();
    inputs_ = std::move(t.inputs);
    outputs_ = std::move(t.outputs);
    step_input_ = input_index("optim.step");
    lr_input_ = input_index("optim.lr");
    loss_output_ = output_index("loss");
  }
  ~Generated() override = default;

  std::string name() const override { return lib_; }
  std::string variant() const override { return step_->target(); }
  const std::vector<StepTensor>& inputs() const override { return inputs_; }
  const std::vector<StepTensor>& outputs() const override { return outputs_; }

  void upload(const std::string& name, const Buffer& value) override { upload_all({{name, value}}); }

  Buffer download(const std::string& name) override {
    std::map<std::string, Buffer> m{{name, Buffer()}};
    download_all(m);
    return m.at(name);
  }

  void upload_all(const std::map<std::string, Buffer>& values) override {
    guard("uploading", [&] {
      for (const auto& [name, b] : values) step_->upload(checked_input(name, b), b.data());
      step_->synchronize();
    });
  }

  void download_all(std::map<std::string, Buffer>& into) override {
    guard("downloading", [&] {
      for (auto& [name, b] : into) {
        const int i = input_index(name);
        if (!b.defined() || b.type() != inputs_[i].type) b = Buffer(inputs_[i].type.dtype, inputs_[i].type.shape);
        step_->download(i, b.data());
      }
      step_->synchronize();
    });
  }

  double train(const std::map<std::string, Buffer>& batch, int64_t step, double lr) override {
    step_value_ = static_cast<float>(step);
    lr_value_ = static_cast<float>(lr);
    guard("running a training step", [&] {
      step_->set_feed_back(true);
      upload_batch(batch);
      step_->upload(step_input_, &step_value_);
      step_->upload(lr_input_, &lr_value_);
      step_->run_device();
      step_->download(Step::kNumInputs + loss_output_, &loss_);
      step_->synchronize();
    });
    if (++runs_ <= 4 || runs_ % 64 == 0) sample_memory();
    return loss_;
  }

  Buffer forward(const std::map<std::string, Buffer>& batch, const std::string& output) override {
    const int o = output_index(output);
    Buffer out(outputs_[o].type.dtype, outputs_[o].type.shape);
    guard("running the forward pass", [&] {
      step_->set_feed_back(false);  // new.X stay in their output slots: nothing is updated
      upload_batch(batch);
      step_->run_device();
      step_->download(Step::kNumInputs + o, out.data());
      step_->synchronize();
    });
    if (++runs_ <= 4 || runs_ % 64 == 0) sample_memory();
    return out;
  }

  size_t arena_bytes() const override { return step_->device_arena_bytes(); }
  std::string describe_device() const override { return step_->describe_device(); }
  void set_tf32(bool enabled) override { step_->set_tf32(enabled); }

 private:
  template <typename F>
  void guard(const char* what, F&& f) const {
    try {
      f();
    } catch (const std::exception& e) {
      fail("GPU step ", lib_, " (", target_, ") ", what, ": ", e.what());
    }
  }
  int input_index(const std::string& name) const {
    for (size_t i = 0; i < inputs_.size(); ++i)
      if (inputs_[i].name == name) return static_cast<int>(i);
    fail("GPU step ", lib_, " has no input '", name, "'");
  }
  int output_index(const std::string& name) const {
    for (size_t o = 0; o < outputs_.size(); ++o)
      if (outputs_[o].name == name) return static_cast<int>(o);
    fail("GPU step ", lib_, " has no output '", name, "'");
  }
  int checked_input(const std::string& name, const Buffer& b) const {
    const int i = input_index(name);
    if (!b.defined() || b.type() != inputs_[i].type)
      fail("GPU step ", lib_, ": input '", name, "' is ", tessera::to_string(inputs_[i].type), ", given ",
           b.defined() ? tessera::to_string(b.type()) : std::string("nothing"));
    return i;
  }
  void upload_batch(const std::map<std::string, Buffer>& batch) {
    for (const auto& [name, b] : batch) step_->upload(checked_input(name, b), b.data());
  }

  std::string lib_, target_;
  std::unique_ptr<Step> step_;
  std::vector<StepTensor> inputs_, outputs_;
  int step_input_ = -1, lr_input_ = -1, loss_output_ = -1;
  float step_value_ = 0, lr_value_ = 0, loss_ = 0;  // host memory of the small copies, valid until synchronize
  int64_t runs_ = 0;
};

struct Entry {
  const char* preset;
  const char* model_params;
  std::function<std::unique_ptr<GpuStep>(const std::string& target)> pretrain, qlora;
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> e = {
      {"tiny", TESSERA_FINETUNE_TINY_PARAMS,
       [](const std::string& t) {
         return std::make_unique<Generated<tessera_aot::finetune_pretrain_tiny>>("finetune_pretrain_tiny", t);
       },
       [](const std::string& t) {
         return std::make_unique<Generated<tessera_aot::finetune_qlora_tiny>>("finetune_qlora_tiny", t);
       }},
      {"gpu", TESSERA_FINETUNE_GPU_PARAMS,
       [](const std::string& t) {
         return std::make_unique<Generated<tessera_aot::finetune_pretrain_gpu>>("finetune_pretrain_gpu", t);
       },
       [](const std::string& t) {
         return std::make_unique<Generated<tessera_aot::finetune_qlora_gpu>>("finetune_qlora_gpu", t);
       }},
  };
  return e;
}

}  // namespace

std::vector<GeneratedConfig> generated_gpu_configs() {
  std::vector<GeneratedConfig> out;
  for (const Entry& e : entries())
    out.push_back(parse_generated_config(e.preset, e.model_params, TESSERA_FINETUNE_LORA_PARAMS));
  return out;
}

CudaDevice cuda_device() {
  CudaDevice d;
  int n = 0;
  if (cudaError_t e = cudaGetDeviceCount(&n); e != cudaSuccess) {
    cudaGetLastError();
    d.why_not = std::string("no usable CUDA device: ") + cudaGetErrorString(e);
    return d;
  }
  if (n < 1) {
    d.why_not = "no CUDA device is present";
    return d;
  }
  cudaDeviceProp p{};
  if (cudaError_t e = cudaGetDeviceProperties(&p, 0); e != cudaSuccess) {
    cudaGetLastError();
    d.why_not = std::string("cannot read CUDA device 0: ") + cudaGetErrorString(e);
    return d;
  }
  d.capability = p.major * 10 + p.minor;
  d.name = p.name;
  return d;
}

std::unique_ptr<GpuStep> GpuStep::create(StepKind kind, const RunConfig& rc) {
  const int match = matching_gpu_config(rc);
  if (match < 0) fail("--device cuda: ", gpu_config_mismatch(rc));
  const Entry* entry = &entries().at(static_cast<size_t>(match));
  const CudaDevice d = cuda_device();
  if (d.capability == 0) fail("--device cuda: ", d.why_not);
  std::string target;
  if (const char* forced = std::getenv("TESSERA_AOT_VARIANT")) {
    target = forced;
    if (target != "host-cuda-sm80" && target != "host-cuda-sm90")
      fail("TESSERA_AOT_VARIANT=", target, ": the GPU steps have the variants host-cuda-sm80 and host-cuda-sm90");
  } else if (d.capability >= 90) {
    target = "host-cuda-sm90";
  } else if (d.capability >= 80) {
    target = "host-cuda-sm80";
  } else {
    fail("--device cuda: ", d.name, " has compute capability ", d.capability / 10, ".", d.capability % 10,
         "; the generated GPU steps need 8.0 or newer (sm80, sm90)");
  }
  take_baseline();
  g_peak = 0;
  std::unique_ptr<GpuStep> s = kind == StepKind::pretrain ? entry->pretrain(target) : entry->qlora(target);
  sample_memory();
  return s;
}

size_t GpuStep::peak_device_bytes() { return g_peak; }

}  // namespace finetune
