// The CUDA schedule sets (cuda_sm80, cuda_sm90) compile, without a GPU:
// every registered op (at awkward sizes: 1, odd, not multiples of any block
// or tile, and large enough to take each schedule path) and whole training
// steps (an MLP and a small GPT, each with AdamW) compile to PTX for both
// architectures; every kernel runs entirely on the GPU (no loop left on the
// CPU) and reads and writes only within its tensors (compile_cuda checks
// this on the compiled code); the two sets produce different PTX; the
// schedule text says what each node got; bf16 and non-CUDA targets are
// refused with errors that name the node.
//
// Nothing here runs a kernel: comparing GPU results with the CPU needs a GPU
// and the CUDA runtime (a later issue). Compile times of the training steps
// are printed.
#include <gtest/gtest.h>
#include <tessera/autodiff.h>
#include <tessera/models.h>
#include <tessera/optimizer.h>
#include <tessera/quant_ops.h>
#include <tessera/tessera.h>

#include <functional>
#include <iostream>
#include <map>

#include "compile_cuda.h"
#include "cost_model.h"
#include "cuda_common.h"
#include "op_registry.h"
#include "partition.h"

using namespace tessera;
using Halide::Expr;
using Halide::RDom;
using Halide::Var;

namespace {

const Target kSm80 = Target::parse("host-cuda-sm80");
const Target kSm90 = Target::parse("host-cuda-sm90");

// Compiles `g` for `t` and checks every kernel: some GPU code, no loop left
// on the CPU, and a schedule line "  name (op): what" for each of its nodes
// (other than its arguments).
CudaCompileResult compile_checked(const Graph& g, const Target& t, bool keep_ptx = false) {
  CudaCompileResult r;
  try {
    r = compile_cuda(g, t, {keep_ptx});
  } catch (const Error& e) {
    ADD_FAILURE() << "graph '" << g.name << "' for " << t.str() << ": " << e.what();
    return r;
  }
  const CostModel cost = cost_model(t);  // the partition compile_cuda made
  const std::vector<Kernel> kernels = partition(g, &cost);
  EXPECT_EQ(kernels.size(), r.kernels.size());
  for (size_t i = 0; i < r.kernels.size() && i < kernels.size(); ++i) {
    const CudaKernelInfo& k = r.kernels[i];
    EXPECT_GE(k.gpu_kernels, 1) << g.name << " " << t.str() << ": " << k.header << " has no GPU code\n" << k.schedule;
    EXPECT_EQ(k.host_loops, 0) << g.name << " " << t.str() << ": " << k.header << " leaves loops on the CPU\n"
                               << k.schedule;
    EXPECT_EQ(static_cast<int>(k.launches.size()), k.gpu_kernels) << k.header;
    EXPECT_GT(k.ptx_bytes, 0u);
    for (const Node& n : kernels[i].graph.nodes) {
      if (n.op == "input" || n.op == "param") continue;
      EXPECT_NE(k.schedule.find("  " + n.name + " (" + n.op + "): "), std::string::npos)
          << g.name << " " << t.str() << ": " << k.header << ": no schedule line for " << n.name << "\n"
          << k.schedule;
    }
  }
  return r;
}

// Both architectures.
void compile_both(const Graph& g) {
  compile_checked(g, kSm80);
  compile_checked(g, kSm90);
}

// ---- one graph per op -------------------------------------------------------------------

using Body = std::function<void(GraphBuilder&)>;

int counter = 0;
Tensor in(GraphBuilder& g, Shape s, DType t = DType::f32) { return g.input("x" + std::to_string(counter++), s, t); }
Tensor param(GraphBuilder& g, Shape s, DType t = DType::f32) {
  return g.param("p" + std::to_string(counter++), s, t);
}
void out(GraphBuilder& g, Tensor t) { g.output("y" + std::to_string(counter++), t); }

// Pointwise kernels all take one schedule path (2-D tiles or a flat loop,
// chosen by shape), so one unary and one binary op go through every shape
// and dtype; the others get one graph per dtype (their PTX code generation
// differs, e.g. f16 math and erf).
const std::vector<Shape>& unary_shapes() {
  static const std::vector<Shape> s = {{}, {1}, {7}, {13, 17}, {2, 3, 33}, {3, 300, 129}};
  return s;
}

Body unary(const std::string& op, bool every_shape = false) {
  return [=](GraphBuilder& g) {
    if (every_shape)
      for (const Shape& s : unary_shapes()) out(g, g.add(op, {in(g, s)}));
    else
      out(g, g.add(op, {in(g, {13, 17})}));
    out(g, g.add(op, {in(g, {2, 3, 33}, DType::f16)}));
    out(g, g.add(op, {in(g, {7}, DType::f64)}));
  };
}

Body binary(const std::string& op, bool integers = true, bool every_shape = false) {
  return [=](GraphBuilder& g) {
    const std::vector<std::pair<Shape, Shape>> shapes = {
        {{}, {}}, {{1}, {7}}, {{13, 17}, {17}}, {{13, 1}, {1, 17}}, {{2, 1, 33}, {3, 1}}, {{300, 129}, {300, 129}}};
    if (every_shape)
      for (const auto& [a, b] : shapes) out(g, g.add(op, {in(g, a), in(g, b)}));
    else
      out(g, g.add(op, {in(g, {13, 17}), in(g, {17})}));
    out(g, g.add(op, {in(g, {2, 1, 33}, DType::f16), in(g, {3, 1}, DType::f16)}));
    out(g, g.add(op, {in(g, {}, DType::f64), in(g, {}, DType::f64)}));
    if (integers) out(g, g.add(op, {in(g, {1}, DType::i32), in(g, {7}, DType::i32)}));
  };
}

// Reductions along the contiguous dim (short rows one warp each, long rows a
// block each, rank-1 single rows), across rows (with and without chunks) and
// to one value (one block, a grid).
Body reduction(const std::string& op) {
  return [=](GraphBuilder& g) {
    using A = std::vector<int64_t>;
    struct C {
      Shape s;
      A axes;
      bool keepdim;
    };
    const std::vector<C> cases = {
        {{1}, {0}, false},        {{7}, {}, false},          {{13, 17}, {1}, false},   {{13, 17}, {0}, true},
        {{2, 3, 33}, {0, 2}, false}, {{2, 3, 33}, {-2}, true}, {{33, 1}, {-1}, false},   {{3, 5000}, {1}, false},
        {{2000, 33}, {-1}, false}, {{1000, 7}, {0}, false},   {{300, 257}, {}, false},  {{4, 64, 96}, {0, 1}, false}};
    for (const C& c : cases) out(g, g.add(op, {in(g, c.s)}, {{"axes", c.axes}, {"keepdim", c.keepdim}}));
    out(g, g.add(op, {in(g, {13, 17}, DType::f16)}, {{"axes", A{1}}, {"keepdim", false}}));
    out(g, g.add(op, {in(g, {13, 17}, DType::f64)}, {{"axes", A{0}}, {"keepdim", false}}));
    if (op != "mean") out(g, g.add(op, {in(g, {13, 17}, DType::i32)}, {{"axes", A{}}, {"keepdim", false}}));
  };
}

Body softmax_like(Tensor (*f)(Tensor, int64_t)) {
  return [=](GraphBuilder& g) {
    out(g, f(in(g, {7}), -1));
    out(g, f(in(g, {13, 17}), -1));
    out(g, f(in(g, {13, 17}), 0));
    out(g, f(in(g, {2, 3, 33}), 1));
    out(g, f(in(g, {3, 5000}), -1));
    out(g, f(in(g, {2000, 33}), -1));
    out(g, f(in(g, {13, 17}, DType::f16), -1));
  };
}

const std::map<std::string, Body>& op_cases() {
  static const std::map<std::string, Body> m = [] {
    std::map<std::string, Body> m;
    for (const char* op : {"neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "silu"})
      m[op] = unary(op, std::string(op) == "relu");
    m["gelu"] = [](GraphBuilder& g) {
      out(g, gelu(in(g, {13, 17})));
      out(g, gelu(in(g, {2, 3, 33}, DType::f16), "tanh"));
      out(g, gelu(in(g, {7}, DType::f64)));
    };
    m["gelu_grad"] = [](GraphBuilder& g) {
      out(g, gelu_grad(in(g, {13, 17}), in(g, {13, 17}), "tanh"));
      out(g, gelu_grad(in(g, {7}, DType::f64), in(g, {7}, DType::f64)));
      out(g, gelu_grad(in(g, {2, 3, 33}, DType::f16), in(g, {2, 3, 33}, DType::f16)));
    };
    m["cast"] = [](GraphBuilder& g) {
      const std::vector<std::pair<DType, DType>> convs = {{DType::f32, DType::f16}, {DType::f16, DType::f32},
                                                          {DType::f64, DType::i32}, {DType::u8, DType::i64},
                                                          {DType::f32, DType::boolean}, {DType::boolean, DType::i8}};
      int k = 0;
      for (const auto& [a, b] : convs) out(g, cast(in(g, unary_shapes()[k++ % unary_shapes().size()], a), b));
    };
    for (const char* op : {"add", "sub", "mul", "div", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"})
      m[op] = binary(op, true, std::string(op) == "add");
    m["pow"] = binary("pow", false);
    m["where"] = [](GraphBuilder& g) {
      out(g, where(in(g, {13, 1}, DType::boolean), in(g, {1, 17}), in(g, {17})));
      out(g, where(in(g, {}, DType::boolean), in(g, {300, 129}, DType::i32), in(g, {}, DType::i32)));
    };
    for (const char* op : {"sum", "mean", "max"}) m[op] = reduction(op);
    m["reshape"] = [](GraphBuilder& g) {
      out(g, reshape(in(g, {13, 17}), {17, 13}));
      out(g, reshape(in(g, {2, 3, 33}), {-1}));
      out(g, reshape(in(g, {7}), {1, 7, 1}));
    };
    m["permute"] = [](GraphBuilder& g) {
      out(g, permute(in(g, {2, 3, 33}), {2, 0, 1}));
      out(g, transpose(in(g, {300, 129}), 0, 1));
    };
    m["broadcast_to"] = [](GraphBuilder& g) {
      out(g, broadcast_to(in(g, {1, 17}), {13, 17}));
      out(g, broadcast_to(in(g, {}), {3, 5}));
    };
    m["slice"] = [](GraphBuilder& g) {
      out(g, slice(in(g, {13, 17}), 1, 2, 15, 3));
      out(g, slice(in(g, {300, 129}), 0, -7, 300));
    };
    m["concat"] = [](GraphBuilder& g) {
      out(g, concat({in(g, {13, 5}), in(g, {13, 12})}, 1));
      out(g, concat({in(g, {1}), in(g, {7}), in(g, {3})}, 0));
    };
    m["squeeze"] = [](GraphBuilder& g) { out(g, squeeze(in(g, {1, 13, 1, 17}), {})); };
    m["unsqueeze"] = [](GraphBuilder& g) { out(g, unsqueeze(in(g, {13, 17}), 1)); };
    m["matmul"] = [](GraphBuilder& g) {
      out(g, matmul(in(g, {1, 1}), in(g, {1, 1})));
      out(g, matmul(in(g, {7, 13}), in(g, {13, 17})));
      out(g, matmul(in(g, {2, 3, 65, 33}), in(g, {33, 70})));  // batch dims, broadcast
      out(g, matmul(in(g, {300, 257}), in(g, {257, 129})));   // ragged against every tile
      out(g, matmul(in(g, {5, 200}), in(g, {200, 3})));
      out(g, matmul(in(g, {64, 96}, DType::f16), in(g, {96, 130}, DType::f16)));
      out(g, matmul(in(g, {70, 40}, DType::f64), in(g, {40, 200}, DType::f64)));
      out(g, matmul(in(g, {9, 11}, DType::i32), in(g, {11, 13}, DType::i32)));
    };
    m["linear"] = [](GraphBuilder& g) {
      out(g, linear(in(g, {13, 17}), param(g, {5, 17}), param(g, {5})));
      out(g, linear(in(g, {2, 65, 129}), param(g, {300, 129})));
      out(g, linear(in(g, {17}), param(g, {5, 17}), param(g, {5})));  // rank 1: a matrix-vector product
      out(g, linear(relu(in(g, {64, 784})), param(g, {256, 784}), param(g, {256})));
      out(g, linear(in(g, {64, 256}), param(g, {10, 256}), param(g, {10})));
    };
    // The quantized ops (tests/test_quantize.cpp compiles them at more shapes).
    auto nf4 = [](GraphBuilder& g, int64_t N, int64_t K, bool nested) {
      const int64_t blocks = (N * K + 63) / 64;
      NF4Tensors w;
      w.out_features = N;
      w.in_features = K;
      w.weight = param(g, {(N * K + 1) / 2, 1}, DType::u8);
      w.absmax = param(g, {blocks}, nested ? DType::u8 : DType::f32);
      if (nested) {
        w.nested_absmax = param(g, {(blocks + 255) / 256});
        w.nested_quant_map = param(g, {256});
        w.nested_offset = param(g, {});
      }
      return w;
    };
    m["dequantize_int8"] = [](GraphBuilder& g) {
      out(g, dequantize_int8(param(g, {13, 33}, DType::i8), param(g, {13})));
    };
    m["dequantize_nf4"] = [nf4](GraphBuilder& g) {
      out(g, dequantize_nf4(nf4(g, 13, 33, false)));
      out(g, dequantize_nf4(nf4(g, 300, 129, true)));
    };
    m["linear_int8"] = [](GraphBuilder& g) {
      out(g, linear_int8(in(g, {1, 129}), param(g, {300, 129}, DType::i8), param(g, {300}), param(g, {300})));
      out(g, linear_int8(in(g, {2, 65, 33}), param(g, {17, 33}, DType::i8), param(g, {17})));
    };
    m["linear_nf4"] = [nf4](GraphBuilder& g) {
      out(g, linear_nf4(in(g, {1, 128}), nf4(g, 300, 128, true), param(g, {300})));
      out(g, linear_nf4(in(g, {65, 33}), nf4(g, 17, 33, false)));
    };
    m["linear_int8_grad_input"] = [](GraphBuilder& g) {
      out(g, linear_int8_grad_input(in(g, {3, 300}), param(g, {300, 129}, DType::i8), param(g, {300})));
    };
    m["linear_nf4_grad_input"] = [nf4](GraphBuilder& g) {
      out(g, linear_nf4_grad_input(in(g, {65, 17}), nf4(g, 17, 33, true)));
    };
    m["embedding"] = [](GraphBuilder& g) {
      out(g, embedding(in(g, {13}, DType::i32), param(g, {50, 17})));
      out(g, embedding(in(g, {2, 3}, DType::i64), param(g, {7, 129})));
    };
    m["embedding_grad"] = [](GraphBuilder& g) {
      out(g, embedding_grad(in(g, {2, 7}, DType::i32), in(g, {2, 7, 33}), 50));
      out(g, embedding_grad(in(g, {300}, DType::i64), in(g, {300, 129}), 1000));
    };
    m["softmax"] = softmax_like(softmax);
    m["log_softmax"] = softmax_like(log_softmax);
    m["layer_norm"] = [](GraphBuilder& g) {
      out(g, layer_norm(in(g, {1, 7})));
      out(g, layer_norm(in(g, {13, 17}), param(g, {17}), param(g, {17})));
      out(g, layer_norm(in(g, {4, 3000}), param(g, {3000}), param(g, {3000})));
      out(g, layer_norm(in(g, {2, 600, 33})));
      out(g, layer_norm(in(g, {7})));
    };
    m["rms_norm"] = [](GraphBuilder& g) {
      out(g, rms_norm(in(g, {1, 7})));
      out(g, rms_norm(in(g, {13, 17}), param(g, {17})));
      out(g, rms_norm(in(g, {4, 3000})));
      out(g, rms_norm(in(g, {1200, 65})));
    };
    m["layer_norm_grad"] = [](GraphBuilder& g) {
      out(g, layer_norm_grad(in(g, {1, 7}), in(g, {1, 7}), Tensor()));
      out(g, layer_norm_grad(in(g, {13, 17}), in(g, {13, 17}), param(g, {17})));
      out(g, layer_norm_grad(in(g, {4, 3000}), in(g, {4, 3000}), param(g, {3000})));
      out(g, layer_norm_grad(in(g, {2, 600, 33}), in(g, {2, 600, 33}), param(g, {33})));
      out(g, layer_norm_grad(in(g, {7}), in(g, {7}), Tensor()));
    };
    m["rms_norm_grad"] = [](GraphBuilder& g) {
      out(g, rms_norm_grad(in(g, {1, 7}), in(g, {1, 7}), Tensor()));
      out(g, rms_norm_grad(in(g, {13, 17}), in(g, {13, 17}), param(g, {17})));
      out(g, rms_norm_grad(in(g, {1200, 65}), in(g, {1200, 65}), Tensor()));
    };
    m["cross_entropy"] = [](GraphBuilder& g) {
      out(g, cross_entropy(in(g, {1, 1}), in(g, {1}, DType::i32)));
      out(g, cross_entropy(in(g, {13, 17}), in(g, {13}, DType::i64)));
      out(g, cross_entropy(in(g, {3, 5000}), in(g, {3}, DType::i32)));
      out(g, cross_entropy(in(g, {2000, 33}), in(g, {2000}, DType::i32)));
      Tensor logits = in(g, {9, 33});
      out(g, g.add("cross_entropy", {logits, in(g, {9}, DType::i64)}, {{"ignore_index", int64_t{-100}}}));
    };
    m["logsumexp"] = [](GraphBuilder& g) {
      out(g, logsumexp(in(g, {7})));
      out(g, logsumexp(in(g, {13, 17})));
      out(g, logsumexp(in(g, {3, 5000})));
      out(g, logsumexp(in(g, {2, 1000, 33})));
    };
    m["dropout"] = [](GraphBuilder& g) {
      out(g, dropout(in(g, {13, 17}), 0.1, 42));
      out(g, dropout(in(g, {300, 129}), 0.5, 7, 1000));
      out(g, dropout(in(g, {7}), 0.0, 1));
    };
    m["attention"] = [](GraphBuilder& g) {
      out(g, attention(in(g, {2, 7, 16}), in(g, {2, 7, 16}), in(g, {2, 7, 16})));
      out(g, attention(in(g, {1, 2, 33, 8}), in(g, {1, 2, 33, 8}), in(g, {1, 2, 33, 5}), false, 0.5));
    };
    m["attention_grad"] = [](GraphBuilder& g) {
      Tensor q = in(g, {2, 7, 16}), k = in(g, {2, 7, 16}), v = in(g, {2, 7, 16}), gr = in(g, {2, 7, 16});
      for (int wrt = 0; wrt < 3; ++wrt) out(g, attention_grad(q, k, v, attention(q, k, v), gr, wrt));
    };
    m["define"] = [](GraphBuilder& g) {
      Tensor h = in(g, {13, 17}), a = in(g, {7, 13}), b = in(g, {13, 17});
      out(g, g.define("swish", {13, 17}, [&](Var i, Var j) {
        Expr v = h(i, j);
        return v / (1 + Halide::exp(-v));
      }));
      out(g, g.define("mm", {7, 17}, [&](Var i, Var j) {
        RDom r(0, 13);
        return Halide::sum(a(i, r) * b(r, j));
      }));
      out(g, g.define("rowmax", {13}, [&](Var i) { return Halide::maximum(h(i, RDom(0, 17))); }));
      out(g, g.define("total", {1}, [&](Var) {
        RDom r(0, 7, 0, 13);
        return Halide::sum(a(r.x, r.y));
      }));
    };
    return m;
  }();
  return m;
}

// define_grad nodes come from differentiating define nodes.
Graph define_grad_graph() {
  GraphBuilder g("define_grad");
  Tensor h = g.param("h", {13, 17}), a = g.param("a", {7, 13});
  Tensor idx = g.input("idx", {9}, DType::i32);
  Tensor sw = g.define("swish", {13, 17}, [&](Var i, Var j) {
    Expr v = h(i, j);
    return v / (1 + Halide::exp(-v));
  });
  Tensor mm = g.define("mm", {7, 17}, [&](Var i, Var j) {
    RDom r(0, 13);
    return Halide::sum(a(i, r) * sw(r, j));
  });
  Tensor gather = g.define("gather", {9, 17}, [&](Var i, Var j) { return h(Halide::clamp(idx(i), 0, 12), j); });
  g.output("loss", sum(mm) + sum(gather));
  return differentiate(g.build());
}

class CudaOps : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaOps, CompilesForBothArchitectures) {
  const std::string& op = GetParam();
  if (op == "define_grad") {
    const Graph g = define_grad_graph();
    bool has = false;
    for (const Node& n : g.nodes) has = has || n.op == "define_grad";
    ASSERT_TRUE(has) << "differentiate() made no define_grad node";
    compile_both(g);
    return;
  }
  GraphBuilder g(op);
  op_cases().at(op)(g);
  compile_both(g.build());
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& [name, body] : op_cases()) names.push_back(name);
  names.push_back("define_grad");
  return names;
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaOps, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(CudaOpCoverage, EveryRegisteredOpHasACase) {
  std::vector<std::string> names = case_names();
  for (const std::string& op : registered_ops()) {
    if (op == "input" || op == "param" || op == "constant") continue;
    EXPECT_NE(std::find(names.begin(), names.end(), op), names.end()) << "no CUDA schedule case for op '" << op << "'";
  }
}

// ---- training steps -------------------------------------------------------------------------

// Compiles a training step for both sets, printing the compile times.
std::vector<CudaCompileResult> compile_step(const Graph& step, const std::string& label) {
  std::vector<CudaCompileResult> results;
  for (const Target& t : {kSm80, kSm90}) {
    CudaCompileResult r = compile_checked(step, t);
    EXPECT_FALSE(r.kernels.empty());
    std::cout << "  " << label << " for " << t.str() << ": " << r.kernels.size() << " kernels (" << r.distinct_kernels
              << " compiled) to PTX in " << r.seconds << " s\n";
    const std::string text = r.text();
    EXPECT_NE(text.find(r.schedule_set), std::string::npos);
    if (std::getenv("TESSERA_TEST_VERBOSE")) std::cout << text;
    results.push_back(std::move(r));
  }
  return results;
}

TEST(CudaTrainingSteps, MlpAdamW) {
  MlpConfig cfg;
  cfg.sizes = {784, 256, 10};
  cfg.batch = 64;
  compile_step(adamw(differentiate(mlp(cfg)), {}), "MLP 784-256-10 batch 64, AdamW step");
}

TEST(CudaTrainingSteps, GptAdamW) {
  GptConfig cfg;
  cfg.vocab_size = 96;
  cfg.block_size = 32;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_embd = 64;
  cfg.batch = 4;
  const Graph step = adamw(differentiate(gpt(cfg)), {});
  for (const CudaCompileResult& r : compile_step(step, "GPT 2 layers d=64 T=32 batch 4, AdamW step")) {
    // The second layer's kernels are the first's: compiled once.
    EXPECT_LT(r.distinct_kernels, static_cast<int>(r.kernels.size()));
    int reused = 0;
    for (const CudaKernelInfo& k : r.kernels) reused += k.reused ? 1 : 0;
    EXPECT_EQ(reused + r.distinct_kernels, static_cast<int>(r.kernels.size()));
  }
}

// ---- the two architectures -------------------------------------------------------------------

TEST(CudaArchitectures, ParametersDiffer) {
  const CudaArch &a = cuda_sm80_arch(), &b = cuda_sm90_arch();
  EXPECT_EQ(a.sm_count, 108);
  EXPECT_EQ(b.sm_count, 132);
  EXPECT_LT(a.smem_per_sm_kb, b.smem_per_sm_kb);
  EXPECT_LT(a.pointwise_threads, b.pointwise_threads);
  EXPECT_LT(a.row_warps, b.row_warps);
  EXPECT_LT(a.gemm_threads_n * a.gemm_regs_n * a.gemm_threads_m * a.gemm_regs_m,
            b.gemm_threads_n * b.gemm_regs_n * b.gemm_threads_m * b.gemm_regs_m);
  EXPECT_LT(a.dram_gbps, b.dram_gbps);
  EXPECT_LT(a.fp32_tflops, b.fp32_tflops);
  EXPECT_EQ(&cuda_arch(80), &a);
  EXPECT_EQ(&cuda_arch(90), &b);
  EXPECT_THROW(cuda_arch(75), Error);
}

// The PTX of each kind of kernel differs between the sets: short-row and
// long-row reductions, a pointwise kernel and a matrix product.
TEST(CudaArchitectures, PtxDiffers) {
  GraphBuilder g("kinds");
  g.output("rows", softmax(g.input("a", {4096, 96})));
  g.output("long_rows", layer_norm(g.input("b", {64, 6000})));
  g.output("total", sum(g.input("c", {300, 257})));
  g.output("pointwise", gelu(g.input("d", {512, 1024})));
  g.output("product", matmul(g.input("e", {256, 256}), g.input("f", {256, 256})));
  const Graph graph = g.build();
  CudaCompileResult a = compile_checked(graph, kSm80, true), b = compile_checked(graph, kSm90, true);
  if (std::getenv("TESSERA_TEST_VERBOSE")) std::cout << a.text() << b.text();
  ASSERT_EQ(a.kernels.size(), 5u);
  ASSERT_EQ(b.kernels.size(), 5u);
  for (size_t i = 0; i < a.kernels.size(); ++i) {
    EXPECT_NE(a.kernels[i].ptx, b.kernels[i].ptx) << a.kernels[i].header;
    EXPECT_NE(a.kernels[i].schedule, b.kernels[i].schedule) << a.kernels[i].header;
    EXPECT_NE(a.kernels[i].ptx.find(".target sm_86"), std::string::npos);
  }
  // The reductions combine lanes with warp shuffles.
  EXPECT_NE(a.kernels[0].ptx.find("shfl"), std::string::npos) << a.kernels[0].schedule;
  EXPECT_NE(b.kernels[1].ptx.find("shfl"), std::string::npos) << b.kernels[1].schedule;
  // The product stages its operands in shared memory.
  EXPECT_NE(a.kernels[4].ptx.find("ld.shared"), std::string::npos);
}

// The text says what each node got.
TEST(CudaScheduleText, SaysWhatEachNodeGot) {
  GraphBuilder g("mlp_head");
  Tensor x = g.input("x", {64, 784});
  Tensor y = g.input("y", {64}, DType::i32);
  Tensor h = gelu(linear(x, g.param("w1", {256, 784}), g.param("b1", {256})));
  Tensor logits = linear(h, g.param("w2", {10, 256}));
  g.output("probs", softmax(logits));
  g.output("loss", cross_entropy(logits, y));
  g.output("rowsum", sum(h, {1}));
  g.output("colsum", sum(h, {0}));
  const Graph graph = g.build();
  for (const Target& t : {kSm80, kSm90}) {
    CudaCompileResult r = compile_checked(graph, t);
    const std::string text = r.text();
    SCOPED_TRACE(text);
    if (std::getenv("TESSERA_TEST_VERBOSE")) std::cout << text;
    EXPECT_NE(text.find("schedule (" + std::string(cuda_arch(t.cuda_sm).gpu)), std::string::npos);
    EXPECT_NE(text.find("cuda_capability_86"), std::string::npos);
    EXPECT_NE(text.find("(linear): root, GPU tiled matmul: block tiles"), std::string::npos);
    EXPECT_NE(text.find("staged in shared memory"), std::string::npos);
    EXPECT_NE(text.find("(gelu): inline"), std::string::npos);
    EXPECT_NE(text.find("(softmax): one block per row"), std::string::npos);  // 64 rows: too few for a warp each
    EXPECT_NE(text.find("across lanes"), std::string::npos);
    EXPECT_NE(text.find("(cross_entropy): one GPU thread;"), std::string::npos);
    EXPECT_NE(text.find("by one block of"), std::string::npos);
    EXPECT_NE(text.find("(sum): acc down columns: 4 segments of 16 per column"), std::string::npos);
    EXPECT_NE(text.find("GPU kernel"), std::string::npos);
  }
}

// The static region check that compile_cuda applies to every kernel catches
// a schedule that reads past an input (here: a GPU tile rounded up beyond a
// 33-element input) and passes the same pipeline with a guarded tile.
TEST(CudaRegionCheck, CatchesReadsPastAnInput) {
  const Halide::Target t = Halide::get_host_target().with_feature(Halide::Target::CUDA).with_feature(
      Halide::Target::CUDACapability86);
  for (bool guarded : {false, true}) {
    Halide::ImageParam in(Halide::Float(32), 1, "in");
    Halide::Func copy("copy"), out("out");
    Var x("x"), bx("bx"), tx("tx");
    copy(x) = in(x) * 2.0f;
    out(x) = copy(x) + 1.0f;
    out.bound(x, 0, 33).gpu_tile(x, bx, tx, 32, Halide::TailStrategy::GuardWithIf);
    copy.compute_root().gpu_tile(x, bx, tx, 32, guarded ? Halide::TailStrategy::GuardWithIf
                                                        : Halide::TailStrategy::RoundUp);
    Halide::Module m = Halide::Pipeline(out).compile_to_module({in}, "check", t);
    const std::map<std::string, Shape> shapes = {{"Input buffer in", {33}}, {"Output buffer out", {33}}};
    if (guarded) {
      EXPECT_NO_THROW(check_buffer_regions(m, shapes, "the test pipeline", "test"));
    } else {
      try {
        check_buffer_regions(m, shapes, "the test pipeline", "test");
        ADD_FAILURE() << "a read past the input passed the check";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Input buffer in is [33] but its row-major dim 0 is accessed over [0, 63]"),
                  std::string::npos)
            << e.what();
      }
    }
  }
}

// ---- errors ----------------------------------------------------------------------------------

// bf16 compiles for CUDA through uint16 storage (bf16_storage.h): every op
// of op_zoo(bf16), with GPU code for each kernel, and PTX that holds no bf16
// type (Halide 14's PTX backend crashes on one).
TEST(CudaSchedules, Bf16CompilesAsUint16) {
  const Graph g = op_zoo(DType::bf16);
  for (const Target& t : {kSm80, kSm90}) {
    const CudaCompileResult r = compile_checked(g, t, true);
    ASSERT_FALSE(r.kernels.empty());
    for (const CudaKernelInfo& k : r.kernels) {
      EXPECT_EQ(k.ptx.find(".bf16"), std::string::npos) << k.header;
      EXPECT_EQ(k.ptx.find("bfloat"), std::string::npos) << k.header;
    }
  }
}

// Compiles `g` for sm_80 and sm_90: `kernels` kernels, each with `present`
// and without `absent` in its PTX.
void expect_every_kernel_ptx(const Graph& g, size_t kernels, const std::string& present, const std::string& absent) {
  for (const Target& t : {kSm80, kSm90}) {
    const CudaCompileResult r = compile_checked(g, t, true);
    ASSERT_EQ(r.kernels.size(), kernels);
    for (const CudaKernelInfo& k : r.kernels) {
      EXPECT_NE(k.ptx.find(present), std::string::npos) << k.header;
      EXPECT_EQ(k.ptx.find(absent), std::string::npos) << k.header;
    }
  }
}

// f32 exp inside GPU kernels runs on the special-function unit
// (cuda_fast_math.h): the softmax's PTX has ex2.approx and no floor of
// Halide's polynomial; the CPU runs of the same ops are unaffected.
TEST(CudaSchedules, ExpUsesTheSpecialFunctionUnit) {
  GraphBuilder g("exp");
  g.output("p", softmax(g.input("a", {64, 96})));
  g.output("e", exp(g.input("b", {33, 7})));
  expect_every_kernel_ptx(g.build(), 2, "ex2.approx", "cvt.rmi");
}

// f32 division inside GPU kernels is the approximate one (cuda_fast_math.h):
// GELU's tanh form, x / (1 + e^-2u), and a plain division have no IEEE
// div.rn in their PTX; f64 division keeps it.
TEST(CudaSchedules, DivisionIsTheFastApproximateOne) {
  GraphBuilder g("div");
  g.output("h", gelu(g.input("a", {64, 96}), "tanh"));
  g.output("q", g.input("b", {33, 7}) / g.input("c", {33, 7}));
  expect_every_kernel_ptx(g.build(), 2, "div.approx.ftz.f32", "div.rn.f32");
  GraphBuilder d("div64");
  d.output("q", d.input("b", {33, 7}, DType::f64) / d.input("c", {33, 7}, DType::f64));
  const CudaCompileResult r = compile_checked(d.build(), kSm90, true);
  ASSERT_EQ(r.kernels.size(), 1u);
  EXPECT_NE(r.kernels[0].ptx.find("div.rn.f64"), std::string::npos) << r.kernels[0].header;
}

// Rows whose length is a multiple of 4 elements (CudaArch::vector) are read
// 4 at a time: a pointwise kernel, a bf16 layer norm (its row statistics
// and its output), a row logsumexp and a column sum each have vector loads
// in their PTX. A row of odd length keeps one load per element, and so does
// a layer norm written in f32 (slower vectorized on an H200;
// cuda_common.cpp). The pipelines' buffers are pinned to their dense static
// shapes (pin_dense), which is what lets Halide prove the vectors aligned.
TEST(CudaSchedules, VectorLoadsWhereRowsAllow) {
  GraphBuilder g("vec");
  g.output("p", g.input("a", {64, 96}) * 2.0);
  Tensor w = g.param("w", {256}), c = g.param("c", {256});
  g.output("ln_bf16", layer_norm(g.input("b", {64, 256}, DType::bf16), cast(w, DType::bf16), cast(c, DType::bf16)));
  g.output("lse", logsumexp(g.input("d", {64, 256})));
  g.output("cols", sum(g.input("e", {4096, 96}), {0}));
  g.output("odd", g.input("f", {33, 7}) * 2.0);
  g.output("ln_f32", layer_norm(g.input("h", {64, 256}), w, c));
  const Graph graph = g.build();
  for (const Target& t : {kSm80, kSm90}) {
    const CudaCompileResult r = compile_checked(graph, t, true);
    ASSERT_EQ(r.kernels.size(), 6u) << r.text();
    for (const CudaKernelInfo& k : r.kernels) {
      auto reads = [&](const std::string& input) { return k.header.find(" = " + input) != std::string::npos; };
      const bool scalar = reads("f") || reads("h");
      EXPECT_EQ(k.ptx.find("ld.global.nc.v4.") != std::string::npos, !scalar) << k.header;
      EXPECT_EQ(k.schedule.find("4-wide vectors") != std::string::npos, !scalar) << k.schedule;
    }
  }
}

TEST(CudaErrors, TargetsAndJit) {
  GraphBuilder g("small");
  g.output("y", relu(g.input("x", {7})));
  const Graph graph = g.build();
  EXPECT_THROW(compile_cuda(graph, Target::host()), Error);
  // The JIT path still refuses CUDA targets (the CUDA runtime is a later issue).
  EXPECT_THROW(compile(graph, kSm90), Error);
  EXPECT_THROW(Target::parse("x86-64-linux-cuda"), Error);  // GPU features go in the -cuda-smXX suffix
  EXPECT_EQ(Target::parse("x86-64-linux-avx2-cuda-sm80").cuda_sm, 80);
  CudaCompileResult r = compile_cuda(graph, Target::parse("x86-64-linux-avx2-cuda-sm80"));
  EXPECT_NE(r.halide_target.find("cuda_capability_86"), std::string::npos) << r.halide_target;
}

}  // namespace
