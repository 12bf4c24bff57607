// tessera-finetune's --device flag without a GPU (label cpu; CI runs it): the
// GPU hidden with CUDA_VISIBLE_DEVICES=-1, so it holds on a GPU machine too.
// --device cuda fails before any training with a clear message (no device,
// or a build without GPU steps); settings that differ from the generated GPU
// steps are named; --device auto falls back to the CPU. Runs the app as a
// separate process; no step is trained.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "process_util.h"

namespace fs = std::filesystem;

namespace {

using Result = tessera::test_util::ProcessResult;

class FinetuneDevice : public ::testing::Test {
 protected:
  static fs::path root() {
    static const fs::path r = fs::temp_directory_path() / ("tessera_finetune_device_test_" + std::to_string(::getpid()));
    return r;
  }
  static void TearDownTestSuite() { fs::remove_all(root()); }
  // The app with every GPU hidden.
  Result run(const std::string& args) {
    fs::create_directories(root());
    return tessera::test_util::run_process("CUDA_VISIBLE_DEVICES=-1 " + std::string(TESSERA_FINETUNE_PATH) + " " + args,
                                           root());
  }
  std::string out(const std::string& name) { return " --out " + (root() / name).string() + " "; }
};

#ifdef TESSERA_FINETUNE_HAS_GPU_STEPS
constexpr bool kHasGpuSteps = true;
#else
constexpr bool kHasGpuSteps = false;
#endif

}  // namespace

TEST_F(FinetuneDevice, CudaWithoutADeviceFailsBeforeTraining) {
  Result r = run("--preset tiny --device cuda" + out("nodevice"));
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("tessera-finetune: error: --device cuda: "), std::string::npos) << r.err;
  if (kHasGpuSteps)
    EXPECT_NE(r.err.find("CUDA device"), std::string::npos) << "should say that no device is usable: " << r.err;
  else
    EXPECT_NE(r.err.find("built without the CUDA toolkit"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(root() / "nodevice" / "base.safetensors")) << "nothing should have been trained";
}

TEST_F(FinetuneDevice, SettingsTheGpuStepsWereNotGeneratedForAreNamed) {
  if (!kHasGpuSteps) GTEST_SKIP() << "built without the CUDA toolkit: no generated GPU steps to compare with";
  Result r = run("--preset cpu --device cuda" + out("mismatch"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--preset cpu"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--preset tiny or gpu"), std::string::npos) << "should say what is supported: " << r.err;
  r = run("--preset tiny --device cuda --lora-r 4" + out("mismatch"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--lora-r is 4, the generated QLoRA step has r 8"), std::string::npos) << r.err;
  r = run("--preset gpu --device cuda --lora-targets c_attn" + out("mismatch"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--lora-targets is c_attn"), std::string::npos) << r.err;
  r = run("--preset tiny --device cuda --lora-dropout 0.1" + out("mismatch"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--lora-dropout is 0.1"), std::string::npos) << r.err;
}

TEST_F(FinetuneDevice, AutoFallsBackToTheCpu) {
  // A missing adapter stops the run right after the header line, before any training.
  Result r = run("--preset tiny --device auto --adapter " + (root() / "no_adapter").string() + out("auto"));
  EXPECT_EQ(r.status, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("preset tiny on the CPU"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("no_adapter"), std::string::npos) << r.err;
}

TEST_F(FinetuneDevice, HelpSaysWhereEvaluationRuns) {
  Result r = run("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--device auto|cpu|cuda"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("evaluation and generation"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--[no-]tf32"), std::string::npos) << r.out;
}
