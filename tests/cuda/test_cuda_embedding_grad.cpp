// The CUDA embedding gradient (tessera/cuda/embedding_grad.h) against a CPU
// loop written here from the definition: out[v] = the sum, in position
// order and in f32, of the grad rows whose (clamped) index is v, rounded to
// the tensors' type once. It must match that bit for bit (the CPU's Halide
// scatter sums in the same order) and the double-precision sum within f32
// rounding. Awkward sizes: one position, one row, odd dims, dims over one
// column chunk (1024), every position on one row, out-of-range indices;
// f32 and bf16 rows, i32 and i64 indices. The output is poisoned first, so
// rows nothing names must be zeroed. Label gpu; skips without a device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/embedding_grad.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

using testing::download;
using testing::from_bytes;
using testing::random_values;
using testing::to_bytes;
using testing::upload;

struct Case {
  int64_t positions, vocab, dim;
  int64_t distinct;  // indices drawn from [-1, distinct] (so some are clamped), or every one 0 when 0
};

void check(const Case& c, DType dtype, DType index, std::mt19937& rng) {
  EmbeddingGradShape s{dtype, index, c.positions, c.vocab, c.dim};
  SCOPED_TRACE(s.text());
  std::uniform_int_distribution<int64_t> pick(-1, c.distinct);
  std::vector<int64_t> ids(c.positions);
  for (int64_t& i : ids) i = c.distinct ? pick(rng) : 0;
  if (c.positions > 2) ids[1] = c.vocab + 3;  // clamped to the last row
  const std::vector<double> grad = random_values(c.positions * c.dim, dtype, rng);

  std::vector<uint8_t> id_bytes(c.positions * (index == DType::i64 ? 8 : 4));
  for (int64_t p = 0; p < c.positions; ++p) {
    if (index == DType::i64) std::memcpy(&id_bytes[p * 8], &ids[p], 8);
    else {
      const int32_t v = static_cast<int32_t>(ids[p]);
      std::memcpy(&id_bytes[p * 4], &v, 4);
    }
  }
  const std::vector<uint8_t> grad_bytes = to_bytes(grad, dtype);
  const size_t out_bytes = c.vocab * c.dim * testing::elem_size(dtype);
  DeviceArena arena(id_bytes.size() + grad_bytes.size() + out_bytes + 3 * 256, "embedding_grad test");
  void* d_ids = arena.at(0, id_bytes.size());
  const size_t grad_at = (id_bytes.size() + 255) / 256 * 256;
  void* d_grad = arena.at(grad_at, grad_bytes.size());
  const size_t out_at = (grad_at + grad_bytes.size() + 255) / 256 * 256;
  void* d_out = arena.at(out_at, out_bytes);
  upload(d_ids, id_bytes);
  upload(d_grad, grad_bytes);
  testing::fill_bytes(d_out, 0xFF, out_bytes);
  DeviceStream stream;
  embedding_grad(s, d_ids, d_grad, d_out, stream.stream());
  stream.synchronize("embedding_grad test");
  const std::vector<double> got = from_bytes(download(d_out, out_bytes), dtype);

  std::vector<float> sum(c.vocab * c.dim, 0.0f);
  std::vector<double> exact(c.vocab * c.dim, 0.0);
  for (int64_t p = 0; p < c.positions; ++p) {
    const int64_t row = std::min(std::max<int64_t>(ids[p], 0), c.vocab - 1);
    for (int64_t d = 0; d < c.dim; ++d) {
      sum[row * c.dim + d] += static_cast<float>(grad[p * c.dim + d]);
      exact[row * c.dim + d] += grad[p * c.dim + d];
    }
  }
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double want = testing::round_to(sum[i], dtype);
    const double tol = (dtype == DType::bf16 ? 1.0 / 128 : 1e-5) * (1 + std::fabs(exact[i]));
    if ((got[i] != want || std::fabs(got[i] - exact[i]) > tol) && bad++ < 5)
      ADD_FAILURE() << "out[" << i / c.dim << ", " << i % c.dim << "] = " << got[i] << ", the position-order sum is "
                    << want << ", the exact sum " << exact[i];
  }
}

TEST(CudaEmbeddingGrad, MatchesThePositionOrderSumBitForBit) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  std::mt19937 rng(std::random_device{}());
  const Case cases[] = {
      {1, 1, 1, 0},          // one position, one row
      {7, 5, 3, 4},          // odd everything
      {300, 13, 1025, 12},   // many duplicates, two column chunks
      {257, 1, 31, 0},       // every position on the one row
      {513, 1000, 64, 999},  // mostly distinct, most rows untouched
      {2048, 50, 768, 49},   // a training step's shape, scaled down
  };
  for (const Case& c : cases)
    for (DType dtype : {DType::f32, DType::bf16})
      for (DType index : {DType::i32, DType::i64}) check(c, dtype, index, rng);
}

TEST(CudaEmbeddingGrad, UnsupportedTypesAreErrorsNamingTheShape) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream;
  EmbeddingGradShape s{DType::f16, DType::i32, 4, 3, 2};
  try {
    embedding_grad(s, nullptr, nullptr, nullptr, stream.stream());
    ADD_FAILURE() << "f16 did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_grad f16 [4 x 2] -> [3 x 2], i32 indices"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(embedding_grad_supports(DType::f32, DType::u8));
  EXPECT_TRUE(embedding_grad_supports(DType::bf16, DType::i64));
}

}  // namespace
}  // namespace tessera::cuda
