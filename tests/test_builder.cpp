// Bad-input tests for graph building and running: each asserts that a
// tessera::Error (not another exception, not an abort) is thrown and that its
// message names what is at fault (the op, the node, the shapes or dtypes, the
// tensor). Covers shape and dtype mismatches, matmul inner dims, reshape
// sizes, bad axes, duplicate names, missing and mis-shaped run() arguments,
// unknown ops and attributes. It does not check numerics (test_ops.cpp).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tessera/tessera.h"

namespace tessera {
namespace {

// Runs `fn`, expecting a tessera::Error whose message contains every one of
// `parts` (plain substrings) and, if `node_of` names an op, starts with
// "<op> 't<digits>'" (the op and the node it names).
template <typename Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& parts, const std::string& node_of = "") {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "the message\n    " << msg << "\ndoes not contain \"" << p << "\"";
    if (!node_of.empty()) {
      const std::string head = node_of + " 't";
      size_t digits = msg.rfind(head, 0) == 0 ? msg.find_first_not_of("0123456789", head.size()) : std::string::npos;
      EXPECT_TRUE(digits != std::string::npos && digits > head.size() && msg[digits] == '\'')
          << "the message\n    " << msg << "\ndoes not start with " << head << "<digits>'";
    }
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-tessera exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no tessera::Error was thrown (expected one mentioning \"" << (parts.empty() ? "" : parts[0])
                << "\")";
}

// ---- shapes and dtypes -----------------------------------------------------------

TEST(BuilderErrors, BroadcastShapeMismatchNamesOpNodeAndShapes) {
  GraphBuilder g("g");
  Tensor a = g.input("a", {2, 3});
  Tensor b = g.input("b", {4, 3});
  expect_error([&] { add(a, b); }, {"add", "[2, 3]", "[4, 3]"}, "add");
  expect_error([&] { (void)(a * b); }, {"mul", "[2, 3]", "[4, 3]"}, "mul");
  expect_error([&] { where(g.input("c", {5}, DType::boolean), a, a); }, {"where", "[5]", "[2, 3]"});
}

TEST(BuilderErrors, DtypeMismatch) {
  GraphBuilder g("g");
  Tensor a = g.input("a", {2, 3}, DType::f32);
  Tensor b = g.input("b", {2, 3}, DType::f64);
  expect_error([&] { add(a, b); }, {"add", "f32[2, 3]", "f64[2, 3]", "dtype"});
  expect_error([&] { matmul(a, g.input("c", {3, 2}, DType::f16)); }, {"matmul", "f32", "f16"});
  // Float-only ops refuse integers, numeric ops refuse bool.
  Tensor i = g.input("i", {4}, DType::i32);
  expect_error([&] { exp(i); }, {"exp", "i32[4]", "float"});
  expect_error([&] { mean(i); }, {"mean", "i32[4]", "float"});
  expect_error([&] { neg(g.input("flag", {4}, DType::boolean)); }, {"neg", "bool[4]"});
  expect_error([&] { where(g.input("notbool", {4}), i, i); }, {"where", "bool", "f32[4]"});
  expect_error([&] { embedding(g.input("fidx", {4}), g.input("w", {5, 3})); }, {"embedding", "f32[4]"});
}

TEST(BuilderErrors, MatmulInnerDimensionMismatch) {
  GraphBuilder g("g");
  Tensor a = g.input("a", {2, 3});
  Tensor b = g.input("b", {4, 5});
  expect_error([&] { matmul(a, b); }, {"matmul", "[2, 3]", "[4, 5]"}, "matmul");
  expect_error([&] { matmul(g.input("v", {3}), b); }, {"matmul", "[3]", "rank"});
  expect_error([&] { matmul(g.input("p", {2, 2, 3}), g.input("q", {3, 3, 4})); }, {"matmul", "[2, 2, 3]", "[3, 3, 4]"});
  expect_error([&] { linear(a, g.input("w", {7, 4})); }, {"linear", "[2, 3]", "[7, 4]"});
  expect_error([&] { linear(a, g.input("w2", {7, 3}), g.input("bias", {3})); }, {"linear", "bias", "[3]"});
  expect_error([&] { attention(a, g.input("k", {2, 4}), a); }, {"attention", "[2, 3]", "[2, 4]"});
}

TEST(BuilderErrors, ReshapeNumelMismatch) {
  GraphBuilder g("g");
  Tensor x = g.input("x", {2, 3});
  expect_error([&] { reshape(x, {4, 2}); }, {"reshape", "[2, 3]", "[4, 2]"});
  expect_error([&] { reshape(x, {4, -1}); }, {"reshape", "[2, 3]", "[4, -1]"});
  expect_error([&] { reshape(x, {-1, -1}); }, {"reshape", "-1"});
  expect_error([&] { broadcast_to(x, {3, 3}); }, {"broadcast_to", "[2, 3]", "[3, 3]"});
}

TEST(BuilderErrors, BadAxis) {
  GraphBuilder g("g");
  Tensor x = g.input("x", {2, 3});
  expect_error([&] { sum(x, {2}); }, {"sum", "axis 2", "[2, 3]"});
  expect_error([&] { max(x, {-3}); }, {"max", "-3"});
  expect_error([&] { sum(x, {1, -1}); }, {"sum", "axis"});  // the same axis twice
  expect_error([&] { softmax(x, 2); }, {"softmax", "2"});
  expect_error([&] { log_softmax(x, -3); }, {"log_softmax", "-3"});
  expect_error([&] { slice(x, 5, 0, 1); }, {"slice", "5"});
  expect_error([&] { slice(x, 1, 2, 1); }, {"slice"});  // empty
  expect_error([&] { concat({x, x}, 2); }, {"concat", "2"});
  expect_error([&] { concat({x, g.input("y", {3, 3})}, 1); }, {"concat", "[2, 3]", "[3, 3]"});
  expect_error([&] { squeeze(x, {0}); }, {"squeeze", "[2, 3]"});  // size 2, not 1
  expect_error([&] { unsqueeze(x, 4); }, {"unsqueeze", "4"});
  expect_error([&] { permute(x, {0, 0}); }, {"permute", "[0, 0]"});
  expect_error([&] { permute(x, {1, 0, 2}); }, {"permute"});
  expect_error([&] { transpose(x, 0, 2); }, {"transpose", "2"});
}

TEST(BuilderErrors, DuplicateNames) {
  GraphBuilder g("g");
  Tensor x = g.input("x", {2});
  expect_error([&] { g.input("x", {3}); }, {"'x'", "already"});
  expect_error([&] { g.param("x", {2}); }, {"'x'", "already"});
  expect_error([&] { g.define("x", {2}, [&](Var i) { return x(i) * 2; }); }, {"'x'", "already"});
  g.output("y", x + x);
  expect_error([&] { g.output("y", x); }, {"'y'", "already"});
}

TEST(BuilderErrors, UnknownOpAndBadAttributes) {
  GraphBuilder g("g");
  Tensor x = g.input("x", {2, 3});
  expect_error([&] { g.add("frobnicate", {x}); }, {"unknown op 'frobnicate'"});
  expect_error([&] { g.add("add", {x}); }, {"add", "2 inputs", "1"});
  expect_error([&] { g.add("sum", {x}); }, {"sum", "axes"});  // missing attributes
  expect_error([&] { g.add("softmax", {x}, {{"axis", std::string("last")}}); }, {"softmax", "axis"});
  expect_error([&] { g.add("input", {}); }, {"input"});
  expect_error([&] { g.add("define", {x}); }, {"define"});
  GraphBuilder other("other");
  Tensor y = other.input("y", {2, 3});
  expect_error([&] { add(x, y); }, {"another GraphBuilder"});
}

TEST(BuilderErrors, BadLeavesAndDefines) {
  GraphBuilder g("g");
  expect_error([&] { g.input("z", {2, 0}); }, {"'z'", "[2, 0]"});
  expect_error([&] { g.constant({1, 2, 3}, {2, 2}); }, {"3 values", "[2, 2]"});
  Tensor x = g.input("x", {2, 3});
  expect_error([&] { g.define("d", {2, 3}, [&](Var i) { return x(i, i); }); }, {"'d'", "rank"});
  expect_error([&] { g.define("e", {2}, [&](Var i) { return x(i); }); }, {"'x'", "f32[2, 3]", "1 ind"});
}

// ---- running -----------------------------------------------------------------------

Graph small_graph() {
  GraphBuilder g("small");
  Tensor x = g.input("x", {2, 3});
  Tensor w = g.param("w", {3}, DType::f32);
  g.output("y", x * w);
  return g.build();
}

TEST(RunErrors, MissingArgumentNamesTheTensor) {
  Executable exe = compile(small_graph());
  expect_error([&] { exe.run({{"w", Buffer(DType::f32, {3})}}); }, {"'x'", "missing", "[2, 3]"});
  expect_error([&] { exe.run({{"x", Buffer(DType::f32, {2, 3})}}); }, {"'w'", "missing", "[3]"});
}

TEST(RunErrors, MisShapedArgumentNamesTheTensorAndBothShapes) {
  Executable exe = compile(small_graph());
  expect_error([&] { exe.run({{"x", Buffer(DType::f32, {3, 2})}, {"w", Buffer(DType::f32, {3})}}); },
               {"'x'", "[3, 2]", "[2, 3]"});
  expect_error([&] { exe.run({{"x", Buffer(DType::f64, {2, 3})}, {"w", Buffer(DType::f32, {3})}}); },
               {"'x'", "f64[2, 3]", "f32[2, 3]"});
  expect_error([&] { exe.run({{"x", Buffer(DType::f32, {2, 3})}, {"w", Buffer(DType::f32, {1, 3})}}); },
               {"'w'", "[1, 3]", "[3]"});
  expect_error([&] { exe.run({{"x", Buffer()}, {"w", Buffer(DType::f32, {3})}}); }, {"'x'"});
}

TEST(RunErrors, UnknownArgumentAndNoOutputs) {
  Executable exe = compile(small_graph());
  expect_error(
      [&] {
        exe.run({{"x", Buffer(DType::f32, {2, 3})}, {"w", Buffer(DType::f32, {3})}, {"zz", Buffer(DType::f32, {1})}});
      },
      {"'zz'"});
  GraphBuilder g("empty");
  neg(g.input("x", {2}));
  expect_error([&] { compile(g.graph()); }, {"empty", "output"});
  expect_error([&] { Executable().run({}); }, {"not compiled"});
}

TEST(BuildErrors, VerifyNamesUnusedInputs) {
  GraphBuilder g("g");
  Tensor x = g.input("x", {2});
  g.input("unused", {2});
  g.output("y", neg(x));
  expect_error([&] { g.build(); }, {"'unused'", "never used"});
}

}  // namespace
}  // namespace tessera
