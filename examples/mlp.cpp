// The main demo: a 2-layer MLP forward graph, with one user-defined op written
// Halide-style, printed, run through the foundational passes, compiled for
// this CPU through Halide and run on random inputs. It trains nothing
// (autodiff comes later).
#include <tessera/tessera.h>

#include <cstdio>
#include <random>

using namespace tessera;

Graph mlp(int B, int D, int H, int C) {
  GraphBuilder g("mlp");
  Tensor x = g.input("x", {B, D});
  Tensor y = g.input("y", {B}, DType::i32);
  Tensor h = gelu(linear(x, g.param("fc1.weight", {H, D}), g.param("fc1.bias", {H})));
  // A user-defined op, Halide-style: a pure function of index Vars.
  Tensor s = g.define("swish", {B, H}, [&](Var i, Var j) {
    Expr v = h(i, j);
    return v / (1 + Halide::exp(-v));
  });
  Tensor logits = linear(s, g.param("fc2.weight", {C, H}), g.param("fc2.bias", {C}));
  g.output("logits", logits);
  g.output("loss", cross_entropy(logits, y));
  return g.build();
}

int main() {
  const int B = 64, D = 784, H = 256, C = 10;
  try {
    Graph graph = mlp(B, D, H, C);
    std::printf("%s\n", print(graph).c_str());

    // The foundational passes, verified after each (TESSERA_DUMP=<dir> writes each result).
    PassManager passes{cse(), simplify(), fold(), dce()};
    graph = passes.run(graph);
    std::printf("%s\n", passes.report().c_str());

    Executable exe = compile(graph, Target::host());
    std::printf("JIT-compiled for %s in %.2f s\n\n", exe.target().str().c_str(), exe.compile_seconds());
    std::printf("%s\n", exe.schedule_text().c_str());

    // PyTorch's default Linear init: U(-1/sqrt(in), 1/sqrt(in)).
    std::mt19937 rng(0);
    auto uniform = [&](Shape shape, double bound) {
      std::uniform_real_distribution<double> u(-bound, bound);
      std::vector<double> v(numel(shape));
      for (double& e : v) e = u(rng);
      return Buffer::from(v, shape);
    };
    std::vector<double> labels(B);
    for (int i = 0; i < B; ++i) labels[i] = i % C;
    std::map<std::string, Buffer> args = {
        {"x", uniform({B, D}, 1.0)},
        {"y", Buffer::from(labels, {B}, DType::i32)},
        {"fc1.weight", uniform({H, D}, 1.0 / std::sqrt(D))},
        {"fc1.bias", uniform({H}, 1.0 / std::sqrt(D))},
        {"fc2.weight", uniform({C, H}, 1.0 / std::sqrt(H))},
        {"fc2.bias", uniform({C}, 1.0 / std::sqrt(H))},
    };
    auto out = exe.run(args);
    const Buffer& logits = out.at("logits");
    std::printf("logits[0, :] =");
    for (int j = 0; j < C; ++j) std::printf(" %.4f", logits.get(j));
    std::printf("\nloss = %.6f (ln %d = %.6f for an untrained classifier)\n", out.at("loss").get(0), C,
                std::log(static_cast<double>(C)));
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
