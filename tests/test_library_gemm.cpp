// The GPU targets' library GEMMs (src/schedules/library_gemm.h) and the
// attention decomposition that feeds them (decompose_attention.h), checked
// without a GPU:
//  - every f32/f16 matmul and linear of the MLP and GPT training steps, and
//    of hand-made products covering batches, broadcasts, transposes and
//    elementwise operands, becomes a kernel that match_library_gemm accepts
//    once partition() materializes operands for the library;
//  - each matched GEMM, computed from its descriptor alone (a plain loop over
//    the kernel's inputs with cuBLASLt's row-major semantics), equals the
//    float64 reference interpreter run on the kernel's graph;
//  - products the library cannot take (f64, i32) stay Halide kernels;
//  - a relu of a linear that nothing else reads is the GEMM's epilogue;
//  - compile_cuda's plan (what tessera-opt prints) reports those GEMMs as
//    library calls and compiles the rest;
//  - decompose_attention leaves no attention or attention_grad node and
//    computes what the graph did (reference interpreter on both; it rounds
//    every node to f32, so the two orders of operations agree to f32
//    rounding);
//  - the GPT step's attention becomes fused attention calls (one forward,
//    and one backward writing dq, dk, dv, per layer), and attention the
//    kernels do not take is decomposed (library_attention.h);
//  - quantized linears that the CUDA quantized-linear kernels take (f32,
//    in_features a multiple of 64; grad_input above 8 rows) become calls of
//    those kernels whose descriptor, computed in a plain loop from the
//    format's definition, equals the reference interpreter on the kernel
//    (library_quant_linear.h); others of more than 8 rows become dequantize
//    + a library GEMM that computes what they did (dequantize_for_gemm.h),
//    and the rest stay Halide kernels;
//  - its token embedding's gradient becomes a call of the CUDA
//    embedding-gradient kernel whose descriptor, summed in a plain loop,
//    equals the reference interpreter on the kernel (library_embedding_grad.h).
#include <gtest/gtest.h>
#include <tessera/models.h>
#include <tessera/tessera.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "compile_cuda.h"
#include "cost_model.h"
#include "decompose_attention.h"
#include "dequantize_for_gemm.h"
#include "library_attention.h"
#include "library_embedding_grad.h"
#include "library_gemm.h"
#include "library_quant_linear.h"
#include "partition.h"
#include "reference/reference.h"
#include "test_util.h"

using namespace tessera;

namespace {

ref::RefTensor random_tensor(const TensorType& t, std::mt19937& rng) {
  ref::RefTensor r;
  r.shape = t.shape;
  r.dtype = t.dtype;
  r.data.resize(numel(t.shape));
  std::uniform_real_distribution<double> u(-1, 1);
  for (double& x : r.data) x = is_float(t.dtype) ? ref::to_dtype(t.dtype, u(rng)) : static_cast<double>(rng() % 5);
  return r;
}

// C = op(A) @ op(B) (+ bias), row-major, batched by the descriptor's strides.
std::vector<double> gemm_from_descriptor(const LibraryGemm& g, const std::vector<double>& a,
                                         const std::vector<double>& b, const std::vector<double>* bias) {
  const int64_t sa = g.stride_a >= 0 ? g.stride_a : g.m * g.k, sb = g.stride_b >= 0 ? g.stride_b : g.k * g.n;
  std::vector<double> c(static_cast<size_t>(g.batch * g.m * g.n));
  for (int64_t p = 0; p < g.batch; ++p)
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < g.k; ++k) {
          const double x = a.at(p * sa + (g.trans_a ? k * g.m + i : i * g.k + k));
          const double y = b.at(p * sb + (g.trans_b ? j * g.k + k : k * g.n + j));
          acc += x * y;
        }
        c[(p * g.m + i) * g.n + j] = acc + (bias ? bias->at(j) : 0.0);
      }
  return c;
}

// Partitions `g` for a GPU target and checks every product kernel (a relu
// of its product, the RELU epilogue's kernel, included): matched (when
// `expect_all` and the dtype is f32/f16) and equal to the reference.
// Returns the number of library GEMMs.
int check_products(const Graph& g, bool expect_all, uint32_t seed) {
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  std::vector<Kernel> kernels = partition(g, &cost, nullptr, /*library_gemm=*/true);
  std::mt19937 rng(seed);
  int matched = 0;
  for (const Kernel& kernel : kernels) {
    const Node& first = g.nodes[kernel.roots[0]];  // a GELU epilogue is the second root
    const bool relu = first.op == "relu";
    const Node& root = relu ? g.nodes[first.inputs[0]] : first;
    if (root.op != "matmul" && root.op != "linear") continue;
    std::optional<LibraryGemm> gemm = match_library_gemm(kernel);
    const bool library_dtype = root.type.dtype == DType::f32 || root.type.dtype == DType::f16;
    if (!library_dtype) {
      EXPECT_FALSE(gemm) << root.name << " (" << dtype_name(root.type.dtype) << ") cannot be a cuBLASLt GEMM";
      continue;
    }
    if (!gemm) {
      EXPECT_FALSE(expect_all) << "kernel " << kernel_name(g, kernel.roots) << " of '" << g.name
                               << "' is not a library GEMM:\n"
                               << print(kernel.graph);
      continue;
    }
    ++matched;
    std::map<std::string, ref::RefTensor> args;
    for (size_t i = 0; i < kernel.inputs.size(); ++i)
      args["in" + std::to_string(i)] = random_tensor(kernel.graph.nodes[i].type, rng);
    const std::map<std::string, ref::RefTensor> outs = ref::evaluate(kernel.graph, args);
    const ref::RefTensor& want = outs.at(gemm->gelu ? "out0" : "out");
    const std::vector<double>* bias = gemm->bias >= 0 ? &args.at("in" + std::to_string(gemm->bias)).data : nullptr;
    const std::vector<double> got = gemm_from_descriptor(*gemm, args.at("in" + std::to_string(gemm->a)).data,
                                                         args.at("in" + std::to_string(gemm->b)).data, bias);
    EXPECT_EQ(static_cast<int64_t>(got.size()), want.numel()) << gemm->text();
    // Both sides round the f64 sum once to the product's dtype: at most an ulp apart.
    const double tol = root.type.dtype == DType::f16 ? 1e-3 : 2e-7;
    for (size_t i = 0; i < got.size() && i < want.data.size(); ++i)
      if (std::fabs((relu ? std::max(ref::to_dtype(root.type.dtype, got[i]), 0.0)
                          : ref::to_dtype(root.type.dtype, got[i])) -
                    want.data[i]) > tol * (1 + std::fabs(want.data[i]))) {
        ADD_FAILURE() << kernel_name(g, kernel.roots) << " as " << gemm->text() << ": element " << i << " is "
                      << got[i] << ", the reference says " << want.data[i];
        break;
      }
    if (!gemm->gelu) continue;
    // The epilogue: gelu (tanh form) of the product rounded to its dtype, as cuBLASLt applies it.
    EXPECT_EQ(kernel.roots.size(), 2u);
    const ref::RefTensor& act = outs.at("out1");
    for (size_t i = 0; i < got.size() && i < act.data.size(); ++i) {
      const double x = ref::to_dtype(root.type.dtype, got[i]);
      const double y = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
      if (std::fabs(ref::to_dtype(root.type.dtype, y) - act.data[i]) > 2 * tol * (1 + std::fabs(act.data[i]))) {
        ADD_FAILURE() << kernel_name(g, kernel.roots) << " as " << gemm->text() << ": gelu element " << i << " is "
                      << y << ", the reference says " << act.data[i];
        break;
      }
    }
  }
  return matched;
}

Graph products() {
  GraphBuilder g("products");
  auto in = [&](Shape s, DType t = DType::f32) {
    static int counter = 0;
    return g.input("x" + std::to_string(counter++), std::move(s), t);
  };
  g.output("plain", matmul(in({1, 1}), in({1, 1})));
  g.output("ragged", matmul(in({7, 13}), in({13, 17})));
  g.output("batched", matmul(in({2, 3, 5, 4}), in({2, 3, 4, 6})));
  g.output("shared_b", matmul(in({2, 3, 5, 4}), in({4, 6})));           // folded into rows
  g.output("shared_a", matmul(in({5, 4}), in({3, 4, 6})));              // A broadcast: stride 0
  g.output("both_t", matmul(transpose(in({2, 4, 5}), -1, -2), transpose(in({2, 6, 4}), -1, -2)));
  g.output("b_t_shared", matmul(in({3, 5, 4}), transpose(in({6, 4}), 0, 1)));
  g.output("elementwise_operand", matmul(relu(in({5, 4})), exp(in({4, 3}))));
  g.output("reshaped", matmul(reshape(in({2, 10}), {5, 4}), in({4, 3})));
  g.output("reshaped_twice_t", matmul(transpose(reshape(reshape(in({2, 3, 4}), {6, 4}), {3, 8}), 0, 1), in({3, 5})));
  g.output("linear_bias", linear(in({13, 17}), g.param("w0", {5, 17}), g.param("b0", {5})));
  g.output("linear_rank3", linear(in({2, 3, 9}), g.param("w1", {4, 9})));
  g.output("linear_rank1", linear(in({9}), g.param("w2", {4, 9}), g.param("b2", {4})));
  g.output("linear_wt", linear(in({6, 5}), transpose(g.param("w3", {5, 7}), 0, 1)));
  g.output("linear_xt", linear(transpose(in({5, 6}), 0, 1), g.param("w4", {7, 5})));
  g.output("linear_relu_in", linear(relu(in({64, 33})), g.param("w5", {10, 33}), g.param("b5", {10})));
  g.output("half", matmul(in({6, 8}, DType::f16), in({8, 5}, DType::f16)));
  g.output("linear_gelu", gelu(linear(in({9, 5}), g.param("w6", {16, 5}), g.param("b6", {16})), "tanh"));
  g.output("linear_gelu_f16", gelu(linear(in({3, 7}, DType::f16), g.param("w7", {8, 7}, DType::f16)), "tanh"));
  return g.build();
}

Graph non_library_products() {
  GraphBuilder g("non_library");
  g.output("f64", matmul(g.input("a", {4, 5}, DType::f64), g.input("b", {5, 3}, DType::f64)));
  g.output("i32", matmul(g.input("c", {4, 5}, DType::i32), g.input("d", {5, 3}, DType::i32)));
  return g.build();
}

TEST(LibraryGemm, HandMadeProductsAllMatchAndComputeTheReference) {
  SEEDED(seed);
  EXPECT_EQ(check_products(products(), true, seed), 19);
}

TEST(LibraryGemm, ReshapesOfAComputedOperandAreViewsNotCopies) {
  // The LM head's backward reads its cast gradient through two reshapes and
  // a transpose; only the cast is materialized, the GEMM reads it as a view.
  GraphBuilder g("views");
  Tensor x = exp(g.input("x", {2, 3, 4}));
  g.output("y", matmul(transpose(reshape(reshape(x, {6, 4}), {3, 8}), 0, 1), g.input("w", {3, 5})));
  const Graph graph = g.build();
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  const std::vector<Kernel> kernels = partition(graph, &cost, nullptr, /*library_gemm=*/true);
  ASSERT_EQ(kernels.size(), 2u);
  EXPECT_EQ(graph.nodes[kernels[0].roots.back()].op, "exp");
  EXPECT_TRUE(match_library_gemm(kernels[1]).has_value());
  SEEDED(seed);
  EXPECT_EQ(check_products(graph, true, seed), 1);
}

// A materialized tanh-form gelu of a linear is the GEMM's epilogue (one
// kernel, outputs [product, gelu]); other activations, the erf form, f16,
// rows that are not a multiple of 8 elements and CPU targets keep a kernel
// of their own for the gelu.
TEST(LibraryGemm, GeluOfALinearIsItsEpilogue) {
  GraphBuilder g("gelu_epilogue");
  Tensor x = g.input("x", {7, 5});
  g.output("tanh", gelu(linear(x, g.param("w0", {24, 5}), g.param("b0", {24})), "tanh"));
  g.output("erf", gelu(linear(x, g.param("w1", {24, 5}))));
  g.output("odd", gelu(linear(x, g.param("w2", {12, 5})), "tanh"));
  g.output("relu", relu(linear(x, g.param("w3", {24, 5}))));
  g.output("f16", gelu(linear(cast(x, DType::f16), g.param("w4", {24, 5}, DType::f16)), "tanh"));
  g.output("bf16", gelu(linear(cast(x, DType::bf16), g.param("w5", {16, 5}, DType::bf16)), "tanh"));
  const Graph graph = g.build();
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  std::vector<std::string> epilogues;
  for (const Kernel& k : partition(graph, &cost, nullptr, /*library_gemm=*/true)) {
    const std::optional<LibraryGemm> gemm = match_library_gemm(k);
    if (!gemm || !gemm->gelu) continue;
    ASSERT_EQ(k.roots.size(), 2u);
    EXPECT_EQ(graph.nodes[k.roots[1]].op, "gelu");
    epilogues.push_back(gemm->text());
  }
  EXPECT_EQ(epilogues, (std::vector<std::string>{
                           "cuBLASLt gemm f32 [7 x 5] @ [5 x 24]^T + bias, then gelu (tanh; the product kept)",
                           "cuBLASLt gemm bf16 [7 x 5] @ [5 x 16]^T, then gelu (tanh; the product kept)"}));
  // Without library products each linear is a kernel of its own (the small
  // gelu outputs may share one: partition.h's launch-bound joins).
  for (const Kernel& k : partition(graph, &cost, nullptr, /*library_gemm=*/false))
    for (int r : k.roots) {
      if (graph.nodes[r].op == "linear") {
        EXPECT_EQ(k.roots.size(), 1u);
      }
    }
}

// A materialized tanh-form gelu_grad whose gradient input is a product read
// by nothing else computes the product in its own kernel, one GEMM with the
// DGELU epilogue (a computed GELU input is materialized); from its
// descriptor, product * gelu'(x) equals the float64 reference on the kernel.
// A product read twice, or an erf-form gradient, stays a GEMM of its own.
TEST(LibraryGemm, GeluGradOfAProductIsItsEpilogue) {
  GraphBuilder g("dgelu_epilogue");
  Tensor x = g.input("x", {9, 24}), dy = g.input("dy", {9, 5}), w = g.param("w", {5, 24});
  g.output("tanh", gelu_grad(x, matmul(dy, w), "tanh"));                                    // fused
  g.output("linear", gelu_grad(x, linear(dy, transpose(w, 0, 1)), "tanh"));                // fused
  g.output("computed_x", gelu_grad(exp(x), matmul(dy, w), "tanh"));                        // fused, exp(x) materialized
  g.output("erf", gelu_grad(x, matmul(dy, w)));                                             // not: erf form
  Tensor shared = matmul(dy, w);
  g.output("shared", gelu_grad(x, shared, "tanh") + shared);                               // not: read twice
  const Graph graph = g.build();
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  SEEDED(seed);
  std::mt19937 rng(seed);
  int fused = 0;
  for (const Kernel& k : partition(graph, &cost, nullptr, /*library_gemm=*/true)) {
    const std::optional<LibraryGemm> gemm = match_library_gemm(k);
    if (!gemm || gemm->dgelu < 0) continue;
    ++fused;
    EXPECT_EQ(graph.nodes[k.roots[0]].op, "gelu_grad");
    EXPECT_NE(gemm->text().find(", times gelu'(in"), std::string::npos) << gemm->text();
    std::map<std::string, ref::RefTensor> args;
    for (size_t i = 0; i < k.inputs.size(); ++i) args["in" + std::to_string(i)] = random_tensor(k.graph.nodes[i].type, rng);
    const ref::RefTensor want = ref::evaluate(k.graph, args).at("out");
    const std::vector<double> product = gemm_from_descriptor(*gemm, args.at("in" + std::to_string(gemm->a)).data,
                                                             args.at("in" + std::to_string(gemm->b)).data, nullptr);
    const std::vector<double>& xs = args.at("in" + std::to_string(gemm->dgelu)).data;
    ASSERT_EQ(static_cast<int64_t>(product.size()), want.numel());
    for (size_t i = 0; i < product.size(); ++i) {
      const double v = xs[i], kk = std::sqrt(2 / M_PI), t = std::tanh(kk * (v + 0.044715 * v * v * v));
      const double d = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * kk * (1 + 3 * 0.044715 * v * v);
      const double got = ref::to_dtype(DType::f32, ref::to_dtype(DType::f32, product[i]) * d);
      if (std::fabs(got - want.data[i]) > 1e-6 * (1 + std::fabs(want.data[i]))) {
        ADD_FAILURE() << gemm->text() << ": element " << i << " is " << got << ", the reference says "
                      << want.data[i];
        break;
      }
    }
  }
  EXPECT_EQ(fused, 3);
}

// A materialized relu of a linear that nothing else reads is one GEMM with
// the RELU epilogue, the product kept inside its kernel (never written);
// from its descriptor, relu(product + bias) equals the float64 reference on
// the kernel. Not when the product has another reader, or on a CPU target.
// In the MLP training step the relu's gradient reads the relu, so the
// product is read by the relu alone and no kernel writes it.
TEST(LibraryGemm, ReluOfALinearIsItsEpilogue) {
  auto relu_step = [](bool extra_reader) {
    GraphBuilder g("relu_epilogue");
    Tensor x = g.input("x", {9, 5});
    Tensor pre = linear(x, g.param("w", {33, 5}), g.param("b", {33}));
    g.output("h", relu(pre));
    g.output("h16", relu(linear(cast(x, DType::f16), g.param("w16", {16, 5}, DType::f16))));
    if (extra_reader) g.output("e", exp(pre));
    return g.build();
  };
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  SEEDED(seed);
  std::mt19937 rng(seed);
  // The number of RELU GEMMs, each checked against the reference.
  auto relu_gemms = [&](const Graph& graph, bool library) {
    int relu = 0;
    for (const Kernel& k : partition(graph, &cost, nullptr, library)) {
      const std::optional<LibraryGemm> gemm = library ? match_library_gemm(k) : std::nullopt;
      if (!gemm || !gemm->relu) continue;
      ++relu;
      EXPECT_EQ(k.roots.size(), 1u);
      EXPECT_EQ(graph.nodes[k.roots[0]].op, "relu");
      EXPECT_NE(gemm->text().find(", then relu"), std::string::npos) << gemm->text();
      std::map<std::string, ref::RefTensor> args;
      for (size_t i = 0; i < k.inputs.size(); ++i) args["in" + std::to_string(i)] = random_tensor(k.graph.nodes[i].type, rng);
      const ref::RefTensor want = ref::evaluate(k.graph, args).at("out");
      const std::vector<double>* bias = gemm->bias >= 0 ? &args.at("in" + std::to_string(gemm->bias)).data : nullptr;
      const std::vector<double> product = gemm_from_descriptor(*gemm, args.at("in" + std::to_string(gemm->a)).data,
                                                               args.at("in" + std::to_string(gemm->b)).data, bias);
      const DType dt = graph.nodes[k.roots[0]].type.dtype;
      for (size_t i = 0; i < product.size(); ++i)
        if (std::fabs(std::max(ref::to_dtype(dt, product[i]), 0.0) - want.data[i]) > 1e-6 * (1 + std::fabs(want.data[i]))) {
          ADD_FAILURE() << gemm->text() << ": element " << i << " differs from the reference " << want.data[i];
          break;
        }
    }
    return relu;
  };
  EXPECT_EQ(relu_gemms(relu_step(false), true), 2);
  EXPECT_EQ(relu_gemms(relu_step(true), true), 1);   // exp(pre) reads the f32 product
  EXPECT_EQ(relu_gemms(relu_step(false), false), 0);  // CPU
  const Graph mlp = registered_model("mlp_train_step", {{"sizes", "13,33,7"}, {"batch", "5"}});
  EXPECT_EQ(relu_gemms(mlp, true), 1);
  for (const Kernel& k : partition(mlp, &cost, nullptr, true))
    for (int r : k.roots)
      for (const Node& node : mlp.nodes)
        EXPECT_FALSE(node.op == "relu" && node.inputs[0] == r) << "the relu's product is written: " << mlp.nodes[r].name;
}

TEST(LibraryGemm, F64AndIntegerProductsStayHalideKernels) {
  SEEDED(seed);
  EXPECT_EQ(check_products(non_library_products(), false, seed), 0);
}

TEST(LibraryGemm, EveryProductOfTheTrainingStepsIsALibraryGemm) {
  const Graph mlp = registered_model("mlp_train_step", {{"sizes", "13,33,7"}, {"batch", "5"}});
  SEEDED(seed);
  EXPECT_EQ(check_products(mlp, true, seed), 5);
  const Graph gpt = decompose_attention(registered_model(
      "gpt_train_step",
      {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "2"}, {"n_head", "2"}, {"n_embd", "6"}, {"batch", "3"}}));
  EXPECT_GE(check_products(gpt, true, seed + 1), 2 * 12);
}

TEST(LibraryGemm, DescriptorText) {
  LibraryGemm g;
  g.m = 64;
  g.n = 256;
  g.k = 784;
  g.trans_b = true;
  g.bias = 2;
  EXPECT_EQ(g.text(), "cuBLASLt gemm f32 [64 x 784] @ [784 x 256]^T + bias");
}

TEST(LibraryGemm, TheCudaPlanReportsTheProductsAsLibraryCalls) {
  const Graph mlp = registered_model("mlp_train_step", {{"sizes", "13,33,7"}, {"batch", "5"}});
  const CudaCompileResult r = compile_cuda(mlp, Target::parse("host-cuda-sm90"), {.library_gemm = true});
  int library = 0;
  for (const CudaKernelInfo& k : r.kernels) {
    const bool product = k.name.find("(linear)") != std::string::npos || k.name.find("(matmul)") != std::string::npos ||
                         k.name.find("(relu)") != std::string::npos;  // the RELU epilogue's kernel
    EXPECT_EQ(product, !k.library.empty()) << k.name;
    EXPECT_EQ(k.library.empty(), k.gpu_kernels > 0) << k.name << ": a library call compiles no GPU kernel";
    library += !k.library.empty();
  }
  EXPECT_EQ(library, 5);
  const std::string text = r.text();
  EXPECT_NE(text.find("(5 cuBLASLt GEMMs, "), std::string::npos) << text;
  EXPECT_NE(text.find("kernel t1 (relu) reads in0 = x, in1 = layers.0.weight, in2 = layers.0.bias\n"
                      "  => library call: cuBLASLt gemm f32 [5 x 13] @ [13 x 33]^T + bias, then relu, estimated "),
            std::string::npos)
      << text;
  // Without the option every product is a Halide kernel.
  for (const CudaKernelInfo& k : compile_cuda(mlp, Target::parse("host-cuda-sm90")).kernels)
    EXPECT_TRUE(k.library.empty()) << k.name;
}

// A row-wise op read only by a cast (a layer_norm or softmax converted to
// bf16 for a product) is computed in the cast's kernel, which owns its rows;
// one that something else reads, or a softmax over another axis, keeps a
// kernel of its own. Without library products nothing changes.
TEST(RowEpilogue, ACastComputesTheRowWiseOpItConverts) {
  GraphBuilder g("row_epilogue");
  Tensor x = g.input("x", {37, 29});
  Tensor w = g.param("w", {16, 29}, DType::bf16);
  g.output("ln", linear(cast(layer_norm(x, g.param("g", {29}), g.param("b", {29})), DType::bf16), w));
  g.output("softmax", linear(cast(softmax(x), DType::bf16), w));
  Tensor shared = rms_norm(x, g.param("s", {29}));
  g.output("shared", linear(cast(shared, DType::bf16), w));
  g.output("shared_f32", shared);
  g.output("columns", cast(softmax(x, 0), DType::bf16));
  const Graph graph = g.build();
  const CudaCompileResult r = compile_cuda(graph, Target::parse("host-cuda-sm90"), {.library_gemm = true});
  const std::string text = r.text();
  SCOPED_TRACE(text);
  std::vector<std::string> row_kernels;
  for (const CudaKernelInfo& k : r.kernels)
    for (const char* op : {"(layer_norm", "(softmax", "(rms_norm"})
      if (k.name.find(op) != std::string::npos) row_kernels.push_back(k.name);
  EXPECT_EQ(row_kernels.size(), 2u);  // the shared rms_norm and the softmax over columns
  for (const char* line : {"(layer_norm): inline, its rows computed with the output's",
                           "(softmax): inline, its rows computed with the output's"})
    EXPECT_NE(text.find(line), std::string::npos) << line;
  EXPECT_EQ(text.find("(rms_norm): inline"), std::string::npos);
  EXPECT_NE(text.find("out (cast): one block per row"), std::string::npos);
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  int rows = 0;
  for (const Kernel& k : partition(graph, &cost, nullptr, /*library_gemm=*/false))
    for (const char* op : {"layer_norm", "softmax", "rms_norm"}) rows += graph.nodes[k.roots[0]].op == op ? 1 : 0;
  EXPECT_EQ(rows, 4);
}

// Casts of params to bf16 for products (GPT-2's twelve weights of each
// kind), each read by a product before the next cast, and each moving more
// than a launch's worth of bytes (12 MB; the sm90 budget is 3 us at 3350
// GB/s): the casts of one type share the first
// one's kernel; a cast of another shape, and a cast of a computed tensor,
// do not join them.
TEST(ParamCasts, CastsOfParamsOfOneTypeShareTheFirstOnesKernel) {
  GraphBuilder g("param_casts");
  Tensor x = cast(g.input("x", {3, 1000}), DType::bf16), y = g.input("y", {3, 2048});
  for (int i = 0; i < 6; ++i) {
    const Shape shape = i == 3 ? Shape{2048, 999} : Shape{2048, 1000};
    Tensor w = g.param("w" + std::to_string(i), shape);
    Tensor wc = i == 4 ? cast(w * 2.0, DType::bf16) : cast(w, DType::bf16);
    Tensor xi = i == 3 ? cast(g.input("x3", {3, 999}), DType::bf16) : x;
    y = y + cast(matmul(xi, transpose(wc, 0, 1)), DType::f32);
  }
  g.output("y", y);
  const CudaCompileResult r = compile_cuda(g.build(), Target::parse("host-cuda-sm90"), {.library_gemm = true});
  const std::string text = r.text();
  EXPECT_NE(text.find("(cast, cast, cast, cast) reads in0 = w0, in1 = w1, in2 = w2, in3 = w5; writes"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("(cast) reads in0 = w3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("(cast) reads in0 = w4\n"), std::string::npos) << text;
}

// A layer norm's backward added to the residual stream's gradient, whose
// sum is read in f32 (the next residual add) and as bf16 (products): the
// add and its cast are one kernel that computes the layer_norm_grad's rows
// itself, so dx is never written, and that kernel also writes the norm
// recomputed for the weight's gradient (it joins that norm's kernel, which
// runs earlier). Sizes: rows of one warp (33) and of several (3000), one
// row (a rank-1 x), and GPT-2's.
TEST(RowEpilogue, AResidualAddAndItsCastComputeTheNormGradient) {
  for (const Shape& shape : std::vector<Shape>{{2, 600, 33}, {4, 3000}, {7}, {16, 1024, 768}}) {
    SCOPED_TRACE(to_string(shape));
    GraphBuilder g("norm_grad_epilogue");
    Tensor x = g.input("x", shape), dy = g.input("dy", shape), resid = g.input("resid", shape);
    const int64_t d = shape.back();
    // As norm_vjp builds it: the weight's gradient first, from the norm
    // recomputed without weight, read by a column sum before the add.
    g.output("w_grad", tessera::sum(reshape(dy * layer_norm(x), {-1, d}), {0}));
    Tensor sum = resid + layer_norm_grad(x, dy, g.param("w", {d}));
    g.output("resid_grad", sum);
    g.output("dx", matmul(reshape(cast(sum, DType::bf16), {-1, d}), g.param("p", {d, 8}, DType::bf16)));
    const CudaCompileResult r = compile_cuda(g.build(), Target::parse("host-cuda-sm90"), {.library_gemm = true});
    const std::string text = r.text();
    SCOPED_TRACE(text);
    int fused = 0;
    for (const CudaKernelInfo& k : r.kernels) {
      EXPECT_EQ(k.name.find("(layer_norm_grad)"), std::string::npos) << k.name;
      EXPECT_EQ(k.name.find("(layer_norm)"), std::string::npos) << k.name;
      if (k.name.find("(layer_norm, add, cast)") != std::string::npos) {
        ++fused;
        EXPECT_EQ(k.gpu_kernels, 1) << k.name;
      }
    }
    EXPECT_EQ(fused, 1);
    EXPECT_NE(text.find("(layer_norm_grad): inline, its rows computed with the output's"), std::string::npos);
    EXPECT_NE(text.find("(layer_norm): an output, its rows computed with the others', reading "), std::string::npos);
  }
}

// A layer_norm and its remat clone (remat.h: the attribute names the
// original), each read only by its own cast to bf16: both are row
// epilogues. The kernel-level decisions see the two as one node with two
// readers, which must not make either a kernel of its own.
TEST(RowEpilogue, ARematCloneIsComputedInItsCastsKernel) {
  GraphBuilder g("remat_clone");
  // The norm reads a sum of six inputs: recomputing it in both readers
  // reads more bytes than writing it once, so a node with two readers would
  // be materialized.
  Tensor x = g.input("x0", {4096, 768});
  for (int i = 1; i < 6; ++i) x = x + g.input("x" + std::to_string(i), {4096, 768});
  Tensor w = g.param("w", {64, 768}, DType::bf16), gain = g.param("g", {768}), bias = g.param("b", {768});
  Tensor ln = layer_norm(x, gain, bias);
  g.output("forward", linear(cast(ln, DType::bf16), w));
  Tensor clone = g.add("layer_norm", {x, gain, bias}, {{"eps", 1e-5}, {"remat", ln.name()}});
  g.output("backward", matmul(transpose(cast(clone, DType::bf16), 0, 1), g.input("dy", {4096, 64}, DType::bf16)));
  const CudaCompileResult r = compile_cuda(g.build(), Target::parse("host-cuda-sm90"), {.library_gemm = true});
  const std::string text = r.text();
  for (const CudaKernelInfo& k : r.kernels) EXPECT_EQ(k.name.find("(layer_norm)"), std::string::npos) << text;
  size_t inlined = 0;
  for (size_t at = text.find("(layer_norm): inline, its rows computed with the output's"); at != std::string::npos;
       at = text.find("(layer_norm): inline, its rows computed with the output's", at + 1))
    ++inlined;
  EXPECT_EQ(inlined, 2u) << text;
}

TEST(DecomposeAttention, ComputesWhatAttentionComputes) {
  for (bool causal : {true, false})
    for (double scale : {0.0, 0.3}) {
      GraphBuilder b("att");
      Tensor q = b.input("q", {2, 3, 7, 5}), k = b.input("k", {2, 3, 7, 5}), v = b.input("v", {2, 3, 7, 4});
      b.output("out", attention(q, k, v, causal, scale));
      const Graph g = b.build();
      const Graph d = decompose_attention(g);
      verify(d, {true});
      for (const Node& n : d.nodes) EXPECT_NE(n.op, "attention");
      SEEDED(seed);
      std::mt19937 rng(seed);
      std::map<std::string, ref::RefTensor> args;
      for (const char* name : {"q", "k", "v"}) args[name] = random_tensor(g.node(name).type, rng);
      const ref::RefTensor want = ref::evaluate(g, args).at("out"), got = ref::evaluate(d, args).at("out");
      ASSERT_EQ(got.shape, want.shape);
      for (size_t i = 0; i < want.data.size(); ++i)
        ASSERT_NEAR(got.data[i], want.data[i], 1e-5 * (1 + std::fabs(want.data[i])))
            << "causal " << causal << " scale " << scale << " element " << i;
    }
}

TEST(DecomposeAttention, ComputesWhatAttentionGradComputes) {
  for (bool causal : {true, false})
    for (double scale : {0.0, 0.3}) {
      GraphBuilder b("attg");
      Tensor q = b.input("q", {2, 3, 7, 5}), k = b.input("k", {2, 3, 7, 5}), v = b.input("v", {2, 3, 7, 4});
      Tensor g = b.input("g", {2, 3, 7, 4});
      Tensor o = attention(q, k, v, causal, scale);
      for (int wrt = 0; wrt < 3; ++wrt)
        b.output("d" + std::to_string(wrt), attention_grad(q, k, v, o, g, wrt, causal, scale));
      const Graph graph = b.build();
      const Graph d = decompose_attention(graph);
      verify(d, {true});
      int softmaxes = 0;
      for (const Node& n : d.nodes) {
        EXPECT_NE(n.op, "attention_grad");
        softmaxes += n.op == "softmax";
      }
      EXPECT_EQ(softmaxes, 2);  // the forward's, and one shared by the three gradients
      SEEDED(seed);
      std::mt19937 rng(seed);
      std::map<std::string, ref::RefTensor> args;
      for (const char* name : {"q", "k", "v", "g"}) args[name] = random_tensor(graph.node(name).type, rng);
      const auto want = ref::evaluate(graph, args), got = ref::evaluate(d, args);
      for (const char* out : {"d0", "d1", "d2"})
        for (size_t i = 0; i < want.at(out).data.size(); ++i)
          ASSERT_NEAR(got.at(out).data[i], want.at(out).data[i], 1e-5 * (1 + std::fabs(want.at(out).data[i])))
              << out << " causal " << causal << " scale " << scale << " element " << i;
    }
}

// In a GPU plan the GPT step's attention runs in the fused kernels: per
// layer one forward call and one backward call writing dq, dk and dv.
TEST(LibraryAttention, TheGptStepCallsTheFusedKernels) {
  const Graph step = registered_model(
      "gpt_train_step",
      {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "2"}, {"n_head", "2"}, {"n_embd", "6"}, {"batch", "3"}});
  const Graph g = prepare_gpu_attention(step);
  auto count = [](const Graph& x, const std::string& op) {
    return std::count_if(x.nodes.begin(), x.nodes.end(), [&](const Node& n) { return n.op == op; });
  };
  for (const char* op : {"attention", "attention_grad", "softmax"})  // nothing decomposed
    EXPECT_EQ(count(g, op), count(step, op)) << op;
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  int forward = 0, backward = 0;
  for (const Kernel& k : partition(g, &cost, nullptr, true)) {
    const std::optional<LibraryAttention> a = match_library_attention(k);
    if (!a) continue;
    EXPECT_EQ(a->batch, 3 * 2);
    EXPECT_EQ(a->seq, 5);
    EXPECT_EQ(a->dim, 3);
    EXPECT_TRUE(a->causal);
    EXPECT_DOUBLE_EQ(a->scale, 1 / std::sqrt(3.0));
    if (a->backward) {
      ++backward;
      EXPECT_EQ(k.roots.size(), 3u);
      EXPECT_TRUE(a->dq >= 0 && a->dk >= 0 && a->dv >= 0) << a->text();
      EXPECT_EQ(a->text(), "fused attention backward f32 [6 x 5 x 3] causal scale 0.57735 (dq, dk, dv)");
    } else {
      ++forward;
    }
  }
  EXPECT_EQ(forward, 2);
  EXPECT_EQ(backward, 2);
  const std::string text = compile_cuda(step, Target::parse("host-cuda-sm90"), {.library_gemm = true}).text();
  EXPECT_NE(text.find("4 fused attention calls"), std::string::npos) << text;
}

// Under bf16 autocast with head dim 16 the calls read q, k and v in place
// from the [B, T, 3C] projection and write out as [B, T, C] and dq, dk, dv
// into the [B, T, 3C] gradient: no kernel copies between those layouts. At
// head dim 4 (not a tensor-core shape) every operand is dense.
TEST(LibraryAttention, Bf16GptReadsAndWritesInPlace) {
  const int64_t T = 9, C = 32, H = 2, D = 16;  // batch 3
  auto step = [](const std::string& n_embd) {
    return registered_model("gpt_train_step", {{"vocab_size", "11"}, {"block_size", "9"}, {"n_layer", "2"},
                                               {"n_head", "2"}, {"n_embd", n_embd}, {"batch", "3"},
                                               {"autocast", "bf16"}});
  };
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  const Graph g = prepare_gpu_attention(step(std::to_string(C)));
  const AttentionPlacement qkv[3] = {{0, T * 3 * C, D, 3 * C}, {C, T * 3 * C, D, 3 * C}, {2 * C, T * 3 * C, D, 3 * C}};
  const AttentionPlacement rows = {0, T * C, D, C};
  int calls = 0;
  for (const Kernel& k : partition(g, &cost, nullptr, true)) {
    const std::optional<LibraryAttention> a = match_library_attention(k);
    if (!a) {
      for (int r : k.roots)  // the copies the in-place calls replace
        EXPECT_TRUE(g.nodes[r].op != "permute" && g.nodes[r].op != "concat") << kernel_name(g, k.roots);
      continue;
    }
    ++calls;
    SCOPED_TRACE(a->text());
    EXPECT_TRUE(a->in_place());
    EXPECT_EQ(a->heads, H);
    EXPECT_EQ(a->q, a->k);  // one input, the projection
    EXPECT_EQ(a->k, a->v);
    for (int t = 0; t < 3; ++t) EXPECT_EQ(a->placement[t], qkv[t]) << t;
    EXPECT_EQ(a->placement[3], rows);
    if (a->backward) {
      EXPECT_EQ(a->placement[4], rows);
      EXPECT_EQ(k.roots.size(), 1u);  // the concat
      EXPECT_TRUE(a->dq == 0 && a->dk == 0 && a->dv == 0);
      for (int t = 0; t < 3; ++t) EXPECT_EQ(a->placement[5 + t], qkv[t]) << t;
    }
  }
  EXPECT_EQ(calls, 4);
  const Graph narrow = prepare_gpu_attention(step("8"));
  for (const Kernel& k : partition(narrow, &cost, nullptr, true))
    if (const std::optional<LibraryAttention> a = match_library_attention(k)) {
      ++calls;
      EXPECT_FALSE(a->in_place()) << a->text();
    }
  EXPECT_EQ(calls, 8);
}

// What the kernels do not take (f16, a head dim above 64, a value dim of its own) is decomposed.
TEST(LibraryAttention, OtherAttentionIsDecomposed) {
  GraphBuilder b("att");
  auto add = [&](const std::string& name, Shape qs, int64_t dv, DType t) {
    Shape vs = qs;
    vs.back() = dv;
    b.output(name, attention(b.input(name + ".q", qs, t), b.input(name + ".k", qs, t), b.input(name + ".v", vs, t)));
  };
  add("fused", {2, 9, 64}, 64, DType::f32);
  add("wide", {2, 9, 65}, 65, DType::f32);
  add("half", {2, 9, 16}, 16, DType::f16);
  add("dv", {2, 9, 16}, 8, DType::f32);
  const Graph g = prepare_gpu_attention(b.build());
  int attention_nodes = 0, softmaxes = 0;
  for (const Node& n : g.nodes) {
    attention_nodes += n.op == "attention";
    softmaxes += n.op == "softmax";
  }
  EXPECT_EQ(attention_nodes, 1);
  EXPECT_EQ(softmaxes, 3);
  EXPECT_EQ(g.node(g.outputs[0].node).op, "attention");
}

TEST(DecomposeAttention, TheGptStepKeepsItsOutputs) {
  const Graph g = registered_model(
      "gpt_train_step",
      {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"}, {"n_head", "2"}, {"n_embd", "6"}, {"batch", "2"}});
  const Graph d = decompose_attention(g);
  std::map<std::string, ref::RefTensor> args;
  SEEDED(seed);
  for (const auto& [name, buffer] : test_util::random_args(g, seed))
    args[name] = ref::from_buffer(buffer);
  const auto want = ref::evaluate(g, args), got = ref::evaluate(d, args);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    const ref::RefTensor& t = got.at(name);
    for (size_t i = 0; i < w.data.size(); ++i)
      ASSERT_NEAR(t.data[i], w.data[i], 1e-5 * (1 + std::fabs(w.data[i]))) << name << "[" << i << "]";
  }
}

// In a GPU plan the GPT step's embedding gradient is a call of the CUDA
// kernel; each call's descriptor, summed by position in a plain loop over the
// kernel's inputs, equals the reference interpreter on the kernel's graph.
TEST(LibraryEmbeddingGrad, TheGptStepsTablesAreKernelCalls) {
  const Graph step = registered_model(
      "gpt_train_step",
      {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"}, {"n_head", "2"}, {"n_embd", "6"}, {"batch", "3"}});
  const Graph g = prepare_gpu_attention(step);
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  SEEDED(seed);
  std::mt19937 rng(seed);
  std::vector<std::string> calls;
  for (const Kernel& k : partition(g, &cost, nullptr, true)) {
    const std::optional<LibraryEmbeddingGrad> e = match_library_embedding_grad(k);
    if (!e) {
      for (const Node& n : k.graph.nodes) EXPECT_NE(n.op, "embedding_grad") << "an embedding gradient left to Halide";
      continue;
    }
    calls.push_back(e->text());
    std::map<std::string, ref::RefTensor> args;
    for (size_t i = 0; i < k.inputs.size(); ++i)
      args["in" + std::to_string(i)] = random_tensor(k.graph.nodes[i].type, rng);
    const std::vector<double>& ids = args.at("in" + std::to_string(e->indices)).data;
    const std::vector<double>& grad = args.at("in" + std::to_string(e->grad)).data;
    ASSERT_EQ(static_cast<int64_t>(ids.size()), e->positions);
    ASSERT_EQ(static_cast<int64_t>(grad.size()), e->positions * e->dim);
    std::vector<double> sum(e->vocab * e->dim, 0.0);
    for (int64_t p = 0; p < e->positions; ++p) {
      const int64_t row = std::clamp<int64_t>(static_cast<int64_t>(ids[p]), 0, e->vocab - 1);
      for (int64_t d = 0; d < e->dim; ++d) sum[row * e->dim + d] += grad[p * e->dim + d];
    }
    const std::vector<double> want = ref::evaluate(k.graph, args).at("out").data;
    ASSERT_EQ(want.size(), sum.size());
    for (size_t i = 0; i < sum.size(); ++i) EXPECT_NEAR(sum[i], want[i], 1e-6) << e->text() << " element " << i;
  }
  // The token table's (the position table is read as a slice, whose gradient is no scatter).
  EXPECT_EQ(calls, std::vector<std::string>{"embedding gradient f32 [15 x 6] -> [11 x 6], i32 indices"});
  const std::string text = compile_cuda(step, Target::parse("host-cuda-sm90"), {.library_gemm = true}).text();
  EXPECT_NE(text.find("embedding gradient f32 [15 x 6] -> [11 x 6], i32 indices"), std::string::npos) << text;
}

// The QLoRA step with n_embd 8: NF4 linears (double-quantized, 15 rows) of
// in_features 8 and 32, which the CUDA quantized-linear kernels do not take,
// become dequantize + a cuBLASLt GEMM in a GPU plan, forward and backward,
// each with a dequantize of its own; the rewritten step computes what the
// step did (reference interpreter on both, which rounds each node to f32, so
// to f32 rounding). With 8 rows or fewer they stay fused.
TEST(DequantizeForGemm, TheQloraStepsProductsBecomeLibraryGemms) {
  auto step = [](const char* batch) {
    return registered_model("gpt_qlora_train_step", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"},
                                                     {"n_head", "2"}, {"n_embd", "8"}, {"batch", batch},
                                                     {"r", "4"}, {"double_quant", "true"}});
  };
  const Graph g = step("3");
  const Graph d = dequantize_for_gemm(g);
  int quantized = 0, dequantized = 0;
  for (const Node& n : g.nodes) {
    if (n.op.rfind("linear_nf4", 0) != 0) continue;
    ++quantized;
    EXPECT_FALSE(quant_linear_kernel_takes(g, n)) << n.name << " (in_features "
                                                  << attr_int(n.attrs, "in_features", n.op) << ")";
  }
  for (const Node& n : d.nodes) {
    EXPECT_NE(n.op.rfind("linear_nf4", 0), 0u) << n.name << " is still " << n.op;
    dequantized += n.op == "dequantize_nf4";
  }
  EXPECT_GT(quantized, 0);
  EXPECT_EQ(dequantized, quantized);
  SEEDED(seed);
  const auto args = ref::from_buffers(test_util::random_args(g, seed));
  const auto want = ref::evaluate(g, args), got = ref::evaluate(d, args);
  for (const auto& [name, w] : want)
    for (size_t i = 0; i < w.data.size(); ++i)
      ASSERT_NEAR(got.at(name).data[i], w.data[i], 1e-5 * (1 + std::fabs(w.data[i]))) << name << "[" << i << "]";
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  for (const Kernel& k : partition(prepare_gpu_graph(g), &cost, nullptr, true))
    for (const Node& n : k.graph.nodes) {
      if (n.op == "linear" || n.op == "matmul") {
        EXPECT_TRUE(match_library_gemm(k)) << print(k.graph);
      }
    }
  // Batch 1: 5 rows, the fused kernels stream the packed weight.
  const Graph small = step("1");
  EXPECT_EQ(print(dequantize_for_gemm(small)), print(small));
}

// Random kernel arguments for quantized linears: floats in [-1, 1], packed
// NF4 bytes, absmax codes and int8 weights over their whole range.
std::map<std::string, ref::RefTensor> quant_args(const Kernel& k, std::mt19937& rng) {
  std::map<std::string, ref::RefTensor> args;
  for (size_t i = 0; i < k.inputs.size(); ++i) {
    const TensorType& t = k.graph.nodes[i].type;
    ref::RefTensor r = random_tensor(t, rng);
    if (t.dtype == DType::u8 || t.dtype == DType::i8)
      for (double& x : r.data) x = static_cast<double>(rng() % 256) - (t.dtype == DType::i8 ? 128 : 0);
    args["in" + std::to_string(i)] = std::move(r);
  }
  return args;
}

// The product a quantized-linear descriptor names, in double, from the
// kernel's arguments: W [N, K] dequantized by the format's definition
// (tessera/quant_ops.h), then x [rows, K] W^T (+ bias) or x [rows, N] W.
std::vector<double> quant_linear_from_descriptor(const LibraryQuantLinear& q,
                                                 const std::map<std::string, ref::RefTensor>& args) {
  auto in = [&](int i) -> const std::vector<double>& { return args.at("in" + std::to_string(i)).data; };
  const int64_t N = q.out_features, K = q.in_features;
  const std::vector<double>& weight = in(q.weight);
  const std::vector<double>& scale = in(q.scale);  // int8: per row; NF4: absmax (f32 or u8 codes)
  std::vector<double> W(static_cast<size_t>(N * K));
  for (int64_t e = 0; e < N * K; ++e) {
    if (q.format == "int8") {
      W[e] = weight.at(e) * scale.at(e / K);
      continue;
    }
    const int byte = static_cast<int>(weight.at(e / 2));
    const int code = e % 2 == 0 ? byte >> 4 : byte & 15;  // element 2i in the high nibble
    const int64_t block = e / kNF4BlockSize;
    double absmax = scale.at(block);
    if (q.format == "nf4_nested")
      absmax = in(q.nested_quant_map).at(static_cast<size_t>(scale.at(block))) *
                   in(q.nested_absmax).at(block / kNestedBlockSize) +
               in(q.nested_offset).at(0);
    W[e] = static_cast<double>(nf4_code_book()[code]) * absmax;
  }
  const std::vector<double>& x = in(q.x);
  const int64_t from = q.grad_input ? N : K, to = q.grad_input ? K : N;
  std::vector<double> out(static_cast<size_t>(q.rows * to));
  for (int64_t m = 0; m < q.rows; ++m)
    for (int64_t j = 0; j < to; ++j) {
      double acc = q.bias >= 0 ? in(q.bias).at(j) : 0.0;
      for (int64_t i = 0; i < from; ++i) acc += x.at(m * from + i) * (q.grad_input ? W[i * K + j] : W[j * K + i]);
      out[m * to + j] = acc;
    }
  return out;
}

// Partitions `g` as a GPU plan does and checks each kernel that is a
// quantized-linear call: computed from its descriptor alone, it equals the
// reference interpreter on the kernel's graph. No node the kernels take is
// left in another kernel. Returns the calls' texts, in order.
std::vector<std::string> check_quant_linears(const Graph& g, uint32_t seed) {
  const Graph prepared = prepare_gpu_graph(g);
  const CostModel cost = cost_model(Target::parse("host-cuda-sm90"));
  std::mt19937 rng(seed);
  std::vector<std::string> calls;
  for (const Kernel& k : partition(prepared, &cost, nullptr, true)) {
    const std::optional<LibraryQuantLinear> q = match_library_quant_linear(k);
    if (!q) {
      for (const Node& n : k.graph.nodes)
        EXPECT_FALSE(quant_linear_kernel_takes(k.graph, n)) << n.op << " left out of the kernels:\n" << print(k.graph);
      continue;
    }
    calls.push_back(q->text());
    EXPECT_EQ(k.roots.size(), 1u) << q->text();
    const std::map<std::string, ref::RefTensor> args = quant_args(k, rng);
    const std::vector<double> got = quant_linear_from_descriptor(*q, args);
    const std::vector<double> want = ref::evaluate(k.graph, args).at("out").data;
    EXPECT_EQ(got.size(), want.size()) << q->text();
    // Both in double; the reference rounds its result to f32 once: an ulp apart.
    for (size_t i = 0; i < got.size() && i < want.size(); ++i)
      if (std::fabs(ref::to_dtype(DType::f32, got[i]) - want[i]) > 2e-7 * (1 + std::fabs(want[i]))) {
        ADD_FAILURE() << q->text() << ": element " << i << " is " << got[i] << ", the reference says " << want[i];
        break;
      }
  }
  return calls;
}

// In a GPU plan the QLoRA step's NF4 linears of in_features 64 and 256 are
// calls of the CUDA quantized-linear kernels, forward (15 rows) and for the
// gradient of x, reading the packed weight: nothing is dequantized. Each
// call, computed from its descriptor, equals the reference on its kernel,
// and the CUDA plan reports the calls.
TEST(LibraryQuantLinear, TheQloraStepsLinearsAreKernelCalls) {
  for (const char* double_quant : {"true", "false"}) {
    const Graph step = registered_model(
        "gpt_qlora_train_step", {{"vocab_size", "11"}, {"block_size", "5"}, {"n_layer", "1"}, {"n_head", "2"},
                                 {"n_embd", "64"}, {"batch", "3"}, {"r", "4"}, {"double_quant", double_quant}});
    for (const Node& n : prepare_gpu_graph(step).nodes) EXPECT_NE(n.op, "dequantize_nf4") << n.name;
    SEEDED(seed);
    const std::string f = double_quant == std::string("true") ? "nf4_nested" : "nf4";
    const std::vector<std::string> want = {
        f + " linear [15 x 64] -> [15 x 192] from the packed weight, bias",           // attn.c_attn
        f + " linear [15 x 64] -> [15 x 64] from the packed weight, bias",            // attn.c_proj
        f + " linear [15 x 64] -> [15 x 256] from the packed weight, bias",           // mlp.c_fc
        f + " linear [15 x 256] -> [15 x 64] from the packed weight, bias",           // mlp.c_proj
        f + " linear input gradient [15 x 64] -> [15 x 256] from the packed weight",  // mlp.c_proj
        f + " linear input gradient [15 x 256] -> [15 x 64] from the packed weight",  // mlp.c_fc
        f + " linear input gradient [15 x 64] -> [15 x 64] from the packed weight",   // attn.c_proj
    };
    EXPECT_EQ(check_quant_linears(step, seed), want);
    if (f != "nf4_nested") continue;
    const std::string text = compile_cuda(step, Target::parse("host-cuda-sm90"), {.library_gemm = true}).text();
    for (const std::string& call : want) EXPECT_NE(text.find("library call: " + call), std::string::npos) << text;
  }
}

// op_zoo's quantized linears: int8, NF4 and double-quantized NF4 at 1, 3,
// 15 and 130 rows, with and without a bias, and the input gradients at 15
// and 130 rows, are kernel calls that compute what the reference does. The
// shapes the kernels do not take keep their old paths: in_features 33 at 15
// rows dequantize before a cuBLASLt GEMM, 33 at 5 rows and an input
// gradient of 8 rows stay Halide kernels of the fused ops.
TEST(LibraryQuantLinear, OpZoosQuantizedLinears) {
  const Graph zoo = op_zoo();
  SEEDED(seed);
  const std::vector<std::string> calls = check_quant_linears(zoo, seed);
  EXPECT_EQ(calls.size(), 17u);
  auto has = [&](const std::string& c) { return std::find(calls.begin(), calls.end(), c) != calls.end(); };
  EXPECT_TRUE(has("int8 linear [1 x 64] -> [1 x 17] from the packed weight, bias"));
  EXPECT_TRUE(has("int8 linear [3 x 64] -> [3 x 17] from the packed weight"));
  EXPECT_TRUE(has("nf4 linear [130 x 128] -> [130 x 33] from the packed weight, bias"));
  EXPECT_TRUE(has("nf4_nested linear [130 x 128] -> [130 x 131] from the packed weight, bias"));
  EXPECT_TRUE(has("int8 linear input gradient [15 x 17] -> [15 x 64] from the packed weight"));
  EXPECT_TRUE(has("nf4_nested linear input gradient [130 x 131] -> [130 x 128] from the packed weight"));
  // The others: dequantized (in_features 33, 15 rows) or Halide kernels.
  const Graph prepared = prepare_gpu_graph(zoo);
  std::map<std::string, int> left;  // op -> nodes of the prepared graph
  for (const Node& n : prepared.nodes)
    if (n.op.rfind("linear_", 0) == 0 || n.op.rfind("dequantize_", 0) == 0)
      left[n.op] += !quant_linear_kernel_takes(prepared, n);
  // linear_int8, its input gradient, linear_nf4 and its input gradient
  // (in_features 33, 15 rows) dequantized, besides the zoo's two dequantize outputs.
  EXPECT_EQ(left["dequantize_int8"], 1 + 2);
  EXPECT_EQ(left["dequantize_nf4"], 1 + 2);
  EXPECT_EQ(left["linear_nf4"], 1);             // the GEMV of in_features 33 (5 rows)
  EXPECT_EQ(left["linear_nf4_grad_input"], 1);  // 8 rows, in_features 64
  EXPECT_EQ(left["linear_int8"] + left["linear_int8_grad_input"], 0);
}

}  // namespace
