// Weight-only quantization (quant_ops.h, quantize.h): the code books against
// their defining constructions (computed here independently), the packed
// layout (nibble order, blocks of 64, partial last block), the error each
// format's definition bounds, double quantization of the absmax; the six ops
// through compile().run() against the float64 reference interpreter, and the
// quantized linears against the f32 linear within the bound the quantization
// error implies, at batches 1, 3, 8 (GEMV schedule) and 9, 33, 64 (tiled),
// odd N and K, and the GEMV of a computed x; the gradient with respect to x by central differences; the
// quantize pass and quantize_state_dict on an MLP against the f32 model;
// errors naming op, tensor and shapes; and the CUDA schedules compiling to
// PTX (no GPU needed). Every test draws a fresh seed (TESSERA_TEST_SEED
// reruns one). Speed is measured in bench/bench_quant_cpu.cpp, not here.
#include <gtest/gtest.h>
#include <tessera/autodiff.h>
#include <tessera/models.h>
#include <tessera/optimizer.h>
#include <tessera/quant_ops.h>
#include <tessera/quantize.h>
#include <tessera/tessera.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "compile_cuda.h"
#include "gradcheck.h"
#include "reference/reference.h"
#include "test_util.h"

namespace tessera {
namespace {

using test_util::error_of;

Buffer random_buffer(std::mt19937& rng, Shape shape, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(static_cast<size_t>(numel(shape)));
  for (double& x : v) x = u(rng);
  return Buffer::from(v, std::move(shape), DType::f32);
}

// Standard normal quantile by bisection on erfc (accurate to ~1e-15).
double normal_ppf(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

std::vector<double> linspace(double a, double b, int n) {
  std::vector<double> r(n);
  for (int i = 0; i < n; ++i) r[i] = a + (b - a) * i / (n - 1);
  return r;
}

// ---- code books ----------------------------------------------------------------------

// QLoRA's NormalFloat-4 (Dettmers et al. 2023, sec. 3 and bitsandbytes'
// create_normal_map with offset 0.9677083): the 8 positive values are the
// standard normal quantiles at 8 points evenly spaced from the offset down to
// 0.5 (excluded), the 7 negative ones minus the quantiles at 7 such points,
// plus an exact 0; sorted and divided by the largest. Checked here in double
// against the library's f32 table within 2e-6 (the reference implementation
// spaces the points in f32; the quantile's slope near the offset is ~14).
TEST(QuantCodes, NF4IsTheNormalFloatConstruction) {
  const double offset = 0.9677083;
  std::vector<double> v;
  std::vector<double> pos = linspace(offset, 0.5, 9), neg = linspace(offset, 0.5, 8);
  for (int i = 0; i < 8; ++i) v.push_back(normal_ppf(pos[i]));
  for (int i = 0; i < 7; ++i) v.push_back(-normal_ppf(neg[i]));
  v.push_back(0.0);
  std::sort(v.begin(), v.end());
  const double top = v.back();
  const std::array<float, 16>& nf4 = nf4_code_book();
  ASSERT_EQ(v.size(), nf4.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(nf4[i], v[i] / top, 2e-6) << "NF4 value " << i;
  EXPECT_EQ(nf4[0], -1.0f);
  EXPECT_EQ(nf4[7], 0.0f);
  EXPECT_EQ(nf4[15], 1.0f);
  EXPECT_TRUE(std::is_sorted(nf4.begin(), nf4.end()));
}

// bitsandbytes' signed dynamic map: for exponent group i = 0..6, the 2^i
// midpoints of 0.1 + 0.9 t / 2^i (t = 0..2^i) times 10^(i-6), both signs,
// plus 0 and 1, sorted (256 values). Double here, f32 in the library.
TEST(QuantCodes, DynamicMapIsBitsandbytesSignedMap) {
  std::vector<double> v;
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < (1 << i); ++j) {
      const double m = std::pow(10.0, i - 6) * (0.1 + 0.9 * (j + 0.5) / (1 << i));
      v.push_back(m);
      v.push_back(-m);
    }
  v.push_back(0);
  v.push_back(1);
  std::sort(v.begin(), v.end());
  const std::array<float, 256>& map = dynamic_map_signed();
  ASSERT_EQ(v.size(), 256u);
  for (size_t i = 0; i < 256; ++i) EXPECT_NEAR(map[i], v[i], 1e-6 * std::fabs(v[i]) + 1e-12) << "entry " << i;
  EXPECT_EQ(map[127], 0.0f);
  EXPECT_EQ(map[255], 1.0f);
}

// ---- the packed layout and the quantization error -----------------------------------------

// This file's own reading of the NF4 layout (the spec in quant_ops.h).
int nf4_code_at(const Buffer& packed, int64_t e) {
  const int byte = static_cast<int>(packed.data_as<uint8_t>()[e / 2]);
  return e % 2 == 0 ? byte >> 4 : byte & 15;
}

std::vector<double> nf4_absmax(const NF4Weight& q) {
  std::vector<double> a;
  if (q.absmax.dtype() == DType::f32) return q.absmax.to_f64();
  const std::vector<double> codes = q.absmax.to_f64(), nested = q.nested_absmax.to_f64(),
                            map = q.nested_quant_map.to_f64();
  for (size_t b = 0; b < codes.size(); ++b)
    a.push_back(map[static_cast<size_t>(codes[b])] * nested[b / 256] + q.nested_offset.get(0));
  return a;
}

std::vector<double> nf4_dequantized(const NF4Weight& q, int64_t numel) {
  const std::vector<double> absmax = nf4_absmax(q);
  std::vector<double> w(numel);
  for (int64_t e = 0; e < numel; ++e) w[e] = nf4_code_book()[nf4_code_at(q.weight, e)] * absmax[e / 64];
  return w;
}

TEST(QuantLayout, NibbleOrderIsFirstElementHigh) {
  // Block absmax 1: 1 -> code 15, -1 -> 0, 0 -> 7, 0.0796 -> 8; the odd fifth
  // element pads its byte with a 0 low nibble.
  const Buffer w = Buffer::from({1.0, -1.0, 0.0, 0.0796, -0.6962}, {1, 5});
  const NF4Weight q = quantize_nf4(w);
  ASSERT_EQ(q.weight.shape(), (Shape{3, 1}));
  const uint8_t* b = q.weight.data_as<uint8_t>();
  EXPECT_EQ(b[0], 0xF0);
  EXPECT_EQ(b[1], 0x78);
  EXPECT_EQ(b[2], 0x10);
  EXPECT_EQ(q.absmax.shape(), (Shape{1}));
  EXPECT_EQ(q.absmax.get(0), 1.0);
}

// Each block's absmax is its max |w|; each code is a nearest NF4 value to
// w / absmax; so each element is within half the largest code gap times its
// block's absmax. 7 x 37 = 259 elements: 5 blocks, the last of 3.
TEST(QuantLayout, NF4BlocksAndErrorBound) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  const Buffer w = random_buffer(rng, {7, 37}, -3, 3);
  const NF4Weight q = quantize_nf4(w);
  ASSERT_EQ(q.weight.shape(), (Shape{130, 1}));
  ASSERT_EQ(q.absmax.shape(), (Shape{5}));
  const std::vector<double> v = w.to_f64();
  const std::array<float, 16>& nf4 = nf4_code_book();
  double gap = 0;
  for (int i = 0; i + 1 < 16; ++i) gap = std::max(gap, double(nf4[i + 1]) - nf4[i]);
  const std::vector<double> deq = nf4_dequantized(q, 259);
  for (int64_t b = 0; b < 5; ++b) {
    double m = 0;
    for (int64_t e = b * 64; e < std::min<int64_t>(259, b * 64 + 64); ++e) m = std::max(m, std::fabs(v[e]));
    EXPECT_FLOAT_EQ(q.absmax.get(b), m) << "block " << b;
  }
  for (int64_t e = 0; e < 259; ++e) {
    const double a = q.absmax.get(e / 64), x = v[e] / a;
    const int code = nf4_code_at(q.weight, e);
    for (int c = 0; c < 16; ++c)
      EXPECT_LE(std::fabs(x - nf4[code]), std::fabs(x - nf4[c]) + 1e-6) << "element " << e << " code " << code;
    EXPECT_LE(std::fabs(deq[e] - v[e]), gap / 2 * a * (1 + 1e-6)) << "element " << e;
  }
  EXPECT_EQ(q.weight.data_as<uint8_t>()[129] & 15, 0) << "the pad nibble";
}

// int8: |w - q * scale| <= absmax / 127 / 2 per element; scale = absmax / 127.
TEST(QuantLayout, Int8ErrorBound) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  Buffer w = random_buffer(rng, {13, 29}, -2, 2);
  for (int64_t k = 0; k < 29; ++k) w.set(5 * 29 + k, 0.0);  // an all-zero row
  const Int8Weight q = quantize_int8(w);
  const std::vector<double> v = w.to_f64();
  for (int64_t n = 0; n < 13; ++n) {
    double m = 0;
    for (int64_t k = 0; k < 29; ++k) m = std::max(m, std::fabs(v[n * 29 + k]));
    EXPECT_FLOAT_EQ(q.scale.get(n), m / 127);
    for (int64_t k = 0; k < 29; ++k) {
      const double d = q.weight.get(n * 29 + k) * q.scale.get(n);
      EXPECT_LE(std::fabs(d - v[n * 29 + k]), m / 127 / 2 * (1 + 1e-6) + 1e-12) << n << ", " << k;
      EXPECT_LE(std::fabs(q.weight.get(n * 29 + k)), 127);
    }
  }
}

// Double quantization: offset = mean absmax; each absmax - offset is within
// half the dynamic map's largest gap times its 256-block's nested absmax.
// 300 x 101 elements: 474 blocks, 2 nested blocks (the last partial).
TEST(QuantLayout, DoubleQuantReconstructsAbsmax) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  const Buffer w = random_buffer(rng, {300, 101}, -1, 1);
  const NF4Weight plain = quantize_nf4(w, false), dq = quantize_nf4(w, true);
  ASSERT_EQ(dq.absmax.type(), (TensorType{DType::u8, {474}}));
  ASSERT_EQ(dq.nested_absmax.type(), (TensorType{DType::f32, {2}}));
  ASSERT_EQ(dq.nested_offset.type(), (TensorType{DType::f32, {}}));
  const std::vector<double> exact = plain.absmax.to_f64(), got = nf4_absmax(dq);
  double mean = 0;
  for (double a : exact) mean += a / exact.size();
  EXPECT_NEAR(dq.nested_offset.get(0), mean, 1e-6);
  const std::array<float, 256>& map = dynamic_map_signed();
  double gap = 0;
  for (int i = 0; i + 1 < 256; ++i) gap = std::max(gap, double(map[i + 1]) - map[i]);
  for (size_t b = 0; b < exact.size(); ++b)
    EXPECT_LE(std::fabs(got[b] - exact[b]), gap / 2 * dq.nested_absmax.get(b / 256) + 1e-6) << "block " << b;
  // Same codes as without double quantization.
  for (int64_t i = 0; i < plain.weight.numel(); ++i)
    ASSERT_EQ(plain.weight.data_as<uint8_t>()[i], dq.weight.data_as<uint8_t>()[i]);
}

// ---- the ops against the reference and against f32 -------------------------------------------

enum class Fmt { int8, nf4, nf4_dq };
const char* fmt_name(Fmt f) { return f == Fmt::int8 ? "int8" : f == Fmt::nf4 ? "nf4" : "nf4_dq"; }

// The quantized params of one weight, added to a builder and to `args`.
struct QuantParams {
  NF4Tensors nf4;
  Tensor weight, scale;  // int8
  std::vector<double> dequantized;  // [N, K], this file's reading of the format
  std::vector<double> bound;        // per element: the format's error bound
};

QuantParams add_quantized(GraphBuilder& g, std::map<std::string, Buffer>& args, const std::string& m, const Buffer& w,
                          Fmt f) {
  const int64_t N = w.shape()[0], K = w.shape()[1];
  QuantParams p;
  p.bound.resize(N * K);
  if (f == Fmt::int8) {
    const Int8Weight q = quantize_int8(w);
    args[m + ".weight"] = q.weight;
    args[m + ".weight.scale"] = q.scale;
    p.weight = g.param(m + ".weight", {N, K}, DType::i8);
    p.scale = g.param(m + ".weight.scale", {N}, DType::f32);
    for (int64_t e = 0; e < N * K; ++e) {
      p.dequantized.push_back(q.weight.get(e) * q.scale.get(e / K));
      p.bound[e] = q.scale.get(e / K) / 2 * (1 + 1e-6);
    }
    return p;
  }
  const NF4Weight q = quantize_nf4(w, f == Fmt::nf4_dq);
  p.nf4.out_features = N;
  p.nf4.in_features = K;
  args[m + ".weight"] = q.weight;
  args[m + ".weight.absmax"] = q.absmax;
  p.nf4.weight = g.param(m + ".weight", q.weight.shape(), DType::u8);
  p.nf4.absmax = g.param(m + ".weight.absmax", q.absmax.shape(), q.absmax.dtype());
  if (f == Fmt::nf4_dq) {
    for (const char* s : {".weight.nested_absmax", ".weight.nested_quant_map", ".weight.nested_offset"})
      args[m + s] = std::string(s) == ".weight.nested_absmax" ? q.nested_absmax
                    : std::string(s) == ".weight.nested_quant_map" ? q.nested_quant_map
                                                                    : q.nested_offset;
    p.nf4.nested_absmax = g.param(m + ".weight.nested_absmax", q.nested_absmax.shape());
    p.nf4.nested_quant_map = g.param(m + ".weight.nested_quant_map", {256});
    p.nf4.nested_offset = g.param(m + ".weight.nested_offset", {});
  }
  p.dequantized = nf4_dequantized(q, N * K);
  // Codes are chosen against the block's exact absmax; the stored one (after
  // double quantization) may differ from it. So the error is at most half the
  // largest NF4 gap (between -1 and the next value, 0.30) times the exact
  // absmax, plus |code| <= 1 times the difference between the exact and the
  // stored absmax. (The code book is checked against the paper above.)
  const std::array<float, 16>& book = nf4_code_book();
  double gap = 0;
  for (int i = 0; i + 1 < 16; ++i) gap = std::max(gap, double(book[i + 1]) - book[i]);
  const std::vector<double> stored = nf4_absmax(q), wv = w.to_f64();
  std::vector<double> exact(stored.size(), 0.0);
  for (int64_t e = 0; e < N * K; ++e) exact[e / 64] = std::max(exact[e / 64], std::fabs(wv[e]));
  for (int64_t e = 0; e < N * K; ++e) {
    const double a = exact[e / 64];
    p.bound[e] = (0.5 * gap * a + std::fabs(a - stored[e / 64])) * (1 + 1e-5) + 1e-7;
  }
  return p;
}

struct Case {
  int64_t batch, N, K;
  int64_t lead = 1;  // > 1: x is [lead, batch, K] (rank 3)
};

// The kernel schedule lines of `exe`, for failure messages.
std::string schedules(const Executable& exe) { return exe.schedule_text(); }

// linear_<fmt> at every batch: against the reference (f32 tolerance), and
// against x @ W^T + b in double with the original W within
// sum_k |x[m, k]| * bound[n, k] (the quantization error's worst case) plus
// the f32 tolerance; grad_input against the reference and g @ W likewise.
void check_linear(Fmt f, const Case& c, uint32_t seed, bool bias) {
  SCOPED_TRACE(std::string(fmt_name(f)) + " lead " + std::to_string(c.lead) + " batch " + std::to_string(c.batch) + " N " + std::to_string(c.N) + " K " +
               std::to_string(c.K) + (bias ? " with bias" : ""));
  std::mt19937 rng(seed);
  GraphBuilder g("q");
  std::map<std::string, Buffer> args;
  const Buffer w = random_buffer(rng, {c.N, c.K});
  QuantParams p = add_quantized(g, args, "fc", w, f);
  auto shape = [&](int64_t last) { return c.lead > 1 ? Shape{c.lead, c.batch, last} : Shape{c.batch, last}; };
  args["x"] = random_buffer(rng, shape(c.K));
  args["g"] = random_buffer(rng, shape(c.N));
  Tensor x = g.input("x", shape(c.K)), gr = g.input("g", shape(c.N));
  Tensor b;
  if (bias) {
    args["fc.bias"] = random_buffer(rng, {c.N});
    b = g.param("fc.bias", {c.N});
  }
  g.output("y", f == Fmt::int8 ? linear_int8(x, p.weight, p.scale, b) : linear_nf4(x, p.nf4, b));
  g.output("dx", f == Fmt::int8 ? linear_int8_grad_input(gr, p.weight, p.scale) : linear_nf4_grad_input(gr, p.nf4));
  const Graph graph = g.build();
  Executable exe = compile(graph);
  const std::map<std::string, Buffer> got = exe.run(args);
  const auto want = ref::evaluate(graph, ref::from_buffers(args));
  test_util::expect_outputs_close(got, want, 2e-5 + 1e-6 * std::max(c.N, c.K), "vs reference");

  // Which schedule each took.
  const std::string text = schedules(exe);
  const bool gemv_path = f == Fmt::int8 ? c.K % 8 == 0 : c.K % 16 == 0;
  if (c.lead == 1 && c.batch <= 8 && gemv_path) {
    EXPECT_NE(text.find("GEMV"), std::string::npos) << text;
  }
  if (c.lead == 1 && c.batch <= 8) {
    EXPECT_NE(text.find("streaming"), std::string::npos) << text;
  }
  if (c.batch > 8) {
    EXPECT_NE(text.find("register-tiled"), std::string::npos) << text;
  }

  // Against f32 with the original weight.
  const std::vector<double> xv = args["x"].to_f64(), gv = args["g"].to_f64(), wv = w.to_f64();
  const std::vector<double> y = got.at("y").to_f64(), dx = got.at("dx").to_f64();
  int bad = 0;
  const int64_t rows = c.lead * c.batch;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < c.N; ++n) {
      double exact = bias ? args["fc.bias"].get(n) : 0, bound = 0;
      for (int64_t k = 0; k < c.K; ++k) {
        exact += xv[m * c.K + k] * wv[n * c.K + k];
        bound += std::fabs(xv[m * c.K + k]) * p.bound[n * c.K + k];
      }
      if (std::fabs(y[m * c.N + n] - exact) > bound + 1e-4 && bad++ < 3)
        ADD_FAILURE() << "y[" << m << ", " << n << "] = " << y[m * c.N + n] << ", f32 linear " << exact
                      << ", quantization bound " << bound;
    }
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t k = 0; k < c.K; ++k) {
      double exact = 0, bound = 0;
      for (int64_t n = 0; n < c.N; ++n) {
        exact += gv[m * c.N + n] * wv[n * c.K + k];
        bound += std::fabs(gv[m * c.N + n]) * p.bound[n * c.K + k];
      }
      if (std::fabs(dx[m * c.K + k] - exact) > bound + 1e-4 && bad++ < 6)
        ADD_FAILURE() << "dx[" << m << ", " << k << "] = " << dx[m * c.K + k] << ", g @ W " << exact
                      << ", quantization bound " << bound;
    }
}

class QuantLinear : public ::testing::TestWithParam<Fmt> {};

// N = 53 (odd, above 3 vectors of 16 lanes so the tiled schedule applies);
// K = 128 (the GEMV path) and K = 65 (odd: NF4 codes straddle rows and bytes;
// the linear's inline-dequantize schedule for batches <= 8). Batches 1, 3, 8 take the GEMV/streaming schedules; 9, 33, 64 the tiled.
TEST_P(QuantLinear, MatchesReferenceAndF32) {
  SEEDED(seed);
  uint32_t s = seed;
  for (int64_t batch : {1, 3, 8, 9, 33, 64})
    for (int64_t K : {128, 65}) check_linear(GetParam(), {batch, 53, K}, s++, batch % 2 == 1);
  check_linear(GetParam(), {2, 1, 1}, s++, true);  // the smallest: one output, one input feature
  check_linear(GetParam(), {5, 3, 256}, s++, false);
  check_linear(GetParam(), {11, 53, 128, 3}, s++, true);  // x [3, 11, 128]: tiles per leading index
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantLinear, ::testing::Values(Fmt::int8, Fmt::nf4, Fmt::nf4_dq),
                         [](const ::testing::TestParamInfo<Fmt>& i) { return fmt_name(i.param); });

// A GEMV whose x is computed in its kernel (a view of an input, an
// elementwise op): the schedule computes x at root for the reduction lanes
// that read it, and the result is the reference's.
TEST(QuantGemv, ReadsAComputedX) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  for (Fmt f : {Fmt::int8, Fmt::nf4, Fmt::nf4_dq})
    for (int64_t rows : {1, 3}) {
      SCOPED_TRACE(std::string(fmt_name(f)) + " rows " + std::to_string(rows));
      GraphBuilder g("q");
      std::map<std::string, Buffer> args;
      QuantParams p = add_quantized(g, args, "fc", random_buffer(rng, {17, 128}), f);
      args["x"] = random_buffer(rng, {rows, 2, 128});
      Tensor x = relu(reshape(slice(g.input("x", {rows, 2, 128}), 1, 1, 2), {rows, 128}));
      g.output("y", f == Fmt::int8 ? linear_int8(x, p.weight, p.scale) : linear_nf4(x, p.nf4));
      const Graph graph = g.build();
      Executable exe = compile(graph);
      test_util::expect_outputs_close(exe.run(args), ref::evaluate(graph, ref::from_buffers(args)), 1e-5,
                                      "vs reference");
      EXPECT_NE(exe.schedule_text().find("GEMV"), std::string::npos) << exe.schedule_text();
    }
}

// dequantize_int8 / dequantize_nf4 (a rank-3 x for the linear as well)
// against the reference and this file's decoding.
TEST(QuantOps, DequantizeMatchesReferenceAndDecoding) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  for (Fmt f : {Fmt::int8, Fmt::nf4, Fmt::nf4_dq}) {
    SCOPED_TRACE(fmt_name(f));
    GraphBuilder g("deq");
    std::map<std::string, Buffer> args;
    const Buffer w = random_buffer(rng, {19, 45});
    QuantParams p = add_quantized(g, args, "m", w, f);
    g.output("w", f == Fmt::int8 ? dequantize_int8(p.weight, p.scale) : dequantize_nf4(p.nf4));
    args["x"] = random_buffer(rng, {2, 3, 45});
    Tensor x = g.input("x", {2, 3, 45});
    g.output("y", f == Fmt::int8 ? linear_int8(x, p.weight, p.scale) : linear_nf4(x, p.nf4));
    const Graph graph = g.build();
    const auto got = compile(graph).run(args);
    test_util::expect_outputs_close(got, ref::evaluate(graph, ref::from_buffers(args)), 1e-5, "vs reference");
    const std::vector<double> d = got.at("w").to_f64();
    for (size_t e = 0; e < d.size(); ++e) ASSERT_NEAR(d[e], p.dequantized[e], 1e-6 * (1 + std::fabs(d[e]))) << e;
  }
}

// ---- gradients -------------------------------------------------------------------------

// d/dx of sum(y * weights) for y = linear_q(x, W) + b, x a param, by central
// differences of the reference (y is linear in x, so a large step of 0.5
// is exact up to the f32 rounding of y, which it keeps below 1e-5); the quantized params get no gradient, the bias does.
TEST(QuantGrad, InputGradientMatchesFiniteDifferences) {
  SEEDED(seed);
  std::mt19937 rng(seed);
  for (Fmt f : {Fmt::int8, Fmt::nf4, Fmt::nf4_dq}) {
    SCOPED_TRACE(fmt_name(f));
    GraphBuilder g("grad");
    std::map<std::string, Buffer> args;
    const Buffer w = random_buffer(rng, {11, 70});
    QuantParams p = add_quantized(g, args, "fc", w, f);
    args["x"] = random_buffer(rng, {3, 70});
    args["fc.bias"] = random_buffer(rng, {11});
    Tensor x = g.param("x", {3, 70}), b = g.param("fc.bias", {11});
    Tensor y = f == Fmt::int8 ? linear_int8(x, p.weight, p.scale, b) : linear_nf4(x, p.nf4, b);
    std::vector<double> wts(33);
    for (double& v : wts) v = std::uniform_real_distribution<double>(-1, 1)(rng);
    g.output("y", y);
    g.output("loss", sum(y * g.constant(wts, {3, 11})));
    const Graph forward = g.build();
    const Graph joint = differentiate(forward);
    for (const GraphOutput& o : joint.outputs)
      EXPECT_TRUE(o.name == "y" || o.name == "loss" || o.name == "grad.x" || o.name == "grad.fc.bias")
          << "unexpected output " << o.name << " (quantized params are frozen)";
    const auto got = compile(joint).run(args);
    const std::vector<double> fd =
        gradcheck::finite_differences(forward, ref::from_buffers(args), "x", wts, 0.5);
    gradcheck::expect_close(got.at("grad.x").to_f64(), fd, 1e-4, 1e-4, "grad.x");
    const std::vector<double> gb = got.at("grad.fc.bias").to_f64();
    for (int n = 0; n < 11; ++n) EXPECT_NEAR(gb[n], wts[n] + wts[11 + n] + wts[22 + n], 1e-5);
  }
}

// ---- the pass --------------------------------------------------------------------------

// The quantized MLP against the f32 one: the error bound propagates through
// the layers in double (|dy| <= |W| |dx| + |dW| (|x| + |dx|), ReLU
// 1-Lipschitz), from this file's decoding of each quantized weight.
TEST(QuantizePass, MlpCloseToF32) {
  SEEDED(seed);
  const MlpConfig cfg{{70, 45, 33, 10}, 5, "relu"};
  const Graph model = mlp(cfg);
  const auto params = init_params(model, mlp_init(cfg), seed);
  std::mt19937 rng(seed);
  std::map<std::string, Buffer> args = params;
  args["x"] = random_buffer(rng, {5, 70});
  std::vector<double> labels(5);
  for (double& l : labels) l = rng() % 10;
  args["y"] = Buffer::from(labels, {5}, DType::i32);
  const Buffer f32_logits = compile(model).run(args).at("logits");
  for (Fmt f : {Fmt::int8, Fmt::nf4, Fmt::nf4_dq}) {
    SCOPED_TRACE(fmt_name(f));
    QuantizeOptions o;
    o.format = f == Fmt::int8 ? QuantFormat::int8 : QuantFormat::nf4;
    o.double_quant = f == Fmt::nf4_dq;
    EXPECT_EQ(quantized_modules(model, o), (std::vector<std::string>{"layers.0", "layers.1", "layers.2"}));
    const Graph q = quantize_graph(model, o);
    int quantized = 0;
    for (const Node& n : q.nodes) {
      EXPECT_NE(n.op, "linear") << n.name;
      quantized += n.op == "linear_int8" || n.op == "linear_nf4";
    }
    EXPECT_EQ(quantized, 3);
    const Node& w0 = q.node("layers.0.weight");
    EXPECT_EQ(w0.type.dtype, f == Fmt::int8 ? DType::i8 : DType::u8);
    std::map<std::string, Buffer> qargs = quantize_state_dict(model, args, o);
    const Buffer logits = compile(q).run(qargs).at("logits");
    // The bound, layer by layer.
    std::vector<double> h = args["x"].to_f64(), err(h.size(), 0.0);
    for (int l = 0; l < 3; ++l) {
      const int64_t in = cfg.sizes[l], out = cfg.sizes[l + 1];
      GraphBuilder scratch("s");
      std::map<std::string, Buffer> unused;
      const std::string m = "layers." + std::to_string(l);
      QuantParams p = add_quantized(scratch, unused, m, args[m + ".weight"], f);
      const std::vector<double> W = args[m + ".weight"].to_f64(), B = args[m + ".bias"].to_f64();
      std::vector<double> nh(5 * out), ne(5 * out);
      for (int64_t r = 0; r < 5; ++r)
        for (int64_t n = 0; n < out; ++n) {
          double v = B[n], e = 0;
          for (int64_t k = 0; k < in; ++k) {
            v += W[n * in + k] * h[r * in + k];
            e += std::fabs(W[n * in + k]) * err[r * in + k] +
                 std::fabs(p.dequantized[n * in + k] - W[n * in + k]) * (std::fabs(h[r * in + k]) + err[r * in + k]);
          }
          nh[r * out + n] = l < 2 ? std::max(v, 0.0) : v;
          ne[r * out + n] = e;
        }
      h = nh;
      err = ne;
    }
    const std::vector<double> a = logits.to_f64(), b = f32_logits.to_f64();
    double max_diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_LE(std::fabs(a[i] - b[i]), err[i] + 1e-4) << "logit " << i;
      max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
    }
    EXPECT_GT(max_diff, 0.0) << "quantization changed nothing: is the pass a no-op?";
    // Training the quantized model: only the biases get gradients, and an
    // AdamW step updates only them.
    const Graph joint = differentiate(q);
    for (const GraphOutput& o2 : joint.outputs)
      if (o2.name.rfind("grad.", 0) == 0) {
        EXPECT_NE(o2.name.find(".bias"), std::string::npos) << o2.name;
      }
    const Graph step = adamw(differentiate(q), AdamWOptions{});
    int updated = 0;
    for (const GraphOutput& o2 : step.outputs)
      if (o2.name.rfind("new.", 0) == 0 && o2.name.find("exp_avg") == std::string::npos) {
        ++updated;
        EXPECT_NE(o2.name.find(".bias"), std::string::npos) << o2.name;
      }
    EXPECT_EQ(updated, 3);
  }
}

// GPT (rank-3 activations): by default every block's four linears are
// quantized and the LM head is not (nor a tied head, whose weight the
// embedding reads too); the quantized forward runs, and its loss stays within
// 5% of the f32 model's (a loose check: the MLP test above bounds the error).
TEST(QuantizePass, GptDefaultSelection) {
  SEEDED(seed);
  GptConfig cfg;
  cfg.vocab_size = 11;
  cfg.block_size = 5;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_embd = 64;
  cfg.batch = 2;
  for (bool tied : {false, true}) {
    cfg.tie_weights = tied;
    const Graph model = gpt(cfg);
    std::vector<std::string> want;
    for (int i = 0; i < 2; ++i)
      for (const char* m : {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"})
        want.push_back("transformer.h." + std::to_string(i) + "." + m);
    std::sort(want.begin(), want.end());
    std::vector<std::string> got = quantized_modules(model);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, want) << (tied ? "tied" : "untied");
    if (tied) continue;
    const Graph q = quantize_graph(model);
    std::map<std::string, Buffer> args = init_params(model, gpt_init(cfg), seed);
    std::mt19937 rng(seed);
    std::vector<double> idx(10), tgt(10);
    for (size_t i = 0; i < 10; ++i) idx[i] = rng() % 11, tgt[i] = rng() % 11;
    args["idx"] = Buffer::from(idx, {2, 5}, DType::i32);
    args["targets"] = Buffer::from(tgt, {2, 5}, DType::i32);
    const double f32_loss = compile(model).run(args).at("loss").get(0);
    const double q_loss = compile(q).run(quantize_state_dict(model, args)).at("loss").get(0);
    EXPECT_NEAR(q_loss, f32_loss, 0.05 * std::fabs(f32_loss));
  }
}

TEST(QuantizePass, SelectsByPatternAndSkipsLmHead) {
  GraphBuilder b("sel");
  Tensor x = b.input("x", {2, 8});
  Tensor h = linear(x, b.param("blk.0.q_proj.weight", {8, 8}));
  h = linear(h, b.param("blk.0.v_proj.weight", {8, 8}), b.param("blk.0.v_proj.bias", {8}));
  Tensor e = b.param("emb.weight", {8, 8});
  h = linear(h, e);
  b.output("e_sum", sum(e));  // read by sum too: not quantizable
  b.output("y", linear(h, b.param("lm_head.weight", {5, 8})));
  const Graph g = b.build();
  EXPECT_EQ(quantized_modules(g), (std::vector<std::string>{"blk.0.q_proj", "blk.0.v_proj"}));
  QuantizeOptions o;
  o.modules = {"*.v_proj", "lm_*"};
  EXPECT_EQ(quantized_modules(g, o), (std::vector<std::string>{"blk.0.v_proj", "lm_head"}));
  o.modules = {"blk.?.q_proj"};
  EXPECT_EQ(quantized_modules(g, o), (std::vector<std::string>{"blk.0.q_proj"}));
  o.modules = {"emb"};
  const std::string err = error_of([&] { quantize_graph(g, o); });
  EXPECT_NE(err.find("module 'emb'"), std::string::npos) << err;
  EXPECT_NE(err.find("(sum)"), std::string::npos) << err;
  // The double-quantized params, with the documented names and types.
  QuantizeOptions d;
  d.double_quant = true;
  const Graph q = quantize_graph(g, d);
  EXPECT_EQ(q.node("blk.0.q_proj.weight").type, (TensorType{DType::u8, {32, 1}}));
  EXPECT_EQ(q.node("blk.0.q_proj.weight.absmax").type, (TensorType{DType::u8, {1}}));
  EXPECT_EQ(q.node("blk.0.q_proj.weight.nested_absmax").type, (TensorType{DType::f32, {1}}));
  EXPECT_EQ(q.node("blk.0.q_proj.weight.nested_quant_map").type, (TensorType{DType::f32, {256}}));
  EXPECT_EQ(q.node("blk.0.q_proj.weight.nested_offset").type, (TensorType{DType::f32, {}}));
  // The packed "<m>.weight" is the second input of each quantized linear, x the first.
  int quantized = 0;
  for (const Node& n : q.nodes)
    if (n.op == "linear_nf4") {
      ++quantized;
      const std::string w = q.node(n.inputs[1]).name;
      EXPECT_TRUE(w == "blk.0.q_proj.weight" || w == "blk.0.v_proj.weight") << w;
      EXPECT_EQ(q.node(n.inputs[0]).type.shape.back(), 8);
    }
  EXPECT_EQ(quantized, 2);
  // A state dict missing a weight, one of the wrong shape, and a bf16 one
  // (quantized like f32: the same packed bytes as its f32 values).
  std::map<std::string, Buffer> state;
  const std::string miss = error_of([&] { quantize_state_dict(g, state); });
  EXPECT_NE(miss.find("blk.0.q_proj.weight"), std::string::npos) << miss;
  std::mt19937 rng(7);
  state["blk.0.q_proj.weight"] = random_buffer(rng, {8, 9});
  const std::string shape = error_of([&] { quantize_state_dict(g, state); });
  EXPECT_NE(shape.find("f32[8, 9]"), std::string::npos) << shape;
  std::vector<double> v(64);
  for (double& x : v) x = std::uniform_real_distribution<double>(-1, 1)(rng);
  state["blk.0.q_proj.weight"] = Buffer::from(v, {8, 8}, DType::bf16);
  state["blk.0.v_proj.weight"] = Buffer::from(state["blk.0.q_proj.weight"].to_f64(), {8, 8}, DType::f32);
  const auto qs = quantize_state_dict(g, state);
  for (int64_t i = 0; i < 32; ++i)
    EXPECT_EQ(qs.at("blk.0.q_proj.weight").get(i), qs.at("blk.0.v_proj.weight").get(i)) << i;
  EXPECT_EQ(qs.at("blk.0.q_proj.weight.absmax").type(), (TensorType{DType::f32, {1}}));
  QuantizeOptions bad;
  bad.format = QuantFormat::int8;
  bad.double_quant = true;
  EXPECT_NE(error_of([&] { quantize_graph(g, bad); }).find("double_quant"), std::string::npos);
}

// ---- errors -------------------------------------------------------------------------------

TEST(QuantOps, ErrorsNameOpTensorAndShapes) {
  GraphBuilder g("bad");
  Tensor x = g.input("x", {3, 64});
  NF4Tensors w;
  w.weight = g.param("w", {31, 1}, DType::u8);  // 16 x 64 needs 512 bytes
  w.absmax = g.param("w.absmax", {16});
  w.out_features = 16;
  w.in_features = 64;
  std::string e = error_of([&] { linear_nf4(x, w); });
  EXPECT_NE(e.find("linear_nf4"), std::string::npos) << e;
  EXPECT_NE(e.find("weight"), std::string::npos) << e;
  EXPECT_NE(e.find("u8[512, 1]"), std::string::npos) << e;
  EXPECT_NE(e.find("u8[31, 1]"), std::string::npos) << e;
  NF4Tensors w2 = w;
  w2.weight = g.param("w2", {512, 1}, DType::u8);
  w2.absmax = g.param("w2.absmax", {15});
  e = error_of([&] { linear_nf4(x, w2); });
  EXPECT_NE(e.find("absmax"), std::string::npos) << e;
  EXPECT_NE(e.find("f32[16]"), std::string::npos) << e;
  w2.absmax = g.param("w2.absmax16", {16}, DType::u8);
  e = error_of([&] { linear_nf4(x, w2); });
  EXPECT_NE(e.find("nested_absmax"), std::string::npos) << e;
  e = error_of([&] { linear_int8(x, g.param("f", {4, 64}), g.param("fs", {4})); });
  EXPECT_NE(e.find("linear_int8"), std::string::npos) << e;
  EXPECT_NE(e.find("i8[out, in]"), std::string::npos) << e;
  e = error_of([&] { linear_int8(x, g.param("i", {4, 63}, DType::i8), g.param("is", {4})); });
  EXPECT_NE(e.find("f32[..., 63]"), std::string::npos) << e;
  e = error_of([&] { linear_int8(x, g.param("j", {4, 64}, DType::i8), g.param("js", {5})); });
  EXPECT_NE(e.find("scale"), std::string::npos) << e;
  EXPECT_NE(e.find("f32[4]"), std::string::npos) << e;
  e = error_of([&] { quantize_int8(Buffer(DType::f32, {3})); });
  EXPECT_NE(e.find("quantize_int8"), std::string::npos) << e;
  EXPECT_NE(e.find("f32[3]"), std::string::npos) << e;
}

// ---- CUDA ---------------------------------------------------------------------------------

// Every quantized op compiles to PTX for both schedule sets, entirely on the
// GPU (compile_cuda also fails if host code reads a tensor: one NF4 block
// once made Halide read the double-quantized absmax code on the host).
TEST(QuantCuda, CompilesForSm80AndSm90) {
  GraphBuilder g("qcuda");
  std::map<std::string, Buffer> unused;
  std::mt19937 rng(1);
  int i = 0;
  for (Fmt f : {Fmt::int8, Fmt::nf4, Fmt::nf4_dq})
    for (const Case& c : std::vector<Case>{{1, 37, 128}, {33, 37, 33}, {3, 8, 8}}) {  // 8 x 8: one NF4 block
      const std::string m = "m" + std::to_string(i++);
      QuantParams p = add_quantized(g, unused, m, random_buffer(rng, {c.N, c.K}), f);
      Tensor x = g.input(m + ".x", {c.batch, c.K}), gr = g.input(m + ".g", {c.batch, c.N});
      Tensor b = g.param(m + ".bias", {c.N});
      g.output(m + ".y", f == Fmt::int8 ? linear_int8(x, p.weight, p.scale, b) : linear_nf4(x, p.nf4, b));
      g.output(m + ".dx",
               f == Fmt::int8 ? linear_int8_grad_input(gr, p.weight, p.scale) : linear_nf4_grad_input(gr, p.nf4));
      g.output(m + ".w", f == Fmt::int8 ? dequantize_int8(p.weight, p.scale) : dequantize_nf4(p.nf4));
    }
  const Graph graph = g.build();
  for (const char* t : {"host-cuda-sm80", "host-cuda-sm90"}) {
    CudaCompileResult r;
    try {
      r = compile_cuda(graph, Target::parse(t));
    } catch (const Error& e) {
      FAIL() << t << ": " << e.what();
    }
    ASSERT_FALSE(r.kernels.empty());
    for (const CudaKernelInfo& k : r.kernels) {
      EXPECT_GE(k.gpu_kernels, 1) << t << " " << k.header << "\n" << k.schedule;
      EXPECT_EQ(k.host_loops, 0) << t << " " << k.header << "\n" << k.schedule;
      EXPECT_GT(k.ptx_bytes, 0u);
    }
  }
}

}  // namespace
}  // namespace tessera
