// gpu_backend (training_backend.h): a generated GPU step (gpu_steps.h) with
// a host copy of its training state for checkpoints, adapters and params().
//
// It starts from the params a Trainer would and writes the Trainer's
// checkpoint file (generated_state.h; test_finetune_gpu checks equal first
// losses), so CPU and GPU runs resume each other's. It does not choose the
// step (gpu_steps_cuda.cpp) or draw batches.
#include <tessera/checkpoint.h>
#include <tessera/error.h>

#include <cstdio>

#include "finetune_model.h"
#include "generated_state.h"
#include "training_backend.h"

using namespace tessera;

namespace finetune {

namespace {

std::string mib(size_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return s;
}

class GpuBackend final : public TrainingBackend {
 public:
  GpuBackend(StepKind kind, const RunConfig& rc, const Graph& joint, const TrainerOptions& options, bool tf32)
      : step_(GpuStep::create(kind, rc)) {
    step_->set_tf32(tf32);
    device_ = cuda_device().name;
    GeneratedState g = initial_generated_state("GPU step " + step_->name(), step_->inputs(), joint, options);
    s_ = std::move(g.state);
    trained_ = std::move(g.trained);
    upload_state();
  }

  std::string where() const override {
    return "CUDA (" + device_ + ", generated step " + step_->name() + ", variant " + step_->variant() + ")";
  }
  int64_t steps_done() const override { return s_.steps_done; }
  void set_lr(double lr) override { s_.lr = lr; }

  double step(const std::map<std::string, Buffer>& batch) override {
    const double loss = step_->train(batch, s_.steps_done + 1, s_.lr);
    ++s_.steps_done;
    params_stale_ = state_stale_ = true;
    return loss;
  }

  const std::map<std::string, Buffer>& params() override {
    if (params_stale_) {
      std::map<std::string, Buffer> fresh;
      for (const std::string& name : trained_) fresh[name] = Buffer();
      step_->download_all(fresh);
      for (auto& [name, b] : fresh) s_.params[name] = std::move(b);
      params_stale_ = false;
    }
    return s_.params;
  }

  void set_param(const std::string& name, const Buffer& value) override {
    params();  // the host copy of every param current first
    auto it = s_.params.find(name);
    if (it == s_.params.end()) fail("this run's model has no param '", name, "'");
    if (it->second.type() != value.type())
      fail("param '", name, "' is ", to_string(it->second.type()), ", given ", to_string(value.type()));
    it->second = value.clone();
    step_->upload(name, it->second);
  }

  void save_checkpoint(const std::string& path) override {
    params();
    if (state_stale_) {
      step_->download_all(s_.state);
      state_stale_ = false;
    }
    tessera::save_checkpoint(s_, path);
  }

  void load_checkpoint(const std::string& path) override {
    params();
    s_ = read_matching_checkpoint(path, s_, "GPU step " + step_->name());
    upload_state();
  }

  Buffer logits(const Buffer& idx) override {
    if (!targets_.defined() || targets_.type() != idx.type()) targets_ = Buffer(idx.dtype(), idx.shape());
    return step_->forward({{"idx", idx}, {"targets", targets_}}, "logits");
  }

  std::string summary() const override {
    return "device memory on " + device_ + ": step arena " + mib(step_->arena_bytes()) + ", peak in use " +
           mib(GpuStep::peak_device_bytes()) + " beyond the CUDA context (cudaMemGetInfo)";
  }

 private:
  void upload_state() {
    std::map<std::string, Buffer> all = s_.params;
    for (const auto& [name, b] : s_.state) all[name] = b;
    step_->upload_all(all);
    params_stale_ = state_stale_ = false;
  }

  std::unique_ptr<GpuStep> step_;
  std::string device_;
  TrainingState s_;                  // the host copy; the device's is newer while *_stale_
  std::vector<std::string> trained_;  // params the step updates (fed back on the device)
  bool params_stale_ = false, state_stale_ = false;
  Buffer targets_;  // the loss's input when evaluating, all 0 (only the logits are read)
};

}  // namespace

std::unique_ptr<TrainingBackend> gpu_backend(StepKind kind, const RunConfig& rc, const Graph& joint,
                                             const TrainerOptions& options, bool tf32) {
  return std::make_unique<GpuBackend>(kind, rc, joint, options, tf32);
}

}  // namespace finetune
