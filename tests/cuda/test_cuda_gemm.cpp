// CublasLtGemm against a double-precision CPU reference on random inputs:
// awkward sizes (1, odd, 127, ~1000), every transpose, every dtype (f32, TF32,
// f16, bf16) with a tolerance fitting it, every epilogue, strided batches
// (packed and broadcast), alpha/beta accumulation. Each check also poisons C
// with NaN (every element must be written) and guards the bytes after C (none
// may be written). Also: one cached plan per problem, a workspace taken from
// the arena, and GemmStep (arena offsets) giving the same bits as pointers and
// naming out-of-arena operands; the ReLU bit-mask epilogues and their
// gradient; the timed choice of algorithm repeating
// bitwise across runs and CublasLtGemm objects. Label gpu; skips without a
// CUDA device. Does not time anything (CublasLtGemm itself times candidates).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/gemm.h"
#include "tessera/cuda/gemm_step.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::from_bytes;
using testing::random_values;
using testing::to_bytes;
using testing::upload;

struct GemmCase {
  DType dtype = DType::f32;
  bool tf32 = false;
  bool trans_a = false, trans_b = false;
  int64_t m = 1, n = 1, k = 1, batch = 1;
  int64_t stride_a = -1, stride_b = -1;
  GemmEpilogue epilogue = GemmEpilogue::none;
  float alpha = 1.0f, beta = 0.0f;

  GemmShape shape() const {
    GemmShape s;
    s.dtype = dtype, s.allow_tf32 = tf32, s.trans_a = trans_a, s.trans_b = trans_b;
    s.m = m, s.n = n, s.k = k, s.batch = batch, s.stride_a = stride_a, s.stride_b = stride_b;
    s.epilogue = epilogue;
    return s;
  }
  std::string name() const {
    std::ostringstream os;
    os << (tf32                  ? "tf32"
           : dtype == DType::f32 ? "f32"
           : dtype == DType::f16 ? "f16"
                                 : "bf16")
       << "_" << m << "x" << n << "x" << k << (batch > 1 ? "_batch" + std::to_string(batch) : "")
       << (stride_a == 0 ? "_bcastA" : "") << (stride_b == 0 ? "_bcastB" : "") << (trans_a ? "_tA" : "")
       << (trans_b ? "_tB" : "") << "_" << epilogue_name(epilogue) << (beta != 0 ? "_beta" : "")
       << (alpha != 1 ? "_alpha" : "");
    return os.str();
  }
};

// gtest prints the case by name (in ctest's listing too), not as raw bytes.
void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << c.name();
}

double gelu_tanh(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
// Its derivative: what the dgelu epilogue multiplies the product by.
double gelu_tanh_grad(double x) {
  const double k = std::sqrt(2 / M_PI), u = k * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}
// Printed beside the tanh form's error only, to show which form cuBLASLt computes.
double gelu_erf(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}

// Relative rounding unit of the dtype C is stored in.
double output_unit(DType t) {
  return t == DType::f32 ? std::ldexp(1.0, -24) : t == DType::f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
}

// ||out - ref|| / ||ref|| allowed: f32 arithmetic far below 1e-5 (this also
// tells GELU's tanh form from its erf form, 7e-5 apart); TF32 inputs round to
// 10-bit mantissas (~3e-4 typical, 4e-3 for k = 1 with both truncated); f16
// and bf16 outputs round to 11 and 8 bits.
double normwise_tolerance(const GemmCase& c) {
  if (c.dtype == DType::f32) return c.tf32 ? 4e-3 : 1e-5;
  return c.dtype == DType::f16 ? 2e-3 : 1e-2;
}

class CudaGemm : public ::testing::TestWithParam<GemmCase> {
 protected:
  static void SetUpTestSuite() {
    if (cuda_device_count() == 0) return;
    stream_ = std::make_unique<DeviceStream>(0);
    gemm_ = std::make_unique<CublasLtGemm>(*stream_);
  }
  static void TearDownTestSuite() {
    gemm_.reset();
    stream_.reset();
  }
  static std::unique_ptr<DeviceStream> stream_;
  static std::unique_ptr<CublasLtGemm> gemm_;
};
std::unique_ptr<DeviceStream> CudaGemm::stream_;
std::unique_ptr<CublasLtGemm> CudaGemm::gemm_;

TEST_P(CudaGemm, MatchesDoubleReference) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  const GemmCase c = GetParam();
  const GemmShape s = c.shape();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(s.describe() + ", seed " + std::to_string(seed));
  std::mt19937 rng(seed);

  const size_t es = testing::elem_size(c.dtype);
  const size_t na = s.a_bytes() / es, nb = s.b_bytes() / es, nc = s.c_bytes() / es;
  const std::vector<double> a = random_values(na, c.dtype, rng), b = random_values(nb, c.dtype, rng);
  const std::vector<double> bias = random_values(static_cast<size_t>(c.n), c.dtype, rng);
  const std::vector<double> c0 = random_values(nc, c.dtype, rng);
  const bool has_bias = epilogue_has_bias(c.epilogue), has_aux = epilogue_has_aux(c.epilogue);

  constexpr size_t kGuard = 256;
  DeviceArena arena(2 * (s.c_bytes() + kGuard) + s.a_bytes() + s.b_bytes() + c.n * es +
                        5 * DeviceArena::kDefaultAlignment,
                    "gemm test");
  void* da = arena.at(arena.reserve(s.a_bytes(), "A"), s.a_bytes());
  void* db = arena.at(arena.reserve(s.b_bytes(), "B"), s.b_bytes());
  void* dbias = arena.at(arena.reserve(c.n * es, "bias"), c.n * es);
  void* dc = arena.at(arena.reserve(s.c_bytes() + kGuard, "C and guard"), s.c_bytes() + kGuard);
  upload(da, to_bytes(a, c.dtype));
  upload(db, to_bytes(b, c.dtype));
  upload(dbias, to_bytes(bias, c.dtype));
  // C starts as c0 when it is read (beta != 0), else as NaN (all-ones bytes) that must be overwritten.
  std::vector<uint8_t> c_init(s.c_bytes() + kGuard, 0xFF);
  if (c.beta != 0) {
    const auto bytes = to_bytes(c0, c.dtype);
    std::copy(bytes.begin(), bytes.end(), c_init.begin());
  }
  for (size_t i = s.c_bytes(); i < c_init.size(); ++i) c_init[i] = 0xA5;
  upload(dc, c_init);
  // The aux matrix: the pre-activation a gelu_aux epilogue writes (NaN bytes
  // to be overwritten, then a guard), or the GELU input x that dgelu reads.
  const bool dgelu = c.epilogue == GemmEpilogue::dgelu, writes_aux = has_aux && !dgelu;
  const std::vector<double> x = random_values(nc, c.dtype, rng);
  void* daux = arena.at(arena.reserve(s.c_bytes() + kGuard, "aux and guard"), s.c_bytes() + kGuard);
  std::vector<uint8_t> aux_init(s.c_bytes() + kGuard, 0xFF);
  if (dgelu) {
    const auto bytes = to_bytes(x, c.dtype);
    std::copy(bytes.begin(), bytes.end(), aux_init.begin());
  }
  for (size_t i = s.c_bytes(); i < aux_init.size(); ++i) aux_init[i] = 0xA5;
  upload(daux, aux_init);

  GemmArgs args{da, db, dc, has_bias ? dbias : nullptr, has_aux ? daux : nullptr, c.alpha, c.beta};
  gemm_->run(s, args);
  stream_->synchronize("gemm test");
  auto written = [&](void* where, const char* what) {
    const std::vector<uint8_t> bytes = download(where, s.c_bytes() + kGuard);
    for (size_t i = s.c_bytes(); i < bytes.size(); ++i)
      EXPECT_EQ(bytes[i], 0xA5) << "byte " << i - s.c_bytes() << " after " << what << " was written";
    return from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.begin() + s.c_bytes()), c.dtype);
  };
  const std::vector<double> out = written(dc, "C");
  const std::vector<double> aux = writes_aux ? written(daux, "aux") : std::vector<double>();

  // Per element: |out - ref| <= acc * S + unit * |ref| (+ epilogue terms),
  // S = sum |alpha a b| + |beta c| + |bias| bounding the accumulation error
  // (TF32: both inputs rounded to 10 bits; otherwise a random-walk bound on
  // f32 sums), unit the output's rounding. GELU's slope is below 1.13. With
  // f16/bf16 output cuBLASLt applies the epilogue to the product already
  // rounded to the output type, in that precision (seen on H100, cuBLAS 13.0:
  // about one output ulp of the product and the bias more): allowed as
  // unit * (|product| + |bias| + |pre-activation|), twice that for GELU.
  // dgelu: the product times gelu'(x), |gelu'| < 1.13, with the same terms.
  const double f32_acc = 4 * std::sqrt(static_cast<double>(c.k) + 1) * std::ldexp(1.0, -24);
  const double acc = (c.tf32 ? 2 * std::ldexp(1.0, -10) : 0) + f32_acc;
  const bool gelu = c.epilogue == GemmEpilogue::gelu || c.epilogue == GemmEpilogue::gelu_bias || writes_aux;
  const bool half_epilogue = c.dtype != DType::f32 && c.epilogue != GemmEpilogue::none;
  const double unit = output_unit(c.dtype);
  double err2 = 0, ref2 = 0, worst = 0, erf_err2 = 0;
  int64_t bad = 0;
  std::ostringstream first_bad;
  std::vector<double> arow(c.k), bcol(c.k);
  for (int64_t bi = 0; bi < c.batch; ++bi) {
    const double* A = a.data() + bi * s.a_stride();
    const double* B = b.data() + bi * s.b_stride();
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t p = 0; p < c.k; ++p) arow[p] = c.trans_a ? A[p * c.m + i] : A[i * c.k + p];
      for (int64_t j = 0; j < c.n; ++j) {
        double sum = 0, mag = 0;
        for (int64_t p = 0; p < c.k; ++p) {
          const double bv = c.trans_b ? B[j * c.k + p] : B[p * c.n + j];
          sum += arow[p] * bv;
          mag += std::abs(arow[p] * bv);
        }
        const size_t ci = static_cast<size_t>(bi * s.c_stride() + i * c.n + j);
        const double product = c.alpha * sum + c.beta * c0[ci];
        const double pre = product + (has_bias ? bias[j] : 0);
        const double S = std::abs(c.alpha) * mag + std::abs(c.beta * c0[ci]) + (has_bias ? std::abs(bias[j]) : 0);
        double ref = pre;
        if (c.epilogue == GemmEpilogue::relu || c.epilogue == GemmEpilogue::relu_bias) ref = std::max(pre, 0.0);
        if (gelu) ref = gelu_tanh(pre);
        if (dgelu) ref = pre * gelu_tanh_grad(x[ci]);
        const bool act = gelu || dgelu;
        const double tol =
            (act ? 1.2 : 1.0) * acc * S + unit * std::abs(ref) + (act ? 2e-5 * std::abs(pre) + 1e-6 : 0) +
            (half_epilogue
                 ? (act ? 2 : 1) * unit * (std::abs(product) + (has_bias ? std::abs(bias[j]) : 0) + std::abs(pre))
                 : 0) +
            1e-30;
        if (writes_aux) {  // the pre-activation, rounded once to the output type (+ the bias rounding, as above)
          const double aux_tol = acc * S + unit * std::abs(pre) + (half_epilogue ? unit * std::abs(product) : 0) + 1e-30;
          if (!(std::abs(aux[ci] - pre) <= aux_tol) && bad++ == 0)
            first_bad << "aux[" << bi << ", " << i << ", " << j << "] = " << aux[ci] << ", reference " << pre
                      << " (tolerance " << aux_tol << ")";
        }
        const double err = std::abs(out[ci] - ref);
        if (!(err <= tol)) {  // NaN fails too
          if (bad++ == 0)
            first_bad << "C[" << bi << ", " << i << ", " << j << "] = " << out[ci] << ", reference " << ref
                      << " (tolerance " << tol << ")";
        }
        worst = std::max(worst, std::isnan(err) ? INFINITY : err / (tol));
        err2 += (out[ci] - ref) * (out[ci] - ref);
        if (gelu) erf_err2 += (out[ci] - gelu_erf(pre)) * (out[ci] - gelu_erf(pre));
        ref2 += ref * ref;
      }
    }
  }
  EXPECT_EQ(bad, 0) << bad << " elements out of tolerance; first: " << first_bad.str();
  const double normwise = std::sqrt(err2 / std::max(ref2, 1e-300));
  EXPECT_LE(normwise, normwise_tolerance(c)) << "||out - ref|| / ||ref||";
  RecordProperty("normwise_error", std::to_string(normwise));
  std::printf("  %-44s normwise error %.3g, worst element at %.3g of its tolerance", c.name().c_str(), normwise, worst);
  if (gelu) std::printf(" (against erf GELU: %.3g)", std::sqrt(erf_err2 / std::max(ref2, 1e-300)));
  std::printf("\n");
}

std::vector<GemmCase> all_cases() {
  std::vector<GemmCase> cases;
  struct Type {
    DType dtype;
    bool tf32;
  };
  const Type types[] = {{DType::f32, false}, {DType::f32, true}, {DType::f16, false}, {DType::bf16, false}};
  // Awkward sizes, every transpose, every dtype.
  const int64_t sizes[][3] = {{1, 1, 1}, {1, 7, 13}, {5, 1, 9}, {127, 127, 127}, {33, 65, 129}};
  for (const Type& t : types)
    for (const auto& mnk : sizes)
      for (int tr = 0; tr < 4; ++tr) {
        GemmCase c;
        c.dtype = t.dtype, c.tf32 = t.tf32, c.m = mnk[0], c.n = mnk[1], c.k = mnk[2];
        c.trans_a = tr & 1, c.trans_b = tr & 2;
        cases.push_back(c);
      }
  // About 1000 (odd), one transpose pattern per dtype.
  for (int ti = 0; ti < 4; ++ti) {
    GemmCase c;
    c.dtype = types[ti].dtype, c.tf32 = types[ti].tf32, c.m = 1000, c.n = 1003, c.k = 999;
    c.trans_a = ti & 1, c.trans_b = ti & 2;
    cases.push_back(c);
  }
  // Every epilogue, as a linear layer (trans_b), every dtype (rows of a
  // multiple of 8 elements where the aux output needs it).
  const GemmEpilogue epilogues[] = {GemmEpilogue::bias,     GemmEpilogue::relu,          GemmEpilogue::relu_bias,
                                    GemmEpilogue::gelu,     GemmEpilogue::gelu_bias,     GemmEpilogue::gelu_aux,
                                    GemmEpilogue::gelu_aux_bias, GemmEpilogue::dgelu};
  for (const Type& t : types)
    for (GemmEpilogue e : epilogues) {
      if (epilogue_has_aux(e) && t.dtype == DType::f16) continue;  // refused (test_cuda_errors)
      GemmCase c;
      c.dtype = t.dtype, c.tf32 = t.tf32, c.m = 37, c.n = epilogue_has_aux(e) ? 56 : 61, c.k = 129, c.trans_b = true;
      c.epilogue = e;
      cases.push_back(c);
    }
  // Strided batches: packed, with transposes; broadcast weights with an epilogue.
  for (const Type& t : types)
    for (int tr : {0, 3}) {
      GemmCase c;
      c.dtype = t.dtype, c.tf32 = t.tf32, c.m = 17, c.n = 23, c.k = 31, c.batch = 3;
      c.trans_a = tr & 1, c.trans_b = tr & 2;
      cases.push_back(c);
    }
  for (DType d : {DType::f32, DType::bf16})
    for (GemmEpilogue e : {GemmEpilogue::gelu_bias, GemmEpilogue::gelu_aux_bias, GemmEpilogue::dgelu}) {
      GemmCase c;
      c.dtype = d, c.m = 19, c.n = 24, c.k = 40, c.batch = 4, c.stride_b = 0, c.trans_b = true;
      c.epilogue = e;
      cases.push_back(c);
    }
  {
    GemmCase c;
    c.m = 9, c.n = 8, c.k = 16, c.batch = 2, c.stride_a = 0;
    cases.push_back(c);
  }
  // alpha and beta: C = act(alpha * A @ B + beta * C + bias).
  for (DType d : {DType::f32, DType::f16}) {
    GemmCase c;
    c.dtype = d, c.m = 45, c.n = 30, c.k = 77, c.batch = 2, c.alpha = 0.5f, c.beta = 1.0f;
    cases.push_back(c);
  }
  {
    GemmCase c;
    c.m = 45, c.n = 30, c.k = 77, c.trans_b = true, c.alpha = 2.0f, c.beta = -0.75f;
    c.epilogue = GemmEpilogue::relu_bias;
    cases.push_back(c);
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaGemm, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<GemmCase>& info) { return info.param.name(); });

// One plan per distinct problem: the heuristic runs once, repeats reuse it.
TEST(CudaGemmPlans, CachedPerShapeDtypeAndEpilogue) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  CublasLtGemm gemm(stream, size_t{4} << 20);
  DeviceArena arena(size_t{1} << 20, "plans");
  void* a = arena.at(0, 64 * 64 * 4);
  void* b = arena.at(64 * 64 * 4, 64 * 64 * 4);
  void* c = arena.at(2 * 64 * 64 * 4, 64 * 64 * 4);
  void* bias = arena.at(3 * 64 * 64 * 4, 64 * 4);
  testing::fill_bytes(arena.base(), 0, arena.size());
  EXPECT_EQ(gemm.cached_plans(), 0u);
  const GemmShape s1 = GemmShape::matmul(DType::f32, 1, 64, 64, 64);
  gemm.run(s1, {a, b, c});
  gemm.run(s1, {a, b, c});
  EXPECT_EQ(gemm.cached_plans(), 1u);
  gemm.run(GemmShape::matmul(DType::bf16, 1, 64, 64, 64), {a, b, c});
  EXPECT_EQ(gemm.cached_plans(), 2u);
  gemm.run(GemmShape::linear(DType::f32, 64, 64, 64, GemmEpilogue::relu_bias), {a, b, c, bias});
  gemm.run(GemmShape::linear(DType::f32, 64, 64, 64, GemmEpilogue::relu_bias), {a, b, c, bias});
  EXPECT_EQ(gemm.cached_plans(), 3u);
  gemm.run(GemmShape::matmul(DType::f32, 1, 32, 64, 64), {a, b, c});
  EXPECT_EQ(gemm.cached_plans(), 4u);
  stream.synchronize("plans test");
}

// The workspace can come from the arena instead of a cudaMalloc of its own.
TEST(CudaGemmPlans, WorkspaceFromArena) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  DeviceArena arena(size_t{9} << 20, "workspace");
  const size_t ws = arena.reserve(size_t{8} << 20, "cuBLASLt workspace");
  CublasLtGemm gemm(stream, arena.at(ws, size_t{8} << 20), size_t{8} << 20);
  EXPECT_EQ(gemm.workspace_bytes(), size_t{8} << 20);
  const size_t n = 96;
  std::vector<double> ones(n * n, 1.0);
  void* a = arena.at(arena.reserve(n * n * 2, "A"), n * n * 2);
  void* c = arena.at(arena.reserve(n * n * 2, "C"), n * n * 2);
  testing::upload(a, to_bytes(ones, DType::bf16));
  gemm.run(GemmShape::matmul(DType::bf16, 1, n, n, n), {a, a, c});
  stream.synchronize("workspace test");
  for (double v : from_bytes(download(c, n * n * 2), DType::bf16)) ASSERT_EQ(v, static_cast<double>(n));
}

// A plan step on arena offsets computes exactly what run() does on the same pointers.
TEST(CudaGemmStep, ArenaOffsetsGiveTheSameBitsAsPointers) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  CublasLtGemm gemm(stream, size_t{4} << 20);
  DeviceArena arena(size_t{1} << 20, "step arena");
  GemmStep step;
  step.name = "step 3 (linear fc1)";
  step.shape = GemmShape::linear(DType::bf16, 70, 96, 130, GemmEpilogue::gelu_bias);
  const GemmShape& s = step.shape;
  step.a = arena.reserve(s.a_bytes(), "x");
  step.b = arena.reserve(s.b_bytes(), "W");
  step.bias = arena.reserve(130 * 2, "b");
  step.c = arena.reserve(s.c_bytes(), "y");
  const size_t c_direct = arena.reserve(s.c_bytes(), "y direct");
  std::mt19937 rng(std::random_device{}());
  upload(arena.at(step.a, s.a_bytes()), to_bytes(random_values(70 * 96, DType::bf16, rng), DType::bf16));
  upload(arena.at(step.b, s.b_bytes()), to_bytes(random_values(130 * 96, DType::bf16, rng), DType::bf16));
  upload(arena.at(step.bias, 130 * 2), to_bytes(random_values(130, DType::bf16, rng), DType::bf16));
  testing::fill_bytes(arena.at(step.c, s.c_bytes()), 0xFF, s.c_bytes());
  testing::fill_bytes(arena.at(c_direct, s.c_bytes()), 0xFF, s.c_bytes());

  run_gemm_step(gemm, arena, step);
  gemm.run(s, {arena.at(step.a, 1), arena.at(step.b, 1), arena.at(c_direct, 1), arena.at(step.bias, 1)});
  stream.synchronize("gemm step test");
  const std::vector<uint8_t> via_step = download(arena.at(step.c, s.c_bytes()), s.c_bytes());
  EXPECT_EQ(via_step, download(arena.at(c_direct, s.c_bytes()), s.c_bytes()));
  size_t unwritten = 0;
  for (size_t i = 0; i + 1 < via_step.size(); i += 2) unwritten += via_step[i] == 0xFF && via_step[i + 1] == 0xFF;
  EXPECT_EQ(unwritten, 0u);
}

// relu_aux_bias then drelu, as a linear + ReLU and its gradient: C1 =
// relu(x W^T + b) and a bit-mask; C2 = (g V^T) where the mask is set, else
// 0. Rows of x that are zero with a zero bias give pre-activations of
// exactly 0: cuBLASLt sets their bits (seen on an H200, CUDA 13.0), so its
// ReLU gradient at 0 is 1, where tessera's relu'(0) is 0 (why plans do not
// use these epilogues: library_gemm.h). The mask takes m * n / 8 bytes: a
// guard after it stays untouched. Pre-activations within rounding of 0
// (other than the exact zeros) are skipped.
TEST(CudaGemm, ReluBitMaskAndItsGradient) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  CublasLtGemm gemm(stream);
  std::mt19937 rng(std::random_device{}());
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dt == DType::f32 ? "f32" : dt == DType::bf16 ? "bf16" : "f16");
    const int64_t m = 37, n = 256, k = 45, k2 = 19;
    const size_t es = dt == DType::f32 ? 4 : 2, mask_bytes = m * n / 8, guard = 64;
    std::vector<double> x = random_values(m * k, dt, rng), w = random_values(n * k, dt, rng),
                        b = random_values(n, dt, rng), g = random_values(m * k2, dt, rng),
                        v = random_values(n * k2, dt, rng);
    for (int64_t i = 0; i < m; i += 5)
      for (int64_t j = 0; j < k; ++j) x[i * k + j] = 0;  // these rows' pre-activations are the bias
    for (int64_t j = 0; j < n; j += 3) b[j] = 0;         // ... which is 0 in every third column
    DeviceArena arena(size_t{1} << 20, "relu mask test");
    auto put = [&](const std::vector<double>& h) {
      void* p = arena.at(arena.reserve(h.size() * es, "operand"), h.size() * es);
      upload(p, to_bytes(h, dt));
      return p;
    };
    void *xd = put(x), *wd = put(w), *bd = put(b), *gd = put(g), *vd = put(v);
    void* c1 = arena.at(arena.reserve(m * n * es, "C1"), m * n * es);
    void* c2 = arena.at(arena.reserve(m * n * es, "C2"), m * n * es);
    void* mask = arena.at(arena.reserve(mask_bytes + guard, "mask"), mask_bytes + guard);
    testing::fill_bytes(mask, 0xA5, mask_bytes + guard);
    gemm.run(GemmShape::linear(dt, m, k, n, GemmEpilogue::relu_aux_bias), {xd, wd, c1, bd, mask});
    GemmShape back = GemmShape::linear(dt, m, k2, n, GemmEpilogue::drelu);
    gemm.run(back, {gd, vd, c2, nullptr, mask});
    stream.synchronize("relu mask test");
    const std::vector<double> got1 = from_bytes(download(c1, m * n * es), dt),
                              got2 = from_bytes(download(c2, m * n * es), dt);
    const std::vector<uint8_t> after = download(static_cast<char*>(mask) + mask_bytes, guard);
    EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](uint8_t c) { return c == 0xA5; })) << "mask overran";
    const double tol = dt == DType::f32 ? 1e-5 : dt == DType::bf16 ? 2e-2 : 3e-3;
    int bad = 0;
    for (int64_t i = 0; i < m && bad < 5; ++i)
      for (int64_t j = 0; j < n && bad < 5; ++j) {
        double pre = b[j], prod = 0, scale = std::abs(b[j]), scale2 = 0;
        for (int64_t t = 0; t < k; ++t) {
          pre += x[i * k + t] * w[j * k + t];
          scale += std::abs(x[i * k + t] * w[j * k + t]);
        }
        for (int64_t t = 0; t < k2; ++t) {
          prod += g[i * k2 + t] * v[j * k2 + t];
          scale2 += std::abs(g[i * k2 + t] * v[j * k2 + t]);
        }
        if (std::abs(pre) <= tol * scale && pre != 0) continue;  // within rounding of 0: either side is right
        const double want1 = std::max(pre, 0.0), want2 = pre >= 0 ? prod : 0.0;
        if (std::abs(got1[i * n + j] - want1) > tol * (scale + 1e-30) + 1e-30 ||
            std::abs(got2[i * n + j] - want2) > tol * (scale2 + 1e-30) + 1e-30) {
          ADD_FAILURE() << "element (" << i << ", " << j << "): pre-activation " << pre << " -> " << got1[i * n + j]
                        << ", gradient " << want2 << " -> " << got2[i * n + j];
          ++bad;
        }
      }
  }
  // A mask needs rows of a multiple of 128 bits and one batch.
  GemmShape odd = GemmShape::linear(DType::f32, 8, 16, 96, GemmEpilogue::relu_aux);
  EXPECT_THROW(odd.validate(), Error);
  GemmShape batched = GemmShape::matmul(DType::f32, 2, 8, 16, 128);
  batched.epilogue = GemmEpilogue::drelu;
  EXPECT_THROW(batched.validate(), Error);
}

// The algorithm each problem's first call chooses by timing is kept for the
// process: a second CublasLtGemm computes the same bits, and so do repeated
// runs (no candidate may sum in a run-dependent order). Problems where
// cuBLASLt splits k (small m and n, long k), and GPT-2-like products.
TEST(CudaGemmPlans, TunedAlgorithmsRepeatBitwise) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  std::mt19937 rng(std::random_device{}());
  for (DType dt : {DType::bf16, DType::f32})
    for (const GemmShape& base : {GemmShape::matmul(dt, 1, 64, 8192, 64), GemmShape::matmul(dt, 1, 96, 4099, 33),
                                  GemmShape::linear(dt, 2048, 768, 2304, GemmEpilogue::none),
                                  GemmShape::matmul(dt, 1, 768, 2048, 768)}) {
      const GemmShape& s = base;
      SCOPED_TRACE(s.describe());
      const size_t esize = dt == DType::f32 ? 4 : 2;
      DeviceArena arena(s.a_bytes() + s.b_bytes() + 2 * s.c_bytes() + 4096, "tuned gemm test");
      void* a = arena.at(arena.reserve(s.a_bytes(), "A"), s.a_bytes());
      void* b = arena.at(arena.reserve(s.b_bytes(), "B"), s.b_bytes());
      void* c1 = arena.at(arena.reserve(s.c_bytes(), "C"), s.c_bytes());
      void* c2 = arena.at(arena.reserve(s.c_bytes(), "C again"), s.c_bytes());
      upload(a, to_bytes(random_values(s.a_bytes() / esize, dt, rng), dt));
      upload(b, to_bytes(random_values(s.b_bytes() / esize, dt, rng), dt));
      CublasLtGemm first(stream), second(stream);
      first.run(s, {a, b, c1});
      const std::vector<uint8_t> want = (stream.synchronize("tuned gemm test"), download(c1, s.c_bytes()));
      for (CublasLtGemm* g : {&second, &first, &second}) {
        testing::fill_bytes(c2, 0xFF, s.c_bytes());
        g->run(s, {a, b, c2});
        stream.synchronize("tuned gemm test");
        EXPECT_TRUE(download(c2, s.c_bytes()) == want) << (g == &first ? "first" : "second") << " CublasLtGemm";
      }
    }
}

// The step's name, the operand and its bytes are named; nothing is queued.
TEST(CudaGemmStep, OperandsOutsideTheArenaAreNamed) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  CublasLtGemm gemm(stream, size_t{1} << 20);
  DeviceArena arena(8192, "small arena");
  GemmStep step;
  step.name = "step 9 (matmul attn)";
  step.shape = GemmShape::matmul(DType::f32, 1, 16, 16, 16);  // 1024 bytes each
  step.a = 0, step.b = 1024, step.c = 7680;
  std::string e;
  try {
    run_gemm_step(gemm, arena, step);
  } catch (const Error& err) {
    e = err.what();
  }
  for (const char* part : {"step 9 (matmul attn)", "operand C", "[7680, 8704)", "8192 bytes"})
    EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;

  step.c = 2048;
  step.shape.epilogue = GemmEpilogue::bias;
  step.bias = 4000;  // not a multiple of 64
  e.clear();
  try {
    run_gemm_step(gemm, arena, step);
  } catch (const Error& err) {
    e = err.what();
  }
  for (const char* part : {"step 9 (matmul attn)", "operand bias", "offset 4000"})
    EXPECT_NE(e.find(part), std::string::npos) << "'" << part << "' not in: " << e;

  step.bias = GemmStep::kNoBias;
  e.clear();
  try {
    run_gemm_step(gemm, arena, step);
  } catch (const Error& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("step 9 (matmul attn): CublasLtGemm: gemm f32"), std::string::npos) << e;
  EXPECT_NE(e.find("needs a bias pointer"), std::string::npos) << e;
  EXPECT_EQ(gemm.cached_plans(), 0u);
}

}  // namespace
}  // namespace tessera::cuda
