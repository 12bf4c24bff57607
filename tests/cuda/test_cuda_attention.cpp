// The fused attention kernels (tessera/cuda/attention.h) against a
// double-precision CPU computation of attention and its gradient, written
// here from the definitions: random q, k, v and cotangent at awkward sizes
// (seq 1, odd, 64 +- 1, 200; dim 1, odd, 16, 64), causal or not, full f32
// (tight tolerance), TF32 and bf16 tensors (loose; the reference reads the
// same bf16-rounded inputs), and bf16 at the head dims of the tensor-core
// kernels over several tiles. Every output element is poisoned with
// NaN first, so each must be written. The backward runs twice: computing
// the row logsumexp itself, and reusing the one the forward wrote (the two
// agree to 1e-5). Strided layouts (AttentionLayout, GPT's: q, k, v read
// in place from one projection) give bitwise the results of the same values
// packed densely. Also: unsupported shapes and layouts are Errors naming the
// shape (and layout). Label gpu; skips without a CUDA device (the layout
// errors need none). The bf16 backward repeats bitwise. Times nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "cuda_test_util.h"
#include "tessera/cuda/attention.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::from_bytes;
using testing::random_values;
using testing::to_bytes;
using testing::upload;

// dtype f32 (with or without tf32) or bf16.
void check_case(const Case& c, DType dtype, bool tf32, std::mt19937& rng) {
  SCOPED_TRACE("batch " + std::to_string(c.batch) + " seq " + std::to_string(c.seq) + " dim " +
               std::to_string(c.dim) + (c.causal ? " causal" : "") + (dtype == DType::bf16 ? " bf16" : tf32 ? " tf32" : " f32"));
  const size_t n = static_cast<size_t>(c.batch * c.seq * c.dim), bytes = n * (dtype == DType::f32 ? 4 : 2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim)) * 1.7;
  std::vector<double> q = random_values(n, dtype, rng, -2, 2), k = random_values(n, dtype, rng, -2, 2),
                      v = random_values(n, dtype, rng), g = random_values(n, dtype, rng);
  const Reference want = reference(c, scale, q, k, v, g);
  AttentionShape s;
  s.batch = c.batch;
  s.seq = c.seq;
  s.dim = c.dim;
  s.causal = c.causal;
  s.scale = static_cast<float>(scale);
  s.dtype = dtype;
  const size_t scratch_bytes = attention_backward_scratch_bytes(s);
  const size_t lse_bytes = static_cast<size_t>(c.batch * c.seq) * 4;
  DeviceArena arena(13 * (bytes + DeviceArena::kDefaultAlignment) + scratch_bytes + lse_bytes, "attention test");
  auto take = [&](size_t b) { return static_cast<char*>(arena.at(arena.reserve(b, "tensor"), b)); };
  char *dq_ = take(4 * bytes), *dk_ = dq_ + bytes, *dv_ = dk_ + bytes, *out_ = dv_ + bytes;  // adjacent: one NaN fill
  char *q_ = take(bytes), *k_ = take(bytes), *v_ = take(bytes), *g_ = take(bytes);
  float* scratch = reinterpret_cast<float*>(take(scratch_bytes));
  float* lse = reinterpret_cast<float*>(take(lse_bytes));
  char* reused = take(3 * bytes);  // dq, dk, dv from the forward's logsumexp
  upload(q_, to_bytes(q, dtype));
  upload(k_, to_bytes(k, dtype));
  upload(v_, to_bytes(v, dtype));
  upload(g_, to_bytes(g, dtype));
  testing::fill_bytes(dq_, 0xff, 4 * bytes);  // NaN in dq, dk, dv and out
  DeviceStream stream(0);
  attention_forward(s, q_, k_, v_, out_, lse, tf32, stream.stream());
  attention_backward(s, q_, k_, v_, out_, g_, dq_, dk_, dv_, scratch, nullptr, tf32, stream.stream());
  attention_backward(s, q_, k_, v_, out_, g_, reused, reused + bytes, reused + 2 * bytes, scratch, lse, tf32,
                     stream.stream());
  stream.synchronize("attention test");
  for (int w = 0; w < 3; ++w) {
    const std::vector<double> own = from_bytes(download(dq_ + w * bytes, bytes), dtype);
    // TF32 and bf16 products round the scores, so the two logsumexps differ in their last bits.
    EXPECT_LT(error_of(from_bytes(download(reused + w * bytes, bytes), dtype), own),
              dtype == DType::bf16 ? 8e-3 : tf32 ? 1e-3 : 1e-5)
        << "gradient " << w << " with the forward's logsumexp";
  }
  const double tol = tf32 || dtype == DType::bf16 ? 2e-2 : 2e-5;
  EXPECT_LT(error_of(from_bytes(download(out_, bytes), dtype), want.out), tol) << "out";
  EXPECT_LT(error_of(from_bytes(download(dq_, bytes), dtype), want.dq), tol) << "dq";
  EXPECT_LT(error_of(from_bytes(download(dk_, bytes), dtype), want.dk), tol) << "dk";
  EXPECT_LT(error_of(from_bytes(download(dv_, bytes), dtype), want.dv), tol) << "dv";
}

const std::vector<Case> kCases = {{1, 1, 1, true},    {2, 7, 5, true},    {1, 64, 16, true},  {3, 65, 33, false},
                                  {2, 63, 64, true},  {1, 200, 64, true}, {2, 130, 8, false}, {1, 129, 48, true}};

TEST(CudaAttention, F32MatchesDoubleReference) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (const Case& c : kCases) check_case(c, DType::f32, false, rng);
}

TEST(CudaAttention, Tf32MatchesDoubleReference) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (const Case& c : kCases) check_case(c, DType::f32, true, rng);
}

TEST(CudaAttention, Bf16MatchesDoubleReference) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  for (const Case& c : kCases) check_case(c, DType::bf16, false, rng);
}

// bf16 at head dims 16, 32 and 64 takes the tensor-core kernels
// (attention_mma.cu): awkward sequence lengths around their 64-row tiles,
// several tiles (the double-buffered loads), causal or not.
TEST(CudaAttention, Bf16TensorCoreKernelsMatchDoubleReference) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  const std::vector<Case> cases = {{1, 1, 16, true},   {2, 7, 32, false}, {1, 64, 64, true},  {2, 65, 64, true},
                                   {1, 127, 16, true}, {3, 200, 32, true}, {1, 257, 64, false}, {2, 320, 64, true}};
  for (const Case& c : cases) check_case(c, DType::bf16, false, rng);
}

TEST(CudaAttention, OnlySomeGradients) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  // dk alone (no dq, no dv) equals, bit for bit, the dk of the full backward.
  AttentionShape s{2, 70, 12, true, 0.5f};
  const size_t bytes = 2 * 70 * 12 * 4;
  DeviceArena arena(20 * bytes + attention_backward_scratch_bytes(s), "attention test");
  std::vector<float*> t;
  for (int i = 0; i < 9; ++i) t.push_back(static_cast<float*>(arena.at(arena.reserve(bytes, "tensor"), bytes)));
  float* scratch = static_cast<float*>(arena.at(arena.reserve(attention_backward_scratch_bytes(s), "scratch"),
                                                attention_backward_scratch_bytes(s)));
  std::mt19937 rng(std::random_device{}());
  for (int i = 0; i < 5; ++i) upload(t[i], to_bytes(random_values(bytes / 4, DType::f32, rng), DType::f32));
  DeviceStream stream(0);
  attention_forward(s, t[0], t[1], t[2], t[3], nullptr, false, stream.stream());
  attention_backward(s, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], scratch, nullptr, false, stream.stream());
  attention_backward(s, t[0], t[1], t[2], t[3], t[4], nullptr, t[8], nullptr, scratch, nullptr, false,
                     stream.stream());
  stream.synchronize("attention test");
  EXPECT_EQ(download(t[8], bytes), download(t[6], bytes));
}

// The bf16 backward (no atomics) gives bitwise the same dq, dk and dv on
// every run at GPT-2 small's attention shape (8 x 12 heads, seq 1024, dim
// 64, causal: thousands of blocks), and dq alone (no dk, dv) or dk alone
// equals what the full backward gives.
TEST(CudaAttention, Bf16CausalBackwardIsBitwiseRepeatable) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  const AttentionShape s{96, 1024, 64, true, 0.125f, DType::bf16};
  const size_t bytes = static_cast<size_t>(s.batch * s.seq * s.dim) * 2;
  const size_t scratch_bytes = attention_backward_scratch_bytes(s);
  DeviceArena arena(12 * (bytes + DeviceArena::kDefaultAlignment) + scratch_bytes, "attention test");
  auto take = [&](size_t b) { return static_cast<char*>(arena.at(arena.reserve(b, "tensor"), b)); };
  float* scratch = reinterpret_cast<float*>(take(scratch_bytes));
  char *q = take(bytes), *k = take(bytes), *v = take(bytes), *g = take(bytes), *out = take(bytes);
  char *first = take(3 * bytes), *again = take(3 * bytes), *one = take(bytes);
  std::mt19937 rng(std::random_device{}());
  for (char* x : {q, k, v, g}) upload(x, to_bytes(random_values(bytes / 2, DType::bf16, rng, -2, 2), DType::bf16));
  DeviceStream stream(0);
  attention_forward(s, q, k, v, out, nullptr, false, stream.stream());
  attention_backward(s, q, k, v, out, g, first, first + bytes, first + 2 * bytes, scratch, nullptr, false,
                     stream.stream());
  const std::vector<uint8_t> want = download(first, 3 * bytes);
  for (int run = 0; run < 4; ++run) {
    testing::fill_bytes(again, 0xff, 3 * bytes);
    attention_backward(s, q, k, v, out, g, again, again + bytes, again + 2 * bytes, scratch, nullptr, false,
                       stream.stream());
    stream.synchronize("attention test");
    EXPECT_TRUE(download(again, 3 * bytes) == want) << "run " << run + 2;
  }
  for (int alone = 0; alone < 2; ++alone) {
    testing::fill_bytes(one, 0xff, bytes);
    attention_backward(s, q, k, v, out, g, alone ? nullptr : one, alone ? one : nullptr, nullptr, scratch, nullptr,
                       false, stream.stream());
    stream.synchronize("attention test");
    EXPECT_TRUE(download(one, bytes) == download(first + (alone ? bytes : 0), bytes)) << (alone ? "dk" : "dq")
                                                                                       << " alone";
  }
}

TEST(CudaAttention, UnsupportedShapesAreErrors) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  EXPECT_FALSE(fused_attention_supports(65, 65));
  EXPECT_FALSE(fused_attention_supports(32, 16));
  EXPECT_TRUE(fused_attention_supports(64, 64));
  AttentionShape s{2, 8, 80, false, 0.1f};
  try {
    attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr, false, nullptr);
    ADD_FAILURE() << "dim 80 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2 x 8 x 80]"), std::string::npos) << e.what();
  }
  s.dim = 16;
  s.dtype = DType::f16;
  try {
    attention_forward(s, nullptr, nullptr, nullptr, nullptr, nullptr, false, nullptr);
    ADD_FAILURE() << "f16 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f16 [2 x 8 x 16]"), std::string::npos) << e.what();
  }
}

// GPT's layout, B outer batches of H heads: q, k and v read in place from
// one [B, T, 3 x H x D] projection, out and grad [B, T, H x D], dq, dk and dv
// written in place into one [B, T, 3 x H x D] buffer (poisoned with NaN
// first: every element must be written). Forward and backward give bitwise
// what they give for the same values packed densely (no layout).
TEST(CudaAttention, Bf16StridedLayoutsEqualDense) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  const int64_t B = 2, H = 3;
  for (int64_t D : {16, 32, 64})
    for (int64_t T : {70, 129})
      for (bool causal : {true, false}) {
        SCOPED_TRACE("dim " + std::to_string(D) + " seq " + std::to_string(T) + (causal ? " causal" : ""));
        const int64_t C = H * D, n = B * H * T * D;  // C: a row's width per tensor
        const size_t bytes = static_cast<size_t>(n) * 2, lse_bytes = static_cast<size_t>(B * H * T) * 4;
        AttentionShape s{B * H, T, D, causal, 0.3f, DType::bf16};
        AttentionLayout layout;
        layout.heads = H;
        layout.q = layout.k = layout.v = layout.dq = layout.dk = layout.dv = {T * 3 * C, D, 3 * C};
        layout.out = layout.grad = {T * C, D, C};
        const size_t scratch_bytes = attention_backward_scratch_bytes(s);
        DeviceArena arena(18 * (bytes + DeviceArena::kDefaultAlignment) + 2 * (lse_bytes + scratch_bytes),
                          "attention test");
        auto take = [&](size_t b) { return static_cast<char*>(arena.at(arena.reserve(b, "tensor"), b)); };
        // Dense: q, k, v, grad, then out, dq, dk, dv (adjacent: one NaN fill).
        char *q = take(4 * bytes), *k = q + bytes, *v = k + bytes, *g = v + bytes;
        char *out = take(4 * bytes), *dq = out + bytes, *dk = dq + bytes, *dv = dk + bytes;
        // Strided: the projection qkv and grad, then out and dqkv (adjacent).
        char *qkv = take(3 * bytes), *g_s = take(bytes), *out_s = take(4 * bytes), *dqkv = out_s + bytes;
        float *lse = reinterpret_cast<float*>(take(lse_bytes)), *lse_s = reinterpret_cast<float*>(take(lse_bytes));
        float *scratch = reinterpret_cast<float*>(take(scratch_bytes)),
              *scratch_s = reinterpret_cast<float*>(take(scratch_bytes));

        std::vector<uint16_t> values[4], packed(3 * n);
        for (auto& x : values) x = as_u16(to_bytes(random_values(n, DType::bf16, rng, -2, 2), DType::bf16));
        for (int i = 0; i < 3; ++i) scatter_heads(values[i], packed, B, H, T, D, 3 * C, i * C);
        std::vector<uint16_t> grad_s(n);
        scatter_heads(values[3], grad_s, B, H, T, D, C, 0);
        for (int i = 0; i < 4; ++i) upload(q + i * bytes, as_bytes(values[i]));
        upload(qkv, as_bytes(packed));
        upload(g_s, as_bytes(grad_s));
        testing::fill_bytes(out, 0xff, 4 * bytes);    // NaN in out, dq, dk, dv
        testing::fill_bytes(out_s, 0xff, 4 * bytes);  // NaN in out_s and dqkv

        DeviceStream stream(0);
        const int64_t at = 2 * C;  // bytes: C bf16 elements, where k's (dk's) columns start after q's (dq's)
        attention_forward(s, q, k, v, out, lse, false, stream.stream());
        attention_backward(s, q, k, v, out, g, dq, dk, dv, scratch, nullptr, false, stream.stream());
        attention_forward(s, qkv, qkv + at, qkv + 2 * at, out_s, lse_s, false, stream.stream(), &layout);
        attention_backward(s, qkv, qkv + at, qkv + 2 * at, out_s, g_s, dqkv, dqkv + at, dqkv + 2 * at, scratch_s,
                           nullptr, false, stream.stream(), &layout);
        stream.synchronize("attention test");

        // The dense results, scattered as the strided ones must lie.
        std::vector<uint16_t> want_out(n), want_dqkv(3 * n);
        scatter_heads(as_u16(download(out, bytes)), want_out, B, H, T, D, C, 0);
        for (int i = 0; i < 3; ++i)
          scatter_heads(as_u16(download(dq + i * bytes, bytes)), want_dqkv, B, H, T, D, 3 * C, i * C);
        for (uint16_t x : want_dqkv) ASSERT_NE(x & 0x7fff, 0x7fff) << "dense gradient not written";
        EXPECT_TRUE(as_u16(download(out_s, bytes)) == want_out) << "out";
        const std::vector<uint16_t> got_dqkv = as_u16(download(dqkv, 3 * bytes));
        for (int64_t i = 0; i < 3 * n; ++i)
          if (got_dqkv[i] != want_dqkv[i]) {
            const int64_t col = i % (3 * C);
            ADD_FAILURE() << "d" << "qkv"[col / C] << " differs: batch " << i / (3 * C * T) << " row "
                          << i / (3 * C) % T << " head " << col % C / D << " column " << col % D;
            break;
          }
        EXPECT_EQ(download(lse_s, lse_bytes), download(lse, lse_bytes)) << "logsumexp";
      }
}

// The layout errors: checked before any kernel runs (no device needed).
TEST(CudaAttention, LayoutErrors) {
  const int64_t T = 70, D = 32, H = 3, C = H * D;
  AttentionLayout layout;
  layout.heads = H;
  layout.q = layout.k = layout.v = {T * 3 * C, D, 3 * C};
  AttentionShape s{2 * H, T, D, true, 0.2f, DType::f32};
  auto message_of = [&](const void* data) -> std::string {
    try {
      attention_forward(s, data, data, data, const_cast<void*>(data), nullptr, false, nullptr, &layout);
    } catch (const Error& e) {
      return e.what();
    }
    return "accepted";
  };
  // f32: the f32/TF32 kernels take the dense layout only.
  std::string e = message_of(nullptr);
  EXPECT_NE(e.find("dense tensors only"), std::string::npos) << e;
  EXPECT_NE(e.find("f32 [6 x 70 x 32]"), std::string::npos) << e;
  EXPECT_NE(e.find("3 heads; q [20160, 32, 288]"), std::string::npos) << e;
  // bf16 with a row stride that is not a multiple of 8 elements (never
  // dereferenced: the tensor-core kernels refuse it, the others throw).
  s.dtype = DType::bf16;
  layout.k.row = 3 * C + 4;
  alignas(16) static const uint16_t tensor[8] = {};
  e = message_of(tensor);
  EXPECT_NE(e.find("dense tensors only"), std::string::npos) << e;
  // heads that do not divide the batch.
  layout.k.row = 3 * C;
  s.batch = 4;
  e = message_of(nullptr);
  EXPECT_NE(e.find("heads must be >= 1 and divide the batch"), std::string::npos) << e;
  EXPECT_NE(e.find("[4 x 70 x 32]"), std::string::npos) << e;
  EXPECT_NE(e.find("3 heads"), std::string::npos) << e;
  layout.heads = 0;
  s.batch = 6;
  EXPECT_NE(message_of(nullptr).find("heads must be >= 1"), std::string::npos);
  // A dense layout spelled out is the dense layout.
  AttentionLayout dense;
  dense.heads = H;
  dense.q = {H * T * D, T * D, D};
  EXPECT_TRUE(dense.dense(s));
  EXPECT_EQ(dense.of({}, s), dense.q);
  EXPECT_FALSE(layout.dense(s));
}

}  // namespace
}  // namespace tessera::cuda
