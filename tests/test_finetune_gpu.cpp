// tessera-finetune --device cuda (the generated GPU steps) against the CPU
// path, run as separate processes at the tiny preset (label gpu; skips
// without a CUDA device or when the build has no GPU steps):
//   - pretraining and fine-tuning losses on the GPU follow the CPU's
//     (JIT) from the same seed, base and batches, step by step, in the
//     default variant and, on an sm90 device, in the sm80 variant too;
//   - a full GPU run learns the task (the CPU test's accuracy floor), its
//     adapter reloads on the GPU to the same accuracy and generation, and on
//     the CPU to the same accuracy within one held-out example;
//   - interrupting and resuming on the GPU ends with the same loss as an
//     uninterrupted GPU run, and a GPU checkpoint resumes on the CPU.
// Tolerances: the GPU computes in f32 like the CPU (no TF32 unless --tf32),
// but its products and reductions sum in another order, and its exp/tanh
// differ by an ulp, so losses differ by ~1e-6 relative at the first step
// (a forward pass from equal params: bounded here by 1e-4) and drift as
// AdamW amplifies those differences (its first updates are +-lr whatever the
// gradient's size): 2e-3 relative over 20 steps, the bound test_aot_gpu
// measured for the same steps over 30. Links no libHalide (the app it runs
// does); with GPU steps, it links the tiny pretraining step for its probe of
// the GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <unistd.h>

#ifdef TESSERA_FINETUNE_HAS_GPU_STEPS
#include "finetune_pretrain_tiny.h"
#endif
#include "finetune_output.h"
#include "process_util.h"

namespace fs = std::filesystem;

namespace {

using Result = tessera::test_util::ProcessResult;
using tessera::test_util::held_out_accuracy;
using tessera::test_util::number_after;
using tessera::test_util::slurp;

// Compute capability of GPU 0 (e.g. 90), or 0: what the generated steps
// themselves pick their variant by.
int gpu_capability() {
#ifdef TESSERA_FINETUNE_HAS_GPU_STEPS
  return tessera_aot::finetune_pretrain_tiny::gpu_capability();
#else
  return 0;
#endif
}

// The app and the corpus: the environment's (TESSERA_FINETUNE, TESSERA_CORPUS_DIR)
// when set (a build carried to another machine), else the build's.
std::string app() {
  const char* e = std::getenv("TESSERA_FINETUNE");
  return e ? e : TESSERA_FINETUNE_PATH;
}
std::string corpus() {
  const char* e = std::getenv("TESSERA_CORPUS_DIR");
  if (e) return e;
  if (fs::exists(TESSERA_CORPUS_DIR)) return TESSERA_CORPUS_DIR;
  return "data/corpus";
}

// loss.csv: phase -> step -> loss.
std::map<std::string, std::map<int, double>> read_curve(const fs::path& csv) {
  std::map<std::string, std::map<int, double>> out;
  std::istringstream in(slurp(csv));
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string phase, step, loss;
    std::getline(ls, phase, ',');
    std::getline(ls, step, ',');
    std::getline(ls, loss, ',');
    if (!phase.empty()) out[phase][std::stoi(step)] = std::stod(loss);
  }
  return out;
}

class FinetuneGpu : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef TESSERA_FINETUNE_HAS_GPU_STEPS
    GTEST_SKIP() << "built without the CUDA toolkit: tessera-finetune has no GPU steps";
#endif
    capability_ = gpu_capability();
    if (capability_ == 0) GTEST_SKIP() << "no CUDA device (or driver): the GPU path of tessera-finetune is not run";
    if (capability_ < 80) GTEST_SKIP() << "the GPU steps need compute capability 8.0 or newer";
  }
  static fs::path root() {
    static const fs::path r = fs::temp_directory_path() / ("tessera_finetune_gpu_test_" + std::to_string(::getpid()));
    return r;
  }
  static void TearDownTestSuite() { fs::remove_all(root()); }

  Result run(const std::string& args, const std::string& env = "") {
    fs::create_directories(root());
    Result r = tessera::test_util::run_process(env + " " + app() + " --corpus " + corpus() + " " + args, root());
    if (std::getenv("TESSERA_TEST_VERBOSE")) std::printf("$ %s\n%s%s", args.c_str(), r.out.c_str(), r.err.c_str());
    return r;
  }
  std::string dir(const std::string& name) const { return (root() / name).string(); }

  // The curves of `a` and `b` in `phase` agree step by step: the first loss
  // within 1e-4 relative, the rest within 2e-3 (see the top of the file).
  void expect_same_curve(const fs::path& a, const fs::path& b, const std::string& phase, int steps,
                         const std::string& what) {
    auto ca = read_curve(a), cb = read_curve(b);
    ASSERT_EQ(static_cast<int>(ca[phase].size()), steps) << what << ": " << a;
    ASSERT_EQ(static_cast<int>(cb[phase].size()), steps) << what << ": " << b;
    auto ia = ca[phase].begin(), ib = cb[phase].begin();
    for (int k = 0; k < steps; ++k, ++ia, ++ib) {
      const double tol = (k == 0 ? 1e-4 : 2e-3) * std::fabs(ia->second);
      EXPECT_NEAR(ib->second, ia->second, tol) << what << ", " << phase << " step " << ia->first;
    }
  }

  int capability_ = 0;
};

}  // namespace

TEST_F(FinetuneGpu, LossesFollowTheCpuPath) {
  const std::string common = "--preset tiny --pretrain-steps 20 --steps 20 --eval-size 8 --log-every 100 ";
  Result cpu = run(common + "--device cpu --out " + dir("cpu"));
  ASSERT_EQ(cpu.status, 0) << cpu.out << cpu.err;

  // Pretraining on the GPU from the same seed: the same curve.
  Result gpu = run(common + "--device cuda --out " + dir("gpu"));
  ASSERT_EQ(gpu.status, 0) << gpu.out << gpu.err;
  EXPECT_NE(gpu.out.find("variant host-cuda-sm"), std::string::npos) << gpu.out;
  EXPECT_NE(gpu.out.find("peak in use"), std::string::npos) << gpu.out;
  expect_same_curve(root() / "cpu" / "loss.csv", root() / "gpu" / "loss.csv", "pretrain", 20, "GPU pretraining");

  // Fine-tuning on the GPU from the CPU's base: the same curve.
  const std::string cpu_base = " --base " + (root() / "cpu" / "base.safetensors").string() + " ";
  Result ft = run(common + "--device cuda --out " + dir("gpu_ft") + cpu_base);
  ASSERT_EQ(ft.status, 0) << ft.out << ft.err;
  expect_same_curve(root() / "cpu" / "loss.csv", root() / "gpu_ft" / "loss.csv", "finetune", 20, "GPU fine-tuning");

  // On an sm90 device the default is the sm90 variant; the sm80 one runs there too.
  if (capability_ >= 90) {
    EXPECT_NE(gpu.out.find("variant host-cuda-sm90"), std::string::npos) << gpu.out;
    const std::string sm80_env = "TESSERA_AOT_VARIANT=host-cuda-sm80";
    Result sm80 = run(common + "--device cuda --out " + dir("gpu_sm80"), sm80_env);
    ASSERT_EQ(sm80.status, 0) << sm80.out << sm80.err;
    EXPECT_NE(sm80.out.find("variant host-cuda-sm80"), std::string::npos) << sm80.out;
    expect_same_curve(root() / "cpu" / "loss.csv", root() / "gpu_sm80" / "loss.csv", "pretrain", 20, "sm80 pretraining");
    Result sm80_ft = run(common + "--device cuda --out " + dir("gpu_sm80_ft") + cpu_base, sm80_env);
    ASSERT_EQ(sm80_ft.status, 0) << sm80_ft.out << sm80_ft.err;
    expect_same_curve(root() / "cpu" / "loss.csv", root() / "gpu_sm80_ft" / "loss.csv", "finetune", 20,
                      "sm80 fine-tuning");
  }
}

TEST_F(FinetuneGpu, FineTuningOnTheGpuLearnsAndItsAdapterReloads) {
  const std::string base = " --base " + (root() / "full" / "base.safetensors").string() + " ";
  Result r = run("--preset tiny --device cuda --eval-size 32 --log-every 100 --prompt 'abc>' --out " + dir("full"));
  ASSERT_EQ(r.status, 0) << r.out << r.err;
  double base_acc = -1, tuned = -1;
  ASSERT_TRUE(held_out_accuracy(r.out, base_acc, tuned)) << r.out;
  EXPECT_LE(base_acc, 10.0) << "the base model should not already know the task";
  EXPECT_GE(tuned, 50.0) << "the floor test_finetune_app states for the tiny preset";
  EXPECT_TRUE(fs::exists(root() / "full" / "adapter" / "adapter_model.safetensors"));
  EXPECT_NE(slurp(root() / "full" / "adapter" / "adapter_config.json").find("\"peft_type\": \"LORA\""),
            std::string::npos);
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;

  // Reloaded on the GPU: the same accuracy and generation, exactly.
  const std::string adapter = " --adapter " + (root() / "full" / "adapter").string() + " ";
  Result again = run("--preset tiny --device cuda --eval-size 32 --prompt 'abc>' --out " + dir("reload_gpu") + base + adapter);
  ASSERT_EQ(again.status, 0) << again.out << again.err;
  EXPECT_EQ(number_after(again.out, "with adapter \\S+"), tuned) << again.out;
  std::smatch g1, g2;
  ASSERT_TRUE(std::regex_search(r.out, g1, std::regex("generated: (.*)"))) << r.out;
  ASSERT_TRUE(std::regex_search(again.out, g2, std::regex("generated: (.*)"))) << again.out;
  EXPECT_EQ(g1[1], g2[1]);

  // Reloaded on the CPU: the same accuracy within one of the 32 examples
  // (a greedy argmax can flip where two logits nearly tie).
  Result cpu = run("--preset tiny --device cpu --eval-size 32 --out " + dir("reload_cpu") + base + adapter);
  ASSERT_EQ(cpu.status, 0) << cpu.out << cpu.err;
  EXPECT_NEAR(number_after(cpu.out, "with adapter \\S+"), tuned, 100.0 / 32 + 1e-9) << cpu.out;
}

TEST_F(FinetuneGpu, ResumingOnTheGpuEndsWithTheSameLossAndCheckpointsMoveToTheCpu) {
  const std::string common = "--preset tiny --device cuda --pretrain-steps 20 --steps 30 --eval-size 8 --base " +
                             (root() / "rbase.safetensors").string() + " ";
  Result straight = run(common + "--out " + dir("straight"));
  ASSERT_EQ(straight.status, 0) << straight.out << straight.err;
  Result cut = run(common + "--out " + dir("resumed") + " --interrupt-at 7");
  EXPECT_EQ(cut.status, 130) << cut.out << cut.err;
  Result rest = run(common + "--out " + dir("resumed"));
  ASSERT_EQ(rest.status, 0) << rest.out << rest.err;
  EXPECT_NE(rest.out.find("resuming at step 7"), std::string::npos) << rest.out;
  const double a = number_after(straight.out, "final loss"), b = number_after(rest.out, "final loss");
  EXPECT_GT(a, 0);
  // The same work in the same order on the same device: expected bit for bit;
  // 1e-6 relative leaves room for a library that reduces in another order.
  EXPECT_NEAR(a, b, 1e-6 * a) << "uninterrupted " << a << " vs resumed " << b;

  // A GPU checkpoint resumed on the CPU continues the same run (within the
  // GPU/CPU tolerance above).
  Result cut2 = run(common + "--out " + dir("cross") + " --interrupt-at 7");
  EXPECT_EQ(cut2.status, 130) << cut2.out << cut2.err;
  std::string on_cpu = common;
  on_cpu.replace(on_cpu.find("--device cuda"), 13, "--device cpu");
  Result cpu_rest = run(on_cpu + "--out " + dir("cross"));
  ASSERT_EQ(cpu_rest.status, 0) << cpu_rest.out << cpu_rest.err;
  EXPECT_NE(cpu_rest.out.find("resuming at step 7"), std::string::npos) << cpu_rest.out;
  EXPECT_NEAR(number_after(cpu_rest.out, "final loss"), a, 2e-3 * a);
}
