// generated_cpu_backend (training_backend.h): a training step generated at
// build time (cpu_steps.h) run on the CPU over host buffers, with no JIT
// compilation. The training state is a TrainingState that starts where a
// Trainer would and checkpoints in the Trainer's file (generated_state.h),
// so this backend, cpu_backend and gpu_backend resume each other's runs.
//
// Each step runs the generated step once with every input pointing at the
// state's buffers. As the Trainer does, an output new.X that the step may
// write over X (its in_place_of) is given X's own buffer, so params and
// moments are updated in place (one copy of the state); any other new.X
// gets a buffer of its own that is then swapped with X's (the old one is the
// next step's output buffer). Steady state allocates nothing. Logits come
// from the generated evaluation graph when there is one.
// It does not choose the step (cpu_steps.cpp) or draw batches.
#include <tessera/checkpoint.h>
#include <tessera/error.h>
#include <tessera/optimizer.h>

#include <set>
#include <utility>

#include "generated_state.h"
#include "training_backend.h"

using namespace tessera;

namespace finetune {

namespace {

// Where a step's input comes from.
enum class Source { batch, optim_step, optim_lr, param, state };

class GeneratedCpuBackend final : public TrainingBackend {
 public:
  GeneratedCpuBackend(std::unique_ptr<CpuStep> step, std::unique_ptr<CpuStep> eval, const Graph& joint,
                      const TrainerOptions& options)
      : step_(std::move(step)), eval_(std::move(eval)) {
    const StepTensors& t = step_->tensors();
    GeneratedState g = initial_generated_state(who(), t.inputs, joint, options);
    s_ = std::move(g.state);
    std::set<std::string> batch_inputs;
    for (int id : joint.inputs()) batch_inputs.insert(joint.nodes[id].name);
    for (const StepTensor& in : t.inputs)
      sources_.push_back(in.name == kOptimStep         ? Source::optim_step
                         : in.name == kOptimLr         ? Source::optim_lr
                         : batch_inputs.count(in.name) ? Source::batch
                         : s_.params.count(in.name)    ? Source::param
                                                       : Source::state);
    outputs_.resize(t.outputs.size());
    for (size_t o = 0; o < t.outputs.size(); ++o) {
      const std::string& name = t.outputs[o].name;
      const int i = name.rfind("new.", 0) == 0 ? tensor_index(t.inputs, name.substr(4)) : -1;
      if (i >= 0 && t.inputs[i].fed_back) {
        const bool in_place = step_->in_place_of(static_cast<int>(o)) == t.inputs[i].name;
        fed_back_.push_back({static_cast<int>(o), t.inputs[i].name, in_place});
        if (in_place) continue;  // written over the state's own buffer: no buffer of its own
      }
      outputs_[o] = Buffer(t.outputs[o].type.dtype, t.outputs[o].type.shape);
    }
    loss_ = tensor_index(t.outputs, "loss");
    if (loss_ < 0) fail(who(), " has no output 'loss'");
    grad_norm_ = tensor_index(t.outputs, kOptimGradNorm);
    in_.resize(t.inputs.size());
    out_.resize(t.outputs.size());
  }

  std::string where() const override {
    return "the CPU, generated step " + step_->name() + ", variant " + step_->variant();
  }
  int64_t steps_done() const override { return s_.steps_done; }
  void set_lr(double lr) override { s_.lr = lr; }

  double step(const std::map<std::string, Buffer>& batch) override {
    const Buffer optim_step = Buffer::from({static_cast<double>(s_.steps_done + 1)}, {}, DType::f32);
    const Buffer optim_lr = Buffer::from({s_.lr}, {}, DType::f32);
    const StepTensors& t = step_->tensors();
    for (size_t i = 0; i < t.inputs.size(); ++i) {
      const std::string& name = t.inputs[i].name;
      switch (sources_[i]) {
        case Source::batch: in_[i] = checked_batch_input(batch, t.inputs[i]).data(); break;
        case Source::optim_step: in_[i] = optim_step.data(); break;
        case Source::optim_lr: in_[i] = optim_lr.data(); break;
        case Source::param: in_[i] = s_.params.at(name).data(); break;
        case Source::state: in_[i] = s_.state.at(name).data(); break;
      }
    }
    for (size_t o = 0; o < outputs_.size(); ++o) out_[o] = outputs_[o].data();
    for (const FedBack& f : fed_back_)
      if (f.in_place) out_[f.output] = state_buffer(f.input).data();
    step_->run(in_, out_);
    const double loss = outputs_[loss_].get(0);
    for (const FedBack& f : fed_back_)
      if (!f.in_place) std::swap(state_buffer(f.input), outputs_[f.output]);
    s_.last_grad_norm = grad_norm_ >= 0 ? outputs_[grad_norm_].get(0) : 0.0;
    ++s_.steps_done;
    return loss;
  }

  const std::map<std::string, Buffer>& params() override { return s_.params; }

  void set_param(const std::string& name, const Buffer& value) override {
    auto it = s_.params.find(name);
    if (it == s_.params.end()) fail("this run's model has no param '", name, "'");
    if (it->second.type() != value.type())
      fail("param '", name, "' is ", to_string(it->second.type()), ", given ", to_string(value.type()));
    it->second = value.clone();
  }

  void save_checkpoint(const std::string& path) override { tessera::save_checkpoint(s_, path); }
  void load_checkpoint(const std::string& path) override { s_ = read_matching_checkpoint(path, s_, who()); }

  Buffer logits(const Buffer& idx) override {
    if (!eval_) fail("this training run has no evaluation graph");
    const StepTensors& t = eval_->tensors();
    if (eval_out_.empty()) {
      for (const StepTensor& out : t.outputs) eval_out_.emplace_back(out.type.dtype, out.type.shape);
      eval_logits_ = tensor_index(t.outputs, "logits");
      if (eval_logits_ < 0) fail("generated CPU step ", eval_->name(), " has no output 'logits'");
    }
    if (!targets_.defined() || targets_.type() != idx.type()) targets_ = Buffer(idx.dtype(), idx.shape());
    const std::map<std::string, Buffer> batch{{"idx", idx}, {"targets", targets_}};
    std::vector<const void*> in(t.inputs.size());
    for (size_t i = 0; i < t.inputs.size(); ++i) {
      auto p = s_.params.find(t.inputs[i].name);
      if (p == s_.params.end()) {
        in[i] = checked_batch_input(batch, t.inputs[i]).data();
        continue;
      }
      if (p->second.type() != t.inputs[i].type)
        fail("generated CPU step ", eval_->name(), ": param '", p->first, "' is ", to_string(t.inputs[i].type),
             " there, ", to_string(p->second.type()), " in this run's model");
      in[i] = p->second.data();
    }
    std::vector<void*> out(eval_out_.size());
    for (size_t o = 0; o < eval_out_.size(); ++o) out[o] = eval_out_[o].data();
    eval_->run(in, out);
    return eval_out_[eval_logits_].clone();
  }

 private:
  std::string who() const { return "generated CPU step " + step_->name(); }

  Buffer& state_buffer(const std::string& name) {
    auto p = s_.params.find(name);
    return p != s_.params.end() ? p->second : s_.state.at(name);
  }

  const Buffer& checked_batch_input(const std::map<std::string, Buffer>& batch, const StepTensor& t) const {
    auto it = batch.find(t.name);
    if (it == batch.end()) fail(who(), ": the batch has no input '", t.name, "'");
    if (!it->second.defined() || it->second.type() != t.type)
      fail(who(), ": input '", t.name, "' is ", to_string(t.type), ", given ",
           it->second.defined() ? to_string(it->second.type()) : std::string("nothing"));
    return it->second;
  }

  std::unique_ptr<CpuStep> step_, eval_;
  TrainingState s_;
  std::vector<Source> sources_;  // per step input
  // An output new.X and its input X.
  struct FedBack {
    int output;
    std::string input;
    bool in_place;  // written over X's buffer; else swapped with it after the step
  };
  std::vector<Buffer> outputs_;  // per step output (undefined for those written in place)
  std::vector<FedBack> fed_back_;
  int loss_ = -1, grad_norm_ = -1;
  std::vector<const void*> in_;
  std::vector<void*> out_;
  std::vector<Buffer> eval_out_;
  int eval_logits_ = -1;
  Buffer targets_;  // the loss's input when evaluating, all 0 (only the logits are read)
};

}  // namespace

std::unique_ptr<TrainingBackend> generated_cpu_backend(std::unique_ptr<CpuStep> step, std::unique_ptr<CpuStep> eval,
                                                       const Graph& joint, const TrainerOptions& options) {
  return std::make_unique<GeneratedCpuBackend>(std::move(step), std::move(eval), joint, options);
}

}  // namespace finetune
