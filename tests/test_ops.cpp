// Every op of the library, run through compile(graph).run() (the Halide CPU
// path) and compared with the float64 reference interpreter (tests/reference)
// on fresh random inputs: several shapes per op (size 1, odd sizes, sizes not
// a multiple of the vector width, broadcasting, rank 0 where it makes sense),
// f32 and f64 for every float op, f16/bf16 for a representative subset, and
// the integer and bool dtypes for the ops that take them.
//
// The cases are data-driven: cases() maps each op name to a function that
// builds and checks its graphs (several independent cases share one graph to
// keep the number of JIT compiles down), and OpCoverage fails when an op is
// registered without an entry. Every test draws a fresh seed from
// std::random_device (or TESSERA_TEST_SEED) and names it on failure. This
// file also checks the reference itself (Philox known answers, rounding).
// It does not test the passes, the text form or error messages
// (test_passes.cpp, test_builder.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <array>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include "define_grad.h"
#include "op_registry.h"
#include "reference/reference.h"
#include "tessera/quant_ops.h"
#include "tessera/tessera.h"
#include "test_util.h"

namespace tessera {
namespace {

using test_util::fresh_seed;

// ---- seeds, distributions, tolerances --------------------------------------------

std::string seed_note(uint32_t seed) {
  return "seed " + std::to_string(seed) + " (rerun with TESSERA_TEST_SEED=" + std::to_string(seed) + ")";
}

// How input values are drawn.
struct Dist {
  enum Kind { real, away, integer, away_int, coin, none } kind = none;  // none: the dtype's default
  double lo = 0, hi = 0;
};
Dist uniform(double lo, double hi) { return {Dist::real, lo, hi}; }
Dist away(double lo, double hi) { return {Dist::away, lo, hi}; }  // +-[lo, hi]
Dist ints(double lo, double hi) { return {Dist::integer, lo, hi}; }
Dist away_ints(double lo, double hi) { return {Dist::away_int, lo, hi}; }

Dist default_dist(DType t) {
  switch (t) {
    case DType::boolean: return {Dist::coin, 0, 1};
    case DType::u8: return ints(0, 255);
    case DType::i8: return ints(-128, 127);
    case DType::i32:
    case DType::i64: return ints(-1000, 1000);
    default: return uniform(-1, 1);
  }
}

double sample(std::mt19937& rng, const Dist& d) {
  auto sign = [&] { return std::bernoulli_distribution(0.5)(rng) ? 1.0 : -1.0; };
  auto int_in = [&](double lo, double hi) {
    return static_cast<double>(
        std::uniform_int_distribution<int64_t>(static_cast<int64_t>(lo), static_cast<int64_t>(hi))(rng));
  };
  switch (d.kind) {
    case Dist::real: return std::uniform_real_distribution<double>(d.lo, d.hi)(rng);
    case Dist::away: return sign() * std::uniform_real_distribution<double>(d.lo, d.hi)(rng);
    case Dist::integer: return int_in(d.lo, d.hi);
    case Dist::away_int: return sign() * int_in(d.lo, d.hi);
    case Dist::coin: return std::bernoulli_distribution(0.5)(rng) ? 1.0 : 0.0;
    case Dist::none: break;
  }
  return 0;
}

// |got - want| <= atol + rtol |want|; both zero means exact.
struct Tol {
  double rtol = 0, atol = 0;
};
constexpr Tol kExact{};

// Tolerance for a result of dtype `t` that sums `n` terms.
Tol tol(DType t, double n = 1) {
  switch (t) {
    case DType::f64: return {1e-10, 1e-12 + 1e-14 * n};
    case DType::f32: return {1e-5, 1e-5 + 1e-6 * n};
    case DType::f16: return {1e-2, 1e-2 + 1e-3 * n};
    case DType::bf16: return {2e-2, 2e-2 + 8e-3 * n};
    default: return kExact;
  }
}

std::string index_str(int64_t flat, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (int d = static_cast<int>(s.size()) - 1; d >= 0; --d) {
    idx[d] = flat % s[d];
    flat /= s[d];
  }
  return to_string(Shape(idx.begin(), idx.end()));
}

// Compares a Halide result with the reference; reports the first mismatches.
void expect_close(const Buffer& got, const ref::RefTensor& want, Tol t, const std::string& what) {
  if (got.dtype() != want.dtype || got.shape() != want.shape) {
    ADD_FAILURE() << what << ": compile().run() gives " << to_string(got.type()) << " but the reference gives "
                  << to_string(TensorType{want.dtype, want.shape});
    return;
  }
  std::vector<double> g = got.to_f64();
  int64_t bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < g.size(); ++i) {
    const double a = g[i], b = want.data[i];
    bool ok;
    if (std::isnan(a) || std::isnan(b)) ok = std::isnan(a) && std::isnan(b);
    else if (std::isinf(b) || (t.rtol == 0 && t.atol == 0)) ok = a == b;
    else ok = std::fabs(a - b) <= t.atol + t.rtol * std::fabs(b);
    if (!ok && bad++ < 6)
      os << "\n    at " << index_str(static_cast<int64_t>(i), want.shape) << ": got " << a << ", expected " << b
         << " (diff " << a - b << ")";
  }
  if (bad)
    ADD_FAILURE() << what << " (" << to_string(got.type()) << "): " << bad << " of " << g.size()
                  << " elements differ from the reference (rtol " << t.rtol << ", atol " << t.atol << ")"
                  << std::setprecision(17) << os.str();
}

// The printed graph, for failure messages (print itself may refuse a graph).
std::string printed(const Graph& g) {
  try {
    return print(g);
  } catch (const Error& e) {
    return std::string("(the graph does not print: ") + e.what() + ")";
  }
}

bool verbose() { return std::getenv("TESSERA_TEST_VERBOSE") != nullptr; }
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---- one graph under test -----------------------------------------------------------

class Check {
 public:
  Check(const std::string& name, std::mt19937& rng) : g_(name), rng_(rng) {}

  GraphBuilder& g() { return g_; }

  // A graph input (or param) with random values drawn from `d`.
  Tensor in(Shape shape, DType t = DType::f32, Dist d = {}) { return leaf(false, std::move(shape), t, d); }
  Tensor param(Shape shape, DType t = DType::f32, Dist d = {}) { return leaf(true, std::move(shape), t, d); }
  // A graph input with given values.
  Tensor in_values(Shape shape, DType t, const std::vector<double>& v) {
    std::string name = "x" + std::to_string(n_in_++);
    args_[name] = Buffer::from(v, shape, t);
    return g_.input(name, std::move(shape), t);
  }

  void out(Tensor t, Tol tol, const std::string& label = "") {
    std::string name = "y" + std::to_string(n_out_++);
    g_.output(name, t);
    tols_[name] = tol;
    labels_[name] = label.empty() ? name : name + " (" + label + ")";
  }

  // Builds, compiles, runs; compares every output with the reference.
  void run() {
    Graph graph;
    try {
      graph = g_.build();
    } catch (const Error& e) {
      ADD_FAILURE() << "graph '" << g_.graph().name << "' does not build: " << e.what();
      return;
    }
    std::map<std::string, Buffer> got;
    const auto t0 = std::chrono::steady_clock::now();
    double compile_s = 0;
    try {
      Executable exe = compile(graph);
      compile_s = seconds_since(t0);
      got = exe.run(args_);
    } catch (const Error& e) {
      ADD_FAILURE() << "graph '" << graph.name << "': compile/run threw: " << e.what() << "\n" << printed(graph);
      return;
    }
    std::map<std::string, ref::RefTensor> want;
    try {
      const auto t1 = std::chrono::steady_clock::now();
      want = ref::evaluate(graph, ref::from_buffers(args_));
      if (verbose())
        std::cout << "  graph " << graph.name << ": " << graph.outputs.size() << " outputs, compile " << compile_s
                  << " s, compile+run " << seconds_since(t0) - seconds_since(t1) << " s, reference " << seconds_since(t1)
                  << " s\n";
    } catch (const Error& e) {
      ADD_FAILURE() << "graph '" << graph.name << "': the reference threw: " << e.what() << "\n" << printed(graph);
      return;
    }
    const int failures_before = ::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count();
    for (const auto& [name, tol] : tols_) {
      auto g = got.find(name);
      if (g == got.end()) {
        ADD_FAILURE() << "graph '" << graph.name << "': run() returned no output '" << name << "'";
        continue;
      }
      const Node& n = graph.node(graph.outputs[std::stoi(name.substr(1))].node);
      expect_close(g->second, want.at(name), tol,
                   "graph '" + graph.name + "' output " + labels_[name] + " = " + n.op + " '" + n.name + "'");
    }
    if (::testing::UnitTest::GetInstance()->current_test_info()->result()->total_part_count() != failures_before)
      std::cout << "  graph of the failures above:\n" << printed(graph);
  }

 private:
  Tensor leaf(bool is_param, Shape shape, DType t, Dist d) {
    if (d.kind == Dist::none) d = default_dist(t);
    std::string name = (is_param ? "p" : "x") + std::to_string(n_in_++);
    std::vector<double> v(static_cast<size_t>(numel(shape)));
    for (double& x : v) x = sample(rng_, d);
    args_[name] = Buffer::from(v, shape, t);
    return is_param ? g_.param(name, std::move(shape), t) : g_.input(name, std::move(shape), t);
  }

  GraphBuilder g_;
  std::mt19937& rng_;
  std::map<std::string, Buffer> args_;
  std::map<std::string, Tol> tols_;
  std::map<std::string, std::string> labels_;
  int n_in_ = 0, n_out_ = 0;
};

std::string shape_label(const Shape& s) { return to_string(s); }
std::string name_of(const std::string& op, DType t) { return op + "_" + dtype_name(t); }

const std::vector<Shape>& unary_shapes() {
  static const std::vector<Shape> s = {{}, {1}, {7}, {13, 17}, {2, 3, 33}};
  return s;
}
// Pairs of broadcast-compatible shapes.
const std::vector<std::pair<Shape, Shape>>& binary_shapes() {
  static const std::vector<std::pair<Shape, Shape>> s = {
      {{}, {}},         {{1}, {7}},       {{7}, {7}},          {{17}, {}},
      {{13, 17}, {17}}, {{13, 1}, {1, 17}}, {{2, 1, 33}, {3, 1}}, {{}, {5, 3}}};
  return s;
}

using Rng = std::mt19937;

// f32 runs every case of an op; the other dtypes a subset (every case whose
// index is in `subset`), to keep the number of JIT-compiled Funcs down.
bool runs_case(DType t, size_t index, std::initializer_list<size_t> subset) {
  return t == DType::f32 || std::find(subset.begin(), subset.end(), index) != subset.end();
}
using CaseFn = std::function<void(Rng&)>;

// ---- elementwise -------------------------------------------------------------------

// A graph applying `f` to inputs of every unary shape, per dtype.
CaseFn unary_cases(const std::string& op, std::vector<DType> dtypes, std::function<Tensor(Tensor)> f, Dist d = {},
                   double f64_rtol = 0) {
  return [=](Rng& rng) {
    for (DType t : dtypes) {
      Check c(name_of(op, t), rng);
      for (const Shape& s : unary_shapes()) {
        Tol tl = tol(t);
        if (t == DType::f64 && f64_rtol > 0) tl = {f64_rtol, f64_rtol};
        c.out(f(c.in(s, t, is_float(t) ? d : Dist{})), tl, shape_label(s));
      }
      c.run();
    }
  };
}

CaseFn binary_cases(const std::string& op, std::vector<DType> dtypes, std::function<Tensor(Tensor, Tensor)> f,
                    Dist fa = {}, Dist fb = {}, Dist ia = {}, Dist ib = {}) {
  return [=](Rng& rng) {
    for (DType t : dtypes) {
      Check c(name_of(op, t), rng);
      const bool fl = is_float(t);
      for (size_t k = 0; k < binary_shapes().size(); ++k) {
        if (!runs_case(t, k, {0, 3, 4, 5, 6})) continue;
        const auto& [sa, sb] = binary_shapes()[k];
        Tensor a = c.in(sa, t, fl ? fa : (t == DType::boolean ? Dist{} : ia));
        Tensor b = c.in(sb, t, fl ? fb : (t == DType::boolean ? Dist{} : ib));
        c.out(f(a, b), tol(t), shape_label(sa) + " with " + shape_label(sb));
      }
      c.run();
    }
  };
}

const std::vector<DType> kFloats = {DType::f32, DType::f64};
const std::vector<DType> kAllFloats = {DType::f32, DType::f64, DType::f16, DType::bf16};

// Doubles just off a tie of f16 (first two) and bf16 (last two) rounding that
// become exact ties when rounded to f32 first: rounding through f32 gets them wrong.
std::vector<double> double_rounding_traps() {
  return {1945.5 * std::ldexp(1.0, -13) - std::ldexp(1.0, -29), -(1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -30)),
          1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30), -(3.0 + std::ldexp(1.0, -7) + std::ldexp(1.0, -29))};
}

void cast_cases(Rng& rng) {
  struct Conv {
    DType from, to;
    Dist d;
  };
  const std::vector<Conv> convs = {
      {DType::f32, DType::f64, {}},
      {DType::f64, DType::f32, {}},
      {DType::f32, DType::f16, uniform(-70000, 70000)},  // f16 overflows above 65504 (to inf)
      {DType::f32, DType::bf16, uniform(-1e5, 1e5)},
      {DType::f64, DType::f16, uniform(-100, 100)},
      {DType::f64, DType::bf16, uniform(-100, 100)},
      {DType::f16, DType::f32, uniform(-100, 100)},
      {DType::bf16, DType::f32, uniform(-100, 100)},
      {DType::f16, DType::bf16, uniform(-100, 100)},
      {DType::bf16, DType::f16, uniform(-100, 100)},
      {DType::f32, DType::i32, uniform(-1000, 1000)},  // truncates toward zero
      {DType::f64, DType::i64, uniform(-1e12, 1e12)},
      {DType::f32, DType::i8, uniform(-128.9, 127.9)},
      {DType::f32, DType::u8, uniform(0, 255.9)},
      {DType::f16, DType::i32, uniform(-100, 100)},
      {DType::bf16, DType::i64, uniform(-100, 100)},
      {DType::i32, DType::f32, ints(-20000000, 20000000)},  // beyond 2^24: rounds
      {DType::i64, DType::f64, ints(-1e15, 1e15)},
      {DType::i32, DType::f16, ints(-3000, 3000)},
      {DType::i32, DType::bf16, ints(-3000, 3000)},
      {DType::i32, DType::i8, ints(-1000, 1000)},  // integer narrowing wraps
      {DType::i64, DType::i32, ints(-1e12, 1e12)},
      {DType::i32, DType::u8, ints(-1000, 1000)},
      {DType::u8, DType::i32, {}},
      {DType::i8, DType::i64, {}},
      {DType::i32, DType::i64, {}},
      {DType::u8, DType::i8, {}},
      {DType::f32, DType::boolean, ints(-2, 2)},
      {DType::f16, DType::boolean, ints(-2, 2)},
      {DType::i32, DType::boolean, ints(-2, 2)},
      {DType::boolean, DType::f32, {}},
      {DType::boolean, DType::bf16, {}},
      {DType::boolean, DType::i32, {}},
      {DType::boolean, DType::u8, {}},
  };
  // Two graphs: casts from floats, casts from integers and bool.
  for (int from_float = 1; from_float >= 0; --from_float) {
    Check c(from_float ? "cast_from_float" : "cast_from_int", rng);
    int k = 0;
    for (const Conv& cv : convs) {
      if (is_float(cv.from) != static_cast<bool>(from_float)) continue;
      const Shape shapes[] = {{33}, {7, 13}, {}};
      const Shape s = shapes[k++ % 3];
      // Casts are exact conversions: compare exactly (the reference emulates the
      // rounding), except f64 -> f16/bf16, which may be off by an ulp when rounded
      // through f32 (cast_f64_to_half_near_ties checks that deterministically).
      Tol tl = kExact;
      if (cv.from == DType::f64 && cv.to == DType::f16) tl = {std::ldexp(1.0, -10), 0};
      if (cv.from == DType::f64 && cv.to == DType::bf16) tl = {std::ldexp(1.0, -7), 0};
      c.out(cast(c.in(s, cv.from, cv.d), cv.to), tl,
            std::string(dtype_name(cv.from)) + " -> " + dtype_name(cv.to) + " " + to_string(s));
    }
    c.run();
  }
  // Float -> int truncation toward zero, at exact values.
  Check c("cast_truncation", rng);
  const std::vector<double> v = {-2.7, -2.5, -2.0, -0.9, -0.0, 0.0, 0.9, 2.5, 2.7, 127.9, -128.9, 1e9 + 0.5};
  Tensor x = c.in_values({static_cast<int64_t>(v.size())}, DType::f64, v);
  c.out(cast(x, DType::i64), kExact, "f64 -> i64");
  c.out(cast(cast(x, DType::f32), DType::i32), kExact, "f32 -> i32");
  c.run();
  // f64 -> f16/bf16 must round once (to nearest, ties to even): these values
  // become ties when first rounded to f32, and the tie then goes the wrong way.
  Check h("cast_f64_to_half_near_ties", rng);
  const std::vector<double> near_ties = double_rounding_traps();
  Tensor t = h.in_values({static_cast<int64_t>(near_ties.size())}, DType::f64, near_ties);
  h.out(cast(t, DType::f16), kExact, "f64 -> f16");
  h.out(cast(t, DType::bf16), kExact, "f64 -> bf16");
  h.run();
}

void where_cases(Rng& rng) {
  const std::vector<std::array<Shape, 3>> shapes = {
      {Shape{}, Shape{}, Shape{}}, {Shape{7}, Shape{7}, Shape{7}}, {Shape{13, 1}, Shape{1, 17}, Shape{17}},
      {Shape{2, 3, 1}, Shape{}, Shape{3, 33}}, {Shape{1}, Shape{5, 3}, Shape{3}}};
  for (DType t : {DType::f32, DType::f64, DType::f16, DType::i32, DType::i64, DType::boolean}) {
    Check c(name_of("where", t), rng);
    for (const auto& s : shapes)
      c.out(where(c.in(s[0], DType::boolean), c.in(s[1], t), c.in(s[2], t)), tol(t),
            to_string(s[0]) + ", " + to_string(s[1]) + ", " + to_string(s[2]));
    c.run();
  }
}

// ---- reductions ------------------------------------------------------------------

struct RedCase {
  Shape shape;
  std::vector<int64_t> axes;
  bool keepdim;
};
const std::vector<RedCase>& red_cases() {
  static const std::vector<RedCase> r = {
      {{}, {}, false},          {{1}, {0}, false},          {{7}, {}, false},
      {{7}, {-1}, true},        {{13, 17}, {1}, false},     {{13, 17}, {0}, true},
      {{13, 17}, {-1}, true},   {{13, 17}, {}, true},       {{2, 3, 33}, {0, 2}, false},
      {{2, 3, 33}, {-2}, true}, {{2, 3, 33}, {-1, 0}, true}, {{33, 1}, {-1}, false},
      {{3, 65}, {1}, false}};
  return r;
}

int64_t reduced_count(const RedCase& rc) {
  if (rc.axes.empty()) return numel(rc.shape);
  int64_t n = 1;
  for (int64_t a : rc.axes) n *= rc.shape[a < 0 ? a + static_cast<int64_t>(rc.shape.size()) : a];
  return n;
}

CaseFn reduction_cases(const std::string& op, std::vector<DType> dtypes,
                       std::function<Tensor(Tensor, std::vector<int64_t>, bool)> f) {
  return [=](Rng& rng) {
    for (DType t : dtypes) {
      Check c(name_of(op, t), rng);
      for (size_t k = 0; k < red_cases().size(); ++k) {
        if (!runs_case(t, k, {0, 4, 5, 8, 10, 12})) continue;
        const RedCase& rc = red_cases()[k];
        std::ostringstream label;
        label << to_string(rc.shape) << " axes " << to_string(Shape(rc.axes)) << (rc.keepdim ? " keepdim" : "");
        c.out(f(c.in(rc.shape, t, is_float(t) ? Dist{} : ints(-100, 100)), rc.axes, rc.keepdim),
              tol(t, static_cast<double>(reduced_count(rc))), label.str());
      }
      c.run();
    }
  };
}

// ---- shape ops ---------------------------------------------------------------------

// Shape ops move data: exact for every dtype. One graph per dtype.
CaseFn shape_cases(const std::string& op, std::function<void(Check&, DType)> body) {
  return [=](Rng& rng) {
    for (DType t : {DType::f32, DType::f64, DType::i32, DType::f16, DType::boolean}) {
      Check c(name_of(op, t), rng);
      body(c, t);
      c.run();
    }
  };
}

// ---- linear algebra and nn ops ----------------------------------------------------------

void matmul_cases(Rng& rng) {
  const std::vector<std::pair<Shape, Shape>> all = {
      {{1, 1}, {1, 1}},          {{7, 13}, {13, 17}},      {{33, 17}, {17, 1}},   {{1, 33}, {33, 7}},
      {{2, 7, 5}, {2, 5, 3}},    {{2, 1, 3, 5}, {4, 5, 7}}, {{3, 5}, {2, 5, 4}},  {{1, 3, 9}, {2, 9, 2}},
      {{16, 33}, {33, 18}}};
  for (DType t : kAllFloats) {
    Check c(name_of("matmul", t), rng);
    const bool half = t == DType::f16 || t == DType::bf16;
    for (size_t i = 0; i < all.size(); ++i) {
      if (half && i != 1 && i != 3 && i != 5) continue;  // a representative subset
      const auto& [sa, sb] = all[i];
      c.out(matmul(c.in(sa, t), c.in(sb, t)), tol(t, static_cast<double>(sa.back())),
            to_string(sa) + " x " + to_string(sb));
    }
    c.run();
  }
}

void linear_cases(Rng& rng) {
  struct L {
    Shape x;
    int64_t out;
    bool bias;
  };
  const std::vector<L> all = {{{5, 17}, 13, true}, {{2, 3, 7}, 1, false}, {{33}, 7, true},
                              {{1, 1}, 1, true},   {{4, 33}, 17, false},  {{2, 2, 2, 3}, 5, true}};
  for (DType t : kFloats) {
    Check c(name_of("linear", t), rng);
    for (const L& l : all) {
      Tensor x = c.in(l.x, t);
      Tensor w = c.param({l.out, l.x.back()}, t);
      Tensor y = l.bias ? linear(x, w, c.param({l.out}, t)) : linear(x, w);
      c.out(y, tol(t, static_cast<double>(l.x.back())),
            to_string(l.x) + " out " + std::to_string(l.out) + (l.bias ? " with bias" : " without bias"));
    }
    c.run();
  }
}

// The weight-only quantized ops on random packed bytes and scales (any byte
// is a valid pair of NF4 codes, any u8 a valid absmax code; the nested map
// is arbitrary here). tests/test_quantize.cpp checks them in depth.
NF4Tensors nf4_params(Check& c, int64_t N, int64_t K, bool nested) {
  const int64_t numel = N * K, blocks = (numel + 63) / 64;
  NF4Tensors w;
  w.out_features = N;
  w.in_features = K;
  w.weight = c.param({(numel + 1) / 2, 1}, DType::u8);
  if (!nested) {
    w.absmax = c.param({blocks}, DType::f32, uniform(0.1, 2));
    return w;
  }
  w.absmax = c.param({blocks}, DType::u8);
  w.nested_absmax = c.param({(blocks + 255) / 256}, DType::f32, uniform(0.1, 2));
  w.nested_quant_map = c.param({256});
  w.nested_offset = c.param({}, DType::f32, uniform(0.5, 1));
  return w;
}

void quant_cases(Rng& rng, const std::string& op) {
  Check c(op, rng);
  const Tol t = tol(DType::f32, 128);
  if (op.find("int8") != std::string::npos) {
    for (const Shape& x : std::vector<Shape>{{5, 33}, {33}, {2, 3, 33}, {2, 64}, {64}}) {
      Tensor w = c.param({13, x.back()}, DType::i8), s = c.param({13}, DType::f32, uniform(0.001, 0.1));
      Shape g = x;
      g.back() = 13;
      if (op == "dequantize_int8") c.out(dequantize_int8(w, s), t, "[13, " + std::to_string(x.back()) + "]");
      if (op == "linear_int8") c.out(linear_int8(c.in(x), w, s, c.param({13})), t, "x " + to_string(x));
      if (op == "linear_int8_grad_input") c.out(linear_int8_grad_input(c.in(g), w, s), t, "g " + to_string(g));
    }
  } else {
    for (bool nested : {false, true})
      for (const Shape& wk : std::vector<Shape>{{7, 19}, {5, 128}, {1, 1}}) {
        const std::string label = to_string(wk) + (nested ? " double-quantized" : "");
        NF4Tensors w = nf4_params(c, wk[0], wk[1], nested);
        if (op == "dequantize_nf4") c.out(dequantize_nf4(w), t, label);
        if (op == "linear_nf4") {
          c.out(linear_nf4(c.in({3, wk[1]}), w), t, label);
          c.out(linear_nf4(c.in({2, 2, wk[1]}), w, c.param({wk[0]})), t, label + " with bias");
          c.out(linear_nf4(c.in({wk[1]}), w), t, label + " rank-1 x");
        }
        if (op == "linear_nf4_grad_input") c.out(linear_nf4_grad_input(c.in({4, wk[0]}), w), t, label);
      }
  }
  c.run();
}

void embedding_cases(Rng& rng) {
  for (DType t : {DType::f32, DType::f64, DType::f16}) {
    Check c(name_of("embedding", t), rng);
    Tensor w = c.param({13, 17}, t);
    // Indices out of [0, 13) read the clamped row.
    c.out(embedding(c.in({7}, DType::i32, ints(-3, 15)), w), kExact, "i32 [7], some out of range");
    c.out(embedding(c.in({2, 3}, DType::i64, ints(0, 12)), w), kExact, "i64 [2, 3]");
    c.out(embedding(c.in({}, DType::i32, ints(0, 12)), w), kExact, "i32 []");
    c.out(embedding(c.in({1}, DType::i64, ints(-100, 100)), c.param({1, 1}, t)), kExact, "i64 [1], V = D = 1");
    c.out(embedding(c.in({33}, DType::i64, ints(-2, 14)), w), kExact, "i64 [33]");
    c.out(embedding(c.in({4, 5}, DType::i8, ints(-5, 20)), w), kExact, "i8 [4, 5]");
    c.out(embedding(c.in({6}, DType::u8, ints(0, 20)), w), kExact, "u8 [6]");
    c.run();
  }
}

// embedding_grad: repeated and out-of-range indices accumulate into (clamped) rows.
void embedding_grad_cases(Rng& rng) {
  for (DType t : {DType::f32, DType::f64, DType::f16}) {
    Check c(name_of("embedding_grad", t), rng);
    c.out(embedding_grad(c.in({7}, DType::i32, ints(-3, 15)), c.in({7, 17}, t), 13), tol(t, 7),
          "i32 [7], some out of range");
    c.out(embedding_grad(c.in({2, 3}, DType::i64, ints(0, 4)), c.in({2, 3, 5}, t), 5), tol(t, 6), "i64 [2, 3]");
    c.out(embedding_grad(c.in({}, DType::i32, ints(0, 12)), c.in({3}, t), 13), tol(t), "i32 []");
    c.out(embedding_grad(c.in({1}, DType::i64, ints(-100, 100)), c.in({1, 1}, t), 1), tol(t), "i64 [1], V = D = 1");
    c.out(embedding_grad(c.in({33}, DType::i64, ints(-2, 14)), c.in({33, 9}, t), 13), tol(t, 33), "i64 [33]");
    c.out(embedding_grad(c.in({4, 5}, DType::u8, ints(0, 20)), c.in({4, 5, 33}, t), 3), tol(t, 20), "u8 [4, 5]");
    // A table above one parallel task (the zeroing runs in row tasks).
    c.out(embedding_grad(c.in({50}, DType::i32, ints(0, 299)), c.in({50, 300}, t), 300), tol(t, 50),
          "i32 [50], V 300, D 300");
    c.run();
  }
}

CaseFn softmax_cases(const std::string& op, std::vector<DType> dtypes, Tensor (*f)(Tensor, int64_t)) {
  return [=](Rng& rng) {
    const std::vector<std::pair<Shape, int64_t>> all = {{{7}, -1},         {{1}, 0},          {{13, 17}, 1},
                                                        {{13, 17}, 0},     {{2, 3, 33}, 1},   {{2, 3, 33}, -1},
                                                        {{4, 1}, -1},      {{3, 65}, -1}};
    for (DType t : dtypes) {
      Check c(name_of(op, t), rng);
      for (size_t k = 0; k < all.size(); ++k) {
        if (!runs_case(t, k, {0, 3, 5, 7})) continue;
        const auto& [s, axis] = all[k];
        const int64_t len = s[axis < 0 ? axis + static_cast<int64_t>(s.size()) : axis];
        c.out(f(c.in(s, t, uniform(-4, 4)), axis), tol(t, static_cast<double>(len)),
              to_string(s) + " axis " + std::to_string(axis));
      }
      c.run();
    }
  };
}

void layer_norm_cases(Rng& rng) {
  struct LN {
    Shape s;
    bool affine;
    double eps;
  };
  const std::vector<LN> all = {{{7}, false, 1e-5},      {{13, 17}, true, 1e-5}, {{2, 3, 33}, true, 1e-3},
                               {{5, 1}, true, 1e-5},    {{1, 33}, false, 1e-2}, {{4, 65}, true, 1e-5}};
  for (DType t : kAllFloats) {
    Check c(name_of("layer_norm", t), rng);
    for (size_t k = 0; k < all.size(); ++k) {
      if (!runs_case(t, k, {1, 2, 3})) continue;
      const LN& l = all[k];
      Tensor x = c.in(l.s, t, uniform(-3, 2));
      const int64_t D = l.s.back();
      Tensor y = l.affine ? layer_norm(x, c.param({D}, t), c.param({D}, t), l.eps) : layer_norm(x, l.eps);
      c.out(y, tol(t, static_cast<double>(D)), to_string(l.s) + (l.affine ? " weight+bias" : "") + " eps " +
                                                     std::to_string(l.eps));
    }
    c.run();
  }
}

void rms_norm_cases(Rng& rng) {
  struct RN {
    Shape s;
    bool weight;
    double eps;
  };
  const std::vector<RN> all = {{{7}, false, 1e-6}, {{13, 17}, true, 1e-6}, {{2, 3, 33}, true, 1e-3},
                               {{1}, false, 1e-6}, {{4, 65}, false, 1e-5}};
  for (DType t : kAllFloats) {
    Check c(name_of("rms_norm", t), rng);
    for (size_t k = 0; k < all.size(); ++k) {
      if (!runs_case(t, k, {1, 2, 4})) continue;
      const RN& r = all[k];
      Tensor x = c.in(r.s, t, uniform(-2, 2));
      Tensor y = r.weight ? rms_norm(x, c.param({r.s.back()}, t), r.eps) : rms_norm(x, r.eps);
      c.out(y, tol(t, static_cast<double>(r.s.back())),
            to_string(r.s) + (r.weight ? " weight" : "") + " eps " + std::to_string(r.eps));
    }
    c.run();
  }
}

// layer_norm_grad / rms_norm_grad against the reference's explicit row
// Jacobian. Half types compute in f32 and round once, but dx cancels
// (its row terms sum to about zero for layer_norm), so they get a wider
// tolerance.
CaseFn norm_grad_cases(const std::string& op) {
  return [op](Rng& rng) {
    struct NG {
      Shape s;
      bool weight;
      double eps;
    };
    const std::vector<NG> all = {{{7}, false, 1e-5},    {{13, 17}, true, 1e-5}, {{2, 3, 33}, true, 1e-3},
                                 {{5, 1}, true, 1e-5},  {{1, 33}, false, 1e-2}, {{4, 65}, true, 1e-5},
                                 {{3, 300}, true, 1e-5}};
    for (DType t : kAllFloats) {
      Check c(name_of(op, t), rng);
      for (size_t k = 0; k < all.size(); ++k) {
        if (!runs_case(t, k, {1, 2, 5})) continue;
        const NG& l = all[k];
        const int64_t D = l.s.back();
        Tensor x = c.in(l.s, t, uniform(-3, 2)), g = c.in(l.s, t);
        Tensor w = l.weight ? c.param({D}, t) : Tensor();
        Tensor dx = op == "layer_norm_grad" ? layer_norm_grad(x, g, w, l.eps) : rms_norm_grad(x, g, w, l.eps);
        const Tol base = tol(t, static_cast<double>(D));
        const Tol wide = t == DType::f16 || t == DType::bf16 ? Tol{4 * base.rtol, 4 * base.atol} : base;
        c.out(dx, wide, to_string(l.s) + (l.weight ? " weight" : "") + " eps " + std::to_string(l.eps));
      }
      c.run();
    }
  };
}

void cross_entropy_cases(Rng& rng) {
  for (DType t : kFloats) {
    Check c(name_of("cross_entropy", t), rng);
    auto targets = [&](int64_t n, int64_t classes, int64_t ignore, double p_ignore) {
      std::vector<double> v(static_cast<size_t>(n));
      for (double& x : v)
        x = std::bernoulli_distribution(p_ignore)(rng)
                ? static_cast<double>(ignore)
                : static_cast<double>(std::uniform_int_distribution<int64_t>(0, classes - 1)(rng));
      return v;
    };
    // Some rows ignored (default ignore_index -100).
    c.out(cross_entropy(c.in({7, 13}, t, uniform(-3, 3)), c.in_values({7}, DType::i32, targets(7, 13, -100, 0.3))),
          tol(t, 13), "[7, 13] i32, some ignored");
    c.out(cross_entropy(c.in({1, 1}, t, uniform(-3, 3)), c.in_values({1}, DType::i64, {0})), tol(t), "[1, 1]");
    // A custom ignore_index that is also a valid class.
    c.out(cross_entropy(c.in({13, 33}, t, uniform(-3, 3)), c.in_values({13}, DType::i64, targets(13, 33, 3, 0.3)), 3),
          tol(t, 33), "[13, 33] i64, ignore_index 3");
    // Every row ignored: 0.
    c.out(cross_entropy(c.in({4, 5}, t), c.in_values({4}, DType::i32, {-100, -100, -100, -100})), tol(t),
          "[4, 5], all ignored");
    // Targets outside [0, C) other than ignore_index read the clamped class.
    c.out(cross_entropy(c.in({5, 6}, t, uniform(-3, 3)), c.in_values({5}, DType::i64, {-7, 6, 100, -100, 2})),
          tol(t, 6), "[5, 6] out-of-range targets");
    c.out(cross_entropy(c.in({17, 65}, t, uniform(-5, 5)), c.in_values({17}, DType::i32, targets(17, 65, -1, 0.2)), -1),
          tol(t, 65), "[17, 65] ignore_index -1");
    // The node without its lse input reduces the rows itself.
    Tensor logits = c.in({9, 33}, t, uniform(-4, 4));
    Tensor target = c.in_values({9}, DType::i64, targets(9, 33, -100, 0.2));
    Tensor alone = c.g().add("cross_entropy", {logits, target}, {{"ignore_index", int64_t{-100}}});
    EXPECT_EQ(alone.node().inputs.size(), 2u);
    c.out(alone, tol(t, 33), "[9, 33] without the lse input");
    c.run();
  }
}

void logsumexp_cases(Rng& rng) {
  for (DType t : kAllFloats) {
    Check c(name_of("logsumexp", t), rng);
    const std::vector<Shape> all = {{7}, {1}, {13, 17}, {2, 3, 33}, {4, 1}, {3, 65}, {2, 300}};
    for (size_t k = 0; k < all.size(); ++k) {
      if (!runs_case(t, k, {0, 2, 5})) continue;
      c.out(logsumexp(c.in(all[k], t, uniform(-6, 6))), tol(t, static_cast<double>(all[k].back())), to_string(all[k]));
    }
    c.run();
  }
}

void dropout_cases(Rng& rng) {
  auto seed64 = [&] { return (static_cast<uint64_t>(rng()) << 32) | rng(); };
  for (DType t : {DType::f32, DType::f64, DType::f16}) {
    Check c(name_of("dropout", t), rng);
    c.out(dropout(c.in({7}, t), 0.5, rng()), tol(t), "[7] p 0.5");
    c.out(dropout(c.in({13, 17}, t), 0.1, seed64(), 12345), tol(t), "[13, 17] p 0.1 64-bit seed, offset");
    // The element counter crosses into the high word of the Philox counter.
    c.out(dropout(c.in({2, 3, 33}, t), 0.9, seed64(), (uint64_t{1} << 32) - 50), tol(t),
          "[2, 3, 33] p 0.9 offset 2^32 - 50");
    c.out(dropout(c.in({5}, t), 0.0, rng()), tol(t), "[5] p 0");
    c.out(dropout(c.in({}, t), 0.3, rng(), 7), tol(t), "[] p 0.3");
    c.out(dropout(c.in({4, 65}, t), 0.5, seed64(), (uint64_t{5} << 32) + 3), tol(t), "[4, 65] offset above 2^32");
    c.run();
  }
}

void attention_cases(Rng& rng) {
  struct A {
    Shape s;     // q and k
    int64_t dv;  // v's last dim (0: the same as q's)
    bool causal;
    double scale;
  };
  const std::vector<A> all = {{{7, 5}, 0, true, 0.0},        {{7, 5}, 0, false, 0.0},
                              {{2, 3, 13, 8}, 0, true, 0.0}, {{2, 3, 13, 8}, 0, false, 0.3},
                              {{1, 1}, 0, true, 0.0},        {{17, 4}, 0, true, 1.5},
                              {{1, 33, 16}, 0, false, 0.0},  {{2, 9, 6}, 11, true, 0.0},
                              {{5, 3}, 1, false, 0.0}};
  // Each attention node costs the JIT about 0.5 s: f64 runs a subset.
  for (DType t : kFloats) {
    Check c(name_of("attention", t), rng);
    for (size_t k = 0; k < all.size(); ++k) {
      if (!runs_case(t, k, {0, 3, 7})) continue;
      const A& a = all[k];
      const int64_t T = a.s[a.s.size() - 2], D = a.s.back();
      Shape vs = a.s;
      if (a.dv) vs.back() = a.dv;
      c.out(attention(c.in(a.s, t), c.in(a.s, t), c.in(vs, t), a.causal, a.scale),
            tol(t, static_cast<double>(T + D)),
            "q, k " + to_string(a.s) + " v " + to_string(vs) + (a.causal ? " causal" : " not causal") + " scale " +
                std::to_string(a.scale));
    }
    c.run();
  }
}

// attention_grad at awkward sizes, given the true output (its `out` input).
void attention_grad_cases(Rng& rng) {
  struct A {
    Shape s;     // q and k
    int64_t dv;  // v's last dim (0: the same as q's)
    bool causal;
    double scale;
  };
  const std::vector<A> all = {{{7, 5}, 0, true, 0.0},       {{2, 3, 13, 8}, 0, false, 0.3}, {{1, 1}, 0, true, 0.0},
                              {{2, 9, 6}, 11, true, 0.0},   {{1, 33, 16}, 0, true, 1.5}};
  for (DType t : kFloats) {
    Check c(name_of("attention_grad", t), rng);
    for (size_t k = 0; k < all.size(); ++k) {
      if (!runs_case(t, k, {0, 3})) continue;
      const A& a = all[k];
      const int64_t T = a.s[a.s.size() - 2], D = a.s.back();
      Shape vs = a.s;
      if (a.dv) vs.back() = a.dv;
      Tensor q = c.in(a.s, t), kk = c.in(a.s, t), v = c.in(vs, t), g = c.in(vs, t);
      Tensor o = attention(q, kk, v, a.causal, a.scale);
      for (int wrt = 0; wrt < 3; ++wrt)
        c.out(attention_grad(q, kk, v, o, g, wrt, a.causal, a.scale), tol(t, static_cast<double>(2 * T + D)),
              "wrt " + std::to_string(wrt) + " q, k " + to_string(a.s) + " v " + to_string(vs) +
                  (a.causal ? " causal" : " not causal") + " scale " + std::to_string(a.scale));
    }
    c.run();
  }
}

// ---- user-defined ops -----------------------------------------------------------------

void define_cases(Rng& rng) {
  using Halide::Expr;
  using Halide::RDom;
  using Halide::Var;
  for (DType t : kFloats) {
    Check c(name_of("define", t), rng);
    GraphBuilder& g = c.g();
    // Pointwise: swish.
    Tensor h = c.in({13, 17}, t, uniform(-4, 4));
    c.out(g.define("swish", {13, 17},
                   [&](Var i, Var j) {
                     Expr v = h(i, j);
                     return v / (1 + Halide::exp(-v));
                   }),
          tol(t), "swish");
    // A reduction over an RDom: a small matmul.
    Tensor a = c.in({7, 13}, t), b = c.in({13, 17}, t);
    c.out(g.define("mm", {7, 17},
                   [&](Var i, Var j) {
                     RDom r(0, 13);
                     return Halide::sum(a(i, r) * b(r, j));
                   }),
          tol(t, 13), "sum over RDom (matmul)");
    // Two tensors read with broadcasting-style indices: an outer product plus a tensor.
    Tensor col = c.in({13, 1}, t), row = c.in({17}, t);
    c.out(g.define("outer", {13, 17}, [&](Var i, Var j) { return col(i, 0) * row(j) + h(i, j); }), tol(t),
          "broadcast reads");
    // Halide's Euclidean mod in an index: a roll by 3 along the last dim.
    c.out(g.define("roll", {13, 17}, [&](Var i, Var j) { return h(i, (j - 3) % 17); }), kExact, "roll (Euclidean %)");
    // A maximum reduction and a 2-D RDom.
    c.out(g.define("rowmax", {13}, [&](Var i) { return Halide::maximum(h(i, RDom(0, 17))); }), kExact, "maximum");
    c.out(g.define("total", {1},
                   [&](Var) {
                     RDom r(0, 7, 0, 13);
                     return Halide::sum(a(r.x, r.y));
                   }),
          tol(t, 91), "sum over a 2-D RDom");
    // Select and a comparison; a bool result.
    c.out(g.define("leaky", {7, 13},
                   [&](Var i, Var j) {
                     Expr v = a(i, j);
                     return Halide::select(v > 0, v, v * Halide::cast(v.type(), Expr(0.1)));
                   }),
          tol(t), "select");
    c.out(g.define("greater", {7, 13}, [&](Var i, Var j) { return a(i, j) > a(6 - i, 12 - j); }), kExact, "bool");
    c.run();
  }
  // An RDom with a predicate (RDom::where) is refused where it is written:
  // the text form, the reference and the lowering do not carry predicates.
  {
    GraphBuilder g("define_where");
    Tensor a = g.input("a", {7, 13});
    try {
      g.define("tril_sum", {3}, [&](Var i) {
        RDom r(0, 7, 0, 7);
        r.where(r.x <= r.y);
        Expr total = Halide::sum(a(r.y, r.x));
        return total * Halide::cast(total.type(), i);
      });
      ADD_FAILURE() << "a define with RDom::where was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("define 'tril_sum': RDom"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("where() predicate"), std::string::npos) << e.what();
    }
  }
  // Integer index arithmetic (Halide floors division) and an integer RDom product.
  Check c("define_int", rng);
  GraphBuilder& g = c.g();
  Tensor x = c.in({13}, DType::i32, ints(-3, 3));
  c.out(g.define("floordiv", {13}, [&](Var i) { return (Halide::Expr(i) - 5) / 3 + x(i); }), kExact, "(i - 5) / 3");
  c.out(g.define("floormod", {13}, [&](Var i) { return (Halide::Expr(i) - 5) % 3 * x(i); }), kExact, "(i - 5) % 3");
  // A negative divisor: Euclidean (-5 / -3 == 2, -5 % -3 == 1), not floor division.
  c.out(g.define("euclid", {13},
                 [&](Var i) {
                   Expr n = Halide::Expr(i) - 5;
                   return n / -3 * 10 + n % -3 + x(i) * 0;
                 }),
        kExact, "(i - 5) / -3 and % -3");
  c.out(g.define("iprod", {1},
                 [&](Var) {
                   RDom r(0, 5);
                   return Halide::product(x(r) + 4);
                 }),
        kExact, "product");
  c.out(g.define("tofloat", {13}, [&](Var i) { return Halide::cast<float>(x(i)) * 0.5f; }), kExact, "cast in define");
  c.run();
}

// define_grad: the gradients Halide's propagate_adjoints derives from define
// bodies, against the reference's own reverse-mode walk, on random inputs and
// cotangents. Each define's gradient is taken for each float input.
void define_grad_cases(Rng& rng) {
  using Halide::Expr;
  using Halide::RDom;
  using Halide::Var;
  // bf16 before f16 in one process: Halide 14 mixes the two up (the lowering
  // differentiates halves in f32).
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16}) {
    Check c(name_of("define_grad", t), rng);
    GraphBuilder& g = c.g();
    const Halide::Type ht = t == DType::f64    ? Halide::Float(64)
                            : t == DType::f16  ? Halide::Float(16)
                            : t == DType::bf16 ? Halide::BFloat(16)
                                               : Halide::Float(32);
    auto k = [&](double v) { return Halide::cast(ht, Expr(v)); };
    // Every gradient of `d`, with a random cotangent; `n` terms per element.
    auto grads = [&](Tensor d, double n, const std::string& label) {
      const Node fwd = d.node();
      std::vector<Tensor> ins;
      for (int id : fwd.inputs) ins.push_back(g.tensor(id));
      Tensor ct = c.in(fwd.type.shape, fwd.type.dtype);  // bf16 arithmetic in Halide gives f32
      for (size_t i = 0; i < ins.size(); ++i)
        if (is_float(ins[i].dtype()))
          c.out(define_grad(g, fwd, ins, static_cast<int>(i), ct), tol(t, n), label + " d/d input " + std::to_string(i));
    };
    Tensor h = c.in({13, 17}, t, uniform(-3, 3));
    grads(g.define("swish", {13, 17}, [&](Var i, Var j) { Expr v = h(i, j); return v / (k(1) + Halide::exp(-v)); }),
          4, "swish");
    Tensor a = c.in({7, 13}, t), b = c.in({13, 17}, t);
    grads(g.define("mm", {7, 17},
                   [&](Var i, Var j) {
                     RDom r(0, 13);
                     return Halide::sum(a(i, r) * b(r, j));
                   }),
          17, "sum over RDom (matmul)");
    Tensor col = c.in({13, 1}, t), row = c.in({17}, t);
    grads(g.define("outer", {13, 17}, [&](Var i, Var j) { return col(i, 0) * row(j) * h(i, j); }), 17,
          "broadcast reads");
    grads(g.define("roll", {13, 17}, [&](Var i, Var j) { return h(i, (j - 3) % 17) * h(i, j); }), 2, "roll");
    grads(g.define("transposed", {17, 13}, [&](Var i, Var j) { return Halide::tanh(h(j, i)); }), 1, "transposed read");
    Tensor idx = c.in({9}, DType::i32, ints(-2, 15));
    grads(g.define("gather", {9, 17}, [&](Var i, Var j) { return h(Halide::clamp(idx(i), 0, 12), j) * row(j); }), 9,
          "gather (scatter gradient)");
    if (t == DType::f32 || t == DType::f64) {  // half rounding makes ties in the maximum likely
      grads(g.define("softmax", {13, 17},
                     [&](Var i, Var j) {
                       Expr m = Halide::maximum(h(i, RDom(0, 17)));
                       RDom r(0, 17);
                       return Halide::exp(h(i, j) - m) / Halide::sum(Halide::exp(h(i, r) - m));
                     }),
            17, "softmax (maximum and sum)");
      grads(g.define("rowmin", {13}, [&](Var i) { return Halide::minimum(h(i, RDom(0, 17)) * a(i % 7, i)); }), 1,
            "minimum");
    }
    c.run();
  }
}

// ---- the table ---------------------------------------------------------------------

const std::map<std::string, CaseFn>& cases() {
  static const std::map<std::string, CaseFn> table = [] {
    std::map<std::string, CaseFn> m;
    const auto F = kFloats;
    const std::vector<DType> ints_signed = {DType::i32, DType::i64, DType::i8};
    auto cat = [](std::vector<DType> a, const std::vector<DType>& b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    // Unary.
    m["neg"] = unary_cases("neg", cat(kAllFloats, ints_signed), [](Tensor x) { return neg(x); });
    m["abs"] = unary_cases("abs", cat(F, ints_signed), [](Tensor x) { return abs(x); });
    m["relu"] = unary_cases("relu", {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64},
                            [](Tensor x) { return relu(x); });
    m["exp"] = unary_cases("exp", kAllFloats, [](Tensor x) { return exp(x); }, uniform(-4, 4));
    m["log"] = unary_cases("log", {DType::f32, DType::f64, DType::f16}, [](Tensor x) { return log(x); },
                           uniform(0.01, 5));
    m["sqrt"] = unary_cases("sqrt", F, [](Tensor x) { return sqrt(x); }, uniform(0, 5));
    m["rsqrt"] = unary_cases("rsqrt", F, [](Tensor x) { return rsqrt(x); }, uniform(0.01, 5));
    m["tanh"] = unary_cases("tanh", {DType::f32, DType::f64, DType::bf16}, [](Tensor x) { return tanh(x); },
                            uniform(-4, 4));
    m["sigmoid"] = unary_cases("sigmoid", {DType::f32, DType::f64, DType::f16}, [](Tensor x) { return sigmoid(x); },
                               uniform(-6, 6));
    m["silu"] = unary_cases("silu", {DType::f32, DType::f64, DType::bf16}, [](Tensor x) { return silu(x); },
                            uniform(-6, 6));
    // gelu: f64 erf is an approximation (about 1e-7), hence the looser f64 tolerance.
    CaseFn gelu_none = unary_cases("gelu", kAllFloats, [](Tensor x) { return gelu(x); }, uniform(-5, 5), 1e-6);
    CaseFn gelu_tanh =
        unary_cases("gelu_tanh", kAllFloats, [](Tensor x) { return gelu(x, "tanh"); }, uniform(-5, 5));
    m["gelu"] = [=](Rng& rng) {
      gelu_none(rng);
      gelu_tanh(rng);
    };
    // gelu_grad: both forms; f64 erf is an approximation (about 1e-7).
    m["gelu_grad"] = [](Rng& rng) {
      for (const char* form : {"none", "tanh"})
        for (DType t : kAllFloats) {
          Check c(name_of(std::string("gelu_grad_") + form, t), rng);
          Tol tl = t == DType::f64 ? Tol{1e-6, 1e-6} : tol(t);
          if (t == DType::f16 || t == DType::bf16) tl = {tl.rtol, tl.atol * 4};
          for (const Shape& s : unary_shapes()) {
            Tensor x = c.in(s, t, uniform(-5, 5));
            c.out(gelu_grad(x, c.in(s, t, uniform(-2, 2)), form), tl, shape_label(s));
          }
          c.run();
        }
    };
    m["cast"] = cast_cases;
    // Binary.
    const std::vector<DType> arith = {DType::f32, DType::f64, DType::f16, DType::bf16,
                                      DType::i32, DType::i64, DType::i8,  DType::u8};
    m["add"] = binary_cases("add", arith, [](Tensor a, Tensor b) { return add(a, b); });
    m["sub"] = binary_cases("sub", arith, [](Tensor a, Tensor b) { return sub(a, b); });
    m["mul"] = binary_cases("mul", arith, [](Tensor a, Tensor b) { return mul(a, b); });
    m["div"] = binary_cases("div", {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64, DType::i8},
                            [](Tensor a, Tensor b) { return div(a, b); }, uniform(-3, 3), away(0.25, 3),
                            ints(-127, 127), away_ints(1, 13));
    CaseFn div_random = m["div"];
    m["div"] = [div_random](Rng& rng) {
      div_random(rng);
      // Truncation toward zero for every sign combination, at known values.
      Check c("div_signs", rng);
      const std::vector<double> a = {7, -7, 7, -7, 6, -6, 6, -6, 1, -1, 0, 100};
      const std::vector<double> b = {2, 2, -2, -2, 3, 3, -3, -3, 5, 5, -4, -7};
      for (DType t : {DType::i32, DType::i64, DType::i8})
        c.out(div(c.in_values({12}, t, a), c.in_values({12}, t, b)), kExact,
              std::string(dtype_name(t)) + " [7, -7, 7, -7, 6, -6, 6, -6, 1, -1, 0, 100] / [2, 2, -2, -2, 3, 3, -3, -3, 5, 5, -4, -7]");
      c.run();
    };
    m["pow"] = binary_cases("pow", {DType::f32, DType::f64, DType::f16}, [](Tensor a, Tensor b) { return pow(a, b); },
                            uniform(0.1, 3), uniform(-2.5, 2.5));
    const std::vector<DType> ordered = {DType::f32, DType::f64, DType::f16, DType::i32, DType::i64, DType::u8};
    // Ties are frequent with small integers, also as floats.
    m["maximum"] = binary_cases("maximum", ordered, [](Tensor a, Tensor b) { return maximum(a, b); }, ints(-3, 3),
                                ints(-3, 3), ints(-3, 3), ints(-3, 3));
    m["minimum"] = binary_cases("minimum", ordered, [](Tensor a, Tensor b) { return minimum(a, b); }, ints(-3, 3),
                                ints(-3, 3), ints(-3, 3), ints(-3, 3));
    const std::vector<DType> cmp_types = {DType::f32, DType::f64, DType::bf16, DType::i32, DType::i64,
                                          DType::boolean};
    auto cmp = [&](const char* name, Tensor (*f)(Tensor, Tensor)) {
      m[name] = binary_cases(name, cmp_types, f, ints(-3, 3), ints(-3, 3), ints(-3, 3), ints(-3, 3));
    };
    cmp("eq", eq);
    cmp("ne", ne);
    cmp("lt", lt);
    cmp("le", le);
    cmp("gt", gt);
    cmp("ge", ge);
    m["where"] = where_cases;
    // Reductions.
    m["sum"] = reduction_cases("sum", {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64},
                               [](Tensor x, std::vector<int64_t> a, bool k) { return sum(x, a, k); });
    m["mean"] = reduction_cases("mean", kAllFloats,
                                [](Tensor x, std::vector<int64_t> a, bool k) { return mean(x, a, k); });
    m["max"] = reduction_cases("max", {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i32, DType::i64},
                               [](Tensor x, std::vector<int64_t> a, bool k) { return max(x, a, k); });
    // Shape ops.
    m["reshape"] = shape_cases("reshape", [](Check& c, DType t) {
      c.out(reshape(c.in({}, t), {1, 1}), kExact, "[] -> [1, 1]");
      c.out(reshape(c.in({7}, t), {7, 1}), kExact, "[7] -> [7, 1]");
      c.out(reshape(c.in({13, 17}, t), {17, 13}), kExact, "[13, 17] -> [17, 13]");
      c.out(reshape(c.in({2, 3, 33}, t), {6, -1}), kExact, "[2, 3, 33] -> [6, -1]");
      c.out(reshape(c.in({2, 3, 33}, t), {-1}), kExact, "[2, 3, 33] -> [-1]");
      c.out(reshape(c.in({1}, t), {}), kExact, "[1] -> []");
    });
    m["permute"] = shape_cases("permute", [](Check& c, DType t) {
      c.out(permute(c.in({13, 17}, t), {1, 0}), kExact, "[13, 17] (1, 0)");
      c.out(permute(c.in({2, 3, 33}, t), {2, 0, 1}), kExact, "[2, 3, 33] (2, 0, 1)");
      c.out(permute(c.in({2, 3, 5, 7}, t), {0, 2, 1, 3}), kExact, "[2, 3, 5, 7] (0, 2, 1, 3)");
      c.out(transpose(c.in({2, 3, 5}, t), 0, -1), kExact, "transpose [2, 3, 5] 0, -1");
      c.out(permute(c.in({1}, t), {0}), kExact, "[1] (0)");
    });
    // Negative dims (ops.h: "negative axes count from the end"), in a graph of
    // their own so that a refusal does not hide the other permute cases.
    CaseFn permute_main = m["permute"];
    m["permute"] = [permute_main](Rng& rng) {
      permute_main(rng);
      Check c("permute_negative_dims", rng);
      try {
        c.out(permute(c.in({2, 3, 33}), {-1, -3, -2}), kExact, "[2, 3, 33] (-1, -3, -2)");
        c.out(transpose(c.in({4, 5}), -1, -2), kExact, "transpose -1, -2");
      } catch (const Error& e) {
        ADD_FAILURE() << "permute with negative dims is refused: " << e.what();
        return;
      }
      c.run();
    };
    m["broadcast_to"] = shape_cases("broadcast_to", [](Check& c, DType t) {
      c.out(broadcast_to(c.in({}, t), {2, 3}), kExact, "[] -> [2, 3]");
      c.out(broadcast_to(c.in({1}, t), {7}), kExact, "[1] -> [7]");
      c.out(broadcast_to(c.in({3, 1}, t), {2, 3, 17}), kExact, "[3, 1] -> [2, 3, 17]");
      c.out(broadcast_to(c.in({17}, t), {13, 17}), kExact, "[17] -> [13, 17]");
      c.out(broadcast_to(c.in({1, 1}, t), {1, 1}), kExact, "[1, 1] -> [1, 1]");
    });
    m["slice"] = shape_cases("slice", [](Check& c, DType t) {
      c.out(slice(c.in({13, 17}, t), 1, 2, 9), kExact, "[13, 17] axis 1 [2:9]");
      c.out(slice(c.in({13, 17}, t), 0, -5, 100, 2), kExact, "[13, 17] axis 0 [-5:100:2]");
      c.out(slice(c.in({13, 17}, t), -1, 0, 17, 3), kExact, "[13, 17] axis -1 [0:17:3]");
      c.out(slice(c.in({2, 3, 33}, t), 2, 1, -1, 4), kExact, "[2, 3, 33] axis 2 [1:-1:4]");
      c.out(slice(c.in({7}, t), 0, 6, 7), kExact, "[7] [6:7]");
      c.out(slice(c.in({7}, t), 0, -100, 3), kExact, "[7] [-100:3]");
    });
    m["concat"] = shape_cases("concat", [](Check& c, DType t) {
      c.out(concat({c.in({13, 17}, t), c.in({13, 4}, t)}, -1), kExact, "[13, 17] [13, 4] axis -1");
      c.out(concat({c.in({7}, t), c.in({1}, t), c.in({3}, t)}, 0), kExact, "[7] [1] [3] axis 0");
      c.out(concat({c.in({2, 3, 5}, t), c.in({2, 1, 5}, t), c.in({2, 2, 5}, t)}, 1), kExact, "rank 3 axis 1");
      c.out(concat({c.in({1, 1}, t), c.in({1, 1}, t)}, 0), kExact, "[1, 1] [1, 1] axis 0");
      c.out(concat({c.in({5, 33}, t)}, 1), kExact, "one input");
    });
    m["squeeze"] = shape_cases("squeeze", [](Check& c, DType t) {
      c.out(squeeze(c.in({1}, t), {0}), kExact, "[1] (0)");
      c.out(squeeze(c.in({13, 1}, t), {-1}), kExact, "[13, 1] (-1)");
      c.out(squeeze(c.in({1, 7, 1}, t), {0, 2}), kExact, "[1, 7, 1] (0, 2)");
      c.out(squeeze(c.in({2, 1, 3}, t), {1}), kExact, "[2, 1, 3] (1)");
      c.out(squeeze(c.in({1, 7, 1, 3}, t), {}), kExact, "[1, 7, 1, 3] () squeezes every size-1 dim");
    });
    m["unsqueeze"] = shape_cases("unsqueeze", [](Check& c, DType t) {
      c.out(unsqueeze(c.in({}, t), 0), kExact, "[] 0");
      c.out(unsqueeze(c.in({7}, t), -1), kExact, "[7] -1");
      c.out(unsqueeze(c.in({13, 17}, t), 1), kExact, "[13, 17] 1");
      c.out(unsqueeze(c.in({2, 3}, t), -3), kExact, "[2, 3] -3");
    });
    // Linear algebra and nn ops.
    m["matmul"] = matmul_cases;
    m["linear"] = linear_cases;
    m["embedding"] = embedding_cases;
    m["embedding_grad"] = embedding_grad_cases;
    m["softmax"] = softmax_cases("softmax", kAllFloats, softmax);
    m["log_softmax"] = softmax_cases("log_softmax", {DType::f32, DType::f64, DType::bf16}, log_softmax);
    m["layer_norm"] = layer_norm_cases;
    m["rms_norm"] = rms_norm_cases;
    m["layer_norm_grad"] = norm_grad_cases("layer_norm_grad");
    m["rms_norm_grad"] = norm_grad_cases("rms_norm_grad");
    m["logsumexp"] = logsumexp_cases;
    m["cross_entropy"] = cross_entropy_cases;
    m["dropout"] = dropout_cases;
    m["attention"] = attention_cases;
    m["attention_grad"] = attention_grad_cases;
    m["define"] = define_cases;
    m["define_grad"] = define_grad_cases;
    for (const char* op : {"dequantize_int8", "dequantize_nf4", "linear_int8", "linear_nf4", "linear_int8_grad_input",
                           "linear_nf4_grad_input"})
      m[op] = [op = std::string(op)](Rng& rng) { quant_cases(rng, op); };
    return m;
  }();
  return table;
}

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : cases()) names.push_back(name);
  return names;
}

// ---- the tests ---------------------------------------------------------------------------

class OpTest : public ::testing::TestWithParam<std::string> {};

TEST_P(OpTest, MatchesReference) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE(GetParam() + ": " + seed_note(seed));
  Rng rng(seed);
  cases().at(GetParam())(rng);
}

INSTANTIATE_TEST_SUITE_P(Ops, OpTest, ::testing::ValuesIn(case_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(OpCoverage, EveryRegisteredOpHasCases) {
  std::vector<std::string> ops = registered_ops();
  for (const std::string& op : ops) {
    if (op == "input" || op == "param" || op == "constant") continue;
    EXPECT_TRUE(cases().count(op)) << "op '" << op << "' is registered but tests/test_ops.cpp has no cases for it";
  }
  for (const auto& [name, fn] : cases())
    EXPECT_TRUE(std::find(ops.begin(), ops.end(), name) != ops.end())
        << "tests/test_ops.cpp has cases for '" << name << "', which is not a registered op";
}

// Constants and params go through the same paths as inputs.
TEST(OpLeaves, ConstantsAndParams) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  Rng rng(seed);
  Check c("leaves", rng);
  GraphBuilder& g = c.g();
  Tensor p = c.param({13, 17});
  c.out(p * 2.5 + g.constant({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, {17}), tol(DType::f32),
        "param * splat + tensor constant");
  c.out(g.constant(3.0, DType::i32) + cast(c.in({7}, DType::i32), DType::i32), kExact, "i32 constant");
  c.out(g.constant(0.1, DType::f16) * c.in({33}, DType::f16), tol(DType::f16), "f16 constant");
  c.run();
}

// ---- the reference's own checks ------------------------------------------------------------

TEST(Reference, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32 with 10 rounds.
  using A4 = std::array<uint32_t, 4>;
  EXPECT_EQ(ref::philox4x32_10({0, 0, 0, 0}, {0, 0}), (A4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(ref::philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (A4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(ref::philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (A4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Reference, Rounding) {
  // f16: ties to even, overflow, subnormals.
  EXPECT_EQ(ref::to_dtype(DType::f16, 1 + std::ldexp(1, -11)), 1.0);
  EXPECT_EQ(ref::to_dtype(DType::f16, 1 + 3 * std::ldexp(1, -11)), 1 + std::ldexp(1, -9));
  EXPECT_EQ(ref::to_dtype(DType::f16, 65519), 65504);
  EXPECT_TRUE(std::isinf(ref::to_dtype(DType::f16, 65520)));
  EXPECT_EQ(ref::to_dtype(DType::f16, std::ldexp(1, -25)), 0.0);
  EXPECT_EQ(ref::to_dtype(DType::f16, 3 * std::ldexp(1, -25)), std::ldexp(1, -23));
  // bf16.
  EXPECT_EQ(ref::to_dtype(DType::bf16, 1 + std::ldexp(1, -8)), 1.0);
  EXPECT_EQ(ref::to_dtype(DType::bf16, 1 + std::ldexp(1, -8) + std::ldexp(1, -20)), 1 + std::ldexp(1, -7));
  EXPECT_EQ(ref::to_dtype(DType::bf16, 3 + std::ldexp(3, -8)), 3 + std::ldexp(1, -6));  // 0.75 ulp
  EXPECT_EQ(ref::to_dtype(DType::bf16, 3 + std::ldexp(1, -7)), 3.0);                     // a tie, to even
  EXPECT_EQ(ref::to_dtype(DType::bf16, 3 + std::ldexp(3, -7)), 3 + std::ldexp(1, -5));   // a tie, to even
  // Integers: truncate toward zero, then wrap.
  EXPECT_EQ(ref::to_dtype(DType::i32, -2.7), -2);
  EXPECT_EQ(ref::to_dtype(DType::i8, 200), -56);
  EXPECT_EQ(ref::to_dtype(DType::u8, -1), 255);
  EXPECT_EQ(ref::to_dtype(DType::i32, 2147483648.0), -2147483648.0);
  EXPECT_EQ(ref::to_dtype(DType::i64, -1e12), -1e12);
  EXPECT_EQ(ref::to_dtype(DType::boolean, 0.1), 1);
  EXPECT_EQ(ref::to_dtype(DType::boolean, -0.0), 0);
}

// The runtime's Buffer::from and the reference round alike.
TEST(Reference, BufferConversionAgrees) {
  const uint32_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  Rng rng(seed);
  for (DType t : all_dtypes) {
    std::vector<double> v(4096);
    for (double& x : v) {
      x = std::ldexp(std::uniform_real_distribution<double>(-1, 1)(rng), std::uniform_int_distribution<int>(-30, 20)(rng));
      if (!is_float(t)) x = std::trunc(std::fmod(t == DType::u8 ? std::fabs(x) : x, 100));
    }
    if (is_float(t)) {  // deterministic cases first: double rounding through f32 fails them
      const std::vector<double> traps = double_rounding_traps();
      std::copy(traps.begin(), traps.end(), v.begin());
    }
    std::vector<double> got = Buffer::from(v, {4096}, t).to_f64();
    int bad = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (got[i] != ref::to_dtype(t, v[i]) && bad++ < 5)
        ADD_FAILURE() << dtype_name(t) << ": Buffer::from(" << std::setprecision(17) << v[i] << ") holds " << got[i]
                      << ", the reference rounds to " << ref::to_dtype(t, v[i]);
  }
}

}  // namespace
}  // namespace tessera
