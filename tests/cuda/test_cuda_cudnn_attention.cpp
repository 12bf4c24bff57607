// CudnnAttention (tessera/cuda/cudnn_attention.h) against the test's double
// reference (attention_reference.h): bf16 q, k, v and cotangent at awkward
// sizes (seq 1, odd, around 64 and 128; head dims 8 to 128), causal or not,
// dense and in GPT's in-place layout; out, the logsumexp and all three
// gradients, each output poisoned with NaN first so every element must be
// written. Also: tessera's backward reading cuDNN's logsumexp (the executor
// may pair them), the forward without a logsumexp, a CUDA Graph capture of
// forward and backward replaying the direct results, and the shapes and
// pointers it refuses (with a reason, queuing nothing). Label gpu; skips
// without a CUDA device or without libcudnn.so.9, saying which. Times nothing.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "cuda_test_util.h"
#include "tessera/cuda/cudnn_attention.h"
#include "tessera/cuda/device_arena.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::from_bytes;
using testing::random_values;
using testing::to_bytes;
using testing::upload;

#define SKIP_WITHOUT_CUDNN(cudnn, stream)                                             \
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();                                                 \
  DeviceStream stream(0);                                                             \
  std::string cudnn_why;                                                              \
  std::unique_ptr<CudnnAttention> cudnn = CudnnAttention::create(stream, &cudnn_why); \
  if (!cudnn) GTEST_SKIP() << "cuDNN unavailable: " << cudnn_why

AttentionShape shape_of(const Case& c, double scale) {
  return {c.batch, c.seq, c.dim, c.causal, static_cast<float>(scale), DType::bf16};
}

// Pointers into one arena, 64-byte aligned.
struct Buffers {
  explicit Buffers(size_t bytes) : arena(bytes, "cuDNN attention test") {}
  char* take(size_t b) { return static_cast<char*>(arena.at(arena.reserve(b, "tensor"), b)); }
  DeviceArena arena;
};

std::vector<double> floats(const void* p, size_t n) {
  return from_bytes(download(p, n * 4), DType::f32);
}

TEST(CudnnAttention, Bf16MatchesDoubleReference) {
  SKIP_WITHOUT_CUDNN(cudnn, stream);
  std::mt19937 rng(std::random_device{}());
  const std::vector<Case> cases = {{1, 1, 64, true},    {2, 7, 32, false},   {3, 65, 64, true}, {1, 200, 128, true},
                                   {2, 130, 16, false}, {1, 257, 64, false}, {2, 129, 8, true}, {1, 64, 40, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE("batch " + std::to_string(c.batch) + " seq " + std::to_string(c.seq) + " dim " +
                 std::to_string(c.dim) + (c.causal ? " causal" : ""));
    const size_t n = static_cast<size_t>(c.batch * c.seq * c.dim), bytes = n * 2, rows = c.batch * c.seq;
    const double scale = 1.3 / std::sqrt(static_cast<double>(c.dim));
    std::vector<double> q = random_values(n, DType::bf16, rng, -2, 2), k = random_values(n, DType::bf16, rng, -2, 2),
                        v = random_values(n, DType::bf16, rng), g = random_values(n, DType::bf16, rng);
    const Reference want = reference(c, scale, q, k, v, g);
    const AttentionShape s = shape_of(c, scale);
    const AttentionLayout dense;
    Buffers b(20 * (bytes + 64) + 4 * rows * 4 + attention_backward_scratch_bytes(s));
    char *out = b.take(4 * bytes), *dq = out + bytes, *dk = dq + bytes, *dv = dk + bytes;
    char *q_ = b.take(bytes), *k_ = b.take(bytes), *v_ = b.take(bytes), *g_ = b.take(bytes);
    char *out_plain = b.take(bytes), *own = b.take(3 * bytes);
    float* lse = reinterpret_cast<float*>(b.take(rows * 4));
    float* scratch = reinterpret_cast<float*>(b.take(attention_backward_scratch_bytes(s)));
    upload(q_, to_bytes(q, DType::bf16));
    upload(k_, to_bytes(k, DType::bf16));
    upload(v_, to_bytes(v, DType::bf16));
    upload(g_, to_bytes(g, DType::bf16));
    testing::fill_bytes(out, 0xff, 4 * bytes);  // NaN in out, dq, dk, dv
    testing::fill_bytes(lse, 0xff, rows * 4);
    ASSERT_TRUE(cudnn->forward(s, dense, q_, k_, v_, out, lse));
    ASSERT_TRUE(cudnn->backward(s, dense, q_, k_, v_, out, g_, dq, dk, dv, lse));
    std::string why;
    ASSERT_TRUE(cudnn->prepare(CudnnAttention::Pass::forward, s, dense, &why)) << why;
    ASSERT_TRUE(cudnn->forward(s, dense, q_, k_, v_, out_plain, nullptr));
    // tessera's backward (head dims up to 64) from cuDNN's out and logsumexp.
    const bool own_kernels = fused_attention_supports(c.dim, c.dim);
    if (own_kernels)
      attention_backward(s, q_, k_, v_, out, g_, own, own + bytes, own + 2 * bytes, scratch, lse, false,
                         stream.stream());
    stream.synchronize("cuDNN attention test");
    EXPECT_LT(error_of(floats(lse, rows), want.lse), 1e-4) << "logsumexp";
    const double tol = 2e-2;
    EXPECT_LT(error_of(from_bytes(download(out, bytes), DType::bf16), want.out), tol) << "out";
    EXPECT_LT(error_of(from_bytes(download(out_plain, bytes), DType::bf16), want.out), tol) << "out without lse";
    EXPECT_LT(error_of(from_bytes(download(dq, bytes), DType::bf16), want.dq), tol) << "dq";
    EXPECT_LT(error_of(from_bytes(download(dk, bytes), DType::bf16), want.dk), tol) << "dk";
    EXPECT_LT(error_of(from_bytes(download(dv, bytes), DType::bf16), want.dv), tol) << "dv";
    if (own_kernels) {
      EXPECT_LT(error_of(from_bytes(download(own, bytes), DType::bf16), want.dq), tol) << "tessera's dq";
      EXPECT_LT(error_of(from_bytes(download(own + 2 * bytes, bytes), DType::bf16), want.dv), tol) << "tessera's dv";
    }
  }
  EXPECT_GT(cudnn->cached_plans(), 0u);
}

// GPT's layout: q, k and v read in place from one [B, T, 3 x H x D]
// projection, out and grad [B, T, H x D], dq, dk and dv written in place
// into one [B, T, 3 x H x D] buffer (poisoned with NaN first).
TEST(CudnnAttention, GptLayoutMatchesDoubleReference) {
  SKIP_WITHOUT_CUDNN(cudnn, stream);
  std::mt19937 rng(std::random_device{}());
  const int64_t B = 2, H = 3;
  for (int64_t D : {32, 64})
    for (int64_t T : {70, 129})
      for (bool causal : {true, false}) {
        SCOPED_TRACE("dim " + std::to_string(D) + " seq " + std::to_string(T) + (causal ? " causal" : ""));
        const int64_t C = H * D, n = B * H * T * D;
        const size_t bytes = static_cast<size_t>(n) * 2, rows = static_cast<size_t>(B * H * T);
        const Case c{B * H, T, D, causal};
        const AttentionShape s = shape_of(c, 0.3);
        AttentionLayout layout;
        layout.heads = H;
        layout.q = layout.k = layout.v = layout.dq = layout.dk = layout.dv = {T * 3 * C, D, 3 * C};
        layout.out = layout.grad = {T * C, D, C};
        std::vector<double> values[4];
        std::vector<uint16_t> packed(3 * n), grad(n);
        for (auto& x : values) x = random_values(n, DType::bf16, rng, -2, 2);
        for (int i = 0; i < 3; ++i)
          scatter_heads(as_u16(to_bytes(values[i], DType::bf16)), packed, B, H, T, D, 3 * C, i * C);
        scatter_heads(as_u16(to_bytes(values[3], DType::bf16)), grad, B, H, T, D, C, 0);
        const Reference want = reference(c, 0.3, values[0], values[1], values[2], values[3]);

        Buffers b(8 * (bytes + 64) + rows * 4 + 64);
        char *qkv = b.take(3 * bytes), *g = b.take(bytes), *out = b.take(4 * bytes), *dqkv = out + bytes;
        float* lse = reinterpret_cast<float*>(b.take(rows * 4));
        upload(qkv, as_bytes(packed));
        upload(g, as_bytes(grad));
        testing::fill_bytes(out, 0xff, 4 * bytes);
        const int64_t at = 2 * C;  // bytes to k's (dk's) columns
        ASSERT_TRUE(cudnn->forward(s, layout, qkv, qkv + at, qkv + 2 * at, out, lse));
        ASSERT_TRUE(
            cudnn->backward(s, layout, qkv, qkv + at, qkv + 2 * at, out, g, dqkv, dqkv + at, dqkv + 2 * at, lse));
        stream.synchronize("cuDNN attention test");
        auto dense = [&](const char* p, int64_t width, int64_t col0) {
          return from_bytes(as_bytes(gather_heads(as_u16(download(p, width / C * bytes)), B, H, T, D, width, col0)),
                            DType::bf16);
        };
        EXPECT_LT(error_of(floats(lse, rows), want.lse), 1e-4) << "logsumexp";
        EXPECT_LT(error_of(dense(out, C, 0), want.out), 2e-2) << "out";
        EXPECT_LT(error_of(dense(dqkv, 3 * C, 0), want.dq), 2e-2) << "dq";
        EXPECT_LT(error_of(dense(dqkv, 3 * C, C), want.dk), 2e-2) << "dk";
        EXPECT_LT(error_of(dense(dqkv, 3 * C, 2 * C), want.dv), 2e-2) << "dv";
      }
}

// Forward and backward captured into a CUDA Graph (after a direct run that
// builds the plans) and replayed give what the direct run gave, up to the
// backward's atomic summation of dq (not bitwise repeatable).
TEST(CudnnAttention, GraphReplayMatchesDirectRun) {
  SKIP_WITHOUT_CUDNN(cudnn, stream);
  std::mt19937 rng(std::random_device{}());
  const Case c{24, 256, 64, true};
  const AttentionShape s = shape_of(c, 0.125);
  const AttentionLayout dense;
  const size_t n = static_cast<size_t>(c.batch * c.seq * c.dim), bytes = n * 2, rows = c.batch * c.seq;
  Buffers b(13 * (bytes + 64) + 2 * rows * 4);
  char *q = b.take(bytes), *k = b.take(bytes), *v = b.take(bytes), *g = b.take(bytes);
  char *direct = b.take(4 * bytes), *replayed = b.take(4 * bytes);
  float *lse = reinterpret_cast<float*>(b.take(rows * 4)), *lse2 = reinterpret_cast<float*>(b.take(rows * 4));
  for (char* x : {q, k, v, g}) upload(x, to_bytes(random_values(n, DType::bf16, rng, -2, 2), DType::bf16));
  auto step = [&](char* o, float* l) {
    ASSERT_TRUE(cudnn->forward(s, dense, q, k, v, o, l));
    ASSERT_TRUE(cudnn->backward(s, dense, q, k, v, o, g, o + bytes, o + 2 * bytes, o + 3 * bytes, l));
  };
  step(direct, lse);
  stream.synchronize("cuDNN attention test");
  const size_t workspace = cudnn->workspace_bytes();
  testing::fill_bytes(replayed, 0xff, 4 * bytes);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  TESSERA_CUDA_CHECK(cudaStreamBeginCapture(stream.stream(), cudaStreamCaptureModeThreadLocal), "test capture");
  step(replayed, lse2);
  TESSERA_CUDA_CHECK(cudaStreamEndCapture(stream.stream(), &graph), "test capture");
  TESSERA_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0), "test instantiate");
  TESSERA_CUDA_CHECK(cudaGraphLaunch(exec, stream.stream()), "test replay");
  stream.synchronize("cuDNN attention test");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  EXPECT_EQ(cudnn->workspace_bytes(), workspace) << "the capture grew the workspace";
  EXPECT_EQ(download(replayed, bytes), download(direct, bytes)) << "the forward is deterministic";
  EXPECT_EQ(download(lse2, rows * 4), download(lse, rows * 4));
  const std::vector<double> want = from_bytes(download(direct + bytes, 3 * bytes), DType::bf16);
  EXPECT_LT(error_of(from_bytes(download(replayed + bytes, 3 * bytes), DType::bf16), want), 1e-2) << "gradients";
}

TEST(CudnnAttention, RefusesWhatItDoesNotTakeWithAReason) {
  SKIP_WITHOUT_CUDNN(cudnn, stream);
  const AttentionLayout dense;
  std::string why;
  AttentionShape s{2, 16, 64, true, 0.125f, DType::f32};
  EXPECT_FALSE(cudnn->prepare(CudnnAttention::Pass::forward, s, dense, &why));
  EXPECT_NE(why.find("bf16"), std::string::npos) << why;
  s.dtype = DType::bf16;
  s.dim = 12;
  EXPECT_FALSE(cudnn->prepare(CudnnAttention::Pass::backward, s, dense, &why));
  EXPECT_NE(why.find("head dims"), std::string::npos) << why;
  s.dim = 64;
  AttentionLayout odd;
  odd.heads = 2;
  odd.q = odd.k = odd.v = {16 * 3 * 128 + 4, 64, 3 * 128 + 4};
  EXPECT_FALSE(cudnn->prepare(CudnnAttention::Pass::forward_lse, s, odd, &why));
  EXPECT_NE(why.find("multiple of 8"), std::string::npos) << why;
  // A pointer that is not 16-byte aligned: refused before anything is queued.
  Buffers b(8 * 4096);
  char* p = b.take(4 * 4096);
  EXPECT_FALSE(cudnn->forward(s, dense, p + 2, p, p, p + 4096, nullptr));
  EXPECT_TRUE(cudnn->prepare(CudnnAttention::Pass::forward, s, dense, &why)) << why;
}

}  // namespace
}  // namespace tessera::cuda
