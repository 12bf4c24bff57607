// Tests of training checkpoints (checkpoint.h) and Trainer::restore: resuming
// from a checkpoint continues bit-identically (AdamW, and SGD with momentum
// and clipping), the file's keys and metadata, and missing, corrupt and
// mismatched checkpoints that leave the Trainer untouched.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "tessera/checkpoint.h"
#include "tessera/ops.h"
#include "tessera/safetensors.h"
#include "test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using test_util::error_of;

#define EXPECT_HAS(text, piece) EXPECT_NE((text).find(piece), std::string::npos) << (text)

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_ckpt_XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// loss = mean((tanh(x w1^T + b1) w2^T - y)^2), gradients written by hand
// (this test is about state, not autodiff).
Graph two_layer_joint(int64_t n, int64_t in = 3, int64_t hidden = 4) {
  GraphBuilder b("two_layer");
  Tensor x = b.input("x", {n, in});
  Tensor y = b.input("y", {n, 1});
  Tensor w1 = b.param("l1.weight", {hidden, in});
  Tensor b1 = b.param("l1.bias", {hidden});
  Tensor w2 = b.param("l2.weight", {1, hidden});
  Tensor h = tanh(linear(x, w1, b1));
  Tensor r = linear(h, w2) - y;
  b.output("loss", mean(r * r));
  Tensor dr = r * (2.0 / static_cast<double>(n));     // [n, 1]
  b.output("grad.l2.weight", matmul(transpose(dr, 0, 1), h));
  Tensor dh = matmul(dr, w2) * (1.0 - h * h);          // [n, hidden]
  b.output("grad.l1.weight", matmul(transpose(dh, 0, 1), x));
  b.output("grad.l1.bias", sum(dh, {0}));
  return b.build();
}

std::map<std::string, Buffer> batch(int64_t n, uint32_t seed, int64_t in = 3) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> x(n * in), y(n);
  for (double& v : x) v = u(rng);
  for (int64_t i = 0; i < n; ++i) y[i] = std::sin(x[i * in]) - 0.5 * x[i * in + 1];
  return {{"x", Buffer::from(x, {n, in})}, {"y", Buffer::from(y, {n, 1})}};
}

// Every param and state value, bitwise, for comparisons.
std::map<std::string, std::vector<double>> snapshot(const Trainer& t) {
  std::map<std::string, std::vector<double>> r;
  for (const auto& [name, b] : t.params()) r["param " + name] = b.to_f64();
  for (const auto& [name, b] : t.state()) r["state " + name] = b.to_f64();
  return r;
}

void expect_resume_is_bit_identical(const TrainerOptions& options, double lr_after_save) {
  const Graph joint = two_layer_joint(8);
  TempDir dir;
  const std::string path = dir.file("run.ckpt.safetensors");
  Trainer a(joint, options);
  for (int i = 0; i < 3; ++i) a.step(batch(8, 100 + i));
  a.set_lr(lr_after_save);
  save_checkpoint(a, path);
  std::vector<double> continued;
  for (int i = 0; i < 4; ++i) continued.push_back(a.step(batch(8, 200 + i)));

  TrainerOptions other = options;
  other.seed = options.seed + 1;  // different initial params: loading must replace them all
  Trainer b(joint, other);
  EXPECT_NE(snapshot(b), snapshot(Trainer(joint, options)));
  load_checkpoint(b, path);
  EXPECT_EQ(b.steps_done(), 3);
  EXPECT_EQ(b.lr(), lr_after_save);
  std::vector<double> resumed;
  for (int i = 0; i < 4; ++i) resumed.push_back(b.step(batch(8, 200 + i)));
  EXPECT_EQ(resumed, continued);  // bitwise: EXPECT_EQ on doubles
  EXPECT_EQ(snapshot(b), snapshot(a));
  EXPECT_EQ(b.steps_done(), a.steps_done());
  EXPECT_EQ(b.last_grad_norm(), a.last_grad_norm());
}

TEST(Checkpoint, ResumeIsBitIdenticalAdamW) {
  TrainerOptions o;
  o.seed = 7;
  o.optimizer = AdamWOptions{0.05};
  // 0.1 / 3 is not a short binary fraction: the lr must round-trip exactly.
  expect_resume_is_bit_identical(o, 0.1 / 3);
}

TEST(Checkpoint, ResumeIsBitIdenticalSgdMomentumWithClipping) {
  TrainerOptions o;
  o.seed = 3;
  SGDOptions sgd;
  sgd.lr = 0.2;
  sgd.momentum = 0.9;
  sgd.max_grad_norm = 0.1;
  o.optimizer = sgd;
  expect_resume_is_bit_identical(o, 0.2);
}

TEST(Checkpoint, FileHoldsPrefixedTensorsAndMetadata) {
  TrainerOptions o;
  o.optimizer = AdamWOptions{0.01};
  Trainer t(two_layer_joint(4), o);
  t.step(batch(4, 1));
  t.step(batch(4, 2));
  TempDir dir;
  save_checkpoint(t, dir.file("c"));
  SafetensorsFile f = SafetensorsFile::open(dir.file("c"));
  std::vector<std::string> names = f.names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"optim_state/l1.bias.exp_avg", "optim_state/l1.bias.exp_avg_sq",
                                             "optim_state/l1.weight.exp_avg", "optim_state/l1.weight.exp_avg_sq",
                                             "optim_state/l2.weight.exp_avg", "optim_state/l2.weight.exp_avg_sq",
                                             "params/l1.bias", "params/l1.weight", "params/l2.weight"}));
  EXPECT_EQ(f.metadata().at("format"), "tessera.checkpoint.v1");
  EXPECT_EQ(f.metadata().at("steps_done"), "2");
  EXPECT_EQ(std::strtod(f.metadata().at("lr").c_str(), nullptr), 0.01);
  EXPECT_EQ(f.tensor("params/l1.weight").to_buffer().to_f64(), t.params().at("l1.weight").to_f64());
  EXPECT_EQ(f.tensor("optim_state/l2.weight.exp_avg_sq").to_buffer().to_f64(),
            t.state().at("l2.weight.exp_avg_sq").to_f64());
}

// Errors from load_checkpoint must leave the Trainer exactly as it was.
class CheckpointErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    TrainerOptions o;
    o.optimizer = AdamWOptions{0.01};
    trainer = std::make_unique<Trainer>(two_layer_joint(4), o);
    trainer->step(batch(4, 5));
    before = snapshot(*trainer);
    steps_before = trainer->steps_done();
  }
  void expect_untouched() {
    EXPECT_EQ(snapshot(*trainer), before);
    EXPECT_EQ(trainer->steps_done(), steps_before);
    EXPECT_EQ(trainer->lr(), 0.01);
  }
  // A valid checkpoint of a trainer like `trainer` but 5 steps on.
  std::string good_checkpoint() {
    TrainerOptions o;
    o.optimizer = AdamWOptions{0.02};
    Trainer other(two_layer_joint(4), o);
    for (int i = 0; i < 5; ++i) other.step(batch(4, 9));
    save_checkpoint(other, dir.file("good"));
    return dir.file("good");
  }
  TempDir dir;
  std::unique_ptr<Trainer> trainer;
  std::map<std::string, std::vector<double>> before;
  int64_t steps_before = 0;
};

TEST_F(CheckpointErrors, MissingFile) {
  const std::string e = error_of([&] { load_checkpoint(*trainer, dir.file("nope")); });
  EXPECT_HAS(e, "checkpoint '" + dir.file("nope") + "'");
  EXPECT_HAS(e, "No such file or directory");
  expect_untouched();
}

TEST_F(CheckpointErrors, TruncatedFile) {
  const std::string path = good_checkpoint();
  fs::resize_file(path, fs::file_size(path) - 3);
  const std::string e = error_of([&] { load_checkpoint(*trainer, path); });
  EXPECT_HAS(e, "checkpoint '" + path + "'");
  EXPECT_HAS(e, "after its header");
  expect_untouched();
}

TEST_F(CheckpointErrors, NotACheckpoint) {
  save_safetensors(dir.file("weights"), trainer->params());
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("weights")); }),
             "not a tessera checkpoint (metadata \"format\" is missing, expected \"tessera.checkpoint.v1\")");
  save_safetensors(dir.file("weights2"), {}, {{"format", "pt"}});
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("weights2")); }), "\"format\" is \"pt\"");
  expect_untouched();
}

TEST_F(CheckpointErrors, BadMetadata) {
  auto tensors = SafetensorsFile::open(good_checkpoint()).to_buffers();
  save_safetensors(dir.file("m1"), tensors, {{"format", kCheckpointFormat}, {"lr", "0x1p-4"}, {"last_grad_norm", "0"}});
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("m1")); }), "the metadata has no \"steps_done\"");
  save_safetensors(dir.file("m2"), tensors,
                   {{"format", kCheckpointFormat}, {"steps_done", "-4"}, {"lr", "0x1p-4"}, {"last_grad_norm", "0"}});
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("m2")); }),
             "metadata \"steps_done\" = \"-4\" is not a step count");
  save_safetensors(dir.file("m3"), tensors,
                   {{"format", kCheckpointFormat}, {"steps_done", "4"}, {"lr", "fast"}, {"last_grad_norm", "0"}});
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("m3")); }), "metadata \"lr\" = \"fast\" is not a number");
  expect_untouched();
}

TEST_F(CheckpointErrors, MismatchedTrainer) {
  // Another model size: l1.weight is [5, 3] there.
  TrainerOptions o;
  o.optimizer = AdamWOptions{0.01};
  Trainer wider(two_layer_joint(4, 3, 5), o);
  save_checkpoint(wider, dir.file("wider"));
  const std::string e = error_of([&] { load_checkpoint(*trainer, dir.file("wider")); });
  EXPECT_HAS(e, "does not match this trainer");
  EXPECT_HAS(e, "param 'l1.bias' is f32[5], expected f32[4]");
  expect_untouched();

  // Another optimizer: SGD with momentum has momentum buffers, not exp_avg.
  TrainerOptions s;
  s.optimizer = SGDOptions{0.1, 0.9};
  Trainer sgd(two_layer_joint(4), s);
  save_checkpoint(sgd, dir.file("sgd"));
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("sgd")); }),
             "no optimizer state 'l1.bias.exp_avg' (f32[4])");
  expect_untouched();

  // An extra tensor.
  auto tensors = SafetensorsFile::open(good_checkpoint()).to_buffers();
  auto meta = SafetensorsFile::open(good_checkpoint()).metadata();
  tensors["params/extra"] = Buffer(DType::f32, {2});
  save_safetensors(dir.file("extra"), tensors, meta);
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("extra")); }),
             "param 'extra' (f32[2]) is not one of this run's");
  tensors.erase("params/extra");
  tensors["loose"] = Buffer(DType::f32, {2});
  save_safetensors(dir.file("loose"), tensors, meta);
  EXPECT_HAS(error_of([&] { load_checkpoint(*trainer, dir.file("loose")); }),
             "tensor 'loose' is neither \"params/...\" nor \"optim_state/...\"");
  expect_untouched();

  // And a good one does load.
  load_checkpoint(*trainer, good_checkpoint());
  EXPECT_EQ(trainer->steps_done(), 5);
  EXPECT_EQ(trainer->lr(), 0.02);
}

TEST_F(CheckpointErrors, FailedSaveKeepsTheOldCheckpoint) {
  const std::string path = good_checkpoint();
  std::ifstream in(path, std::ios::binary);
  const std::string old_bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  fs::create_directory(dir.file("sub"));
  // Saving over a directory fails at the rename; the old file is elsewhere
  // and must be untouched, and no temporary files may be left behind.
  EXPECT_HAS(error_of([&] { save_checkpoint(*trainer, dir.file("sub")); }), "renaming");
  std::ifstream again(path, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>()), old_bytes);
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) entries += e.path().filename().string()[0] == '.';
  EXPECT_EQ(entries, 0u);
}

TEST(TrainerRestore, ChecksEverythingBeforeChangingAnything) {
  TrainerOptions o;
  o.optimizer = AdamWOptions{0.01};
  Trainer t(two_layer_joint(4), o);
  const auto before = snapshot(t);
  TrainingState s;
  for (const auto& [name, b] : t.params()) s.params[name] = b.clone();
  for (const auto& [name, b] : t.state()) s.state[name] = b.clone();
  s.steps_done = 9;
  s.lr = 0.5;
  s.params["l1.weight"] = Buffer(DType::f64, {4, 3});
  EXPECT_HAS(error_of([&] { t.restore(s); }), "param 'l1.weight' is f64[4, 3], expected f32[4, 3]");
  s.params["l1.weight"] = t.params().at("l1.weight").clone();
  s.lr = -1;
  EXPECT_HAS(error_of([&] { t.restore(s); }), "lr = -1 is invalid");
  EXPECT_EQ(snapshot(t), before);
  EXPECT_EQ(t.steps_done(), 0);
  s.lr = 0.5;
  s.params["l2.weight"].set(0, 42);
  t.restore(s);
  EXPECT_EQ(t.steps_done(), 9);
  EXPECT_EQ(t.lr(), 0.5);
  EXPECT_EQ(t.params().at("l2.weight").get(0), 42);
}

}  // namespace
}  // namespace tessera
