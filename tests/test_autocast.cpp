// Tests of mixed precision (autocast.h): the autocast transform's exact
// output in the printed form (which op runs in which type), the compiled
// autocast graphs against the float64 reference interpreter run on the same
// graphs, gradients of autocast graphs against the f32 graph, the policy
// table, and dynamic loss scaling (skipped steps, backoff, growth, the
// Trainer's f16 training against f32) with its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "reference/reference.h"
#include "tessera/autocast.h"
#include "tessera/autodiff.h"
#include "tessera/models.h"
#include "tessera/ops.h"
#include "tessera/optimizer.h"
#include "tessera/runtime.h"
#include "tessera/text.h"
#include "tessera/trainer.h"
#include "test_util.h"

namespace tessera {
namespace {

using test_util::error_of;
using test_util::random_args;

std::string lines(std::initializer_list<const char*> ls) {
  std::string s;
  for (const char* l : ls) s += std::string(l) + "\n";
  return s;
}

// linear -> gelu -> layer_norm -> linear -> cross_entropy, at awkward sizes.
Graph mlp_block(int64_t n = 5, int64_t d = 7, int64_t h = 6, int64_t c = 5) {
  GraphBuilder b("block");
  Tensor x = b.input("x", {n, d});
  Tensor y = b.input("y", {n}, DType::i32);
  Tensor w1 = b.param("fc1.weight", {h, d});
  Tensor b1 = b.param("fc1.bias", {h});
  Tensor lw = b.param("ln.weight", {h});
  Tensor lb = b.param("ln.bias", {h});
  Tensor w2 = b.param("fc2.weight", {c, h});
  Tensor b2 = b.param("fc2.bias", {c});
  Tensor hid = gelu(linear(x, w1, b1));                        // t0, t1
  Tensor logits = linear(layer_norm(hid, lw, lb), w2, b2);    // t2, t3
  b.output("loss", cross_entropy(logits, y));                  // t4
  return b.build();
}

// Three projections -> causal attention -> output projection -> residual -> mean square.
Graph attention_block(int64_t batch = 2, int64_t t = 5, int64_t d = 6) {
  GraphBuilder b("attn");
  Tensor x = b.input("x", {batch, t, d});
  Tensor wq = b.param("wq", {d, d});
  Tensor wk = b.param("wk", {d, d});
  Tensor wv = b.param("wv", {d, d});
  Tensor wo = b.param("wo", {d, d});
  Tensor q = linear(x, wq);  // t0
  Tensor k = linear(x, wk);  // t1
  Tensor v = linear(x, wv);  // t2
  Tensor a = attention(q, k, v);  // t3
  Tensor r = x + linear(a, wo);                                      // t4, t5
  b.output("loss", mean(r * r));                                     // t6, t7
  return b.build();
}

AutocastOptions with_dtype(DType t) {
  AutocastOptions o;
  o.dtype = t;
  return o;
}

// The compiled autocast graph against the reference interpreter on the same
// graph: both round every node to its type, so they agree to a few units in
// the last place of the low type.
void expect_matches_reference(const Graph& g, double tol, uint32_t seed) {
  const auto args = random_args(g, seed);
  const auto got = compile(g).run(args);
  const auto want = ref::evaluate(g, ref::from_buffers(args));
  test_util::expect_outputs_close(got, want, tol, g.name);
}

// ---- the rewritten graphs, exactly --------------------------------------------

// Both linears read bf16 casts of x and of the f32 params; gelu follows its
// bf16 input; layer_norm, logsumexp and cross_entropy run in f32 on one cast
// of each bf16 value.
TEST(Autocast, PrintedMlpBlock) {
  EXPECT_EQ(print(apply_autocast(mlp_block(), with_dtype(DType::bf16))), lines({
      "graph block {",
      "  x = input()  # f32[5, 7]",
      "  y = input()  # i32[5]",
      "  fc1.weight = param()  # f32[6, 7]",
      "  fc1.bias = param()  # f32[6]",
      "  ln.weight = param()  # f32[6]",
      "  ln.bias = param()  # f32[6]",
      "  fc2.weight = param()  # f32[5, 6]",
      "  fc2.bias = param()  # f32[5]",
      "  t6 = cast(x, dtype=\"bf16\")  # bf16[5, 7]",
      "  t7 = cast(fc1.weight, dtype=\"bf16\")  # bf16[6, 7]",
      "  t8 = cast(fc1.bias, dtype=\"bf16\")  # bf16[6]",
      "  t0 = linear(t6, t7, t8)  # bf16[5, 6]",
      "  t1 = gelu(t0, approximate=\"none\")  # bf16[5, 6]",
      "  t9 = cast(t1, dtype=\"f32\")  # f32[5, 6]",
      "  t2 = layer_norm(t9, ln.weight, ln.bias, eps=1e-05)  # f32[5, 6]",
      "  t10 = cast(t2, dtype=\"bf16\")  # bf16[5, 6]",
      "  t11 = cast(fc2.weight, dtype=\"bf16\")  # bf16[5, 6]",
      "  t12 = cast(fc2.bias, dtype=\"bf16\")  # bf16[5]",
      "  t3 = linear(t10, t11, t12)  # bf16[5, 5]",
      "  t13 = cast(t3, dtype=\"f32\")  # f32[5, 5]",
      "  t4 = logsumexp(t13)  # f32[5]",
      "  t5 = cross_entropy(t13, y, t4, ignore_index=-100)  # f32[]",
      "  output loss = t5",
      "}",
  }));
}

// One cast of x serves the three projections; attention runs in f16; the
// residual add follows its widest input (f32 x), so the projection is cast up.
TEST(Autocast, PrintedAttentionBlock) {
  EXPECT_EQ(print(apply_autocast(attention_block(), with_dtype(DType::f16))), lines({
      "graph attn {",
      "  x = input()  # f32[2, 5, 6]",
      "  wq = param()  # f32[6, 6]",
      "  wk = param()  # f32[6, 6]",
      "  wv = param()  # f32[6, 6]",
      "  wo = param()  # f32[6, 6]",
      "  t8 = cast(x, dtype=\"f16\")  # f16[2, 5, 6]",
      "  t9 = cast(wq, dtype=\"f16\")  # f16[6, 6]",
      "  t0 = linear(t8, t9)  # f16[2, 5, 6]",
      "  t10 = cast(wk, dtype=\"f16\")  # f16[6, 6]",
      "  t1 = linear(t8, t10)  # f16[2, 5, 6]",
      "  t11 = cast(wv, dtype=\"f16\")  # f16[6, 6]",
      "  t2 = linear(t8, t11)  # f16[2, 5, 6]",
      "  t3 = attention(t0, t1, t2, causal=true, scale=0.0)  # f16[2, 5, 6]",
      "  t12 = cast(wo, dtype=\"f16\")  # f16[6, 6]",
      "  t4 = linear(t3, t12)  # f16[2, 5, 6]",
      "  t13 = cast(t4, dtype=\"f32\")  # f32[2, 5, 6]",
      "  t5 = add(x, t13)  # f32[2, 5, 6]",
      "  t6 = mul(t5, t5)  # f32[2, 5, 6]",
      "  t7 = mean(t6, axes=[], keepdim=false)  # f32[]",
      "  output loss = t7",
      "}",
  }));
}

// x -> bf16 -> f32 -> matmul: the matmul reads the first cast (a widening
// cast undone); x -> bf16 -> f32 -> softmax keeps the rounding; a scalar
// constant does not widen a bf16 product; an output keeps its f32 type.
TEST(Autocast, CastPairsAndScalarConstants) {
  GraphBuilder b("casts");
  Tensor x = b.input("x", {3, 4});
  Tensor w = b.param("w", {4, 2});
  Tensor round_trip = cast(cast(x, DType::bf16), DType::f32);  // t0, t1
  Tensor m = matmul(round_trip, w) * 0.5;                     // t2, t3 (constant), t4
  b.output("y", m);
  b.output("p", softmax(round_trip));  // t5
  EXPECT_EQ(print(apply_autocast(b.build(), with_dtype(DType::bf16))), lines({
      "graph casts {",
      "  x = input()  # f32[3, 4]",
      "  w = param()  # f32[4, 2]",
      "  t0 = cast(x, dtype=\"bf16\")  # bf16[3, 4]",
      "  t1 = cast(t0, dtype=\"f32\")  # f32[3, 4]",
      "  t6 = cast(w, dtype=\"bf16\")  # bf16[4, 2]",
      "  t2 = matmul(t0, t6)  # bf16[3, 2]",
      "  t3 = constant(value=0.5)  # f32[]",
      "  t7 = cast(t3, dtype=\"bf16\")  # bf16[]",
      "  t4 = mul(t2, t7)  # bf16[3, 2]",
      "  t5 = softmax(t1, axis=-1)  # f32[3, 4]",
      "  t8 = cast(t4, dtype=\"f32\")  # f32[3, 2]",
      "  output y = t8",
      "  output p = t5",
      "}",
  }));
}

// A product reading a transposed view of an f32 tensor (a weight gradient's
// dy^T) gets the view redone on a cast of the tensor itself: the cast reads
// and writes in the tensor's own layout and the GEMM reads the view as a
// transposed operand. A slice of that view reuses the cast; a slice of a
// tensor with no cast (fewer elements) is cast as it is.
TEST(Autocast, CastsGoBelowViewsThatMoveEveryElement) {
  GraphBuilder b("views");
  Tensor dy = b.input("dy", {2, 3, 4});
  Tensor x = b.input("x", {6, 5});
  Tensor z = b.input("z", {4, 6});
  Tensor dyt = permute(reshape(dy, {6, 4}), {1, 0});      // t0, t1
  b.output("dw", matmul(dyt, x));                          // t2
  b.output("part", matmul(slice(dyt, 0, 0, 2, 1), x));    // t3, t4
  b.output("zpart", matmul(slice(z, 0, 1, 3, 1), x));     // t5, t6
  const Graph g = apply_autocast(b.build(), with_dtype(DType::bf16));
  EXPECT_EQ(print(g), lines({
      "graph views {",
      "  dy = input()  # f32[2, 3, 4]",
      "  x = input()  # f32[6, 5]",
      "  z = input()  # f32[4, 6]",
      "  t7 = cast(dy, dtype=\"bf16\")  # bf16[2, 3, 4]",
      "  t8 = reshape(t7, shape=[6, 4])  # bf16[6, 4]",
      "  t9 = permute(t8, dims=[1, 0])  # bf16[4, 6]",
      "  t10 = cast(x, dtype=\"bf16\")  # bf16[6, 5]",
      "  t2 = matmul(t9, t10)  # bf16[4, 5]",
      "  t11 = slice(t9, axis=0, end=2, start=0, step=1)  # bf16[2, 6]",
      "  t4 = matmul(t11, t10)  # bf16[2, 5]",
      "  t5 = slice(z, axis=0, end=3, start=1, step=1)  # f32[2, 6]",
      "  t12 = cast(t5, dtype=\"bf16\")  # bf16[2, 6]",
      "  t6 = matmul(t12, t10)  # bf16[2, 5]",
      "  t13 = cast(t2, dtype=\"f32\")  # f32[4, 5]",
      "  t14 = cast(t4, dtype=\"f32\")  # f32[2, 5]",
      "  t15 = cast(t6, dtype=\"f32\")  # f32[2, 5]",
      "  output dw = t13",
      "  output part = t14",
      "  output zpart = t15",
      "}",
  }));
  expect_matches_reference(g, 3e-2, 43);
}

// A user op keeps the types it was written for: its bf16 input is cast back
// to f32; and the compiled graph and its gradient match the reference.
TEST(Autocast, UserOpsKeepTheirTypes) {
  GraphBuilder b("user");
  Tensor x = b.input("x", {3, 5});
  Tensor w = b.param("w", {4, 5});
  Tensor h = linear(x, w);  // t0
  Tensor s = b.define("swish", {3, 4}, [&](Var i, Var j) {
    Expr v = h(i, j);
    return v / (1 + Halide::exp(-v));
  });
  b.output("loss", sum(s));  // t1
  const Graph g = apply_autocast(b.build(), with_dtype(DType::bf16));
  const Node& def = g.node("swish");
  ASSERT_EQ(def.inputs.size(), 1u);
  EXPECT_EQ(print_node(g, g.nodes[def.inputs[0]]), "t4 = cast(t0, dtype=\"f32\")  # f32[3, 4]");
  EXPECT_EQ(def.type.dtype, DType::f32);
  EXPECT_EQ(g.node("t0").type.dtype, DType::bf16);
  expect_matches_reference(g, 3e-2, 41);
  expect_matches_reference(differentiate(g), 3e-2, 42);
}

TEST(Autocast, IsIdempotentAndKeepsTheInterface) {
  for (DType t : {DType::bf16, DType::f16}) {
    for (const Graph& g : {mlp_block(), attention_block(), differentiate(mlp_block())}) {
      const Graph once = apply_autocast(g, with_dtype(t));
      EXPECT_EQ(print(apply_autocast(once, with_dtype(t))), print(once)) << g.name;
      ASSERT_EQ(once.outputs.size(), g.outputs.size());
      for (size_t i = 0; i < g.outputs.size(); ++i) {
        EXPECT_EQ(once.outputs[i].name, g.outputs[i].name);
        EXPECT_EQ(once.node(once.outputs[i].node).type, g.node(g.outputs[i].node).type) << g.outputs[i].name;
      }
      for (int id : g.params()) EXPECT_EQ(once.node(g.nodes[id].name).type, g.nodes[id].type);  // master weights
      for (int id : g.inputs()) EXPECT_EQ(once.node(g.nodes[id].name).type, g.nodes[id].type);
    }
  }
}

// On the joint graph the backward follows the table: every matmul and linear
// runs in the low type, every sum (bias gradients) and the loss in f32.
TEST(Autocast, JointGraphBackwardFollowsThePolicy) {
  const Graph joint = apply_autocast(differentiate(mlp_block()), with_dtype(DType::bf16));
  int low = 0;
  for (const Node& n : joint.nodes) {
    if (n.op == "matmul" || n.op == "linear") {
      EXPECT_EQ(n.type.dtype, DType::bf16) << print_node(joint, n);
      ++low;
    }
    if (n.op == "sum" || n.op == "mean" || n.op == "softmax" || n.op == "layer_norm" || n.op == "cross_entropy") {
      EXPECT_EQ(n.type.dtype, DType::f32) << print_node(joint, n);
    }
  }
  // Forward: 2 linears; backward: fc2's input gradient (a linear) and the
  // two weight gradients (matmuls); x needs no gradient.
  EXPECT_EQ(low, 2 + 3);
  // Each param is cast once: the backward's fc2.weight^T is a permute of the
  // forward's bf16 cast, not a cast of an f32 permute.
  std::map<std::string, int> casts_of;
  for (const Node& n : joint.nodes) {
    if (n.op == "cast") ++casts_of[joint.nodes[n.inputs[0]].name];
    if (n.op == "permute" && joint.nodes[n.inputs[0]].op == "param") ADD_FAILURE() << print_node(joint, n);
  }
  for (const char* p : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) EXPECT_EQ(casts_of[p], 1) << p;
  // fc2's input gradient, linear(g, fc2.weight^T), reads a transpose of the forward's cast.
  const Node* input_grad = nullptr;
  for (const Node& n : joint.nodes)
    if (n.op == "linear" && joint.nodes[n.inputs[1]].op == "permute") input_grad = &n;
  ASSERT_NE(input_grad, nullptr);
  const Node& wt = joint.nodes[input_grad->inputs[1]];
  const Node& cast = joint.nodes[wt.inputs[0]];
  EXPECT_EQ(print_node(joint, wt), wt.name + " = permute(" + cast.name + ", dims=[1, 0])  # bf16[6, 5]");
  EXPECT_EQ(print_node(joint, cast), cast.name + " = cast(fc2.weight, dtype=\"bf16\")  # bf16[5, 6]");
}

// ---- numerics -------------------------------------------------------------------

TEST(Autocast, CompiledMatchesReferenceOnTheSameGraph) {
  uint32_t seed = 10;
  for (DType t : {DType::bf16, DType::f16}) {
    const double tol = t == DType::bf16 ? 3e-2 : 4e-3;
    const std::vector<Graph> graphs = t == DType::bf16 ? std::vector<Graph>{mlp_block(), attention_block(1, 3, 5)}
                                                       : std::vector<Graph>{mlp_block(1, 3, 1, 2), attention_block()};
    for (const Graph& g : graphs) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " " + g.name);
      expect_matches_reference(apply_autocast(g, with_dtype(t)), tol, ++seed);
      expect_matches_reference(apply_autocast(differentiate(g), with_dtype(t)), tol, ++seed);
      expect_matches_reference(differentiate(apply_autocast(g, with_dtype(t))), tol, ++seed);
    }
  }
}

// A tiny GPT (embedding, layer_norm, causal attention, gelu MLP, dropout,
// tied lm_head) through autodiff and autocast: its joint graph compiled
// against the reference on the same graph.
TEST(Autocast, GptJointGraphMatchesReference) {
  GptConfig c;
  c.vocab_size = 11;
  c.block_size = 5;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 6;
  c.batch = 3;
  c.dropout = 0.1;
  c.tie_weights = true;
  const Graph joint = apply_autocast(differentiate(gpt(c)), with_dtype(DType::bf16));
  int scatters = 0;
  for (const Node& n : joint.nodes) {
    if (n.op == "attention" || n.op == "linear" || n.op == "matmul") {
      EXPECT_EQ(n.type.dtype, DType::bf16) << n.name;
    }
    if (n.op == "embedding_grad") {
      EXPECT_EQ(n.type.dtype, DType::f32) << n.name;  // a scatter-add accumulates in f32
      ++scatters;
    }
  }
  EXPECT_EQ(scatters, 1);  // wte (wpe is added, not looked up)
  expect_matches_reference(joint, 3e-2, 31);
}

// DESIGN.md's pipeline: PassManager{autodiff(), autocast(bf16), adamw()}
// gives a step graph whose outputs keep their types and whose compiled run
// matches the reference on the same graph.
TEST(Autocast, ComposesWithAutodiffAndAdamW) {
  PassManager pm{autodiff(), autocast(DType::bf16), optimizer(AdamWOptions{})};
  const Graph step = pm.run(mlp_block(3, 5, 4, 3));
  ASSERT_EQ(pm.records().size(), 3u);
  EXPECT_EQ(pm.records()[1].name, "autocast(bf16)");
  for (const GraphOutput& o : step.outputs) EXPECT_EQ(step.node(o.node).type.dtype, DType::f32) << o.name;
  expect_matches_reference(step, 3e-2, 51);
}

// Largest |a - b| over the largest |b|.
double relative_error(const Buffer& a, const Buffer& b) {
  const std::vector<double> x = a.to_f64(), y = b.to_f64();
  double err = 0, mag = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err = std::max(err, std::fabs(x[i] - y[i]));
    mag = std::max(mag, std::fabs(y[i]));
  }
  return err / std::max(mag, 1e-30);
}

// Gradients of autocast graphs (autocast after autodiff, and before) against
// the f32 graph's, on random inputs at awkward sizes.
TEST(Autocast, GradientsCloseToF32) {
  uint32_t seed = 100;
  for (DType t : {DType::bf16, DType::f16}) {
    const double tol = t == DType::bf16 ? 4e-2 : 6e-3;
    const std::vector<Graph> graphs = t == DType::bf16
                                          ? std::vector<Graph>{mlp_block(9, 13, 11, 5), attention_block(3, 7, 5)}
                                          : std::vector<Graph>{mlp_block(1, 1, 3, 2), attention_block(2, 9, 3)};
    for (const Graph& g : graphs) {
      const Graph joint = differentiate(g);
      const auto args = random_args(joint, ++seed);
      const auto want = compile(joint).run(args);
      for (const Graph& mixed : {apply_autocast(joint, with_dtype(t)), differentiate(apply_autocast(g, with_dtype(t)))}) {
        const auto got = compile(mixed).run(args);
        for (const auto& [name, w] : want) {
          EXPECT_EQ(got.at(name).type(), w.type()) << name;
          EXPECT_LE(relative_error(got.at(name), w), tol) << dtype_name(t) << " " << g.name << " " << name;
        }
      }
    }
  }
}

// ---- the policy table --------------------------------------------------------

TEST(PrecisionPolicy, DefaultTablePrints) {
  EXPECT_EQ(to_string(default_precision_policy()),
            lines({"low: attention attention_grad linear matmul",
                   "f32: cross_entropy embedding_grad exp layer_norm layer_norm_grad log log_softmax logsumexp mean "
                   "pow rms_norm rms_norm_grad rsqrt softmax sum",
                   "follow: (every other op)", "keep: define define_grad"}));
  const PrecisionPolicy p = default_precision_policy();
  EXPECT_EQ(p.lookup("matmul"), OpPrecision::low);
  EXPECT_EQ(p.lookup("softmax"), OpPrecision::f32);
  EXPECT_EQ(p.lookup("gelu"), OpPrecision::follow);
  EXPECT_EQ(p.lookup("define"), OpPrecision::keep);
}

// Moving layer_norm to the low list: it runs in bf16 (no casts around it),
// and the loss changes, while still matching the reference on that graph.
TEST(PrecisionPolicy, UserCanMoveAnOp) {
  AutocastOptions o = with_dtype(DType::bf16);
  o.policy.set("layer_norm", OpPrecision::low);
  const Graph moved = apply_autocast(mlp_block(), o);
  const Graph normal = apply_autocast(mlp_block(), with_dtype(DType::bf16));
  const std::string text = print(moved);
  EXPECT_NE(text.find("  t9 = cast(ln.weight, dtype=\"bf16\")  # bf16[6]\n"
                      "  t10 = cast(ln.bias, dtype=\"bf16\")  # bf16[6]\n"
                      "  t2 = layer_norm(t1, t9, t10, eps=1e-05)  # bf16[5, 6]\n"),
            std::string::npos)
      << text;
  const auto args = random_args(moved, 7);
  const double a = compile(moved).run(args).at("loss").get(0);
  const double b = compile(normal).run(args).at("loss").get(0);
  EXPECT_NE(a, b);
  expect_matches_reference(moved, 3e-2, 8);

  // Every op to f32: no cast at all, the f32 graph itself.
  AutocastOptions all = with_dtype(DType::bf16);
  all.policy = PrecisionPolicy{};
  all.policy.fallback = OpPrecision::f32;
  EXPECT_EQ(print(apply_autocast(mlp_block(), all)), print(mlp_block()));
}

TEST(Autocast, Errors) {
  auto has = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << " lacks " << p;
  };
  has(error_of([] { autocast(DType::i32); }), {"autocast", "bf16 or f16", "i32"});
  has(error_of([] { apply_autocast(mlp_block(), with_dtype(DType::f32)); }), {"autocast", "f32"});
  PrecisionPolicy p;
  has(error_of([&] { p.set("matmull", OpPrecision::low); }), {"unknown op", "matmull"});
  has(error_of([&] { p.set("param", OpPrecision::low); }), {"param", "leaf"});
  has(error_of([&] { p.set("cast", OpPrecision::f32); }), {"cast", "dtype"});
  AutocastOptions o;
  o.policy.ops["nope"] = OpPrecision::low;  // written into the map directly: checked when applied
  has(error_of([&] { apply_autocast(mlp_block(), o); }), {"unknown op", "nope"});
}

// ---- loss scaling ------------------------------------------------------------------

Graph f16_step(const LossScalingOptions& ls, const AdamWOptions& adam = {}) {
  return PassManager{autodiff(), autocast(DType::f16), loss_scaling(ls), optimizer(adam)}.run(mlp_block());
}

double scalar(const Buffer& b) { return b.get(0); }

// The arguments `g` reads.
std::map<std::string, Buffer> args_of(const Graph& g, std::map<std::string, Buffer> args) {
  for (auto it = args.begin(); it != args.end();) it = g.find(it->first) < 0 ? args.erase(it) : std::next(it);
  return args;
}

// Arguments for a step graph: random data and params, zero AdamW state, the
// given scale and tracker.
std::map<std::string, Buffer> step_args(const Graph& step, double scale, int tracker, uint32_t seed) {
  auto args = random_args(step, seed);
  for (auto& [name, b] : args)
    if (name.find(".exp_avg") != std::string::npos) b = Buffer(b.dtype(), b.shape());
  args[kLossScale] = Buffer::from({scale}, {}, DType::f32);
  args[kGrowthTracker] = Buffer::from({static_cast<double>(tracker)}, {}, DType::i32);
  args[kOptimStep] = Buffer::from({1}, {}, DType::f32);
  args[kOptimLr] = Buffer::from({1e-2}, {}, DType::f32);
  return args;
}

void expect_same_bits(const Buffer& a, const Buffer& b, const std::string& what) {
  ASSERT_EQ(a.type(), b.type()) << what;
  const std::vector<double> x = a.to_f64(), y = b.to_f64();
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i], y[i]) << what << "[" << i << "]";
}

// A clean step: the update happens, the tracker counts, the loss is the
// unscaled loss (the same as without loss scaling), and the compiled step
// agrees with the reference on the same graph.
TEST(LossScaling, CleanStepUpdatesAndCounts) {
  LossScalingOptions ls;
  ls.growth_interval = 3;
  const Graph step = f16_step(ls);
  auto args = step_args(step, 1024, 1, 3);
  const auto out = compile(step).run(args);
  EXPECT_EQ(scalar(out.at(kOptimSkip)), 0);
  EXPECT_EQ(scalar(out.at(new_name(kLossScale))), 1024);
  EXPECT_EQ(scalar(out.at(new_name(kGrowthTracker))), 2);
  EXPECT_GT(relative_error(out.at("new.fc1.weight"), args.at("fc1.weight")), 1e-4);  // it moved

  const Graph plain = PassManager{autodiff(), autocast(DType::f16), optimizer(AdamWOptions{})}.run(mlp_block());
  const auto plain_out = compile(plain).run(args_of(plain, args));
  EXPECT_EQ(scalar(out.at("loss")), scalar(plain_out.at("loss")));
  for (const char* p : {"fc1.weight", "fc2.bias", "ln.weight"})
    EXPECT_LE(relative_error(out.at(new_name(p)), plain_out.at(new_name(p))), 1e-2) << p;

  const auto want = ref::evaluate(step, ref::from_buffers(args));
  test_util::expect_outputs_close(out, want, 5e-3, "loss-scaled step");
  EXPECT_EQ(want.at(kOptimSkip).data[0], 0);
}

// Unscaled gradients equal the unscaled graph's (within f16 rounding), the
// scale reaches the backward (a gradient too small for f16 survives scaled),
// and the joint graph with loss scaling matches the reference.
TEST(LossScaling, GradientsAreUnscaled) {
  const Graph joint = apply_autocast(differentiate(mlp_block(6, 5, 7, 3)), with_dtype(DType::f16));
  const Graph scaled = apply_loss_scaling(joint, {});
  auto args = random_args(scaled, 21);
  args[kLossScale] = Buffer::from({65536}, {}, DType::f32);
  args[kGrowthTracker] = Buffer::from({0}, {}, DType::i32);
  const auto got = compile(scaled).run(args);
  const auto want = compile(joint).run(args_of(joint, args));
  for (const auto& [name, w] : want)
    if (name.rfind("grad.", 0) == 0) {
      EXPECT_LE(relative_error(got.at(name), w), 1e-2) << name;
    }
  test_util::expect_outputs_close(got, ref::evaluate(scaled, ref::from_buffers(args)), 5e-3, "scaled joint");

  // A loss so small that its gradients underflow f16 unless scaled:
  // loss = 1e-8 sum(x w^T); the weight gradient's matmul reads 1e-8 in f16.
  GraphBuilder b("tiny");
  Tensor x = b.input("x", {4, 3});
  Tensor w = b.param("w", {2, 3});
  b.output("loss", sum(linear(x, w)) * 1e-8);
  const Graph tiny = differentiate(b.build());
  const Graph tiny_f16 = apply_autocast(tiny, with_dtype(DType::f16));
  auto targs = random_args(tiny, 22);
  const auto f32_grads = compile(tiny).run(targs);
  const auto unscaled = compile(tiny_f16).run(targs);
  targs[kLossScale] = Buffer::from({65536}, {}, DType::f32);
  targs[kGrowthTracker] = Buffer::from({0}, {}, DType::i32);
  const auto rescued = compile(apply_loss_scaling(tiny_f16, {})).run(targs);
  const double lost = relative_error(unscaled.at("grad.w"), f32_grads.at("grad.w"));
  const double kept = relative_error(rescued.at("grad.w"), f32_grads.at("grad.w"));
  EXPECT_GT(lost, 0.5);
  EXPECT_LT(kept, 2e-2);
}

// An input that makes the loss inf: the step is skipped (params and AdamW
// state bitwise unchanged), the scale halves and the tracker resets, in the
// compiled graph and in the reference.
TEST(LossScaling, InfGradientSkipsTheStep) {
  const Graph step = f16_step({});
  auto args = step_args(step, 65536, 5, 4);
  std::vector<double> x = args.at("x").to_f64();
  x[3] = 1e30;  // inf in f16
  args["x"] = Buffer::from(x, args.at("x").shape());
  std::vector<double> m = args.at("fc1.weight.exp_avg").to_f64();
  for (double& v : m) v = 0.25;
  args["fc1.weight.exp_avg"] = Buffer::from(m, args.at("fc1.weight").shape());
  const auto out = compile(step).run(args);
  EXPECT_EQ(scalar(out.at(kOptimSkip)), 1);
  EXPECT_EQ(scalar(out.at(new_name(kLossScale))), 32768);
  EXPECT_EQ(scalar(out.at(new_name(kGrowthTracker))), 0);
  int updated = 0;
  for (const auto& [name, b] : out) {
    if (name.rfind("new.", 0) != 0 || name.find("amp.") != std::string::npos) continue;
    expect_same_bits(b, args.at(name.substr(4)), name);
    ++updated;
  }
  EXPECT_EQ(updated, 6 * 3);  // 6 params, each with exp_avg and exp_avg_sq
  const auto want = ref::evaluate(step, ref::from_buffers(args));
  EXPECT_EQ(want.at(kOptimSkip).data[0], 1);
  EXPECT_EQ(want.at(new_name(kLossScale)).data[0], 32768);
  expect_same_bits(out.at("new.fc2.weight"), ref::to_buffer(want.at("new.fc2.weight")), "reference new.fc2.weight");

  // A NaN anywhere in one gradient is caught too.
  x[3] = std::numeric_limits<double>::quiet_NaN();
  args["x"] = Buffer::from(x, args.at("x").shape());
  EXPECT_EQ(scalar(compile(step).run(args).at(kOptimSkip)), 1);
}

// "optim.skip" is true exactly when some unscaled gradient element is inf or
// NaN: one inf among finite values, +inf and -inf in two gradients, one NaN;
// huge finite gradients (their f32 sum overflows) are not flagged.
TEST(LossScaling, FlagsExactlyNonFiniteElements) {
  GraphBuilder b("flags");
  Tensor x = b.input("x", {7});
  Tensor z = b.input("z", {3});
  Tensor w = b.param("w", {7});
  Tensor v = b.param("v", {3});
  b.output("loss", sum(w * x) + sum(v * z));  // grad.w = x, grad.v = z
  const Graph step = apply_loss_scaling(differentiate(b.build()), {});
  const Executable exe = compile(step);
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    std::vector<double> x, z;
    bool skip;
  };
  const double big = 3e38;
  const std::vector<Case> cases = {
      {{1, 2, 3, 4, 5, 6, 7}, {1, 2, 3}, false},
      {{1, 2, inf, 4, 5, 6, 7}, {1, 2, 3}, true},
      {{1, 2, 3, 4, 5, 6, inf}, {1, -inf, 3}, true},
      {{1, 2, 3, 4, 5, 6, 7}, {1, 2, std::nan("")}, true},
      {{big, big, big, big, big, big, big}, {big, big, big}, false},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    std::map<std::string, Buffer> args{{"x", Buffer::from(cases[k].x, {7})},
                                       {"z", Buffer::from(cases[k].z, {3})},
                                       {"w", Buffer::from({0, 0, 0, 0, 0, 0, 0}, {7})},
                                       {"v", Buffer::from({0, 0, 0}, {3})},
                                       {kLossScale, Buffer::from({1}, {}, DType::f32)},
                                       {kGrowthTracker, Buffer::from({0}, {}, DType::i32)}};
    EXPECT_EQ(exe.run(args).at(kOptimSkip).get(0), cases[k].skip ? 1 : 0) << "case " << k;
    EXPECT_EQ(ref::evaluate(step, ref::from_buffers(args)).at(kOptimSkip).data[0], cases[k].skip ? 1 : 0)
        << "reference, case " << k;
  }
}

// The Trainer: initial scale 65536 (not 0), growth after growth_interval
// clean steps, a skipped step that changes nothing and is not counted.
TEST(LossScaling, TrainerGrowsAndSkips) {
  const Graph joint = apply_autocast(differentiate(mlp_block()), with_dtype(DType::f16));
  TrainerOptions o;
  o.loss_scaling = LossScalingOptions{};
  o.loss_scaling->growth_interval = 3;
  o.optimizer = AdamWOptions{1e-2};
  Trainer tr(joint, o);
  EXPECT_EQ(tr.loss_scale(), 65536);
  EXPECT_EQ(scalar(tr.state().at(kGrowthTracker)), 0);
  std::map<std::string, Buffer> batch = random_args(mlp_block(), 9);
  batch.erase("fc1.weight"), batch.erase("fc1.bias"), batch.erase("ln.weight"), batch.erase("ln.bias");
  batch.erase("fc2.weight"), batch.erase("fc2.bias");
  for (int s = 1; s <= 3; ++s) {
    tr.step(batch);
    EXPECT_FALSE(tr.last_step_skipped());
    EXPECT_EQ(tr.steps_done(), s);
    EXPECT_EQ(tr.loss_scale(), s < 3 ? 65536 : 131072) << "after step " << s;
    EXPECT_EQ(scalar(tr.state().at(kGrowthTracker)), s < 3 ? s : 0) << "after step " << s;
  }
  std::map<std::string, Buffer> before;
  for (const auto& [n, b] : tr.params()) before[n] = b.clone();
  for (const auto& [n, b] : tr.state()) before[n] = b.clone();
  auto bad = batch;
  std::vector<double> x = bad.at("x").to_f64();
  x[0] = 1e30;
  bad["x"] = Buffer::from(x, bad.at("x").shape());
  tr.step(bad);
  EXPECT_TRUE(tr.last_step_skipped());
  EXPECT_EQ(tr.steps_done(), 3);
  EXPECT_EQ(tr.loss_scale(), 65536);
  for (const auto& [n, b] : tr.params()) expect_same_bits(b, before.at(n), n);
  for (const auto& [n, b] : tr.state())
    if (n.rfind("amp.", 0) != 0) expect_same_bits(b, before.at(n), n);
  tr.step(batch);
  EXPECT_FALSE(tr.last_step_skipped());
  EXPECT_EQ(tr.steps_done(), 4);
  EXPECT_EQ(scalar(tr.state().at(kGrowthTracker)), 1);
}

// A short f16 training with loss scaling follows the f32 run's losses.
TEST(LossScaling, TrainerF16LossesCloseToF32) {
  const Graph g = mlp_block(24, 9, 13, 5);
  std::mt19937 rng(5);
  std::vector<double> x(24 * 9), y(24);
  for (double& v : x) v = std::uniform_real_distribution<double>(-1, 1)(rng);
  for (int i = 0; i < 24; ++i) y[i] = (x[i * 9] + x[i * 9 + 1] > 0 ? 1 : 0) + (x[i * 9 + 2] > 0.3 ? 2 : 0);
  const std::map<std::string, Buffer> batch{{"x", Buffer::from(x, {24, 9})}, {"y", Buffer::from(y, {24}, DType::i32)}};
  TrainerOptions o;
  o.optimizer = AdamWOptions{3e-2};
  o.seed = 11;
  Trainer f32(differentiate(g), o);
  o.loss_scaling = LossScalingOptions{};
  Trainer f16(apply_autocast(differentiate(g), with_dtype(DType::f16)), o);
  double first = 0, last = 0;
  for (int s = 0; s < 25; ++s) {
    const double a = f32.step(batch), b = f16.step(batch);
    EXPECT_NEAR(b, a, 2e-2 * (1 + std::fabs(a))) << "step " << s;
    EXPECT_FALSE(f16.last_step_skipped()) << "step " << s;
    if (s == 0) first = a;
    last = a;
  }
  EXPECT_LT(last, 0.7 * first);  // it trained
}

TEST(LossScaling, Errors) {
  auto has = [](const std::string& msg, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << " lacks " << p;
  };
  const Graph joint = differentiate(mlp_block());
  auto with = [&](auto change) {
    LossScalingOptions o;
    change(o);
    return error_of([&] { apply_loss_scaling(joint, o); });
  };
  has(with([](LossScalingOptions& o) { o.growth_factor = 0.5; }), {"loss_scaling", "growth_factor", "0.5"});
  has(with([](LossScalingOptions& o) { o.backoff_factor = 1; }), {"loss_scaling", "backoff_factor"});
  has(with([](LossScalingOptions& o) { o.growth_interval = 0; }), {"growth_interval"});
  has(with([](LossScalingOptions& o) { o.init_scale = -1; }), {"init_scale", "-1"});
  has(error_of([] { apply_loss_scaling(mlp_block(), {}); }), {"no loss cotangent", "grad.loss", "after autodiff"});
  has(error_of([&] { apply_loss_scaling(adamw(joint, {}), {}); }), {"optim.step", "before the optimizer"});
  has(error_of([&] { apply_loss_scaling(apply_loss_scaling(joint, {}), {}); }), {"already", "amp.loss_scale"});

  TrainerOptions o;
  o.loss_scaling = LossScalingOptions{};
  o.accumulation_steps = 2;
  has(error_of([&] { Trainer t(joint, o); }), {"Trainer", "loss scaling", "accumulation_steps = 2"});
  o.accumulation_steps = 1;
  has(error_of([&] { Trainer t(apply_loss_scaling(joint, {}), o); }), {"Trainer", "amp.loss_scale", "loss_scaling"});
}

}  // namespace
}  // namespace tessera
