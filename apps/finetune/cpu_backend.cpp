// cpu_backend (training_backend.h): a tessera::Trainer, its checkpoints
// through checkpoint.h, and evaluation through the CPU JIT (both compiled at
// start-up). Behaves exactly as tessera-finetune did before there were
// backends (same params, same checkpoints, bit for bit); runs whose settings
// have no generated CPU step (generated_cpu_backend.cpp) use it. No GPU code.
#include <tessera/checkpoint.h>
#include <tessera/error.h>
#include <tessera/runtime.h>

#include "training_backend.h"

using namespace tessera;

namespace finetune {

namespace {

class CpuBackend final : public TrainingBackend {
 public:
  CpuBackend(const Graph& joint, const TrainerOptions& options, Graph eval_graph)
      : trainer_(joint, options), eval_graph_(std::move(eval_graph)) {}

  std::string where() const override { return "the CPU, JIT-compiled step"; }
  int64_t steps_done() const override { return trainer_.steps_done(); }
  double step(const std::map<std::string, Buffer>& batch) override { return trainer_.step(batch); }
  void set_lr(double lr) override { trainer_.set_lr(lr); }
  const std::map<std::string, Buffer>& params() override { return trainer_.params(); }
  void set_param(const std::string& name, const Buffer& value) override {
    Buffer& p = trainer_.param(name);
    if (p.type() != value.type())
      fail("param '", name, "' is ", to_string(p.type()), ", given ", to_string(value.type()));
    p = value.clone();
  }
  void save_checkpoint(const std::string& path) override { tessera::save_checkpoint(trainer_, path); }
  void load_checkpoint(const std::string& path) override { tessera::load_checkpoint(trainer_, path); }

  Buffer logits(const Buffer& idx) override {
    if (eval_graph_.nodes.empty()) fail("this training run has no evaluation graph");
    if (!eval_compiled_) {
      eval_ = compile(eval_graph_);
      eval_compiled_ = true;
    }
    std::map<std::string, Buffer> args = trainer_.params();
    args["idx"] = idx;
    if (!targets_.defined() || targets_.type() != idx.type()) targets_ = Buffer(idx.dtype(), idx.shape());
    args["targets"] = targets_;
    return eval_.run(args).at("logits");
  }

 private:
  Trainer trainer_;
  Graph eval_graph_;
  Executable eval_;
  bool eval_compiled_ = false;
  Buffer targets_;  // the loss's input, all 0 (only the logits are read)
};

}  // namespace

std::unique_ptr<TrainingBackend> cpu_backend(const Graph& joint, const TrainerOptions& options, Graph eval_graph) {
  return std::make_unique<CpuBackend>(joint, options, std::move(eval_graph));
}

}  // namespace finetune
