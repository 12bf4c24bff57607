// tessera-finetune: an end-to-end QLoRA fine-tune of a small character-level
// GPT, with nothing downloaded.
//
//   1. base model: pretrained here on the shipped corpus (data/corpus), or
//      loaded from the base checkpoint an earlier run saved;
//   2. the base's linear layers are quantized to NF4 and frozen;
//   3. LoRA adapters are trained on a synthetic task the base gets wrong
//      (task.h: reversing or upper-casing words), with periodic evaluation
//      of the held-out exact-match accuracy;
//   4. it reports base vs fine-tuned accuracy, saves the adapter in PEFT's
//      layout, writes the loss curve (CSV and SVG) and can generate text.
// Ctrl-C saves a checkpoint; the next run resumes from it. Everything is
// deterministic for a seed: a resumed run ends with the same loss as an
// uninterrupted one.
//
// On the CPU the training steps are the ones generated at build time
// (cpu_steps.h; the default preset and LoRA flags), or, for other settings,
// the Trainer's, compiled by the JIT at start-up (one line says why). With
// --device cuda they are the generated GPU steps of the build (gpu_steps.h;
// presets tiny and gpu), and evaluation and generation run on the GPU as
// well; the base, the checkpoints and the adapter are the same files
// whichever step ran.
//
// This file is the command-line driver; the model set-up (quantize + LoRA),
// checkpoints and text data live in the files beside it.
#include <tessera/atomic_file.h>
#include <tessera/tessera.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "cpu_steps.h"
#include "finetune_model.h"
#include "flags.h"
#include "loss_curve.h"
#include "progress.h"
#include "task.h"
#include "text_data.h"

#ifndef TESSERA_CORPUS_DIR
#define TESSERA_CORPUS_DIR "data/corpus"
#endif

using namespace tessera;
namespace fs = std::filesystem;

namespace finetune {
namespace {

std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

// Exit status for an interrupted run (as a shell reports SIGINT).
constexpr int kInterruptedStatus = 130;

void declare_flags(Flags& f) {
  f.add_string("preset", "cpu", "model and run size: tiny (seconds, for tests), cpu (under a minute on 2 cores), gpu (a larger model for a GPU)", {"tiny", "cpu", "gpu"});
  f.add_string("device", "auto",
               "where to run: cpu; cuda (the build's generated GPU steps, which exist for --preset tiny and gpu with "
               "the default --lora-* flags; params and AdamW state stay on the GPU, and evaluation and generation "
               "run there too); auto (cuda when this build has GPU steps for the run's settings and a CUDA device "
               "is present, else cpu)",
               {"auto", "cpu", "cuda"});
  f.add_string("cpu-steps", "auto",
               "on the CPU, which training steps run: generated (built with the app, for " +
                   describe_configs(generated_cpu_configs(), StepKind::pretrain) +
                   ", the QLoRA step with the default --lora-* flags; nothing is compiled at start-up), jit "
                   "(compiled by Halide's JIT at start-up, for any settings), auto (generated where they exist for "
                   "the run's settings, else jit, saying why)",
               {"auto", "generated", "jit"});
  f.add_bool("tf32", false, "with --device cuda: f32 matrix products on TF32 tensor cores (as PyTorch's allow_tf32)");
  f.add_string("task", "reverse", "the fine-tuning task: reverse or upper-case short words", {"reverse", "upper"});
  f.add_string("out", "runs/finetune", "folder for checkpoints, the adapter, the loss curve");
  f.add_string("base", "", "base model checkpoint (safetensors); default <out>/base.safetensors, pretrained and saved there when missing");
  f.add_string("corpus", TESSERA_CORPUS_DIR, "folder of .txt files to pretrain the base on");
  f.add_int("pretrain-steps", -1, "base pretraining steps (-1: the preset's)", -1);
  f.add_int("steps", -1, "fine-tuning steps (-1: the preset's)", -1);
  f.add_double("lr", -1, "fine-tuning learning rate (-1: the preset's; preset gpu decays it linearly to 0)");
  f.add_int("lora-r", 8, "LoRA rank r", 1);
  f.add_double("lora-alpha", 16, "LoRA alpha (the update is scaled by alpha / r)");
  f.add_double("lora-dropout", 0, "LoRA dropout on the adapter input, in [0, 1)");
  f.add_string("lora-targets", "c_attn,c_proj,c_fc", "comma-separated module names to adapt (matched by name suffix)");
  f.add_int("eval-every", -1, "evaluate held-out accuracy every N fine-tuning steps (-1: the preset's)", -1);
  f.add_int("eval-size", 64, "held-out examples per evaluation", 1);
  f.add_int("checkpoint-every", 100, "save a resumable checkpoint every N steps", 1);
  f.add_bool("resume", true, "resume from <out>'s checkpoint when there is one");
  f.add_int("seed", 1234, "seed of the initialization, the batches and the held-out set", 0);
  f.add_string("adapter", "", "evaluate (and --prompt) with this saved adapter folder instead of training one");
  f.add_int("interrupt-at", 0, "testing aid: act as if Ctrl-C came after this fine-tuning step (0: never)", 0);
  f.add_string("prompt", "", "after training, generate from this prompt (e.g. 'lamp>')");
  f.add_int("generate", 16, "characters to generate from --prompt", 1);
  f.add_int("log-every", 50, "without a terminal, print a progress line every N steps", 1);
}

// Wall time spent in training steps alone (not evaluation or checkpoints),
// for the throughput line after each phase.
class StepTimer {
 public:
  template <typename F>
  double time(F&& step) {
    const auto start = std::chrono::steady_clock::now();
    const double loss = step();
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++steps_;
    return loss;
  }
  void report(const char* phase, long long tokens_per_step) const {
    if (steps_ == 0 || seconds_ <= 0) return;
    std::printf("%s: %lld steps in %.2f s of training steps: %.0f tokens/s, %.2f ms/step\n", phase, steps_, seconds_,
                static_cast<double>(steps_ * tokens_per_step) / seconds_, 1e3 * seconds_ / steps_);
  }

 private:
  double seconds_ = 0;
  long long steps_ = 0;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

int run(const Flags& flags) {
  RunConfig rc = preset(flags.str("preset"));
  if (flags.integer("pretrain-steps") >= 0) rc.pretrain_steps = static_cast<int>(flags.integer("pretrain-steps"));
  if (flags.integer("steps") >= 0) rc.finetune_steps = static_cast<int>(flags.integer("steps"));
  if (flags.number("lr") >= 0) rc.finetune_lr = flags.number("lr");
  if (flags.integer("eval-every") >= 0) rc.eval_every = static_cast<int>(flags.integer("eval-every"));
  rc.lora.r = static_cast<int>(flags.integer("lora-r"));
  rc.lora.alpha = flags.number("lora-alpha");
  rc.lora.dropout = flags.number("lora-dropout");
  rc.lora.targets = split_list(flags.str("lora-targets"));
  if (!(rc.lora.alpha > 0)) throw FlagError("--lora-alpha must be > 0, got " + flags.str_of("lora-alpha"));
  if (!(rc.lora.dropout >= 0 && rc.lora.dropout < 1))
    throw FlagError("--lora-dropout must be in [0, 1), got " + flags.str_of("lora-dropout"));
  if (rc.lora.targets.empty()) throw FlagError("--lora-targets names no module");
  if (!(rc.finetune_lr > 0)) throw FlagError("--lr must be > 0 (or -1 for the preset's)");
  rc.seed = static_cast<uint64_t>(flags.integer("seed"));
  rc.tf32 = flags.boolean("tf32");
  std::string device_note;
  rc.device = pick_device(flags.str("device"), rc, &device_note);
  if (!device_note.empty()) std::printf("%s\n", device_note.c_str());
  rc.cpu_steps = parse_cpu_steps(flags.str("cpu-steps"));
  if (rc.device == Device::cpu && rc.cpu_steps == CpuSteps::generated)
    for (StepKind kind : {StepKind::pretrain, StepKind::qlora})
      if (const std::string why = cpu_step_mismatch(kind, rc); !why.empty())
        throw FlagError("--cpu-steps generated: " + why);

  const fs::path out = flags.str("out");
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw Error("cannot create the output folder '" + out.string() + "': " + ec.message());
  const fs::path base_path = flags.str("base").empty() ? out / "base.safetensors" : fs::path(flags.str("base"));
  const Task task(parse_task(flags.str("task")));
  const std::vector<Example> held_out = task.held_out_set(static_cast<int>(flags.integer("eval-size")), rc.seed + 7);
  const int log_every = static_cast<int>(flags.integer("log-every"));
  const int checkpoint_every = static_cast<int>(flags.integer("checkpoint-every"));
  const bool resume = flags.boolean("resume");

  std::printf("tessera-finetune: preset %s on %s; model: gpt %lld layers, n_embd %lld, %lld heads, context %lld, batch %lld\n",
              flags.str("preset").c_str(), device_name(rc.device).c_str(), (long long)rc.gpt.n_layer,
              (long long)rc.gpt.n_embd, (long long)rc.gpt.n_head, (long long)rc.gpt.block_size, (long long)rc.gpt.batch);
  std::printf("task: %s; %zu held-out examples\n", task.describe().c_str(), held_out.size());

  std::vector<CurvePoint> curve;
  const fs::path curve_path = out / "loss.csv";
  // Bad files fail before any training.
  if (!flags.str("adapter").empty()) load_peft_adapter(flags.str("adapter"));
  for (const char* ckpt : {"finetune.ckpt.safetensors", "pretrain.ckpt.safetensors"})
    if (resume && fs::exists(out / ckpt)) check_checkpoint_file((out / ckpt).string());

  // 1. The base model.
  std::map<std::string, Buffer> base;
  if (fs::exists(base_path)) {
    base = load_base(base_path.string(), rc.gpt);
    std::printf("base: loaded %s\n", base_path.string().c_str());
    if (resume && fs::exists(curve_path)) curve = parse_curve_csv(read_file(curve_path.string()));
  } else {
    const std::vector<int32_t> corpus = encode(read_corpus(flags.str("corpus")));
    std::printf("base: pretraining on %s (%zu characters) for %d steps\n", flags.str("corpus").c_str(), corpus.size(),
                rc.pretrain_steps);
    Pretrainer pre(rc, out.string(), resume);
    std::printf("base: training on %s\n", pre.where().c_str());
    if (!pre.note().empty()) std::printf("base: %s\n", pre.note().c_str());
    if (pre.step() > 0) {
      std::printf("base: resuming pretraining at step %d\n", pre.step());
      if (fs::exists(curve_path)) curve = parse_curve_csv(read_file(curve_path.string()));
    }
    Progress bar("pretrain", rc.pretrain_steps, log_every, stdout);
    StepTimer timer;
    while (pre.step() < rc.pretrain_steps) {
      const double loss = timer.time([&] { return pre.train_step(corpus); });
      curve.push_back({"pretrain", pre.step(), loss, -1});
      bar.update(pre.step(), loss, rc.gpt.batch * rc.gpt.block_size);
      if (g_interrupted || pre.step() % checkpoint_every == 0) {
        pre.save_checkpoint();
        write_file_atomically(curve_path.string(), curve_csv(curve));
      }
      if (g_interrupted) {
        bar.finish();
        std::printf("interrupted: pretraining checkpoint saved at step %d in %s; run again to resume\n", pre.step(),
                    out.string().c_str());
        return kInterruptedStatus;
      }
    }
    bar.finish();
    timer.report("pretrain", rc.gpt.batch * rc.gpt.block_size);
    if (!pre.summary().empty()) std::printf("pretrain: %s\n", pre.summary().c_str());
    base = pre.params();
    save_base(base_path.string(), base, rc.gpt);
    pre.remove_checkpoint();
    std::printf("base: saved %s\n", base_path.string().c_str());
  }

  // 2-3. Quantize the base to NF4, add adapters, fine-tune.
  Finetuner ft(rc, base, out.string());
  std::printf("finetune: %s, on %s\n", ft.describe().c_str(), ft.where().c_str());
  if (!ft.note().empty()) std::printf("finetune: %s\n", ft.note().c_str());
  auto generate = [&](const std::vector<std::string>& prompts) { return ft.answers(prompts); };
  const double base_accuracy = ft.base_accuracy(task, held_out);
  std::printf("held-out accuracy of the NF4 base (no adapter): %.1f%%\n", 100 * base_accuracy);
  if (!flags.str("adapter").empty()) {
    ft.load_adapter(flags.str("adapter"));
    const double acc = task.accuracy(held_out, generate);
    std::printf("held-out accuracy: base %.1f%% -> with adapter %s %.1f%%\n", 100 * base_accuracy,
                flags.str("adapter").c_str(), 100 * acc);
    if (!flags.str("prompt").empty())
      std::printf("generated: %s\n", ft.generate(flags.str("prompt"), static_cast<int>(flags.integer("generate"))).c_str());
    return 0;
  }
  const int interrupt_at = static_cast<int>(flags.integer("interrupt-at"));
  if (resume && ft.resume()) {
    std::printf("finetune: resuming at step %d\n", ft.step());
    if (fs::exists(curve_path)) curve = parse_curve_csv(read_file(curve_path.string()));
  } else {
    curve.erase(std::remove_if(curve.begin(), curve.end(), [](const CurvePoint& p) { return p.phase == "finetune"; }),
                curve.end());
  }
  const int offset = rc.pretrain_steps;
  Progress bar("finetune", rc.finetune_steps, log_every, stdout);
  StepTimer timer;
  double accuracy = -1;
  while (ft.step() < rc.finetune_steps) {
    const double loss = timer.time([&] { return ft.train_step(task); });
    CurvePoint p{"finetune", offset + ft.step(), loss, -1};
    bar.update(ft.step(), loss, rc.gpt.batch * rc.gpt.block_size);
    if (ft.step() % rc.eval_every == 0 || ft.step() == rc.finetune_steps) {
      accuracy = task.accuracy(held_out, generate);
      p.accuracy = accuracy;
      bar.note("step " + std::to_string(ft.step()) + ": held-out accuracy " + fmt("%.1f%%", 100 * accuracy));
    }
    curve.push_back(p);
    if (ft.step() == interrupt_at) g_interrupted = true;
    if (g_interrupted || ft.step() % checkpoint_every == 0) {
      ft.save_checkpoint();
      write_file_atomically(curve_path.string(), curve_csv(curve));
    }
    if (g_interrupted) {
      bar.finish();
      std::printf("interrupted: checkpoint saved at step %d in %s; run again to resume\n", ft.step(),
                  out.string().c_str());
      return kInterruptedStatus;
    }
  }
  bar.finish();
  timer.report("finetune", rc.gpt.batch * rc.gpt.block_size);
  if (accuracy < 0) accuracy = task.accuracy(held_out, generate);
  if (!ft.summary().empty()) std::printf("finetune: %s\n", ft.summary().c_str());

  // 4. Report and save.
  std::printf("final loss %.9g\n", curve.empty() ? 0.0 : curve.back().loss);
  std::printf("held-out accuracy: base %.1f%% -> fine-tuned %.1f%%\n", 100 * base_accuracy, 100 * accuracy);
  const fs::path adapter_dir = out / "adapter";
  ft.save_adapter(adapter_dir.string(), base_path.string());
  ft.save_checkpoint();
  write_file_atomically(curve_path.string(), curve_csv(curve));
  write_file_atomically((out / "loss.svg").string(),
                        curve_svg(curve, "tessera-finetune: " + task_name(task.kind()) + ", preset " + flags.str("preset")));
  std::printf("saved: adapter (PEFT layout) %s, loss curve %s and %s\n", adapter_dir.string().c_str(),
              curve_path.string().c_str(), (out / "loss.svg").string().c_str());
  for (const Example& e : std::vector<Example>(held_out.begin(), held_out.begin() + std::min<size_t>(3, held_out.size())))
    std::printf("  %s%s   (expected %s)\n", e.prompt.c_str(), ft.answers({e.prompt})[0].c_str(), e.answer.c_str());
  if (!flags.str("prompt").empty())
    std::printf("generated: %s\n", ft.generate(flags.str("prompt"), static_cast<int>(flags.integer("generate"))).c_str());
  return 0;
}

}  // namespace
}  // namespace finetune

int main(int argc, char** argv) {
  using namespace finetune;
  Flags flags("tessera-finetune",
              "QLoRA fine-tuning of a small GPT on the CPU or a GPU: pretrain (or load) a base model,\n"
              "quantize it to NF4, train LoRA adapters on a synthetic task, and report the held-out\n"
              "accuracy before and after. Ctrl-C saves a checkpoint; running again resumes.");
  declare_flags(flags);
  try {
    if (!flags.parse(argc, argv)) return 0;
  } catch (const FlagError& e) {
    std::fprintf(stderr, "tessera-finetune: %s\n", e.what());
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress and results interleave in order in a log
  std::signal(SIGINT, on_sigint);
  try {
    return run(flags);
  } catch (const FlagError& e) {
    std::fprintf(stderr, "tessera-finetune: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera-finetune: error: %s\n", e.what());
    return 1;
  }
}
