// tessera-opt (apps/opt) and the pass registry behind it: the tool is run as
// a separate process on printed graphs of the model library and its output
// compared with the same passes run in-process; bad input and bad flags must
// give a clear message and a non-zero exit, and never touch the output file.
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/pass_registry.h>
#include <tessera/tessera.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "process_util.h"
#include "test_util.h"

using namespace tessera;
namespace fs = std::filesystem;

namespace {

using Result = test_util::ProcessResult;
using test_util::slurp;

class TesseraOpt : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("tessera_opt_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  // Runs tessera-opt with `args` (a shell-quoted string), capturing stdout and stderr.
  Result run(const std::string& args) {
    return test_util::run_process(std::string(TESSERA_OPT_PATH) + " " + args, dir_);
  }
  fs::path dir_;
};

const std::map<std::string, std::map<std::string, std::string>> kSmallModels = {
    {"mlp", {{"sizes", "5,7,3"}, {"batch", "3"}}},
    {"gpt", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"}, {"n_head", "2"}, {"n_embd", "8"}, {"batch", "2"}}},
    {"mlp_train_step", {{"sizes", "5,7,3"}, {"batch", "3"}}},
};

}  // namespace

TEST_F(TesseraOpt, NoPassesRoundTripsEveryModelsPrintedGraph) {
  for (const auto& [name, params] : kSmallModels) {
    const std::string text = print(registered_model(name, params));
    Result r = run(write(name + ".tsr", text).string());
    EXPECT_EQ(r.status, 0) << name << ": " << r.err;
    EXPECT_EQ(r.out, text) << name;
  }
}

TEST_F(TesseraOpt, PassesMatchTheSamePipelineRunInProcess) {
  const Graph g = registered_model("mlp", kSmallModels.at("mlp"));
  const fs::path in = write("mlp.tsr", print(g));
  const std::string passes = "autodiff,adamw=0.01,cse,dce";
  PassManager pm;
  pm.add(autodiff()).add(optimizer(AdamWOptions{.lr = 0.01})).add(cse()).add(dce());
  const Graph want = pm.run(g);
  Result r = run("--passes=" + passes + " " + in.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, print(want));
  // The output parses back to the same graph.
  EXPECT_EQ(print(parse(r.out)), r.out);
}

TEST_F(TesseraOpt, PrintsThePlanAndMemoryReportForATarget) {
  const fs::path in = write("mlp.tsr", print(registered_model("mlp", kSmallModels.at("mlp"))));
  Result r = run("--no-graph --print-plan --print-memory --target=host " + in.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("# plan for host"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernel"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("# memory for host: peak "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("graph mlp {"), std::string::npos) << "--no-graph printed the graph";
}

TEST_F(TesseraOpt, WritesTheOutputFileAndReadsStdin) {
  const std::string text = print(registered_model("mlp", kSmallModels.at("mlp")));
  const fs::path in = write("mlp.tsr", text), out = dir_ / "out.tsr";
  Result r = run("--passes=cse -o " + out.string() + " < " + in.string());
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(slurp(out), text);
}

TEST_F(TesseraOpt, ParseErrorsNameTheFileLineAndColumn) {
  const fs::path in = write("bad.tsr", "graph g {\n  x = input()  # f32[2]\n  y = frobnicate(x)  # f32[2]\n  output y = y\n}\n");
  Result r = run(in.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("bad.tsr: line 3, column"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos) << r.err;
}

TEST_F(TesseraOpt, BadUsageAndMissingFilesFailClearlyWithoutTouchingTheOutput) {
  const fs::path in = write("mlp.tsr", print(registered_model("mlp", kSmallModels.at("mlp"))));
  const fs::path out = write("keep.tsr", "precious");

  Result r = run("--frobnicate " + in.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown option '--frobnicate'"), std::string::npos) << r.err;

  r = run((dir_ / "missing.tsr").string() + " -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos) << r.err;

  r = run("--passes=cse,nonsense " + in.string() + " -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("pass list entry 2: unknown pass 'nonsense'"), std::string::npos) << r.err;

  r = run("--passes=cse=3 " + in.string() + " -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("pass 'cse' takes no argument"), std::string::npos) << r.err;

  r = run("--target=host-tpu " + in.string() + " --print-plan -o " + out.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(slurp(out), "precious");

  r = run("--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("usage: tessera-opt"), std::string::npos);
  r = run("--list-passes");
  EXPECT_EQ(r.status, 0);
  for (const PassInfo& p : registered_passes()) EXPECT_NE(r.out.find("  " + p.name), std::string::npos) << p.name;
}

TEST(PassRegistry, ArgumentsReachThePass) {
  const Graph g = registered_model("mlp", kSmallModels.at("mlp"));
  // adamw=LR: the lr is a graph input, so compare the step's result for two lrs... the
  // option itself is validated by the optimizer: a negative lr is refused.
  EXPECT_THROW(make_pass("adamw=-1").run(differentiate(g)), Error);
  EXPECT_NO_THROW(make_pass("adamw=0.5").run(differentiate(g)));
  EXPECT_NE(test_util::error_of([&] { make_pass("adamw=fast"); }).find("'fast' is not a number"), std::string::npos);
  // autodiff=LOSS: differentiating an output that is not a scalar loss is refused by name.
  EXPECT_NE(test_util::error_of([&] { make_pass("autodiff=logits").run(g); }).find("logits"), std::string::npos);
  EXPECT_NE(test_util::error_of([&] { make_pipeline("cse,,dce"); }).find("entry 2 is empty"), std::string::npos);
}

TEST_F(TesseraOpt, StartsFromARegisteredModel) {
  Result r = run("--model=mlp --param=sizes=5,7,3 --param=batch=3");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, print(registered_model("mlp", kSmallModels.at("mlp"))));
  r = run("--model=resnet");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("resnet"), std::string::npos) << r.err;
  r = run("--param=batch=3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--param needs --model"), std::string::npos) << r.err;
}

TEST_F(TesseraOpt, TransformPipelinesComposeAsInProcess) {
  const Graph g = registered_model("gpt", kSmallModels.at("gpt"));
  const fs::path in = write("gpt.tsr", print(g));
  for (const std::string passes : {"autodiff,autocast=bf16,remat=0.5,cse,dce",
                                   "quantize,lora=4,autodiff,autocast=f16,loss-scaling,adamw,cse,dce"}) {
    PassManager pm;
    for (Pass& p : make_pipeline(passes)) pm.add(std::move(p));
    const std::string want = print(pm.run(g));
    Result r = run("--passes=" + passes + " " + in.string());
    ASSERT_EQ(r.status, 0) << passes << ": " << r.err;
    EXPECT_EQ(r.out, want) << passes;
    EXPECT_EQ(print(parse(r.out)), r.out) << passes;
  }
  EXPECT_NE(test_util::error_of([&] { make_pass("autocast=f64"); }).find("not bf16 or f16"), std::string::npos);
  EXPECT_NE(test_util::error_of([&] { make_pass("quantize=int4"); }).find("not nf4, nf4-dq or int8"), std::string::npos);
}
