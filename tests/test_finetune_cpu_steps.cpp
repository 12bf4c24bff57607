// tessera-finetune's training steps generated at build time for the CPU
// (apps/finetune/cpu_steps.h; label cpu, CI runs it), against the JIT
// Trainer they replace, at the default preset (cpu):
//   - the same losses, step by step, for the pretraining and the QLoRA
//     step from the same seed, and the same params: bitwise (the same graph
//     and schedule compiled for the same CPU);
//   - the same evaluation (greedy answers and generation through the
//     generated evaluation graph and through the JIT's);
//   - checkpoints in one format (byte-identical files after the same
//     steps): each backend resumes the other's run with the same losses;
//   - the portable CPU variant (TESSERA_AOT_VARIANT=x86-64-linux-sse41)
//     gives the JIT's losses within float rounding;
//   - the app says which step runs, falls back to the JIT in one line when
//     the flags change the step (--lora-r), and refuses --cpu-steps
//     generated for such flags before any training.
// The in-process part links the app's code (tessera_finetune_core); the
// last test runs the app as a separate process.
#include <gtest/gtest.h>
#include <tessera/error.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>

#include "finetune_model.h"
#include "process_util.h"
#include "task.h"
#include "text_data.h"

namespace fs = std::filesystem;
using namespace finetune;

namespace {

fs::path root() {
  static const fs::path r = fs::temp_directory_path() / ("tessera_finetune_cpu_steps_" + std::to_string(::getpid()));
  return r;
}

class FinetuneCpuSteps : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { fs::remove_all(root()); }
  static RunConfig config(CpuSteps steps) {
    RunConfig rc = preset("cpu");
    rc.seed = 1234;
    rc.device = Device::cpu;
    rc.cpu_steps = steps;
    return rc;
  }
  static std::string dir(const std::string& name) {
    fs::create_directories(root() / name);
    return (root() / name).string();
  }
  static const std::vector<int32_t>& corpus() {
    static const std::vector<int32_t> c = encode(read_corpus(TESSERA_CORPUS_DIR));
    return c;
  }
};

// The generated step and the JIT's compile the same graph with the same
// schedule (cpu_x86) for the same CPU, so they give the same bits.
void expect_same_loss(double generated, double jit, int step) {
  EXPECT_EQ(generated, jit) << "step " << step << ": generated " << generated << ", JIT " << jit << " (relative "
                            << std::fabs(generated - jit) / std::fabs(jit) << ")";
}

void expect_same_params(const std::map<std::string, tessera::Buffer>& generated,
                        const std::map<std::string, tessera::Buffer>& jit) {
  ASSERT_EQ(generated.size(), jit.size());
  for (const auto& [name, want] : jit) {
    const tessera::Buffer& got = generated.at(name);
    ASSERT_EQ(got.type(), want.type()) << name;
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.bytes()), 0) << "param " << name << " differs";
  }
}

}  // namespace

TEST_F(FinetuneCpuSteps, PretrainingGivesTheJitLossesAndResumesAcrossBackends) {
  constexpr int kSteps = 6;
  Pretrainer generated(config(CpuSteps::generated), dir("pre_gen"), false);
  Pretrainer jit(config(CpuSteps::jit), dir("pre_jit"), false);
  EXPECT_EQ(generated.where(), "the CPU, generated step finetune_pretrain_cpu, variant host");
  EXPECT_EQ(jit.where(), "the CPU, JIT-compiled step");
  EXPECT_EQ(generated.note(), "");
  for (int k = 1; k <= kSteps; ++k) expect_same_loss(generated.train_step(corpus()), jit.train_step(corpus()), k);
  expect_same_params(generated.params(), jit.params());

  // The generated run's checkpoint, resumed by the JIT, continues the generated run.
  generated.save_checkpoint();
  Pretrainer resumed(config(CpuSteps::jit), dir("pre_gen"), true);
  ASSERT_EQ(resumed.step(), kSteps);
  for (int k = kSteps + 1; k <= kSteps + 2; ++k)
    expect_same_loss(generated.train_step(corpus()), resumed.train_step(corpus()), k);
  // And the JIT's checkpoint resumed by a generated step.
  jit.save_checkpoint();
  Pretrainer back(config(CpuSteps::generated), dir("pre_jit"), true);
  ASSERT_EQ(back.step(), kSteps);
  for (int k = kSteps + 1; k <= kSteps + 2; ++k)
    expect_same_loss(back.train_step(corpus()), jit.train_step(corpus()), k);
}

TEST_F(FinetuneCpuSteps, QloraGivesTheJitLossesAnswersAndCheckpoints) {
  constexpr int kSteps = 6;
  // A base from a few pretraining steps (either backend: the test above shows they agree).
  Pretrainer pre(config(CpuSteps::generated), dir("base"), false);
  for (int k = 0; k < 20; ++k) pre.train_step(corpus());
  const std::map<std::string, tessera::Buffer> base = pre.params();

  Finetuner generated(config(CpuSteps::generated), base, dir("ft_gen"));
  Finetuner jit(config(CpuSteps::jit), base, dir("ft_jit"));
  EXPECT_EQ(generated.where(), "the CPU, generated step finetune_qlora_cpu, variant host");
  EXPECT_EQ(jit.where(), "the CPU, JIT-compiled step");
  EXPECT_EQ(generated.describe(), jit.describe());
  const Task task(TaskKind::reverse);
  const std::vector<Example> held_out = task.held_out_set(8, 1234 + 7);
  std::vector<std::string> prompts;
  for (const Example& e : held_out) prompts.push_back(e.prompt);
  EXPECT_EQ(generated.answers(prompts), jit.answers(prompts));

  for (int k = 1; k <= kSteps; ++k) expect_same_loss(generated.train_step(task), jit.train_step(task), k);
  EXPECT_EQ(generated.answers(prompts), jit.answers(prompts));
  EXPECT_EQ(generated.generate("cat>", 12), jit.generate("cat>", 12));

  // The same checkpoint, byte for byte (adapters, AdamW moments, step, lr).
  generated.save_checkpoint();
  jit.save_checkpoint();
  const std::string a = tessera::test_util::slurp(root() / "ft_gen" / "finetune.ckpt.safetensors");
  EXPECT_GT(a.size(), 16384u * 4);
  EXPECT_TRUE(a == tessera::test_util::slurp(root() / "ft_jit" / "finetune.ckpt.safetensors"))
      << "the generated and the JIT fine-tune's checkpoints differ";
  Finetuner resumed(config(CpuSteps::jit), base, dir("ft_gen"));
  ASSERT_TRUE(resumed.resume());
  ASSERT_EQ(resumed.step(), kSteps);
  for (int k = kSteps + 1; k <= kSteps + 2; ++k)
    expect_same_loss(generated.train_step(task), resumed.train_step(task), k);
}

// The portable variant (x86-64-linux-sse41: 4-wide vectors, no FMA) is what
// a CPU without the build machine's features runs. Its float operations are
// contracted and vectorized differently from the host variant's, so its
// losses match the JIT's closely but not bitwise.
TEST_F(FinetuneCpuSteps, ThePortableVariantRunsTheSameStep) {
  ASSERT_EQ(generated_cpu_variants(), (std::vector<std::string>{"host", "x86-64-linux-sse41"}));
  ::setenv("TESSERA_AOT_VARIANT", "x86-64-linux-sse41", 1);
  std::unique_ptr<Pretrainer> portable;
  try {
    portable = std::make_unique<Pretrainer>(config(CpuSteps::generated), dir("pre_sse41"), false);
  } catch (...) {
    ::unsetenv("TESSERA_AOT_VARIANT");
    throw;
  }
  ::unsetenv("TESSERA_AOT_VARIANT");
  Pretrainer jit(config(CpuSteps::jit), dir("pre_sse41_jit"), false);
  EXPECT_EQ(portable->where(), "the CPU, generated step finetune_pretrain_cpu, variant x86-64-linux-sse41");
  for (int k = 1; k <= 4; ++k) {
    const double a = portable->train_step(corpus()), b = jit.train_step(corpus());
    EXPECT_NEAR(a, b, 1e-5 * std::fabs(b)) << "step " << k;
  }

  // A variant the steps do not have is refused, naming those they have.
  ::setenv("TESSERA_AOT_VARIANT", "x86-64-linux-avx512", 1);
  try {
    Pretrainer refused(config(CpuSteps::generated), dir("pre_refused"), false);
    ADD_FAILURE() << "TESSERA_AOT_VARIANT=x86-64-linux-avx512 should be refused";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find("TESSERA_AOT_VARIANT=x86-64-linux-avx512: the generated CPU steps have the "
                                         "variants host, x86-64-linux-sse41"),
              std::string::npos)
        << e.what();
  }
  ::unsetenv("TESSERA_AOT_VARIANT");
}

TEST_F(FinetuneCpuSteps, TheAppSaysWhichStepRunsAndFallsBackToTheJitInOneLine) {
  const std::string app = TESSERA_FINETUNE_PATH;
  const std::string out = " --out " + dir("app") + " ";
  const std::string short_run = " --pretrain-steps 2 --steps 2 --eval-every 2 --eval-size 4 ";
  // The defaults (preset cpu): both steps generated, nothing JIT-compiled.
  tessera::test_util::ProcessResult r = tessera::test_util::run_process(app + short_run + out, root());
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("base: training on the CPU, generated step finetune_pretrain_cpu, variant host\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(", on the CPU, generated step finetune_qlora_cpu, variant host\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("JIT"), std::string::npos) << r.out;

  // --lora-r 4 (the base reused): the QLoRA step falls back to the JIT, saying why in one line.
  r = tessera::test_util::run_process(app + short_run + out + "--no-resume --lora-r 4", root());
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(", on the CPU, JIT-compiled step\nfinetune: no generated CPU step for this run: --lora-r is 4, "
                       "the generated QLoRA step has r 8; the CPU steps of this build are generated for --preset cpu "
                       "with --lora-r 8"),
            std::string::npos)
      << r.out;

  // --cpu-steps generated with such flags: refused before any training.
  r = tessera::test_util::run_process(
      app + short_run + " --out " + dir("refused") + " --cpu-steps generated --lora-r 4", root());
  EXPECT_EQ(r.status, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--cpu-steps generated: --lora-r is 4"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root() / "refused" / "base.safetensors")) << "nothing should have been trained";
}
