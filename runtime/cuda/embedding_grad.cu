// embedding_grad on CUDA (include/tessera/cuda/embedding_grad.h): the
// output zeroed, then one block per (position, chunk of kColumns columns).
// The block walks the indices in tiles of kThreads: if any earlier position
// has its row, it stops (that position's block sums the row); otherwise it
// lists, tile by tile and in order, the later positions of its row and adds
// their grad rows into per-thread f32 accumulators, then writes the row.
// This does not sort the indices: the scan is O(positions) per block, cheap
// next to the grad's bytes for the token counts of a training step.
#include <cuda_bf16.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "float_dtype.h"
#include "tessera/cuda/check.h"
#include "tessera/cuda/embedding_grad.h"
#include "tessera/error.h"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;                      // columns per thread
constexpr int kColumns = kThreads * kPerThread;    // columns per block

__device__ inline float to_f32(float x) { return x; }
__device__ inline float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ inline T from_f32(float x);
template <>
__device__ inline float from_f32<float>(float x) { return x; }
template <>
__device__ inline __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename I>
__device__ inline int64_t row_of(const I* indices, int64_t p, int64_t vocab) {
  return min(max(static_cast<int64_t>(indices[p]), int64_t{0}), vocab - 1);
}

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    embedding_grad_rows(const I* __restrict__ indices, const T* __restrict__ grad, T* __restrict__ out,
                        int64_t positions, int64_t vocab, int64_t dim) {
  __shared__ int listed[kThreads];
  __shared__ int warp_count[kThreads / 32];
  const int64_t p = blockIdx.x;
  const int64_t row = row_of(indices, p, vocab);
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kColumns;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float acc[kPerThread] = {};
  for (int64_t tile = 0; tile < positions; tile += kThreads) {
    const int64_t q = tile + threadIdx.x;
    const bool same = q < positions && row_of(indices, q, vocab) == row;
    if (__syncthreads_or(same && q < p)) return;  // an earlier position owns the row (uniform: the whole block)
    if (tile + kThreads <= p) continue;           // nothing at or after p in this tile
    // The tile's positions of this row, in order: a warp ballot, then the warps' prefix.
    const bool take = same && q >= p;
    const unsigned ballot = __ballot_sync(0xffffffffu, take);
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int base = 0, total = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      base += w < warp ? warp_count[w] : 0;
      total += warp_count[w];
    }
    if (take) listed[base + __popc(ballot & ((1u << lane) - 1))] = static_cast<int>(q - tile);
    __syncthreads();
    for (int i = 0; i < total; ++i) {
      const T* g = grad + (tile + listed[i]) * dim;
      for (int c = 0; c < kPerThread; ++c) {
        const int64_t col = col0 + c * kThreads + threadIdx.x;
        if (col < dim) acc[c] += to_f32(g[col]);
      }
    }
    __syncthreads();  // listed and warp_count are rewritten by the next tile
  }
  for (int c = 0; c < kPerThread; ++c) {
    const int64_t col = col0 + c * kThreads + threadIdx.x;
    if (col < dim) out[row * dim + col] = from_f32<T>(acc[c]);
  }
}

template <typename T, typename I>
void launch(const EmbeddingGradShape& s, const void* indices, const void* grad, void* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(s.positions), static_cast<unsigned>((s.dim + kColumns - 1) / kColumns));
  embedding_grad_rows<T, I><<<grid, kThreads, 0, stream>>>(static_cast<const I*>(indices),
                                                           static_cast<const T*>(grad), static_cast<T*>(out),
                                                           s.positions, s.vocab, s.dim);
  TESSERA_CUDA_CHECK(cudaGetLastError(), "embedding_grad " + s.text());
}

}  // namespace

std::string EmbeddingGradShape::text() const {
  std::ostringstream o;
  o << float_dtype_name(dtype) << " [" << positions << " x " << dim << "] -> [" << vocab << " x " << dim << "], "
    << (index == DType::i64 ? "i64" : index == DType::i32 ? "i32" : "unsupported") << " indices";
  return o.str();
}

bool embedding_grad_supports(DType dtype, DType index) {
  return (dtype == DType::f32 || dtype == DType::bf16) && (index == DType::i32 || index == DType::i64);
}

void embedding_grad(const EmbeddingGradShape& s, const void* indices, const void* grad, void* out,
                    cudaStream_t stream) {
  if (!embedding_grad_supports(s.dtype, s.index))
    throw Error("embedding_grad " + s.text() + ": the CUDA kernel takes f32 or bf16 rows and i32 or i64 indices");
  if (s.positions < 0 || s.vocab < 1 || s.dim < 1 || s.positions > 0x7fffffff || (s.dim + kColumns - 1) / kColumns > 65535)
    throw Error("embedding_grad " + s.text() + ": needs vocab >= 1, 1 <= dim <= " +
                std::to_string(int64_t{65535} * kColumns) + " and at most 2^31 - 1 positions");
  TESSERA_CUDA_CHECK(cudaMemsetAsync(out, 0, s.vocab * s.dim * float_dtype_size(s.dtype), stream),
                     "embedding_grad " + s.text() + ": zeroing the table");
  if (s.positions == 0) return;
  const bool wide = s.index == DType::i64;
  if (s.dtype == DType::f32)
    wide ? launch<float, int64_t>(s, indices, grad, out, stream) : launch<float, int32_t>(s, indices, grad, out, stream);
  else
    wide ? launch<__nv_bfloat16, int64_t>(s, indices, grad, out, stream)
         : launch<__nv_bfloat16, int32_t>(s, indices, grad, out, stream);
}

}  // namespace tessera::cuda
