// Where tessera-finetune's training state lives and its steps run, behind
// one interface for the Pretrainer and the Finetuner (finetune_model.h):
//
//   cpu_backend: a tessera::Trainer (the step compiled by the CPU JIT at
//     start-up); checkpoints through tessera::save_checkpoint / load_checkpoint.
//   generated_cpu_backend: a step generated at build time for the CPU
//     (cpu_steps.h), run over host buffers; nothing is compiled at run time.
//     Same graph and schedule as the Trainer's, so the same losses.
//   gpu_backend: a generated step on a CUDA GPU (gpu_steps.h). Params and
//     AdamW moments stay on the device between steps (only the batch and
//     the scalars optim.step and optim.lr go up, the loss comes down: the
//     generated step has no new.optim.step output to feed back);
//     params are downloaded when asked for (evaluation on the CPU is not
//     needed: logits come from the same step run without its update), the
//     whole state when a checkpoint is saved, and uploaded on resume.
// Both generated backends start from the Trainer's params for the same
// graph, options and seed, and write the Trainer's checkpoints
// (generated_state.h), so every backend resumes the others' runs.
//
// It does not draw batches, print progress, or know about LoRA or NF4.
#pragma once

#include <tessera/graph.h>
#include <tessera/trainer.h>

#include <map>
#include <memory>
#include <string>

#include "cpu_steps.h"
#include "gpu_steps.h"

namespace finetune {

struct RunConfig;

class TrainingBackend {
 public:
  virtual ~TrainingBackend() = default;
  // "the CPU, JIT-compiled step", "the CPU, generated step <name>, variant host",
  // or "CUDA (<device>, generated step <name>, variant host-cuda-sm90)".
  virtual std::string where() const = 0;
  virtual int64_t steps_done() const = 0;
  // One optimizer step on `batch` (idx, targets); returns the loss.
  virtual double step(const std::map<std::string, tessera::Buffer>& batch) = 0;
  // The learning rate of the next steps (the step's optim.lr input).
  virtual void set_lr(double lr) = 0;
  // The current params (copied from the device first when they changed
  // there). The map is valid until the next call that changes params.
  virtual const std::map<std::string, tessera::Buffer>& params() = 0;
  // Replaces a param (same dtype and shape) with a copy of `value`.
  virtual void set_param(const std::string& name, const tessera::Buffer& value) = 0;
  // The training checkpoint (checkpoint.h's format) at `path`: written
  // atomically; loaded all or nothing (Error naming the file and tensor).
  virtual void save_checkpoint(const std::string& path) = 0;
  virtual void load_checkpoint(const std::string& path) = 0;
  // The logits ([batch, T, vocab]) of the evaluation graph for token ids
  // `idx` ([batch, T]) under the current params.
  virtual tessera::Buffer logits(const tessera::Buffer& idx) = 0;
  // A line about the device after training (memory), or "" on the CPU.
  virtual std::string summary() const { return ""; }
};

// `joint` is differentiate()'s graph; `eval_graph` (optional: a graph with
// output "logits") is compiled at the first logits() call.
std::unique_ptr<TrainingBackend> cpu_backend(const tessera::Graph& joint, const tessera::TrainerOptions& options,
                                             tessera::Graph eval_graph = {});
// A generated CPU step (cpu_steps.h) for `joint` and `options`, which must be
// what cpu_backend would be given; `eval` (optional) is the generated
// evaluation graph that logits() runs. Throws tessera::Error when the step's
// tensors differ from the joint graph's params (naming the tensor).
std::unique_ptr<TrainingBackend> generated_cpu_backend(std::unique_ptr<CpuStep> step, std::unique_ptr<CpuStep> eval,
                                                       const tessera::Graph& joint,
                                                       const tessera::TrainerOptions& options);
// The generated GPU step of `kind` for `rc`; `joint` and `options` (AdamW, its
// lr, the seed and init) must be what cpu_backend would be given, so that
// both start from the same params. Throws tessera::Error when the step does
// not exist for `rc`, no device is present, or the step's tensors differ
// from the joint graph's params (naming the tensor).
std::unique_ptr<TrainingBackend> gpu_backend(StepKind kind, const RunConfig& rc, const tessera::Graph& joint,
                                             const tessera::TrainerOptions& options, bool tf32 = false);

}  // namespace finetune
