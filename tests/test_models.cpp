// Tests of the model library (models.h): the MLP and GPT graphs build and
// verify, their param names and shapes are as documented, the printed MLP
// graph is exactly the hand-checked text, the GPT's loss at init is about
// ln(vocab) and its attention is causal, the init maps cover every param, and
// a tiny GPT learns a simple sequence with autodiff + Trainer + AdamW.
// Configs are tiny so that everything runs in seconds.
#include <gtest/gtest.h>
#include <tessera/autodiff.h>
#include <tessera/models.h>
#include <tessera/tessera.h>
#include <tessera/trainer.h>

#include <cmath>
#include <cstdio>
#include <set>

using namespace tessera;

namespace {

std::map<std::string, TensorType> param_types(const Graph& g) {
  std::map<std::string, TensorType> m;
  for (int id : g.params()) m[g.node(id).name] = g.node(id).type;
  return m;
}

std::set<std::string> keys(const InitMap& m) {
  std::set<std::string> s;
  for (const auto& [k, v] : m) s.insert(k);
  return s;
}

std::set<std::string> keys(const std::map<std::string, TensorType>& m) {
  std::set<std::string> s;
  for (const auto& [k, v] : m) s.insert(k);
  return s;
}

int count_op(const Graph& g, const std::string& op) {
  int n = 0;
  for (const Node& node : g.nodes) n += node.op == op;
  return n;
}

GptConfig tiny_gpt() {
  GptConfig c;
  c.vocab_size = 11;
  c.block_size = 8;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.batch = 4;
  return c;
}

// Deterministic pseudo-random token ids in [0, vocab).
Buffer tokens(Shape shape, int64_t vocab, uint64_t seed) {
  Buffer b(DType::i32, shape);
  uint64_t s = seed * 2654435761u + 12345;
  for (int64_t i = 0; i < b.numel(); ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    b.set(i, static_cast<double>((s >> 33) % static_cast<uint64_t>(vocab)));
  }
  return b;
}

}  // namespace

TEST(Models, MlpPrintsExactly) {
  MlpConfig c;
  c.sizes = {4, 3, 2};
  c.batch = 2;
  Graph g = mlp(c);
  EXPECT_EQ(print(g),
            "graph mlp {\n"
            "  x = input()  # f32[2, 4]\n"
            "  y = input()  # i32[2]\n"
            "  layers.0.weight = param()  # f32[3, 4]\n"
            "  layers.0.bias = param()  # f32[3]\n"
            "  t0 = linear(x, layers.0.weight, layers.0.bias)  # f32[2, 3]\n"
            "  t1 = relu(t0)  # f32[2, 3]\n"
            "  layers.1.weight = param()  # f32[2, 3]\n"
            "  layers.1.bias = param()  # f32[2]\n"
            "  t2 = linear(t1, layers.1.weight, layers.1.bias)  # f32[2, 2]\n"
            "  t3 = logsumexp(t2)  # f32[2]\n"
            "  t4 = cross_entropy(t2, y, t3, ignore_index=-100)  # f32[]\n"
            "  output logits = t2\n"
            "  output loss = t4\n"
            "}\n");
}

TEST(Models, MlpParamsActivationAndInit) {
  MlpConfig c;
  c.sizes = {784, 256, 128, 10};
  c.batch = 8;
  c.activation = "gelu";
  Graph g = mlp(c);
  auto p = param_types(g);
  ASSERT_EQ(p.size(), 6u);
  EXPECT_EQ(p.at("layers.0.weight"), (TensorType{DType::f32, {256, 784}}));
  EXPECT_EQ(p.at("layers.1.bias"), (TensorType{DType::f32, {128}}));
  EXPECT_EQ(p.at("layers.2.weight"), (TensorType{DType::f32, {10, 128}}));
  EXPECT_EQ(count_op(g, "gelu"), 2);
  EXPECT_EQ(count_op(g, "relu"), 0);
  EXPECT_EQ(g.node(g.outputs[0].node).type, (TensorType{DType::f32, {8, 10}}));

  InitMap init = mlp_init(c);
  EXPECT_EQ(keys(init), keys(p));
  const ParamInit& w0 = init.at("layers.0.weight");
  EXPECT_EQ(w0.kind, ParamInit::uniform);
  EXPECT_DOUBLE_EQ(w0.b, 1.0 / 28.0);
  EXPECT_DOUBLE_EQ(w0.a, -1.0 / 28.0);
  EXPECT_DOUBLE_EQ(init.at("layers.1.bias").b, 1.0 / 16.0);

  MlpConfig bad = c;
  bad.activation = "tanh";
  EXPECT_THROW(mlp(bad), Error);
  bad = c;
  bad.sizes = {4};
  EXPECT_THROW(mlp(bad), Error);
}

TEST(Models, GptParamNamesAndShapes) {
  GptConfig c = tiny_gpt();
  Graph g = gpt(c);
  auto p = param_types(g);
  EXPECT_EQ(p.size(), 2u + 12u * 2 + 2 + 1);
  auto f32 = [](Shape s) { return TensorType{DType::f32, s}; };
  EXPECT_EQ(p.at("transformer.wte.weight"), f32({11, 16}));
  EXPECT_EQ(p.at("transformer.wpe.weight"), f32({8, 16}));
  EXPECT_EQ(p.at("transformer.h.0.ln_1.weight"), f32({16}));
  EXPECT_EQ(p.at("transformer.h.0.ln_1.bias"), f32({16}));
  EXPECT_EQ(p.at("transformer.h.1.attn.c_attn.weight"), f32({48, 16}));
  EXPECT_EQ(p.at("transformer.h.1.attn.c_attn.bias"), f32({48}));
  EXPECT_EQ(p.at("transformer.h.0.attn.c_proj.weight"), f32({16, 16}));
  EXPECT_EQ(p.at("transformer.h.0.ln_2.weight"), f32({16}));
  EXPECT_EQ(p.at("transformer.h.1.mlp.c_fc.weight"), f32({64, 16}));
  EXPECT_EQ(p.at("transformer.h.1.mlp.c_fc.bias"), f32({64}));
  EXPECT_EQ(p.at("transformer.h.1.mlp.c_proj.weight"), f32({16, 64}));
  EXPECT_EQ(p.at("transformer.h.1.mlp.c_proj.bias"), f32({16}));
  EXPECT_EQ(p.at("transformer.ln_f.weight"), f32({16}));
  EXPECT_EQ(p.at("lm_head.weight"), f32({11, 16}));
  EXPECT_EQ(g.inputs().size(), 2u);
  EXPECT_EQ(g.node("idx").type, (TensorType{DType::i32, {4, 8}}));
  EXPECT_EQ(g.node("targets").type, (TensorType{DType::i32, {4, 8}}));
  ASSERT_EQ(g.outputs.size(), 2u);
  EXPECT_EQ(g.outputs[0].name, "logits");
  EXPECT_EQ(g.node(g.outputs[0].node).type, f32({4, 8, 11}));
  EXPECT_EQ(g.outputs[1].name, "loss");
  EXPECT_EQ(g.node(g.outputs[1].node).type, f32({}));
  EXPECT_EQ(count_op(g, "attention"), 2);
  EXPECT_EQ(count_op(g, "dropout"), 0);
  EXPECT_EQ(count_op(g, "layer_norm"), 5);
  // The attention runs on [B, H, T, D].
  for (const Node& n : g.nodes)
    if (n.op == "attention") {
      EXPECT_EQ(n.type, f32({4, 2, 8, 8}));
    }
  // The printed form parses back to the same graph.
  EXPECT_EQ(print(parse(print(g))), print(g));
}

TEST(Models, GptOptions) {
  GptConfig c = tiny_gpt();
  c.bias = false;
  c.tie_weights = true;
  c.dropout = 0.1;
  Graph g = gpt(c);
  auto p = param_types(g);
  EXPECT_EQ(p.size(), 2u + 6u * 2 + 1);
  for (const auto& [name, t] : p) EXPECT_EQ(name.find(".bias"), std::string::npos) << name;
  EXPECT_EQ(p.count("lm_head.weight"), 0u);
  EXPECT_EQ(count_op(g, "dropout"), 1 + 2 * 2);
  // Every dropout node draws from its own Philox counters.
  std::set<int64_t> offsets;
  for (const Node& n : g.nodes)
    if (n.op == "dropout") offsets.insert(attr_int(n.attrs, "offset", "dropout"));
  EXPECT_EQ(offsets.size(), 5u);
  EXPECT_EQ(keys(gpt_init(c)), keys(p));

  GptConfig bad = tiny_gpt();
  bad.n_head = 3;
  EXPECT_THROW(gpt(bad), Error);
  bad = tiny_gpt();
  bad.dropout = 1.0;
  EXPECT_THROW(gpt(bad), Error);
}

TEST(Models, GptInitMap) {
  GptConfig c = tiny_gpt();
  InitMap m = gpt_init(c);
  EXPECT_EQ(keys(m), keys(param_types(gpt(c))));
  EXPECT_EQ(m.at("transformer.wte.weight").kind, ParamInit::normal);
  EXPECT_DOUBLE_EQ(m.at("transformer.wte.weight").b, 0.02);
  EXPECT_DOUBLE_EQ(m.at("transformer.h.1.attn.c_attn.weight").b, 0.02);
  EXPECT_DOUBLE_EQ(m.at("transformer.h.0.attn.c_proj.weight").b, 0.01);  // 0.02 / sqrt(2 * 2)
  EXPECT_DOUBLE_EQ(m.at("transformer.h.1.mlp.c_proj.weight").b, 0.01);
  EXPECT_EQ(m.at("transformer.h.1.mlp.c_proj.bias").kind, ParamInit::zeros);
  EXPECT_EQ(m.at("transformer.ln_f.weight").kind, ParamInit::ones);
  EXPECT_EQ(m.at("transformer.ln_f.bias").kind, ParamInit::zeros);

  auto t = trainer_init(m);
  EXPECT_EQ(t.size(), m.size());
  EXPECT_EQ(t.at("transformer.wte.weight").kind, Init::Kind::normal);
  EXPECT_DOUBLE_EQ(t.at("transformer.wte.weight").b, 0.02);
  EXPECT_EQ(t.at("transformer.ln_f.weight").kind, Init::Kind::ones);
}

TEST(Models, InitParamsIsDeterministicAndHasTheStatedMoments) {
  GptConfig c = tiny_gpt();
  c.vocab_size = 1000;
  Graph g = gpt(c);
  auto a = init_params(g, gpt_init(c), 7);
  auto b = init_params(g, gpt_init(c), 7);
  auto d = init_params(g, gpt_init(c), 8);
  ASSERT_EQ(a.size(), param_types(g).size());
  const Buffer& wte = a.at("transformer.wte.weight");
  EXPECT_EQ(wte.to_f64(), b.at("transformer.wte.weight").to_f64());
  EXPECT_NE(wte.to_f64(), d.at("transformer.wte.weight").to_f64());
  double s = 0, s2 = 0;
  for (double v : wte.to_f64()) s += v, s2 += v * v;
  const double n = static_cast<double>(wte.numel()), mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(sd, 0.02, 0.0005);
  for (double v : a.at("transformer.h.0.ln_1.weight").to_f64()) EXPECT_EQ(v, 1.0);
  for (double v : a.at("transformer.h.0.ln_1.bias").to_f64()) EXPECT_EQ(v, 0.0);

  MlpConfig mc;
  mc.sizes = {100, 10};
  auto m = init_params(mlp(mc), mlp_init(mc), 0);
  for (double v : m.at("layers.0.weight").to_f64()) {
    EXPECT_LE(std::abs(v), 0.1);
  }
  EXPECT_THROW(init_params(mlp(mc), InitMap{}, 0), Error);
}

TEST(Models, GptLossAtInitIsAboutLnVocabAndAttentionIsCausal) {
  GptConfig c = tiny_gpt();
  Graph g = gpt(c);
  auto args = init_params(g, gpt_init(c), 1);
  args["idx"] = tokens({c.batch, c.block_size}, c.vocab_size, 1);
  args["targets"] = tokens({c.batch, c.block_size}, c.vocab_size, 2);
  Executable exe = compile(g);
  auto out = exe.run(args);
  const double loss = out.at("loss").get(0);
  EXPECT_NEAR(loss, std::log(11.0), 0.05);

  // Changing the last token changes the last position's logits only.
  Buffer idx2 = args.at("idx").clone();
  const int64_t T = c.block_size, V = c.vocab_size;
  for (int64_t b = 0; b < c.batch; ++b) idx2.set(b * T + T - 1, static_cast<double>((static_cast<int64_t>(idx2.get(b * T + T - 1)) + 1) % V));
  args["idx"] = idx2;
  auto out2 = exe.run(args);
  const Buffer &l1 = out.at("logits"), &l2 = out2.at("logits");
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t t = 0; t < T; ++t) {
      double diff = 0;
      for (int64_t v = 0; v < V; ++v) diff = std::max(diff, std::abs(l1.get((b * T + t) * V + v) - l2.get((b * T + t) * V + v)));
      if (t < T - 1) EXPECT_EQ(diff, 0.0) << "b " << b << " t " << t;
      else EXPECT_GT(diff, 0.0) << "b " << b;
    }
}
// A sequence the model can learn: token t+1 = token t + 1 (mod V), from a
// random start per row. A 1-layer GPT learns it quickly (2.77 -> 0.016 in
// 60 steps here); most of the test's time is the step graph's JIT compile.
TEST(Models, GptLearnsACountingSequence) {
  GptConfig c;
  c.vocab_size = 16;
  c.block_size = 8;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 16;
  c.batch = 8;
  TrainerOptions o;
  AdamWOptions adam;
  adam.lr = 1e-2;
  adam.weight_decay = 0;
  o.optimizer = adam;
  o.seed = 3;
  o.init = trainer_init(gpt_init(c));
  Trainer trainer(differentiate(gpt(c)), o);
  const int64_t B = c.batch, T = c.block_size, V = c.vocab_size;
  double first = 0, last = 0;
  const int steps = 60;
  for (int s = 0; s < steps; ++s) {
    Buffer idx(DType::i32, {B, T}), targets(DType::i32, {B, T});
    Buffer starts = tokens({B}, V, 100 + s);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t start = static_cast<int64_t>(starts.get(b));
        idx.set(b * T + t, static_cast<double>((start + t) % V));
        targets.set(b * T + t, static_cast<double>((start + t + 1) % V));
      }
    const double loss = trainer.step({{"idx", idx}, {"targets", targets}});
    if (s == 0) first = loss;
    last = loss;
  }
  std::printf("counting sequence: loss %.4f at step 1, %.4f at step %d\n", first, last, steps);
  EXPECT_NEAR(first, std::log(16.0), 0.1);
  EXPECT_LT(last, 0.3) << "first loss " << first;
}
