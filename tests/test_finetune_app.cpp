// tessera-finetune (apps/finetune), run as a separate process at the tiny
// preset: the whole pipeline (pretrain, NF4, LoRA fine-tune, evaluation,
// adapter export) and its accuracy gain; resuming after an interruption
// gives the same final loss as an uninterrupted run; a saved adapter
// reloads to the same answers; and bad flags, missing and corrupt files
// fail clearly with a non-zero exit, leaving good checkpoints untouched.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "finetune_output.h"
#include "process_util.h"

namespace fs = std::filesystem;

namespace {

using Result = tessera::test_util::ProcessResult;
using tessera::test_util::held_out_accuracy;
using tessera::test_util::number_after;
using tessera::test_util::slurp;

// A fixed base folder shared by the tests of one process: pretraining it once
// keeps the suite short (the base checkpoint is reused by later runs).
class FinetuneApp : public ::testing::Test {
 protected:
  static fs::path root() {
    static const fs::path r = fs::temp_directory_path() / ("tessera_finetune_test_" + std::to_string(::getpid()));
    return r;
  }
  static void TearDownTestSuite() { fs::remove_all(root()); }

  Result run(const std::string& args) {
    fs::create_directories(root());
    return tessera::test_util::run_process(std::string(TESSERA_FINETUNE_PATH) + " " + args, root());
  }
  // The tiny preset with a shared base checkpoint, writing into `dir`.
  std::string tiny(const std::string& dir) {
    return "--preset tiny --eval-size 32 --out " + (root() / dir).string() + " --base " +
           (root() / "base.safetensors").string() + " ";
  }
};

}  // namespace

TEST_F(FinetuneApp, FineTuningRaisesHeldOutAccuracyAndSavesAPeftAdapter) {
  Result r = run(tiny("full") + "--prompt 'abc>'");
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  double base = -1, tuned = -1;
  ASSERT_TRUE(held_out_accuracy(r.out, base, tuned)) << r.out;
  EXPECT_LE(base, 10.0) << "the base model should not already know the task";
  EXPECT_GE(tuned, 50.0) << "the floor this test states for the tiny preset";
  EXPECT_TRUE(fs::exists(root() / "base.safetensors"));
  EXPECT_TRUE(fs::exists(root() / "full" / "adapter" / "adapter_model.safetensors"));
  const std::string config = slurp(root() / "full" / "adapter" / "adapter_config.json");
  EXPECT_NE(config.find("\"peft_type\": \"LORA\""), std::string::npos) << config;
  EXPECT_NE(slurp(root() / "full" / "loss.csv").find("finetune,"), std::string::npos);
  EXPECT_NE(slurp(root() / "full" / "loss.svg").find("<svg"), std::string::npos);

  // The saved adapter, loaded into a fresh run, gives the same accuracy and the same generation.
  Result again = run(tiny("reload") + "--adapter " + (root() / "full" / "adapter").string() + " --prompt 'abc>'");
  ASSERT_EQ(again.status, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("with adapter"), std::string::npos) << again.out;
  EXPECT_EQ(number_after(again.out, "with adapter \\S+"), tuned) << again.out;
  std::smatch g1, g2;
  ASSERT_TRUE(std::regex_search(r.out, g1, std::regex("generated: (.*)")));
  ASSERT_TRUE(std::regex_search(again.out, g2, std::regex("generated: (.*)")));
  EXPECT_EQ(g1[1], g2[1]);
}

TEST_F(FinetuneApp, ResumingAfterAnInterruptionEndsWithTheSameLoss) {
  Result straight = run(tiny("straight") + "--steps 30");
  ASSERT_EQ(straight.status, 0) << straight.err;
  Result cut = run(tiny("resumed") + "--steps 30 --interrupt-at 7");
  EXPECT_EQ(cut.status, 130) << cut.out << cut.err;
  EXPECT_NE(cut.out.find("interrupted: checkpoint saved at step 7"), std::string::npos) << cut.out;
  Result rest = run(tiny("resumed") + "--steps 30");
  ASSERT_EQ(rest.status, 0) << rest.err;
  EXPECT_NE(rest.out.find("resuming at step 7"), std::string::npos) << rest.out;
  const double a = number_after(straight.out, "final loss"), b = number_after(rest.out, "final loss");
  EXPECT_GT(a, 0);
  EXPECT_EQ(a, b) << "uninterrupted " << a << " vs resumed " << b;
}

TEST_F(FinetuneApp, BadFlagsAndFilesFailClearlyAndKeepGoodCheckpoints) {
  Result r = run("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--lora-r N"), std::string::npos) << r.out;

  r = run("--lora-rank 4");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown flag '--lora-rank'"), std::string::npos) << r.err;
  r = run("--steps many");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--steps: 'many' is not a whole number"), std::string::npos) << r.err;
  r = run("--device tpu");
  EXPECT_EQ(r.status, 2);
  r = run("--lora-dropout 1.5");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--lora-dropout must be in [0, 1), got 1.5"), std::string::npos) << r.err;
  r = run("--device cuda");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << r.err;

  r = run(tiny("missing") + "--adapter " + (root() / "no_such_adapter").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no_such_adapter"), std::string::npos) << r.err;

  // A corrupt fine-tuning checkpoint: a clear error, and the file is left as it was.
  fs::create_directories(root() / "corrupt");
  const fs::path ckpt = root() / "corrupt" / "finetune.ckpt.safetensors";
  std::ofstream(ckpt, std::ios::binary) << "this is not a safetensors file";
  r = run(tiny("corrupt"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("finetune.ckpt.safetensors"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(ckpt), "this is not a safetensors file");

  // A corrupt base checkpoint likewise.
  const fs::path bad_base = root() / "bad_base.safetensors";
  std::ofstream(bad_base, std::ios::binary) << std::string(7, '\0');
  r = run("--preset tiny --out " + (root() / "badbase").string() + " --base " + bad_base.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("bad_base.safetensors"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(bad_base), std::string(7, '\0'));
}
