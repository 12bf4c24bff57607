// The models tessera-finetune trains, and their files: the run presets, the
// base GPT's pretraining (Pretrainer), the QLoRA fine-tune (Finetuner:
// NF4-quantized frozen base + LoRA adapters), greedy decoding, and the
// checkpoints (safetensors, written atomically). Steps run on the CPU (a
// step generated at build time, or the JIT's) or a GPU (training_backend.h);
// this file picks the backend. It does not parse flags or print progress
// (finetune.cpp does).
#pragma once

#include <tessera/models.h>
#include <tessera/trainer.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "task.h"
#include "training_backend.h"

namespace finetune {

enum class Device { cpu, cuda };
std::string device_name(Device d);

// The training steps of a run on the CPU (--cpu-steps): the ones generated
// at build time (cpu_steps.h) when they exist for the run's settings, else
// the JIT's, saying why (automatic); only the generated ones (an error when
// there are none); or always the JIT's (jit: the Trainer, for any settings).
enum class CpuSteps { automatic, generated, jit };
// "auto", "generated", "jit"; throws tessera::Error otherwise.
CpuSteps parse_cpu_steps(const std::string& name);

struct LoraSettings {
  int r = 8;
  double alpha = 16;
  double dropout = 0;
  std::vector<std::string> targets;
};

struct RunConfig {
  std::string preset;  // its name: tiny, cpu, gpu
  tessera::GptConfig gpt;
  int pretrain_steps = 0, finetune_steps = 0, eval_every = 0;
  double pretrain_lr = 0, finetune_lr = 0;
  bool finetune_lr_decay = false;  // fine-tuning lr falls linearly to 0 over finetune_steps
  LoraSettings lora;
  uint64_t seed = 0;
  Device device = Device::cpu;
  CpuSteps cpu_steps = CpuSteps::automatic;  // on the CPU
  bool tf32 = false;                         // on CUDA: f32 matrix products on TF32 tensor cores
};
// "tiny", "cpu" or "gpu"; throws tessera::Error otherwise.
RunConfig preset(const std::string& name);

// Where `rc` runs. "cpu" is the CPU. "cuda" is the GPU when this build has
// generated GPU steps equal to `rc` (gpu_steps.h) and a CUDA device of
// compute capability 8.0 or newer is present; otherwise an Error saying
// which is missing (or which flag differs from the generated steps). "auto"
// is "cuda" when all that holds, else the CPU; when a device is present but
// unusable for `rc`, *note says why.
Device pick_device(const std::string& name, const RunConfig& rc, std::string* note = nullptr);

std::vector<std::string> split_list(const std::string& comma_separated);
std::string read_file(const std::string& path);

// The base model's params (f32) in a safetensors file; the config is stored
// in its metadata and checked on load (a mismatch is an error naming both).
void save_base(const std::string& path, const std::map<std::string, tessera::Buffer>& params,
               const tessera::GptConfig& cfg);
std::map<std::string, tessera::Buffer> load_base(const std::string& path, const tessera::GptConfig& cfg);

// Throws Error naming `path` unless it is a readable tessera training
// checkpoint (checked before any training, so a bad file fails fast).
void check_checkpoint_file(const std::string& path);

// Pretraining of the base on the corpus, resumable from <out>/pretrain.ckpt.safetensors.
class Pretrainer {
 public:
  Pretrainer(const RunConfig& rc, const std::string& out_dir, bool resume);
  std::string where() const { return backend_->where(); }  // the device, the step and its variant
  // Why a CPU run JIT-compiles its step (no generated one fits), or "".
  const std::string& note() const { return note_; }
  std::string summary() const { return backend_->summary(); }
  int step() const;
  double train_step(const std::vector<int32_t>& corpus);  // one AdamW step on a random batch
  void save_checkpoint();
  void remove_checkpoint() const;
  std::map<std::string, tessera::Buffer> params();  // copies

 private:
  RunConfig rc_;
  std::string path_;
  std::string note_;
  std::unique_ptr<TrainingBackend> backend_;
};

// QLoRA fine-tuning: the base's linears (all but lm_head) in NF4, frozen;
// LoRA adapters on the target modules, trained with AdamW. Evaluation and
// generation run where training does (on a GPU: the generated step without
// its update).
class Finetuner {
 public:
  Finetuner(const RunConfig& rc, const std::map<std::string, tessera::Buffer>& base, const std::string& out_dir);
  std::string where() const { return backend_->where(); }
  const std::string& note() const { return note_; }  // as Pretrainer::note
  std::string summary() const { return backend_->summary(); }
  // Loads <out>/finetune.ckpt.safetensors when present; returns whether it did.
  bool resume();
  int step() const;
  std::string describe();
  double train_step(const Task& task);
  // Held-out accuracy of the quantized base alone (adapters contribute 0 at
  // initialization, since B = 0); call before training.
  double base_accuracy(const Task& task, const std::vector<Example>& set);
  // Greedy answers to task prompts, read up to '\n'.
  std::vector<std::string> answers(const std::vector<std::string>& prompts);
  // Greedy continuation of `prompt`, `n` characters.
  std::string generate(const std::string& prompt, int n);
  void save_checkpoint();
  // The adapter in PEFT's layout (adapter_model.safetensors, adapter_config.json).
  void save_adapter(const std::string& dir, const std::string& base_name);
  // Loads an adapter saved by save_adapter (or PEFT) into the adapter params;
  // its rank and modules must match this run's.
  void load_adapter(const std::string& dir);

 private:
  std::vector<std::vector<int32_t>> greedy(const std::vector<std::string>& prompts, int max_new, bool stop_at_newline);
  RunConfig rc_;
  std::string path_;
  std::string note_;
  std::unique_ptr<TrainingBackend> backend_;
  std::vector<std::string> adapters_;
};

}  // namespace finetune
