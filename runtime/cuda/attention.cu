// Fused attention kernels (see attention.h).
//
// Every kernel works on tiles of 64 rows (queries, or keys for dk/dv) by DP
// columns (DP: the head dim rounded up to 16, at most 64) held in shared
// memory with rows padded by 4 floats, in blocks of 4 warps. Warp w owns
// rows 16w.. of the block's tile and of its 64 x 64 score tiles: it computes
// their products (strip_mm: TF32 WMMA fragments, or CUDA cores), their
// softmax rows (two lanes per row, a half row each in registers, with the
// row statistics) and
// their share of the output, so the block synchronizes only around loads of
// shared operand tiles. Rows and columns past seq and dim are zeros; keys
// past seq or after the query (causal) are masked before the exponential.
// With causal masking, a query tile reads key tiles up to its own and a key
// tile query tiles from its own. Tensors in device memory are T (float or
// bf16); tiles in shared memory and every computation are f32. bf16 tensors
// of head dim 16, 32 or 64 take the tensor-core kernels of attention_mma.cu
// instead; these kernels serve every other shape, in the dense layout only
// (strided layouts, AttentionLayout, need the tensor-core kernels).
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <mutex>
#include <sstream>
#include <type_traits>
#include <utility>

#include "attention_mma.h"
#include "float_dtype.h"
#include "kernel_launch.h"
#include "tessera/cuda/attention.h"
#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

namespace {

constexpr int kTile = 64;    // rows of a tile (queries or keys)
constexpr int kThreads = 128;
constexpr int kPad = 4;      // floats of padding per shared row

// The three products the kernels need, C[64][N] (+)= ...
enum class Mm {
  abt,  // sum_k A[m][k] B[n][k]
  ab,   // sum_k A[m][k] B[k][n]
  atb,  // sum_k A[k][m] B[k][n]
};

// One warp's strip: C[16][N] = (or += with kAccumulate) A[16][K] times B,
// where B is [N][K] (used transposed, kBT) or [K][N]. With kTF32 the
// operands in shared memory are already rounded to TF32 (round_operand)
// and the product runs as 16x16x8 WMMA fragments, one A fragment reused
// across the strip's N/16 accumulators; otherwise each lane computes 4 rows
// by N/8 columns on CUDA cores.
template <int N, int K, bool kTF32, bool kAccumulate, bool kBT>
__device__ void strip_mm(float* C, int ldc, const float* A, int lda, const float* B, int ldb) {
  if constexpr (kTF32) {
    using namespace nvcuda;
    using BLayout = std::conditional_t<kBT, wmma::col_major, wmma::row_major>;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[N / 16];
    for (int j = 0; j < N / 16; ++j) {
      if constexpr (kAccumulate) wmma::load_matrix_sync(acc[j], C + 16 * j, ldc, wmma::mem_row_major);
      else wmma::fill_fragment(acc[j], 0.0f);
    }
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 8) {
      wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
      wmma::load_matrix_sync(a, A + k0, lda);
#pragma unroll
      for (int j = 0; j < N / 16; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, BLayout> b;
        wmma::load_matrix_sync(b, kBT ? B + 16 * j * ldb + k0 : B + k0 * ldb + 16 * j, ldb);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
    for (int j = 0; j < N / 16; ++j) wmma::store_matrix_sync(C + 16 * j, acc[j], ldc, wmma::mem_row_major);
  } else {
    constexpr int cols = N / 8;
    const int lane = threadIdx.x % 32, r0 = 4 * (lane / 8), c0 = lane % 8;
    float acc[4][cols];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < cols; ++c) acc[r][c] = kAccumulate ? C[(r0 + r) * ldc + c0 + 8 * c] : 0.0f;
#pragma unroll 8
    for (int k = 0; k < K; ++k) {
      float a[4], b[cols];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = A[(r0 + r) * lda + k];
#pragma unroll
      for (int c = 0; c < cols; ++c) b[c] = kBT ? B[(c0 + 8 * c) * ldb + k] : B[k * ldb + c0 + 8 * c];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < cols; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < cols; ++c) C[(r0 + r) * ldc + c0 + 8 * c] = acc[r][c];
  }
}

// Device-memory elements to and from f32 (bf16: round to nearest even).
__device__ float to_f32(float x) { return x; }
__device__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ T from_f32(float x) {
  if constexpr (std::is_same_v<T, float>) return x;
  else return __float2bfloat16_rn(x);
}
// Four consecutive elements (16-byte aligned floats, 8-byte aligned bf16).
__device__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ float4 load4(const __nv_bfloat16* p) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

// A value stored as a product operand: rounded to TF32 for the tensor cores.
template <bool kTF32>
__device__ float round_operand(float x) {
  if constexpr (kTF32) return nvcuda::wmma::__float_to_tf32(x);
  else return x;
}

// Copies rows row0.. of a [seq, dim] matrix into a 64 x DP shared tile
// (product operands: rounded for the tensor cores), zeros outside. Every
// load of a thread is issued before its first store (the loop is unrolled
// into registers), so a tile costs about one memory latency, not one per
// element; whole rows (dim == DP) move four elements at a time.
template <int DP, bool kTF32, typename T>
__device__ void load_tile(float* dst, const T* src, int64_t row0, int64_t seq, int dim) {
  constexpr int ld = DP + kPad;
  if (dim == DP) {
    constexpr int kRowVecs = DP / 4, kPer = kTile * kRowVecs / kThreads;
    float4 v[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kThreads, r = e / kRowVecs;
      v[u] = row0 + r < seq ? load4(src + (row0 + r) * DP + (e % kRowVecs) * 4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int e = threadIdx.x + u * kThreads;
      *reinterpret_cast<float4*>(dst + (e / kRowVecs) * ld + (e % kRowVecs) * 4) =
          make_float4(round_operand<kTF32>(v[u].x), round_operand<kTF32>(v[u].y), round_operand<kTF32>(v[u].z),
                      round_operand<kTF32>(v[u].w));
    }
    return;
  }
  constexpr int kPer = kTile * DP / kThreads, kChunk = 8;
  for (int u0 = 0; u0 < kPer; u0 += kChunk) {
    float v[kChunk];
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int e = threadIdx.x + (u0 + u) * kThreads, r = e / DP, c = e % DP;
      v[u] = row0 + r < seq && c < dim ? to_f32(src[(row0 + r) * dim + c]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kChunk; ++u) {
      const int e = threadIdx.x + (u0 + u) * kThreads;
      dst[(e / DP) * ld + e % DP] = round_operand<kTF32>(v[u]);
    }
  }
}

// A warp's 16 rows of a 64 x DP tile: zero, or stored to rows row0.. of a [seq, dim] matrix.
template <int DP>
__device__ void zero_strip(float* dst) {
  for (int e = threadIdx.x % 32; e < 16 * DP; e += 32) dst[(e / DP) * (DP + kPad) + e % DP] = 0.0f;
}
template <int DP, typename T>
__device__ void store_strip(T* dst, const float* src, int64_t row0, int64_t seq, int dim) {
  for (int e = threadIdx.x % 32; e < 16 * DP; e += 32) {
    const int r = e / DP, c = e % DP;
    if (row0 + r < seq && c < dim) dst[(row0 + r) * dim + c] = from_f32<T>(src[r * (DP + kPad) + c]);
  }
}


// Row-wise work on a warp's 16 x 64 score strip: lane l takes row l / 2,
// columns 32 (l % 2) .. + 31 (a half row, kept in registers); the two lanes
// of a row combine with one shuffle.
__device__ float pair_max(float v) { return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1)); }
__device__ float pair_sum(float v) { return v + __shfl_xor_sync(0xffffffffu, v, 1); }
__device__ void load_half(float (&x)[32], const float* p) {
#pragma unroll
  for (int u = 0; u < 32; u += 4) {
    const float4 v = *reinterpret_cast<const float4*>(p + u);
    x[u] = v.x;
    x[u + 1] = v.y;
    x[u + 2] = v.z;
    x[u + 3] = v.w;
  }
}
__device__ void store_half(float* p, const float (&x)[32]) {
#pragma unroll
  for (int u = 0; u < 32; u += 4) *reinterpret_cast<float4*>(p + u) = make_float4(x[u], x[u + 1], x[u + 2], x[u + 3]);
}

// Key j is hidden from query i: past the sequence, or after i when causal.
__device__ bool masked(int64_t i, int64_t j, int64_t seq, bool causal) { return j >= seq || (causal && j > i); }

constexpr int kLdS = kTile + kPad;  // a 64 x 64 score tile's row stride

// The lane's half row of scores at `p` (query i, keys j0..j0+31) into x,
// scaled, -inf where masked; returns the max of the whole row.
__device__ float scaled_half_row(float (&x)[32], const float* p, int64_t i, int64_t j0, int64_t seq, bool causal,
                                 float scale) {
  load_half(x, p);
  float mx = -INFINITY;
#pragma unroll
  for (int u = 0; u < 32; ++u) {
    x[u] = masked(i, j0 + u, seq, causal) ? -INFINITY : x[u] * scale;
    mx = fmaxf(mx, x[u]);
  }
  return pair_max(mx);
}


// The key tiles a query tile reads: up to its own when causal.
__device__ int64_t key_tiles(int64_t query_tile, int64_t seq, bool causal) {
  const int64_t tiles = (seq + kTile - 1) / kTile;
  return causal && query_tile + 1 < tiles ? query_tile + 1 : tiles;
}

// Each block has 4 warps; warp w owns rows 16w..16w+15 of the block's 64-row
// tile (queries, or keys for dk/dv) and of its score tiles, so between the
// block-wide loads of shared operand tiles each warp works alone.

// ---- forward: one block per (query tile, batch); online softmax per row ----

template <int DP, bool kTF32, typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const T* q, const T* k, const T* v, T* out, float* lse,
                                                           int64_t seq, int dim, float scale, bool causal) {
  extern __shared__ __align__(128) float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  constexpr int ld = DP + kPad;
  float *Qs = smem, *Ks = Qs + kTile * ld, *Vs = Ks + kTile * ld, *Os = Vs + kTile * ld, *Ss = Os + kTile * ld;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *Qw = Qs + 16 * warp * ld, *Ow = Os + 16 * warp * ld, *Sw = Ss + 16 * warp * kLdS;
  const int64_t base = static_cast<int64_t>(blockIdx.y) * seq * dim;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTile, w0 = q0 + 16 * warp;
  load_tile<DP, kTF32, T>(Qs, q + base, q0, seq, dim);
  zero_strip<DP>(Ow);
  const int hr = lane / 2, hc = 32 * (lane % 2);  // the lane's half row of the strip
  const int64_t i = w0 + hr;
  float m = -INFINITY, l = 0.0f;  // of row hr
  const int64_t last = key_tiles(blockIdx.x, seq, causal);
  for (int64_t t = 0; t < last; ++t) {
    const int64_t k0 = t * kTile;
    __syncthreads();  // every warp is done with the previous K and V
    load_tile<DP, kTF32, T>(Ks, k + base, k0, seq, dim);
    load_tile<DP, kTF32, T>(Vs, v + base, k0, seq, dim);
    __syncthreads();
    strip_mm<kTile, DP, kTF32, false, true>(Sw, kLdS, Qw, ld, Ks, ld);
    __syncwarp();
    float x[32];
    const float m_new = fmaxf(m, scaled_half_row(x, Sw + hr * kLdS + hc, i, k0 + hc, seq, causal, scale));
    float sum = 0;
#pragma unroll
    for (int u = 0; u < 32; ++u) {
      const float p = x[u] == -INFINITY ? 0.0f : __expf(x[u] - m_new);
      sum += p;
      x[u] = round_operand<kTF32>(p);
    }
    store_half(Sw + hr * kLdS + hc, x);
    const float alpha = m == -INFINITY ? 0.0f : __expf(m - m_new);
#pragma unroll
    for (int c = 0; c < DP / 2; ++c) Ow[hr * ld + (lane % 2) * (DP / 2) + c] *= alpha;
    l = l * alpha + pair_sum(sum);
    m = m_new;
    __syncwarp();
    strip_mm<DP, kTile, kTF32, true, false>(Ow, ld, Sw, kLdS, Vs, ld);
  }
  __syncwarp();
  if (i < seq)
    for (int c = (lane % 2) * (DP / 2); c < (lane % 2 + 1) * (DP / 2) && c < dim; ++c)
      out[base + i * dim + c] = from_f32<T>(Ow[hr * ld + c] / l);
  if (lse && lane % 2 == 0 && i < seq) lse[static_cast<int64_t>(blockIdx.y) * seq + i] = m + __logf(l);
}

// ---- backward, per query tile: statistics (logsumexp unless the forward
// gave it, rowsum(grad * out)) and dq ----

template <int DP, bool kTF32, typename T>
__global__ void __launch_bounds__(kThreads)
    backward_dq_kernel(const T* q, const T* k, const T* v, const T* out, const T* grad, T* dq, float* lse,
                       bool lse_known, float* rowdot, int64_t seq, int dim, float scale, bool causal) {
  extern __shared__ __align__(128) float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  constexpr int ld = DP + kPad;
  float *Qs = smem, *Gs = Qs + kTile * ld, *Ks = Gs + kTile * ld, *Vs = Ks + kTile * ld, *dQs = Vs + kTile * ld;
  float *Ss = dQs + kTile * ld, *dPs = Ss + kTile * kLdS;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *Qw = Qs + 16 * warp * ld, *Gw = Gs + 16 * warp * ld, *dQw = dQs + 16 * warp * ld;
  float *Sw = Ss + 16 * warp * kLdS, *dPw = dPs + 16 * warp * kLdS;
  const int64_t base = static_cast<int64_t>(blockIdx.y) * seq * dim;
  const int64_t stat = static_cast<int64_t>(blockIdx.y) * seq;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTile, w0 = q0 + 16 * warp;
  load_tile<DP, kTF32, T>(Qs, q + base, q0, seq, dim);
  load_tile<DP, kTF32, T>(Gs, grad + base, q0, seq, dim);
  const int hr = lane / 2, hc = 32 * (lane % 2);  // the lane's half row of the strip
  const int64_t i = w0 + hr;
  float dot = 0;  // rowsum(grad * out) of row hr, from the lane pair's halves
  if (i < seq)
    for (int c = (lane % 2) * (DP / 2); c < (lane % 2 + 1) * (DP / 2) && c < dim; ++c)
      dot += to_f32(grad[base + i * dim + c]) * to_f32(out[base + i * dim + c]);
  dot = pair_sum(dot);
  float m = -INFINITY, l = 0.0f;
  const int64_t last = key_tiles(blockIdx.x, seq, causal);
  // Pass 1 (unless the forward wrote lse): each row's max and sum of exponentials, online.
  for (int64_t t = 0; t < (lse_known ? 0 : last); ++t) {
    const int64_t k0 = t * kTile;
    __syncthreads();
    load_tile<DP, kTF32, T>(Ks, k + base, k0, seq, dim);
    __syncthreads();
    strip_mm<kTile, DP, kTF32, false, true>(Sw, kLdS, Qw, ld, Ks, ld);
    __syncwarp();
    float x[32];
    const float m_new = fmaxf(m, scaled_half_row(x, Sw + hr * kLdS + hc, i, k0 + hc, seq, causal, scale));
    float sum = 0;
#pragma unroll
    for (int u = 0; u < 32; ++u) sum += x[u] == -INFINITY ? 0.0f : __expf(x[u] - m_new);
    l = (m == -INFINITY ? 0.0f : l * __expf(m - m_new)) + pair_sum(sum);
    m = m_new;
    __syncwarp();
  }
  const float lse_i = lse_known ? (i < seq ? lse[stat + i] : 0.0f) : m + __logf(l);
  if (lane % 2 == 0 && i < seq) {
    if (!lse_known) lse[stat + i] = lse_i;
    rowdot[stat + i] = dot;
  }
  if (!dq) return;
  // Pass 2: dS = P * (grad v^T - rowdot) * scale, dq = dS k.
  zero_strip<DP>(dQw);
  for (int64_t t = 0; t < last; ++t) {
    const int64_t k0 = t * kTile;
    __syncthreads();
    load_tile<DP, kTF32, T>(Ks, k + base, k0, seq, dim);
    load_tile<DP, kTF32, T>(Vs, v + base, k0, seq, dim);
    __syncthreads();
    strip_mm<kTile, DP, kTF32, false, true>(Sw, kLdS, Qw, ld, Ks, ld);
    strip_mm<kTile, DP, kTF32, false, true>(dPw, kLdS, Gw, ld, Vs, ld);
    __syncwarp();
    float x[32], d[32];
    load_half(x, Sw + hr * kLdS + hc);
    load_half(d, dPw + hr * kLdS + hc);
#pragma unroll
    for (int u = 0; u < 32; ++u) {
      const float p = masked(i, k0 + hc + u, seq, causal) || i >= seq ? 0.0f : __expf(x[u] * scale - lse_i);
      x[u] = round_operand<kTF32>(p * (d[u] - dot) * scale);
    }
    store_half(Sw + hr * kLdS + hc, x);
    __syncwarp();
    strip_mm<DP, kTile, kTF32, true, false>(dQw, ld, Sw, kLdS, Ks, ld);
  }
  __syncwarp();
  store_strip<DP>(dq + base, dQw, w0, seq, dim);
}

// ---- backward, per key tile: dk and dv (scores transposed: rows are keys) ----

template <int DP, bool kTF32, typename T>
__global__ void __launch_bounds__(kThreads)
    backward_dkdv_kernel(const T* q, const T* k, const T* v, const T* grad, const float* lse, const float* rowdot,
                         T* dk, T* dv, int64_t seq, int dim, float scale, bool causal) {
  extern __shared__ __align__(128) float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  constexpr int ld = DP + kPad;
  float *Ks = smem, *Vs = Ks + kTile * ld, *Qs = Vs + kTile * ld, *Gs = Qs + kTile * ld, *dKs = Gs + kTile * ld;
  float *dVs = dKs + kTile * ld, *Ss = dVs + kTile * ld, *dPs = Ss + kTile * kLdS, *lse_s = dPs + kTile * kLdS;
  float* dot_s = lse_s + kTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *Kw = Ks + 16 * warp * ld, *Vw = Vs + 16 * warp * ld, *dKw = dKs + 16 * warp * ld, *dVw = dVs + 16 * warp * ld;
  float *Sw = Ss + 16 * warp * kLdS, *dPw = dPs + 16 * warp * kLdS;  // [key][query]
  const int64_t base = static_cast<int64_t>(blockIdx.y) * seq * dim;
  const int64_t stat = static_cast<int64_t>(blockIdx.y) * seq;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTile, w0 = k0 + 16 * warp;
  load_tile<DP, kTF32, T>(Ks, k + base, k0, seq, dim);
  load_tile<DP, kTF32, T>(Vs, v + base, k0, seq, dim);
  zero_strip<DP>(dKw);
  zero_strip<DP>(dVw);
  const int64_t tiles = (seq + kTile - 1) / kTile;
  for (int64_t t = causal ? blockIdx.x : 0; t < tiles; ++t) {
    const int64_t q0 = t * kTile;
    __syncthreads();
    load_tile<DP, kTF32, T>(Qs, q + base, q0, seq, dim);
    load_tile<DP, kTF32, T>(Gs, grad + base, q0, seq, dim);
    for (int r = threadIdx.x; r < kTile; r += kThreads) {
      const bool in = q0 + r < seq;
      lse_s[r] = in ? lse[stat + q0 + r] : 0.0f;
      dot_s[r] = in ? rowdot[stat + q0 + r] : 0.0f;
    }
    __syncthreads();
    strip_mm<kTile, DP, kTF32, false, true>(Sw, kLdS, Kw, ld, Qs, ld);   // S^T[j][i]
    strip_mm<kTile, DP, kTF32, false, true>(dPw, kLdS, Vw, ld, Gs, ld);  // dP^T[j][i]
    __syncwarp();
    {
      const int hr = lane / 2, hc = 32 * (lane % 2);  // key w0 + hr, queries q0 + hc ..
      const int64_t j = w0 + hr;
      float x[32], d[32];
      load_half(x, Sw + hr * kLdS + hc);
      load_half(d, dPw + hr * kLdS + hc);
#pragma unroll
      for (int u = 0; u < 32; ++u) {
        const int64_t i = q0 + hc + u;
        const float p = masked(i, j, seq, causal) || i >= seq ? 0.0f : __expf(x[u] * scale - lse_s[hc + u]);
        x[u] = round_operand<kTF32>(p);
        d[u] = round_operand<kTF32>(p * (d[u] - dot_s[hc + u]) * scale);  // dS^T
      }
      store_half(Sw + hr * kLdS + hc, x);
      store_half(dPw + hr * kLdS + hc, d);
    }
    __syncwarp();
    if (dv) strip_mm<DP, kTile, kTF32, true, false>(dVw, ld, Sw, kLdS, Gs, ld);
    if (dk) strip_mm<DP, kTile, kTF32, true, false>(dKw, ld, dPw, kLdS, Qs, ld);
  }
  __syncwarp();
  if (dk) store_strip<DP>(dk + base, dKw, w0, seq, dim);
  if (dv) store_strip<DP>(dv + base, dVw, w0, seq, dim);
}

// Shared bytes: `tiles` 64 x DP tiles, `scores` 64 x 64 tiles and `vectors` rows of 64.
constexpr size_t shared_bytes(int DP, int tiles, int scores, int vectors) {
  return sizeof(float) * (static_cast<size_t>(tiles) * kTile * (DP + kPad) +
                          static_cast<size_t>(scores) * kTile * kLdS + static_cast<size_t>(vectors) * kTile);
}

template <int DP, bool kTF32, typename T>
void run_forward(const AttentionShape& s, const void* q, const void* k, const void* v, void* out, float* lse,
                 cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.seq + kTile - 1) / kTile), static_cast<unsigned>(s.batch));
  static std::once_flag allowed;
  launch_kernel(forward_kernel<DP, kTF32, T>, allowed, shared_bytes(DP, 4, 1, 0), grid, dim3(kThreads), stream,
         "fused attention forward " + s.text(), static_cast<const T*>(q), static_cast<const T*>(k),
         static_cast<const T*>(v), static_cast<T*>(out), lse, s.seq, static_cast<int>(s.dim), s.scale, s.causal);
}

template <int DP, bool kTF32, typename T>
void run_backward(const AttentionShape& s, const void* q_, const void* k_, const void* v_, const void* out_,
                  const void* grad_, void* dq, void* dk, void* dv, float* scratch, const float* forward_lse,
                  cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.seq + kTile - 1) / kTile), static_cast<unsigned>(s.batch));
  const T *q = static_cast<const T*>(q_), *k = static_cast<const T*>(k_), *v = static_cast<const T*>(v_);
  const T *out = static_cast<const T*>(out_), *grad = static_cast<const T*>(grad_);
  // The forward's logsumexp, read only, or the dq kernel's own in scratch.
  float *lse = forward_lse ? const_cast<float*>(forward_lse) : scratch, *rowdot = scratch + s.batch * s.seq;
  const int dim = static_cast<int>(s.dim);
  static std::once_flag allowed_dq, allowed_dkdv;
  launch_kernel(backward_dq_kernel<DP, kTF32, T>, allowed_dq, shared_bytes(DP, 5, 2, 0), grid, dim3(kThreads), stream,
         "fused attention backward (dq) " + s.text(), q, k, v, out, grad, static_cast<T*>(dq), lse,
         forward_lse != nullptr, rowdot, s.seq, dim, s.scale, s.causal);
  if (dk || dv)
    launch_kernel(backward_dkdv_kernel<DP, kTF32, T>, allowed_dkdv, shared_bytes(DP, 6, 2, 2), grid, dim3(kThreads),
                  stream,
           "fused attention backward (dk, dv) " + s.text(), q, k, v, grad, static_cast<const float*>(lse),
           static_cast<const float*>(rowdot), static_cast<T*>(dk), static_cast<T*>(dv), s.seq, dim, s.scale,
           s.causal);
}

// Calls f(DP, kTF32, element) with the kernels' compile-time parameters for
// `s`: DP the dim rounded up to 16, 32 or 64, and a value of the element
// type. bf16 tensors always take the TF32 tensor cores (their values are
// exact in TF32).
template <typename F>
void dispatch(const AttentionShape& s, bool tf32, F&& f) {
  auto by_dim = [&](auto kTF32, auto element) {
    if (s.dim <= 16) f(std::integral_constant<int, 16>{}, kTF32, element);
    else if (s.dim <= 32) f(std::integral_constant<int, 32>{}, kTF32, element);
    else f(std::integral_constant<int, 64>{}, kTF32, element);
  };
  if (s.dtype == DType::bf16) by_dim(std::true_type{}, __nv_bfloat16{});
  else if (tf32) by_dim(std::true_type{}, float{});
  else by_dim(std::false_type{}, float{});
}

void check_shape(const AttentionShape& s, const char* what) {
  if (s.batch < 1 || s.seq < 1 || !fused_attention_supports(s.dim, s.dim) || !(s.scale > 0) || s.batch > 65535 ||
      (s.dtype != DType::f32 && s.dtype != DType::bf16))
    throw Error(std::string("fused attention ") + what + ": unsupported shape " + s.text() +
                " (f32 or bf16, batch 1..65535, seq >= 1, dim 1..64, scale > 0)");
}

// `layout` (null: dense) checked against `s`, with every tensor's strides resolved.
AttentionLayout resolve_layout(const AttentionShape& s, const AttentionLayout* layout, const char* what) {
  AttentionLayout r = layout ? *layout : AttentionLayout{};
  if (r.heads < 1 || s.batch % r.heads != 0)
    fail("fused attention ", what, ": shape ", s.text(), " with layout ", r.text(),
         ": heads must be >= 1 and divide the batch");
  for (AttentionStrides* t : {&r.q, &r.k, &r.v, &r.out, &r.grad, &r.dq, &r.dk, &r.dv}) *t = r.of(*t, s);
  return r;
}

// For a layout that the tensor-core kernels do not take: the others need it dense.
void check_dense(const AttentionShape& s, const AttentionLayout* layout, const char* what) {
  if (layout && !layout->dense(s))
    fail("fused attention ", what, ": shape ", s.text(), " with layout ", layout->text(),
         ": the f32/TF32 kernels take dense tensors only (other layouts need the bf16 tensor-core kernels: bf16, "
         "dim 16, 32 or 64, 16-byte aligned tensors, strides multiples of 8 elements)");
}

}  // namespace

std::string AttentionShape::text() const {
  std::ostringstream o;
  o << float_dtype_name(dtype) << " [" << batch << " x " << seq << " x " << dim << "]" << (causal ? " causal" : "")
    << " scale " << scale;
  return o.str();
}

AttentionStrides AttentionLayout::of(const AttentionStrides& t, const AttentionShape& s) const {
  if (t.batch != 0 || t.head != 0 || t.row != 0) return t;
  return {heads * s.seq * s.dim, s.seq * s.dim, s.dim};
}

bool AttentionLayout::dense(const AttentionShape& s) const {
  const AttentionStrides want = of({}, s);
  for (const AttentionStrides* t : {&q, &k, &v, &out, &grad, &dq, &dk, &dv})
    if (!(of(*t, s) == want)) return false;
  return true;
}

std::string AttentionLayout::text() const {
  std::ostringstream o;
  o << heads << (heads == 1 ? " head" : " heads");
  const char* sep = "; ";
  for (const auto& [name, t] : {std::pair<const char*, const AttentionStrides*>{"q", &q}, {"k", &k}, {"v", &v},
                                {"out", &out}, {"grad", &grad}, {"dq", &dq}, {"dk", &dk}, {"dv", &dv}}) {
    o << sep << name;
    if (*t == AttentionStrides{}) o << " dense";
    else o << " [" << t->batch << ", " << t->head << ", " << t->row << "]";
    sep = ", ";
  }
  return o.str();
}

bool fused_attention_supports(int64_t dim, int64_t value_dim) { return dim >= 1 && dim <= 64 && value_dim == dim; }

size_t attention_backward_scratch_bytes(const AttentionShape& s) {
  return 2 * sizeof(float) * static_cast<size_t>(s.batch * s.seq);
}

void attention_forward(const AttentionShape& s, const void* q, const void* k, const void* v, void* out, float* lse,
                       bool tf32, cudaStream_t stream, const AttentionLayout* layout) {
  check_shape(s, "forward");
  const AttentionLayout l = resolve_layout(s, layout, "forward");
  if (mma_attention_takes(s, {{q, l.q}, {k, l.k}, {v, l.v}, {out, l.out}}))
    return mma_attention_forward(s, l, q, k, v, out, lse, stream);
  check_dense(s, layout, "forward");
  dispatch(s, tf32, [&](auto dp, auto kTF32, auto element) {
    run_forward<decltype(dp)::value, decltype(kTF32)::value, decltype(element)>(s, q, k, v, out, lse, stream);
  });
}

void attention_backward(const AttentionShape& s, const void* q, const void* k, const void* v, const void* out,
                        const void* grad, void* dq, void* dk, void* dv, float* scratch, const float* forward_lse,
                        bool tf32, cudaStream_t stream, const AttentionLayout* layout) {
  check_shape(s, "backward");
  const AttentionLayout l = resolve_layout(s, layout, "backward");
  if (mma_attention_takes(s, {{q, l.q}, {k, l.k}, {v, l.v}, {out, l.out}, {grad, l.grad}, {dq, l.dq}, {dk, l.dk},
                              {dv, l.dv}}))
    return mma_attention_backward(s, l, q, k, v, out, grad, dq, dk, dv, scratch, forward_lse, stream);
  check_dense(s, layout, "backward");
  dispatch(s, tf32, [&](auto dp, auto kTF32, auto element) {
    run_backward<decltype(dp)::value, decltype(kTF32)::value, decltype(element)>(s, q, k, v, out, grad, dq, dk, dv,
                                                                                 scratch, forward_lse, stream);
  });
}

}  // namespace tessera::cuda
