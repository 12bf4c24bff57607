// Tests of the text form of a Graph (tessera/text.h): the exact printed text
// of a hand-built graph, parse(print(g)) == g for every library op, define
// bodies with and without reductions (printed text and rebuilt Halide IR),
// parser errors with their line and column, robustness against truncated and
// garbage text, and the Graphviz export. It does not compile or run graphs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <regex>
#include <set>

#include "expr_text.h"
#include "op_registry.h"
#include "tessera/autodiff.h"
#include "tessera/quant_ops.h"
#include "tessera/tessera.h"
#include "user_def.h"

namespace tessera {
namespace {

using Halide::Expr;
using Halide::RDom;
using Halide::Var;

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

bool same_attr(const AttrValue& a, const AttrValue& b) {
  if (a.index() != b.index()) return false;
  if (const double* x = std::get_if<double>(&a)) return same_bits(*x, std::get<double>(b));
  return a == b;
}

// Every field of every node, and the outputs, are identical.
void expect_same_graph(const Graph& a, const Graph& b) {
  EXPECT_EQ(a.name, b.name);
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const Node& x = a.nodes[i];
    const Node& y = b.nodes[i];
    SCOPED_TRACE("node " + x.name);
    EXPECT_EQ(x.id, y.id);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.op, y.op);
    EXPECT_EQ(x.inputs, y.inputs);
    EXPECT_EQ(x.type, y.type);
    ASSERT_EQ(x.attrs.size(), y.attrs.size());
    for (const auto& [k, v] : x.attrs) {
      ASSERT_TRUE(y.attrs.count(k)) << k;
      EXPECT_TRUE(same_attr(v, y.attrs.at(k))) << k;
    }
    ASSERT_EQ(x.values.size(), y.values.size());
    for (size_t j = 0; j < x.values.size(); ++j) EXPECT_TRUE(same_bits(x.values[j], y.values[j])) << j;
    EXPECT_EQ(x.user != nullptr, y.user != nullptr);
    if (x.user && y.user) {
      EXPECT_EQ(print_node(a, x), print_node(b, y));
    }
  }
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t i = 0; i < a.outputs.size(); ++i) {
    EXPECT_EQ(a.outputs[i].name, b.outputs[i].name);
    EXPECT_EQ(a.outputs[i].node, b.outputs[i].node);
  }
}

// parse(print(g)) == g and print(parse(print(g))) == print(g).
void expect_round_trip(const Graph& g) {
  std::string text = print(g);
  SCOPED_TRACE(text);
  Graph back;
  try {
    back = parse(text);
  } catch (const Error& e) {
    FAIL() << "parse failed: " << e.what();
  }
  expect_same_graph(g, back);
  EXPECT_EQ(print(back), text);
}

std::string parse_error(const std::string& text) {
  try {
    parse(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- Exact text -------------------------------------------------------------

Graph small_graph() {
  GraphBuilder b("mlp");
  Tensor x = b.input("x", {2, 3});
  Tensor w = b.param("fc.weight", {4, 3});
  Tensor bias = b.param("fc.bias", {4});
  Tensor scale = b.input("my input", {2, 4});
  Tensor h = linear(x, w, bias);                     // t0
  Tensor g = gelu(h, "tanh");                        // t1
  Tensor e = g + b.constant(1e-5);                   // t2, t3
  Tensor m = e * scale;                              // t4
  Tensor s = sum(m, {1}, true);                      // t5
  b.constant({1, 2, 3}, {3}, DType::i32);            // t6
  Tensor ln = layer_norm(h, 1e-5);                   // t7
  Tensor c = cast(s, DType::f64);                    // t8
  Tensor r = rms_norm(ln, 2.0);                      // t9
  Tensor sm = softmax(r);                            // t10
  b.output("logits", c);
  b.output("layer norm", sm);
  return b.build();
}

const char* const kSmallText =
    "graph mlp {\n"
    "  x = input()  # f32[2, 3]\n"
    "  fc.weight = param()  # f32[4, 3]\n"
    "  fc.bias = param()  # f32[4]\n"
    "  \"my input\" = input()  # f32[2, 4]\n"
    "  t0 = linear(x, fc.weight, fc.bias)  # f32[2, 4]\n"
    "  t1 = gelu(t0, approximate=\"tanh\")  # f32[2, 4]\n"
    "  t2 = constant(value=1e-05)  # f32[]\n"
    "  t3 = add(t1, t2)  # f32[2, 4]\n"
    "  t4 = mul(t3, \"my input\")  # f32[2, 4]\n"
    "  t5 = sum(t4, axes=[1], keepdim=true)  # f32[2, 1]\n"
    "  t6 = constant(values=[1, 2, 3])  # i32[3]\n"
    "  t7 = layer_norm(t0, eps=1e-05)  # f32[2, 4]\n"
    "  t8 = cast(t5, dtype=\"f64\")  # f64[2, 1]\n"
    "  t9 = rms_norm(t7, eps=2.0)  # f32[2, 4]\n"
    "  t10 = softmax(t9, axis=-1)  # f32[2, 4]\n"
    "  output logits = t8\n"
    "  output \"layer norm\" = t10\n"
    "}\n";

TEST(Text, PrintsSmallGraphExactly) {
  Graph g = small_graph();
  EXPECT_EQ(print(g), kSmallText);
  EXPECT_EQ(print_node(g, g.node("t5")), "t5 = sum(t4, axes=[1], keepdim=true)  # f32[2, 1]");
  EXPECT_EQ(print_node(g, g.node("my input")), "\"my input\" = input()  # f32[2, 4]");
}

TEST(Text, ParsesSmallGraphText) {
  Graph g = parse(kSmallText);
  expect_same_graph(small_graph(), g);
  EXPECT_EQ(print(g), kSmallText);
  // Nodes have the builder's structure: ids are positions, inputs are ids.
  EXPECT_EQ(g.node("t0").inputs, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(g.outputs[1].name, "layer norm");
  EXPECT_EQ(g.outputs[1].node, g.find("t10"));
}

TEST(Text, ToleratesBlankAndCommentLines) {
  std::string text =
      "# a comment\n"
      "\n"
      "graph g {\r\n"
      "  x = input()  # f32[2]\r\n"
      "  # the relu\n"
      "  y = relu(x)  # f32[2]\n"
      "  output y = y\n"
      "}";
  Graph g = parse(text);
  EXPECT_EQ(print(g), "graph g {\n  x = input()  # f32[2]\n  y = relu(x)  # f32[2]\n  output y = y\n}\n");
}

TEST(Text, NamesAndStringsAreQuotedAndEscaped) {
  GraphBuilder b("odd graph");
  Tensor x = b.input("layers.0.attn.q_proj.weight", {2});
  Tensor y = b.input("a \"quoted\"\\name\n\x01\xc3\xa9", {2});
  Tensor z = b.input("output", {2});
  Tensor s = add(add(x, y), z);
  b.output("output", s);
  b.output("9lives", gelu(s, "none"));
  Graph g = b.build();
  std::string text = print(g);
  EXPECT_NE(text.find("graph \"odd graph\" {"), std::string::npos) << text;
  EXPECT_NE(text.find("  layers.0.attn.q_proj.weight = input()"), std::string::npos) << text;
  EXPECT_NE(text.find("  \"a \\\"quoted\\\"\\\\name\\n\\x01\\xc3\\xa9\" = input()"), std::string::npos) << text;
  EXPECT_NE(text.find("  output = input()"), std::string::npos) << text;
  EXPECT_NE(text.find("  output output = t1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  output \"9lives\" = t2\n"), std::string::npos) << text;
  expect_round_trip(g);
}

TEST(Text, DoublesRoundTripBitExactly) {
  const double tricky[] = {0.1,
                           1.0 / 3.0,
                           -2.5,
                           1e-300,
                           5e-324,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::lowest(),
                           -0.0,
                           0.0,
                           123456789012345678.0,
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::numeric_limits<double>::quiet_NaN()};
  GraphBuilder b("doubles");
  Tensor x = b.input("x", {13}, DType::f64);
  std::vector<double> values(std::begin(tricky), std::end(tricky));
  Tensor c = b.constant(values, {13}, DType::f64);
  Tensor one = b.constant(-0.0, DType::f64);
  Tensor y = layer_norm(x + c + one, 1.0 / 3.0);
  Tensor z = rms_norm(y, 1e-300);
  b.output("z", z);
  Graph g = b.build();
  expect_round_trip(g);
  std::string text = print(g);
  EXPECT_NE(text.find("values=[0.1, 0.3333333333333333, -2.5, 1e-300, 5e-324, 1.7976931348623157e+308, "
                      "-1.7976931348623157e+308, -0, 0, 123456789012345680, inf, -inf, nan]"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("eps=0.3333333333333333)"), std::string::npos) << text;
  EXPECT_NE(text.find("eps=1e-300)"), std::string::npos) << text;
  EXPECT_NE(text.find("constant(value=-0)"), std::string::npos) << text;
}

// ---- Every library op ---------------------------------------------------------

std::vector<Graph> library_graphs() {
  std::vector<Graph> gs;
  {
    GraphBuilder b("elementwise");
    Tensor x = b.input("x", {2, 3});
    Tensor y = b.input("y", {2, 3});
    Tensor z = b.param("z", {3});
    std::vector<Tensor> outs = {neg(x),  abs(x),     exp(x),    log(x),         sqrt(x),
                                rsqrt(x), tanh(x),   sigmoid(x), relu(x),       silu(x),
                                gelu(x), gelu(x, "tanh"), add(x, z), sub(x, y), mul(x, y),
                                div(x, y), pow(x, y), maximum(x, y), minimum(x, z),
                                where(lt(x, y), x, z), cast(eq(x, y), DType::f32), cast(ne(x, y), DType::f32),
                                cast(le(x, y), DType::f32), cast(gt(x, y), DType::f32),
                                cast(ge(x, y), DType::f32), -x, x + 2.5, 0.1 - x, x * -3.0, 1e30 / x,
                                cast(cast(cast(cast(x, DType::f16), DType::bf16), DType::f64), DType::f32),
                                cast(cast(cast(x, DType::i64), DType::i8), DType::f32),
                                cast(cast(cast(x, DType::u8), DType::boolean), DType::f32)};
    Tensor acc = outs[0];
    for (size_t i = 1; i < outs.size(); ++i) acc = acc + outs[i];
    b.output("out", acc);
    Tensor i = b.input("i", {4}, DType::i32);
    b.output("idiv", div(i, b.constant({1, -2, 3, 7}, {4}, DType::i32)));
    gs.push_back(b.build());
  }
  {
    GraphBuilder b("reductions");
    Tensor x = b.input("x", {2, 3, 4});
    b.output("a", sum(x));
    b.output("b", sum(x, {0, -1}, true));
    b.output("c", mean(x, {1}));
    b.output("d", max(x, {-1}, true));
    b.output("e", mean(x, {}, true));
    gs.push_back(b.build());
  }
  {
    GraphBuilder b("shapes");
    Tensor x = b.input("x", {2, 3, 4});
    b.output("a", reshape(x, {6, -1}));
    b.output("b", permute(x, {2, 0, 1}));
    b.output("c", transpose(x, 0, 2));
    b.output("d", broadcast_to(b.param("p", {3, 1}), {2, 3, 4}));
    b.output("e", slice(x, 2, -3, 4, 2));
    b.output("f", concat({x, x, x}, -1));
    b.output("g", squeeze(b.input("s", {1, 3, 1}), {0, -1}));
    b.output("h", unsqueeze(x, -1));
    gs.push_back(b.build());
  }
  {
    GraphBuilder b("linalg");
    Tensor a = b.input("a", {5, 2, 3});
    Tensor w = b.param("w", {3, 4});
    b.output("mm", matmul(a, w));
    b.output("lin", linear(a, b.param("lw", {6, 3})));
    b.output("linb", linear(a, b.param("lw2", {6, 3}), b.param("lb", {6})));
    gs.push_back(b.build());
  }
  {
    GraphBuilder b("nn");
    Tensor ids = b.input("ids", {2, 5}, DType::i64);
    Tensor emb = embedding(ids, b.param("wte", {10, 8}));
    b.output("sm", softmax(emb));
    b.output("lsm", log_softmax(emb, 0));
    b.output("ln", layer_norm(emb));
    b.output("lnw", layer_norm(emb, b.param("ln.weight", {8}), b.param("ln.bias", {8}), 1e-6));
    b.output("rms", rms_norm(emb));
    b.output("rmsw", rms_norm(emb, b.param("rms.weight", {8}), 1e-5));
    b.output("lng", layer_norm_grad(emb, emb * 2.0, b.param("lng.weight", {8}), 1e-6));
    b.output("rmsg", rms_norm_grad(emb, emb, Tensor()));
    Tensor logits = b.input("logits", {4, 10});
    b.output("ce", cross_entropy(logits, b.input("target", {4}, DType::i64)));
    b.output("ce2", cross_entropy(logits, b.input("target32", {4}, DType::i32), 3));
    b.output("drop", dropout(emb, 0.1, 0xdeadbeefcafeULL, 17));
    b.output("embg", embedding_grad(ids, emb, 10));
    b.output("gelug", gelu_grad(emb, emb));
    b.output("gelug2", gelu_grad(emb, emb, "tanh"));
    Tensor q = b.input("q", {2, 4, 6, 8});
    Tensor k = b.input("k", {2, 4, 6, 8});
    Tensor v = b.input("v", {2, 4, 6, 8});
    b.output("att", attention(q, k, v));
    b.output("att2", attention(q, k, v, false, 0.125));
    b.output("attg", attention_grad(q, k, v, v, k, 1, false, 0.125));
    gs.push_back(b.build());
  }
  {
    GraphBuilder b("quantized");
    Tensor x = b.input("x", {3, 8});
    Tensor gr = b.input("g", {3, 4});
    Tensor w8 = b.param("a.weight", {4, 8}, DType::i8), s8 = b.param("a.weight.scale", {4});
    NF4Tensors q{b.param("b.weight", {16, 1}, DType::u8), b.param("b.weight.absmax", {1}), {}, {}, {}, 4, 8};
    NF4Tensors d{b.param("c.weight", {16, 1}, DType::u8), b.param("c.weight.absmax", {1}, DType::u8),
                 b.param("c.weight.nested_absmax", {1}), b.param("c.weight.nested_quant_map", {256}),
                 b.param("c.weight.nested_offset", {}), 4, 8};
    b.output("di", dequantize_int8(w8, s8));
    b.output("dn", dequantize_nf4(d));
    b.output("li", linear_int8(x, w8, s8, b.param("a.bias", {4})));
    b.output("ln", linear_nf4(x, q));
    b.output("gi", linear_int8_grad_input(gr, w8, s8));
    b.output("gn", linear_nf4_grad_input(gr, d));
    gs.push_back(b.build());
  }
  // A define node, from text so that this list does not depend on
  // GraphBuilder::define (the DefineWith* tests cover that path).
  gs.push_back(parse(
      "graph user {\n"
      "  a = input()  # f32[4, 8]\n"
      "  w = param()  # f32[8, 3]\n"
      "  mm = define(a, w, vars=[i, j], rdoms=[r0: 0..8], body=\"sum(a(i, r0) * w(r0, j)) + 0.5\")  # f32[4, 3]\n"
      "  ct = input()  # f32[4, 3]\n"
      "  dw = define_grad(a, w, ct, index=1, vars=[i, j], rdoms=[r0: 0..8], body=\"sum(a(i, r0) * w(r0, j)) + "
      "0.5\")  # f32[8, 3]\n"
      "  output y = mm\n"
      "  output dw = dw\n"
      "}\n"));
  return gs;
}

TEST(Text, RoundTripsEveryLibraryOp) {
  std::set<std::string> covered;
  for (const Graph& g : library_graphs()) {
    SCOPED_TRACE("graph " + g.name);
    expect_round_trip(g);
    for (const Node& n : g.nodes) covered.insert(n.op);
  }
  for (const std::string& op : registered_ops()) {
    if (op_def(op).kind == OpKind::leaf) continue;
    EXPECT_TRUE(covered.count(op)) << "registered op '" << op << "' has no round-trip case in test_text.cpp";
  }
}

// ---- define ---------------------------------------------------------------------

// Renames placeholders by input index and RVars canonically, so that the IR of
// a body and of its parsed copy can be compared with Halide's equal().
class Canonical : public Halide::Internal::IRMutator {
 public:
  explicit Canonical(const std::vector<std::string>& placeholders) : ph_(placeholders) {}
  using IRMutator::visit;
  Expr visit(const Halide::Internal::Call* c) override {
    if (c->call_type != Halide::Internal::Call::Image) return IRMutator::visit(c);
    std::vector<Expr> args;
    for (const Expr& a : c->args) args.push_back(mutate(a));
    for (size_t k = 0; k < ph_.size(); ++k)
      if (ph_[k] == c->name)
        return Halide::Internal::Call::make(c->type, "IN" + std::to_string(k), args,
                                            Halide::Internal::Call::PureExtern);
    ADD_FAILURE() << "read of unknown image " << c->name;
    return c;
  }
  Expr visit(const Halide::Internal::Variable* v) override {
    if (!v->reduction_domain.defined()) return v;
    auto it = rvars_.find(v->name);
    if (it == rvars_.end()) it = rvars_.emplace(v->name, "RV" + std::to_string(rvars_.size())).first;
    return Halide::Internal::Variable::make(v->type, it->second);
  }

 private:
  std::vector<std::string> ph_;
  std::map<std::string, std::string> rvars_;
};

void expect_same_ir(const UserDef& a, const UserDef& b) {
  ASSERT_EQ(a.vars.size(), b.vars.size());
  Expr ca = Canonical(a.placeholders).mutate(a.body);
  Expr cb = Canonical(b.placeholders).mutate(b.body);
  EXPECT_TRUE(Halide::Internal::equal(ca, cb)) << "original: " << ca << "\nparsed:   " << cb;
}

// Round trip of every define node, including the rebuilt IR.
void expect_define_round_trip(const Graph& g) {
  expect_round_trip(g);
  Graph back = parse(print(g));
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (g.nodes[i].user) expect_same_ir(*g.nodes[i].user, *back.nodes[i].user);
}

TEST(Text, DefineWithoutReduction) {
  GraphBuilder b("swish");
  Tensor h = b.input("h", {4, 8});
  Tensor s = b.define("swish", {4, 8}, [&](Var i, Var j) {
    Expr v = h(i, j);
    return v / (1 + Halide::exp(-v));
  });
  b.output("y", s);
  Graph g = b.build();
  EXPECT_EQ(print_node(g, g.node("swish")),
            "swish = define(h, vars=[i, j], rdoms=[], body=\"h(i, j) / (1.0 + exp(-h(i, j)))\")  # f32[4, 8]");
  expect_define_round_trip(g);
}

TEST(Text, DefineWithReduction) {
  GraphBuilder b("mm");
  Tensor a = b.input("a", {4, 8});
  Tensor w = b.param("w", {8, 3});
  Tensor mm = b.define("mm", {4, 3}, [&](Var i, Var j) {
    RDom r(0, 8);
    return Halide::sum(a(i, r) * w(r, j));
  });
  Tensor mx = b.define("rowmax", {4}, [&](Var i) {
    RDom r(0, 3);
    return Halide::maximum(mm(i, r)) + Halide::minimum(mm(i, r));
  });
  b.output("y", mx);
  Graph g = b.build();
  EXPECT_EQ(print_node(g, g.node("mm")),
            "mm = define(a, w, vars=[i, j], rdoms=[r0: 0..8], body=\"sum(a(i, r0) * w(r0, j))\")  # f32[4, 3]");
  expect_define_round_trip(g);
}

// define_grad (made by autodiff from a define) prints its forward's body,
// reading all its inputs but the last (the cotangent), and parses back.
TEST(Text, DefineGradRoundTrips) {
  GraphBuilder b("dg");
  Tensor h = b.param("h", {4, 8});
  Tensor w = b.param("w", {8});
  Tensor s = b.define("swish", {4, 8}, [&](Var i, Var j) {
    Expr v = h(i, j) * w(j);
    return v / (1 + Halide::exp(-v));
  });
  Tensor m = b.define("rowmax", {4}, [&](Var i) { return Halide::maximum(s(i, RDom(0, 8))); });
  b.output("loss", sum(m));
  Graph g = differentiate(b.build());
  int grads = 0;
  for (const Node& n : g.nodes) grads += n.op == "define_grad";
  EXPECT_EQ(grads, 3);  // rowmax's input, swish's two
  EXPECT_EQ(print_node(g, g.node("t3")),
            "t3 = define_grad(swish, t2, index=0, vars=[i], rdoms=[r0: 0..8], body=\"maximum(swish(i, r0))\")  # "
            "f32[4, 8]");
  EXPECT_EQ(print_node(g, g.node("t5")),
            "t5 = define_grad(h, w, t3, index=1, vars=[i, j], rdoms=[], body=\"h(i, j) * w(j) / (1.0 + exp(-(h(i, j) "
            "* w(j))))\")  # f32[8]");
  expect_define_round_trip(g);
}

// Hand-written bodies using every construct: parse, then print gives the text back.
TEST(Text, DefineBodySyntaxRoundTrips) {
  const std::string text =
      "graph syntax {\n"
      "  a = input()  # f32[4, 8]\n"
      "  idx = input()  # i32[4]\n"
      "  exp = param()  # f64[8]\n"
      "  d1 = define(a, idx, vars=[i, j], rdoms=[], body=\"select(idx(i) > 0 && !(j % 2 == 1) || i <= -3, "
      "min(a(i, j), 0.5), max(a(i, j) * -2.0, -inf)) - -(1.0) + f32(i / 2 - j) * 1e-05\")  # f32[4, 8]\n"
      "  d2 = define(a, exp, vars=[i], rdoms=[(r0: 0..4, r1: 0..8), r2: -1..2], "
      "body=\"sum(f64(a(r0, r1)) * \\\"exp\\\"(r1) + product(f64(i + r2))) + f64(0.1) + f64((2))\")  # f64[4]\n"
      "  d3 = define(a, vars=[i, j], rdoms=[], body=\"f16(exp(a(i, j))) + f16(1.5) + f16(log(f16(a(i, j)))) - "
      "f16(sqrt(abs(a(i, j)))) * f16(pow(a(i, j), 2.0) + atan2(a(i, j), 1.0) + floor(a(i, j)) + "
      "round(tanh(a(i, j))))\")  # f16[4, 8]\n"
      "  d4 = define(idx, vars=[i], rdoms=[r0: 0..4], body=\"select(is_nan(strict_float(f32(idx(i)))), i64(-5), "
      "i64(maximum(idx(r0)) + i32(minimum(abs(idx(r0)) != u32(3)))))\")  # i64[4]\n"
      "  d5 = define(vars=[i], rdoms=[], body=\"bool(u8(i)) || true && false\")  # bool[3]\n"
      "  d6 = define(vars=[], rdoms=[], body=\"bf16(1.25) * bf16(f64(-1e+300))\")  # bf16[]\n"
      "  d7 = define(vars=[i], rdoms=[], body=\"i8(-128) + i8(u64(18446744073709551615)) - i8(i)\")  # i8[2]\n"
      "  output d1 = d1\n"
      "  output d2 = d2\n"
      "  output d3 = d3\n"
      "  output d4 = d4\n"
      "  output d5 = d5\n"
      "  output d6 = d6\n"
      "  output d7 = d7\n"
      "}\n";
  Graph g;
  try {
    g = parse(text);
  } catch (const Error& e) {
    FAIL() << e.what();
  }
  EXPECT_EQ(print(g), text);
  expect_define_round_trip(g);
  // Literal types are kept: f64(0.1) is a 64-bit immediate; f64((2)) a cast.
  const UserDef& d2 = *g.node("d2").user;
  std::ostringstream os;
  os << d2.body;
  EXPECT_NE(os.str().find("float64(2)"), std::string::npos) << os.str();
  // Tensor reads are Image calls of the placeholders, one per input.
  EXPECT_EQ(image_reads(d2.body), d2.placeholders);
  // Math calls keep Halide's names and types.
  std::ostringstream d3;
  d3 << g.node("d3").user->body;
  EXPECT_NE(d3.str().find("exp_f32("), std::string::npos) << d3.str();
  EXPECT_NE(d3.str().find("log_f16("), std::string::npos) << d3.str();
}

TEST(Text, DefineBodyIsTheIRHalideBuilds) {
  // Parsing calls into the same IR Halide's own functions make.
  Graph g = parse(
      "graph h {\n"
      "  a = input()  # f32[4]\n"
      "  d = define(a, vars=[i], rdoms=[], body=\"exp(a(i)) + sqrt(f32(i)) + tanh(-a(i))\")  # f32[4]\n"
      "  output d = d\n"
      "}\n");
  const UserDef& u = *g.node("d").user;
  Var i("i");
  Expr read = placeholder_read(u.placeholders[0], Halide::Float(32), {i});
  Expr expected = Halide::exp(read) + Halide::sqrt(i) + Halide::tanh(-read);
  EXPECT_TRUE(Halide::Internal::equal(expected, u.body)) << expected << "\n" << u.body;
}

TEST(Text, UnsupportedBodyConstructIsNamed) {
  GraphBuilder b("bad");
  Tensor a = b.input("a", {4});
  b.output("y", relu(a));
  Graph g = b.build();
  Node n;
  n.id = static_cast<int>(g.nodes.size());
  n.name = "lerped";
  n.op = "define";
  n.inputs = {};
  n.attrs["shape"] = std::vector<int64_t>{4};
  n.type = {DType::f32, {4}};
  auto def = std::make_shared<UserDef>();
  def->vars = {Var("i")};
  def->body = Halide::lerp(Halide::cast<float>(def->vars[0]), Expr(1.0f), Expr(0.5f));
  n.user = def;
  g.nodes.push_back(n);
  try {
    print_node(g, g.nodes.back());
    FAIL() << "printing lerp should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("define 'lerped'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("lerp"), std::string::npos) << e.what();
  }
  def->body = Halide::Internal::Let::make("t", Expr(1), Expr(2.0f));
  try {
    print_node(g, g.nodes.back());
    FAIL() << "printing a Let should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Let"), std::string::npos) << e.what();
  }
}

// ---- Errors ---------------------------------------------------------------------

const char* const kHead = "graph g {\n  x = input()  # f32[2]\n";

TEST(TextErrors, UnknownOp) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = frobnicate(x)  # f32[2]\n  output y = y\n}\n"),
            "line 3, column 7: unknown op 'frobnicate'");
}

TEST(TextErrors, UnknownInputName) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(z)  # f32[2]\n  output y = y\n}\n"),
            "line 3, column 12: unknown name 'z': no node of that name is defined above");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x)  # f32[2]\n  output y = w\n}\n"),
            "line 4, column 14: unknown name 'w': no node of that name is defined above");
}

TEST(TextErrors, MalformedLine) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x  # f32[2]\n}\n"),
            "line 3, column 15: expected ')' to close the argument list, found '#'");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y relu(x)  # f32[2]\n}\n"),
            "line 3, column 5: expected '=' after the node's name, found 'relu'");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x) @ # f32[2]\n}\n"),
            "line 3, column 15: unexpected character '@'");
  EXPECT_EQ(parse_error("graph g {\n  x = input()  # f32[2\n}\n"),
            "line 2, column 23: expected ']' to close the shape, found the end of the line");
  EXPECT_EQ(parse_error("graph g {\n  x = input()  # f32[2]\n  output x = x\n"),
            "line 4, column 1: unexpected end of text: the graph is missing its closing '}'");
  EXPECT_EQ(parse_error(""), "line 1, column 1: expected 'graph NAME {' (the text holds no graph)");
  EXPECT_EQ(parse_error("grph g {\n}\n"), "line 1, column 1: expected 'graph NAME {' to open the text, found 'grph'");
  EXPECT_EQ(parse_error(std::string(kHead) + "  output x = x\n}\n}\n"),
            "line 5, column 1: unexpected text after the closing '}' of the graph");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = gelu(x, approximate=\"tanh)  # f32[2]\n}\n"),
            "line 3, column 27: unterminated string (missing closing '\"')");
}

TEST(TextErrors, MissingTypeComment) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x)\n  output y = y\n}\n"),
            "line 3, column 14: missing type comment: expected '# dtype[shape]' after the node, found the end of "
            "the line");
}

TEST(TextErrors, TypeCommentMismatch) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x)  # f32[3]\n  output y = y\n}\n"),
            "line 3, column 16: type mismatch: the type comment says f32[3] but relu 'y' gives f32[2]");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = cast(x, dtype=\"i32\")  # f32[2]\n  output y = y\n}\n"),
            "line 3, column 29: type mismatch: the type comment says f32[2] but cast 'y' gives i32[2]");
}

TEST(TextErrors, BadDtypeAndShape) {
  std::string e = parse_error("graph g {\n  x = input()  # f31[2]\n}\n");
  EXPECT_EQ(e.rfind("line 2, column 18: bad dtype: unknown dtype 'f31'", 0), 0u) << e;
  EXPECT_EQ(parse_error("graph g {\n  x = input()  # f32[2, 0]\n}\n"),
            "line 2, column 25: dimension 0 is below 1");
  EXPECT_EQ(parse_error("graph g {\n  x = input()  # f32[99999999999999999999]\n}\n"),
            "line 2, column 22: integer 99999999999999999999 is out of range");
}

TEST(TextErrors, DuplicatesAndLeafRules) {
  EXPECT_EQ(parse_error(std::string(kHead) + "  x = relu(x)  # f32[2]\n}\n"),
            "line 3, column 3: duplicate name 'x' (already defined on line 2)");
  EXPECT_EQ(parse_error("graph g {\n  x = input(shape=[2])  # f32[2]\n}\n"),
            "line 2, column 13: input takes no attributes (its type comment gives its type)");
  EXPECT_EQ(parse_error(std::string(kHead) + "  p = param(x)  # f32[2]\n}\n"), "line 3, column 7: param takes no inputs");
  EXPECT_EQ(parse_error(std::string(kHead) + "  c = constant(values=[1, 2, 3])  # f32[2]\n}\n"),
            "line 3, column 16: the constant has 3 values for type f32[2] (2 elements)");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = relu(x)  # f32[2]\n  output y = y\n  output y = x\n}\n"),
            "line 5, column 10: duplicate output name 'y'");
  EXPECT_EQ(parse_error(std::string(kHead) + "  y = gelu(x, approximate=\"none\", approximate=\"tanh\")  # f32[2]\n}\n"),
            "line 3, column 35: attribute 'approximate' is given twice");
}

TEST(TextErrors, OpRulesArePositioned) {
  std::string e = parse_error(std::string(kHead) + "  y = gelu(x)  # f32[2]\n}\n");
  EXPECT_EQ(e.rfind("line 3, column 7: gelu 'y': ", 0), 0u) << e;
  EXPECT_NE(e.find("approximate"), std::string::npos) << e;
  e = parse_error(std::string(kHead) + "  y = add(x)  # f32[2]\n}\n");
  EXPECT_EQ(e.rfind("line 3, column 7: add 'y': takes 2 inputs, got 1", 0), 0u) << e;
}

TEST(TextErrors, DuplicateOutputsRefusedUnusedInputsAllowed) {
  // Two outputs of one name are refused, with the line and column.
  std::string e = parse_error("graph g {\n  x = input()  # f32[2]\n  output x = x\n  output x = x\n}\n");
  EXPECT_EQ(e.rfind("line 4, column 10: duplicate output name 'x'", 0), 0u) << e;
  // An unused input is not an error in text: transformed graphs (after dce) have them.
  EXPECT_NO_THROW(parse("graph g {\n  x = input()  # f32[2]\n  y = input()  # f32[2]\n  output x = x\n}\n"));
}

TEST(TextErrors, DefineBodyErrors) {
  auto body = [](const std::string& b, const std::string& type = "f32[2]") {
    return parse_error(std::string(kHead) + "  d = define(x, vars=[i], rdoms=[r0: 0..2], body=\"" + b + "\")  # " +
                       type + "\n  output d = d\n}\n");
  };
  // Columns point into the body string: the body starts at column 51.
  EXPECT_EQ(body("frob(i)"), "line 3, column 51: in the body of define 'd': unknown function or tensor 'frob' "
                             "(tensors read must be inputs of the define)");
  EXPECT_EQ(body("x(i) + i"), "line 3, column 56: in the body of define 'd': operands of '+' have different types "
                              "f32 and i32 (cast one of them, e.g. f32(...))");
  EXPECT_EQ(body("x(i, i)"), "line 3, column 51: in the body of define 'd': tensor 'x' takes 1 argument, got 2");
  EXPECT_EQ(body("x(k)"), "line 3, column 53: in the body of define 'd': unknown variable 'k' (not one of vars or rdoms)");
  EXPECT_EQ(body("x(i) +"), "line 3, column 57: in the body of define 'd': expected an expression, found end of the body");
  EXPECT_EQ(body("x(i))"), "line 3, column 55: in the body of define 'd': unexpected ')' after the expression");
  EXPECT_EQ(body("exp(i)"), "line 3, column 51: in the body of define 'd': exp needs an f16, f32 or f64 argument, not "
                            "i32 (cast it, e.g. f32(...))");
  EXPECT_EQ(body("\\\"x\\\"(i) $"), "line 3, column 60: in the body of define 'd': unexpected character '$'");
  EXPECT_EQ(body("f32(i)", "f64[2]"),
            "line 3, column 61: type mismatch: the type comment says f64[2] but define 'd' gives f32[2]");
  EXPECT_EQ(body("i64(9999999999999999999)", "i64[2]"),
            "line 3, column 55: in the body of define 'd': literal 9999999999999999999 is out of range for i64");
  std::string deep(5000, '(');
  std::string e = body(deep);
  EXPECT_NE(e.find("nested too deeply"), std::string::npos) << e;
  e = parse_error(std::string(kHead) + "  d = define(x, vars=[i, i], rdoms=[], body=\"x(i)\")  # f32[2, 2]\n}\n");
  EXPECT_EQ(e, "line 3, column 17: define 'd': the Var 'i' is listed twice");
  e = parse_error(std::string(kHead) + "  d = define(x, vars=[i], body=\"x(i)\")  # f32[2]\n}\n");
  EXPECT_EQ(e, "line 3, column 7: define 'd' needs vars=[...], rdoms=[...] and body=\"...\"");
}

TEST(TextErrors, DefineGradErrors) {
  auto node = [](const std::string& line) {
    return parse_error(std::string(kHead) + "  ct = input()  # f32[2]\n  n = input()  # i32[2]\n  " + line +
                       "\n  output d = d\n}\n");
  };
  EXPECT_EQ(node("d = define_grad(x, ct, index=0, vars=[i, j], rdoms=[], body=\"x(i)\")  # f32[2]"),
            "line 5, column 35: define_grad 'd' has 2 vars but its cotangent's type f32[2] has rank 1");
  EXPECT_EQ(node("d = define_grad(x, ct, index=1, vars=[i], rdoms=[], body=\"x(i)\")  # f32[2]"),
            "line 5, column 7: define_grad 'd': index 1 is not one of the definition's 1 inputs");
  EXPECT_EQ(node("d = define_grad(x, n, ct, index=1, vars=[i], rdoms=[], body=\"x(i) * f32(n(i))\")  # i32[2]"),
            "line 5, column 7: define_grad 'd': input 1 is i32[2], and only float inputs have a gradient");
  EXPECT_EQ(node("d = define_grad(x, vars=[i], rdoms=[], body=\"x(i)\")  # f32[2]"),
            "line 5, column 48: in the body of define_grad 'd': unknown function or tensor 'x' (tensors read must be "
            "inputs of the define)");
  EXPECT_EQ(node("d = define_grad(x, ct, index=0, body=\"x(i)\")  # f32[2]"),
            "line 5, column 7: define_grad 'd' needs vars=[...], rdoms=[...] and body=\"...\"");
}

TEST(TextErrors, GarbageBytes) {
  std::string e = parse_error(std::string("\xff\xfe\x00garbage", 10));
  EXPECT_EQ(e, "line 1, column 1: unexpected byte 0xff (not part of any token)");
  e = parse_error(std::string(kHead) + "  y = relu(x)  # f32[2]\x01\n}\n");
  EXPECT_EQ(e, "line 3, column 24: unexpected byte 0x01 (not part of any token)");
}

// No text makes the parser crash: every prefix, and every single-byte
// corruption, of a printed graph either parses or throws tessera::Error.
TEST(TextErrors, TruncatedAndCorruptedTextNeverCrashes) {
  std::vector<Graph> gs = library_graphs();
  std::string text = print(gs.back());  // the define graph
  std::string full = print(small_graph());
  int parsed = 0, errors = 0;
  auto attempt = [&](const std::string& t) {
    try {
      parse(t);
      ++parsed;
    } catch (const Error&) {
      ++errors;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "non-tessera exception " << e.what() << " on:\n" << t;
    }
  };
  for (const std::string& src : {text, full}) {
    for (size_t n = 0; n <= src.size(); ++n) attempt(src.substr(0, n));
    const char bytes[] = {'\0', '"', '(', ')', '#', '=', ',', '\\', '\xff', 'x', '9', '-', '['};
    for (size_t n = 0; n < src.size(); n += 3)
      for (char b : bytes) {
        std::string t = src;
        t[n] = b;
        attempt(t);
      }
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(errors, 0);
}

// ---- DOT --------------------------------------------------------------------------

TEST(TextDot, ContainsEveryNodeAndEdge) {
  Graph g = small_graph();
  std::string dot = to_dot(g);
  EXPECT_EQ(dot.rfind("digraph \"mlp\" {\n", 0), 0u) << dot;
  EXPECT_EQ(dot.substr(dot.size() - 2), "}\n");
  for (const Node& n : g.nodes) {
    std::string id = "n" + std::to_string(n.id);
    std::string label = "label=\"" + n.name + "\\n" + n.op + "\\n" + to_string(n.type) + "\"";
    EXPECT_NE(dot.find("  " + id + " [shape="), std::string::npos) << id;
    EXPECT_NE(dot.find(label), std::string::npos) << label;
    for (int in : n.inputs)
      EXPECT_NE(dot.find("  n" + std::to_string(in) + " -> " + id + ";\n"), std::string::npos) << n.name;
  }
  EXPECT_NE(dot.find("  out0 [shape=box, label=\"output\\nlogits\"];\n"), std::string::npos) << dot;
  EXPECT_NE(dot.find("  n" + std::to_string(g.find("t8")) + " -> out0;\n"), std::string::npos) << dot;
  EXPECT_NE(dot.find("  n" + std::to_string(g.find("t10")) + " -> out1;\n"), std::string::npos) << dot;
  // Quotes and backslashes in names are escaped.
  GraphBuilder b("q\"g");
  Tensor x = b.input("a\"b\\c", {1});
  b.output("o", relu(x));
  std::string d2 = to_dot(b.build());
  EXPECT_NE(d2.find("digraph \"q\\\"g\""), std::string::npos) << d2;
  EXPECT_NE(d2.find("label=\"a\\\"b\\\\c\\ninput\\nf32[1]\""), std::string::npos) << d2;
  size_t edges = 0;
  for (size_t p = dot.find("->"); p != std::string::npos; p = dot.find("->", p + 1)) ++edges;
  size_t expected = g.outputs.size();
  for (const Node& n : g.nodes) expected += n.inputs.size();
  EXPECT_EQ(edges, expected);
}

}  // namespace
}  // namespace tessera
