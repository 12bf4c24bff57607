// Quantized linears on CUDA (include/tessera/cuda/quant_linear.h).
//
// Decoding: a slice of up to 32 elements of a W row (16 bytes of NF4, 32 of
// int8) that starts at a multiple of its length lies inside one absmax
// block (K % 64 == 0), so it has one scale:
// NF4 absmax[(n*K + k) / 64] (double-quantized: nested_quant_map[code] *
// nested_absmax[block / 256] + nested_offset, in that f32 order), int8
// scale[n]. An element is code_book[code] * scale (NF4) or weight * scale.
//
// Two GEMVs, forward with at most 8 rows, and before them the tensor-core
// GEMV (quant_gemv_mma.cu: 3 to 8 rows; faster there, slower for 1 or 2
// rows). Measured on an H200 with bench_quant_gpu
// (11008 x 4096, f32 x; cuBLASLt's bf16 GEMV takes 24-27 us, a device copy
// moves 4.25 TB/s):
//
// quant_gemv_stream (1 or 2 rows, NF4 and int8, K <= 16384 or 8192): block b
// computes output features [b N / G, (b + 1) N / G) for G = the blocks the
// device holds at once; thread t owns the 16-element chunks t, t + 256, ..
// of every row, so its x stays in registers for all the block's rows.
// Rows go R at a time: the next step's chunks and scales are loaded
// before the current step is multiplied, and the step's sums go through
// warp_sums and shared memory, one barrier per step. NF4 batch 1: 14.1 us
// (42% of copy), batch 2: 16.7 us.
//
// quant_gemv (the rest: 3 to 8 rows the tensor-core GEMV does not take,
// double-quantized weights of 1 or 2 rows, longer rows): a
// block of 128 threads per four output features; each thread takes every
// 128th 32-bit word of the four rows (8 NF4 or 4 int8 elements; a warp's
// loads are 128 contiguous bytes), loading a batch of them, with their
// scales, before it uses any. Loads go through per-row pointers set once,
// at constant offsets (64-bit index arithmetic per load had been a fifth
// of the instructions). A double-quantized scale (three dependent loads)
// is computed by one lane and shuffled to the eight that share it. Each
// element is decoded once for all rows of x, whose elements for a word are
// loaded once for the four rows; each word's products are summed, then
// scaled once. Shuffles and then shared memory sum the threads, in a fixed
// order. NF4 batch 1: 15.4 us; batch 8: 46 us (twice cuBLASLt's bf16: x is
// reloaded for every four output features).
//
// What bounds NF4 is instructions, not bytes: a code-book lookup is a
// byte permute, a shared-memory load and an FMA per element, and with the
// loads, scales and sums the streaming GEMV issues about 5.5 instructions
// per element at 2.1 per cycle and SM (Nsight Compute: stalls on loads,
// the barrier, the lookups, about equally). int8, with twice the bytes and
// no lookup, reaches 70% of copy. Tried and not kept: no lookup at all (a
// wrong value, to bound it) 12.7 us; a 256-entry table of element pairs,
// one per lane of a half-warp (conflict-free 64-bit loads) 14.1 us; half
// the rows per step at twice the blocks per SM 14.7 us; batch 8 as two
// 4-row launches of the streaming GEMV, 45.4 us (NF4) and 58.4 us (int8)
// against quant_gemv's 46.1 and 42.6. Earlier, in quant_gemv:
// a thread per 16-byte slice, eight rows per block and blocks that loop
// over row groups were no faster.
//
// tiled (forward with more rows, and grad_input): 256 threads compute a
// 128 x 128 output tile, 8 x 8 outputs each, over 16-deep slices of the
// reduction: x's slice [128 x 16] is transposed into shared memory, W's
// slice is dequantized there (forward: W[n, k..k+15] is column n of the
// slice; grad_input: 16 rows of W, 128 columns), and each thread's 8 x 8
// f32 FMAs read them as float4s. Two buffers: the next slice's global
// loads are issued before the current one is multiplied and stored into
// the other buffer after, one barrier per slice; two blocks per SM (at
// most 128 registers) ran 5-15% faster than one. On an H200 it reaches
// 0.7-0.8x cuBLASLt's f32 GEMM on a dense weight. Given a workspace, an
// output of few tiles (a d-384 model's 4096 x 384: 96 tiles on 132 SMs,
// where unsplit it reached half of cuBLASLt) splits its reduction into
// parts (choose_split) summed by a second kernel in a fixed order.
//
// tiled on TF32 tensor cores (QuantLinearShape::tf32, which the plan
// executor sets when it allows TF32): the same blocks, slices, loads and
// double buffering, but the slices are stored row-major (x [row][depth], W
// [output column][depth], rows 20 floats apart so that mma's fragment loads
// hit 32 distinct banks), rounded to TF32 once when stored, and each warp
// multiplies a 64 x 32 part of the tile with mma.sync m16n8k8 TF32
// instructions (f32 accumulators in registers). On an H200 they reach
// 0.2-0.3x cuBLASLt's TF32 GEMM: only 9% of their instructions are mmas,
// and warps wait at the one barrier per slice for those that decode W.
// An earlier TF32 variant through WMMA (16 x 16 x 8 fragments from the
// transposed slices, one block per SM) ran at 24-35 TFLOP/s, no faster
// than the f32 FMAs.
//
// Not here: wgmma (Hopper's asynchronous warpgroup products), a grad_input
// GEMV, bf16 activations (as bitsandbytes' kernel takes them).
#include <cuda_runtime.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <type_traits>

#include "quant_linear_common.cuh"
#include "tessera/cuda/check.h"
#include "tessera/cuda/quant_linear.h"
#include "tessera/error.h"

namespace tessera::cuda {

namespace {

using namespace detail;

// ---- quant_gemv: forward, at most 8 rows ----

constexpr int kGemvThreads = 128;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kBlockRows = 4;  // output features per block: x is loaded once for all four
template <Format F>
constexpr int kBatch = F == Format::int8 ? 8 : 2;  // words per row a thread loads before it uses any

// The elements of a 32-bit word of W (little-endian: byte b is bits
// 8b..8b+7), unscaled. NF4: element 2b is byte b's high nibble, 2b+1 its
// low one; both nibbles of every byte are turned into code book byte
// offsets at once (two masks per word), then one byte permute per element
// picks its offset: the integer pipe, not the shared-memory lookups, was
// what bounded the kernel.
template <Format F>
struct WordDecoder {
  uint32_t high, low;  // NF4: byte b holds 4 x the code of element 2b (high) or 2b+1 (low)
  uint32_t word;       // int8: element b is byte b
  __device__ __forceinline__ explicit WordDecoder(uint32_t w)
      : high((w >> 2) & 0x3c3c3c3cu), low((w << 2) & 0x3c3c3c3cu), word(w) {}
  __device__ __forceinline__ float operator()(int e, const float* code_book) const {
    if constexpr (F == Format::int8) {
      // The float 2^23 + (byte ^ 0x80), less 2^23 + 128: exact, and on the
      // integer and FMA pipes (a conversion instruction runs at a quarter
      // of their rate).
      return __int_as_float(__byte_perm(word ^ 0x80808080u, 0x4B000000u, 0x7540u + e)) - 8388736.0f;
    } else {
      const uint32_t offset = __byte_perm(e % 2 == 0 ? high : low, 0, 0x4440u + e / 2);
      return *reinterpret_cast<const float*>(reinterpret_cast<const char*>(code_book) + offset);
    }
  }
};

template <Format F, int M>
__global__ void __launch_bounds__(kGemvThreads)
    quant_gemv(const float* __restrict__ x, Weight w, const float* __restrict__ bias, float* __restrict__ out,
               int64_t N, int64_t K) {
  constexpr int kPerWord = F == Format::int8 ? 4 : 8;  // elements per 32-bit word
  constexpr int kWordsPerBlock = 64 / kPerWord;        // words per absmax block
  constexpr int kStep = kGemvThreads * kBatch<F>;      // words per row and iteration
  __shared__ float code_book[16];
  __shared__ float partial[kGemvWarps][M][kBlockRows];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  if (t < 16) code_book[t] = kNF4CodeBook[t];
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int words = static_cast<int>(K / kPerWord);
  // Each thread's pointers into row r at its first word (rows past N repeat
  // the last one, unwritten); an iteration adds kStep words, step b of it
  // b * kGemvThreads: constant offsets, no index arithmetic per load.
  const uint32_t* wp[kBlockRows];
  int64_t block[kBlockRows];  // absmax block of the first word
  float row_scale[kBlockRows];  // int8
#pragma unroll
  for (int r = 0; r < kBlockRows; ++r) {
    const int64_t n = min(n0 + r, N - 1);
    wp[r] = reinterpret_cast<const uint32_t*>(w.packed) + n * words + t;
    block[r] = (n * words + t) / kWordsPerBlock;
    if constexpr (F == Format::int8) row_scale[r] = __ldg(static_cast<const float*>(w.scale) + n);
  }
  const float* xp = x + t * kPerWord;
  // Double-quantized scales take three dependent loads; the eight lanes of a
  // block share one, so each is computed by one lane (step lane / 16, row
  // lane / 4 % 4, the warp's block lane % 4) and shuffled to the others.
  static_assert(kBatch<F> * kBlockRows * 32 / kWordsPerBlock == 32 || F != Format::nf4_nested);
  const int scale_step = lane / 16, scale_row = lane / 4 % 4, scale_word = warp * 32 + lane % 4 * kWordsPerBlock;
  int64_t scale_block = (min(n0 + scale_row, N - 1) * words + scale_word) / kWordsPerBlock +
                        scale_step * (kGemvThreads / kWordsPerBlock);
  const float nested_offset = F == Format::nf4_nested ? __ldg(w.nested_offset) : 0.0f;
  __syncthreads();  // the code book
  float acc[M][kBlockRows] = {};
  // Double-quantized: the loop is warp-uniform (its scales are shuffled);
  // the others stop each lane at its last word (measurably faster).
  constexpr bool kUniform = F == Format::nf4_nested;
  for (int j0 = t; j0 - (kUniform ? lane : 0) < words; j0 += kStep) {
    bool valid[kBatch<F>];
    uint32_t wd[kBatch<F>][kBlockRows];
    float sc[kBatch<F>][kBlockRows];
    float shared_scale = 0.0f;  // nf4_nested
    if constexpr (F == Format::nf4_nested) {
      if (j0 - lane + scale_step * kGemvThreads + lane % 4 * kWordsPerBlock < words)
        shared_scale = nested_scale(w, scale_block, nested_offset);
      scale_block += kStep / kWordsPerBlock;
    }
#pragma unroll
    for (int b = 0; b < kBatch<F>; ++b) {
      valid[b] = j0 + b * kGemvThreads < words;
#pragma unroll
      for (int r = 0; r < kBlockRows; ++r) {
        wd[b][r] = valid[b] ? __ldg(wp[r] + b * kGemvThreads) : 0u;
        if constexpr (F == Format::int8) {
          sc[b][r] = row_scale[r];
        } else if constexpr (F == Format::nf4) {
          const int64_t blk = block[r] + b * (kGemvThreads / kWordsPerBlock);
          sc[b][r] = valid[b] ? __ldg(static_cast<const float*>(w.scale) + blk) : 0.0f;
        } else {
          sc[b][r] = __shfl_sync(0xffffffffu, shared_scale, b * 16 + r * 4 + lane / kWordsPerBlock);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch<F>; ++b) {
      // Each element is decoded once, for all M rows of x.
      float element[kBlockRows][kPerWord];
#pragma unroll
      for (int r = 0; r < kBlockRows; ++r) {
        const WordDecoder<F> decode(wd[b][r]);
#pragma unroll
        for (int e = 0; e < kPerWord; ++e) element[r][e] = decode(e, code_book);
      }
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xv[kPerWord] = {};
        if (valid[b])
#pragma unroll
          for (int q = 0; q < kPerWord / 4; ++q)
            *reinterpret_cast<float4*>(xv + 4 * q) =
                __ldg(reinterpret_cast<const float4*>(xp + m * K + b * kGemvThreads * kPerWord) + q);
#pragma unroll
        for (int r = 0; r < kBlockRows; ++r) {
          float sum = 0.0f;
#pragma unroll
          for (int e = 0; e < kPerWord; ++e) sum = fmaf(element[r][e], xv[e], sum);
          acc[m][r] = fmaf(sum, sc[b][r], acc[m][r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kBlockRows; ++r) wp[r] += kStep, block[r] += kStep / kWordsPerBlock;
    xp += kStep * kPerWord;
  }
  // Sum the lanes (shuffles), then the warps (in order, through shared memory).
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < kBlockRows; ++r) {
      float v = acc[m][r];
      for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(0xffffffffu, v, d);
      if (lane == 0) partial[warp][m][r] = v;
    }
  __syncthreads();
  if (threadIdx.x < M * kBlockRows) {
    const int m = threadIdx.x / kBlockRows, r = threadIdx.x % kBlockRows;
    if (n0 + r < N) {
      float v = partial[0][m][r];
      for (int i = 1; i < kGemvWarps; ++i) v += partial[i][m][r];
      out[m * N + n0 + r] = bias ? v + bias[n0 + r] : v;
    }
  }
}

// ---- quant_gemv_stream: forward, 1 or 2 rows ----

constexpr int kStreamThreads = 256;
constexpr int kStreamWarps = kStreamThreads / 32;
constexpr int kChunk = 16;  // W elements a thread takes from a row at a time (NF4: 8 bytes, int8: 16)

template <Format F>
using ChunkBits = std::conditional_t<F == Format::int8, uint4, uint2>;

// Element e (0..15) of a chunk, unscaled.
template <Format F>
__device__ __forceinline__ float chunk_element(const ChunkBits<F>& bits, int e, const float* code_book) {
  constexpr int kPerWord = F == Format::int8 ? 4 : 8;
  return WordDecoder<F>(reinterpret_cast<const uint32_t*>(&bits)[e / kPerWord])(e % kPerWord, code_book);
}

// Each lane holds V values; returns the warp's sum of value lane / (32 / V)
// (every lane of a group of 32 / V holds it). Halving the values a lane
// keeps at each of the first log2(V) distances takes V - 1 + 5 - log2(V)
// shuffles instead of 5 V. The order of the additions is fixed.
template <int V>
__device__ __forceinline__ float warp_sums(float (&v)[V], int lane) {
#pragma unroll
  for (int half = V / 2, d = 16; half >= 1; half /= 2, d /= 2) {
    const bool upper = lane & d;
#pragma unroll
    for (int j = 0; j < half; ++j) {
      const float send = upper ? v[j] : v[j + half], keep = upper ? v[j + half] : v[j];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, d);
    }
  }
  float s = v[0];
#pragma unroll
  for (int d = 16 / V; d > 0; d /= 2) s += __shfl_xor_sync(0xffffffffu, s, d);
  return s;
}

// Block b computes output features [b N / G, (b + 1) N / G), R at a time.
// Thread t owns the chunks t, t + 256, .. (C of them) of every row: their
// x stays in registers for all the block's rows. Each step's packed chunks
// and scales are loaded one step ahead; a step's R x M sums go through
// warp_sums and shared memory (two buffers: one barrier per step).
template <Format F, int M, int C, int R>
__global__ void __launch_bounds__(kStreamThreads, 2)
    quant_gemv_stream(const float* __restrict__ x, Weight w, const float* __restrict__ bias, float* __restrict__ out,
                      int64_t N, int64_t K) {
  constexpr int V = M * R;  // sums per step
  static_assert(F != Format::nf4_nested, "double-quantized weights take the other GEMV");
  __shared__ float code_book[16];
  __shared__ float partial[2][kStreamWarps][V];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  if (t < 16) code_book[t] = kNF4CodeBook[t];
  const int chunks = static_cast<int>(K / kChunk), blocks_per_row = chunks / (64 / kChunk);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * N / gridDim.x;
  const int64_t last = static_cast<int64_t>(blockIdx.x + 1) * N / gridDim.x;
  // Step n0's first row (its chunks and absmax blocks) as 64-bit bases;
  // everything within a step is a 32-bit offset from them.
  const ChunkBits<F>* row_bits = reinterpret_cast<const ChunkBits<F>*>(w.packed) + first * chunks;
  int64_t row_block = first * blocks_per_row;
  struct Step {
    ChunkBits<F> bits[R][C];
    float scale[R][C];
  };
  // Rows past `last` and chunks past the row load zeros (a zero scale).
  auto load = [&](Step& s, int64_t n0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bool row = n0 + r < last;
      float row_scale = 0.0f;
      if constexpr (F == Format::int8) row_scale = row ? __ldg(static_cast<const float*>(w.scale) + n0 + r) : 0.0f;
#pragma unroll
      for (int i = 0; i < C; ++i) {
        const int c = t + i * kStreamThreads;
        const bool ok = row && c < chunks;
        s.bits[r][i] = ok ? __ldg(row_bits + (r * chunks + c)) : ChunkBits<F>{};
        const int64_t block = row_block + (r * blocks_per_row + c / (64 / kChunk));
        if constexpr (F == Format::int8) s.scale[r][i] = row_scale;
        else s.scale[r][i] = ok ? __ldg(static_cast<const float*>(w.scale) + block) : 0.0f;
      }
    }
    row_bits += R * chunks;
    row_block += R * blocks_per_row;
  };
  Step cur;
  load(cur, first);
  float xv[M][C][kChunk];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int i = 0; i < C; ++i) {
      const int c = t + i * kStreamThreads;
#pragma unroll
      for (int q = 0; q < kChunk / 4; ++q) {
        const float4 v = c < chunks ? __ldg(reinterpret_cast<const float4*>(x + m * K + c * kChunk) + q)
                                    : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        xv[m][i][4 * q] = v.x, xv[m][i][4 * q + 1] = v.y, xv[m][i][4 * q + 2] = v.z, xv[m][i][4 * q + 3] = v.w;
      }
    }
  __syncthreads();  // the code book
  int buffer = 0;
  for (int64_t n0 = first; n0 < last; n0 += R, buffer ^= 1) {
    Step next;
    if (n0 + R < last) load(next, n0 + R);
    float acc[V];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float row_sum[M] = {};
#pragma unroll
      for (int i = 0; i < C; ++i) {
        float sum[M] = {};
#pragma unroll
        for (int e = 0; e < kChunk; ++e) {
          const float v = chunk_element<F>(cur.bits[r][i], e, code_book);
#pragma unroll
          for (int m = 0; m < M; ++m) sum[m] = fmaf(v, xv[m][i][e], sum[m]);
        }
#pragma unroll
        for (int m = 0; m < M; ++m) row_sum[m] = fmaf(sum[m], cur.scale[r][i], row_sum[m]);
      }
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m * R + r] = row_sum[m];
    }
    const float s = warp_sums<V>(acc, lane);
    if (lane % (32 / V) == 0) partial[buffer][warp][lane / (32 / V)] = s;
    __syncthreads();  // partial[buffer] is next written two steps on, after the next barrier
    if (t < V) {
      const int m = t / R;
      const int64_t n = n0 + t % R;
      if (n < last) {
        float v = partial[buffer][0][t];
#pragma unroll
        for (int i = 1; i < kStreamWarps; ++i) v += partial[buffer][i][t];
        out[m * N + n] = bias ? v + bias[n] : v;
      }
    }
    cur = next;
  }
}

// ---- tiled: forward with more rows, and grad_input ----

constexpr int kTileThreads = 256;
constexpr int kTile = 128;           // output rows and columns per block
constexpr int kDepth = 16;           // reduction elements per slice
constexpr int kStride = kTile + 4;   // row stride of the slices in shared memory (fewer bank conflicts)

// E consecutive W elements of one row that one thread decodes per slice:
// forward, row n and depth k..k+E-1; grad_input, row d and output columns
// c..c+E-1. kThreads of a block's threads cover the 128 x 16 slice. The
// f32 tiles take E = 16 in half the threads (32 per thread, in a quarter,
// had int8's split kernel spill registers); the TF32 tiles the same for
// NF4 and E = 8 in all threads for int8.
template <Format F, int E>
struct TileRun {
  static constexpr int kElements = E;
  static constexpr int kPerWord = F == Format::int8 ? 4 : 8;
  static constexpr int kWords = kElements / kPerWord;
  static constexpr int kThreads = kTile * kDepth / kElements;
  uint32_t words[kWords];
  float scale;
  bool valid;
  // This thread's elements of the slice at depth d0 of the block's columns col0..
  __device__ __forceinline__ void load_slice(const Weight& w, bool grad_input, int t, int64_t d0, int64_t col0,
                                             int64_t N, int64_t K) {
    constexpr int kPerRow = kDepth / kElements;  // forward: threads per W row of the slice
    if (grad_input) load(w, d0 + t % kDepth, col0 + kElements * (t / kDepth), N, K);
    else load(w, col0 + t / kPerRow, d0 + kElements * (t % kPerRow), N, K);
  }
  __device__ __forceinline__ void load(const Weight& w, int64_t n, int64_t k, int64_t N, int64_t K) {
    valid = n < N && k < K;
    if (!valid) return;
    const uint32_t* p = reinterpret_cast<const uint32_t*>(w.packed) + (n * K + k) / kPerWord;
    if constexpr (kWords == 1) {
      words[0] = __ldg(p);
    } else if constexpr (kWords == 2) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
      words[0] = v.x, words[1] = v.y;
    } else {
#pragma unroll
      for (int i = 0; i < kWords; i += 4) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i / 4);
        words[i] = v.x, words[i + 1] = v.y, words[i + 2] = v.z, words[i + 3] = v.w;
      }
    }
    scale = slice_scale<F>(w, n, k, K);
  }
  __device__ __forceinline__ float value(int j, const float* code_book) const {
    return valid ? WordDecoder<F>(words[j / kPerWord])(j % kPerWord, code_book) * scale : 0.0f;
  }
};

// The slices d_begin, d_begin + 16, .. < d_end through two shared buffers:
// load(d0) issues a slice's global loads into registers, store(buffer)
// writes them into a buffer, multiply(buffer) uses one. The next slice's
// loads are issued before the current one is multiplied and stored into
// the other buffer after, one barrier per slice (the first also makes the
// code book visible).
template <typename Load, typename Store, typename Multiply>
__device__ __forceinline__ void run_slices(int64_t d_begin, int64_t d_end, Load&& load, Store&& store,
                                           Multiply&& multiply) {
  load(d_begin);
  __syncthreads();  // the code book
  store(0);
  __syncthreads();
  for (int64_t d0 = d_begin, slice = 0; d0 < d_end; d0 += kDepth, ++slice) {
    const int buffer = slice % 2;
    const bool more = d0 + kDepth < d_end;
    if (more) load(d0 + kDepth);
    multiply(buffer);
    // The other buffer was last read before the previous barrier.
    if (more) store(1 - buffer);
    __syncthreads();
  }
}

// out [rows, cols] = x [rows, depth] @ B, B [depth, cols] = W^T (forward:
// depth K, cols N) or W (grad_input: depth N, cols K).
// Split (gridDim.z > 1): block z reduces depth [z * chunk, (z + 1) * chunk)
// into out + z * rows * cols, without bias (sum_parts adds the parts).
template <Format F, bool kGradInput>
__global__ void __launch_bounds__(kTileThreads, 2)
    quant_tiled(const float* __restrict__ x, Weight w, const float* __restrict__ bias, float* __restrict__ out,
                int64_t rows, int64_t N, int64_t K, int64_t chunk) {
  using Run = TileRun<F, 16>;
  constexpr int kXPerThread = kTile * kDepth / kTileThreads;
  __shared__ float code_book[16];
  __shared__ __align__(16) float xs[2][kDepth][kStride];  // x's slice, transposed; two buffers
  __shared__ __align__(16) float bs[2][kDepth][kStride];
  if (threadIdx.x < 16) code_book[threadIdx.x] = kNF4CodeBook[threadIdx.x];
  const int t = threadIdx.x;
  const int64_t depth = kGradInput ? N : K, cols = kGradInput ? K : N;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile, col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  // A chunk is a multiple of 64 (choose_split), so no slice crosses its end.
  const int64_t d_begin = blockIdx.z * chunk, d_end = min(depth, d_begin + chunk);
  // Where x's columns end, for the loads: either bound is right (slices
  // never cross d_end); these are the ones measured fastest on an H200
  // (with d_end, the compiler's NF4 forward ran 9% slower).
  const int64_t x_end = kGradInput ? d_end : depth;
  out += blockIdx.z * rows * cols;

  // One slice's global loads at depth d0, held in registers until stored:
  // x column d0 + t % 16 of rows row0 + t / 16 + 16 i; W as Run says.
  float xr[kXPerThread];
  Run wr;
  auto load = [&](int64_t d0) {
    const int64_t d = d0 + t % kDepth;
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) {
      const int64_t r = row0 + t / kDepth + (kTileThreads / kDepth) * i;
      xr[i] = r < rows && d < x_end ? __ldg(x + r * depth + d) : 0.0f;
    }
    if (t < Run::kThreads) wr.load_slice(w, kGradInput, t, d0, col0, N, K);
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < kXPerThread; ++i) xs[buffer][t % kDepth][t / kDepth + (kTileThreads / kDepth) * i] = xr[i];
    if (t < Run::kThreads) {
#pragma unroll
      for (int j = 0; j < Run::kElements; j += 4) {
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = wr.value(j + i, code_book);
        if (kGradInput) {
          *reinterpret_cast<float4*>(&bs[buffer][t % kDepth][Run::kElements * (t / kDepth) + j]) =
              make_float4(v[0], v[1], v[2], v[3]);
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) bs[buffer][j + i][t] = v[i];
        }
      }
    }
  };

  const int tx = t % 16, ty = t / 16;
  float acc[8][8] = {};
  run_slices(d_begin, d_end, load, store, [&](int buffer) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      float a[8], b[8];
      *reinterpret_cast<float4*>(a) = *reinterpret_cast<const float4*>(&xs[buffer][d][4 * ty]);
      *reinterpret_cast<float4*>(a + 4) = *reinterpret_cast<const float4*>(&xs[buffer][d][64 + 4 * ty]);
      *reinterpret_cast<float4*>(b) = *reinterpret_cast<const float4*>(&bs[buffer][d][4 * tx]);
      *reinterpret_cast<float4*>(b + 4) = *reinterpret_cast<const float4*>(&bs[buffer][d][64 + 4 * tx]);
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
  });
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int64_t r = row0 + (i < 4 ? 4 * ty + i : 64 + 4 * ty + i - 4);
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t c = col0 + (j < 4 ? 4 * tx + j : 64 + 4 * tx + j - 4);
      if (c < cols) out[r * cols + c] = bias ? acc[i][j] + bias[c] : acc[i][j];
    }
  }
}

// ---- tiled on TF32 tensor cores (QuantLinearShape::tf32) ----

// Operands of one m16n8k8 TF32 product are f32 bit patterns rounded to
// TF32 (cvt.rna: to nearest, ties away from zero; low 13 bits zero).
__device__ __forceinline__ float to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
}

// c += a b, a 16 x 8 and b 8 x 8 (TF32), c 16 x 8 (f32). Lane l holds, with
// g = l / 4 and t = l % 4: a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4];
// b = B[t][g], B[t+4][g]; c = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
__device__ __forceinline__ void mma_tf32(float (&c)[4], const float (&a)[4], const float (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
}

// Row stride of the TF32 tiles' shared slices: 20 = 4 (mod 32), so the 32
// lanes of a fragment load (row g + const, column t + const) hit 32
// distinct banks, and a float4 store of 4 columns of a row stays aligned.
constexpr int kStrideTF32 = kDepth + 4;

// As quant_tiled, with the products on the tensor cores: both slices are
// stored row-major ([output row][depth] for x, [output column][depth] for
// W), rounded to TF32, and each of the 8 warps computes a 64 x 32 part of
// the tile as 4 x 4 m16n8k8 accumulators, two 8-deep steps per slice.
template <Format F, bool kGradInput>
__global__ void __launch_bounds__(kTileThreads, 2)
    quant_tiled_tf32(const float* __restrict__ x, Weight w, const float* __restrict__ bias, float* __restrict__ out,
                     int64_t rows, int64_t N, int64_t K, int64_t chunk) {
  // W decoded by every thread for int8 (8 elements, 2 words each), by half
  // of them for NF4 (16 elements, 2 words): on an H200 the other choice was
  // slower on most shapes (NF4 by up to 20%, int8 by up to 19%).
  using Run = TileRun<F, F == Format::int8 ? 8 : 16>;
  constexpr int kXVectors = kTile * kDepth / (4 * kTileThreads);  // float4s of x per thread and slice
  __shared__ float code_book[16];
  __shared__ __align__(16) float xs[2][kTile][kStrideTF32];
  __shared__ __align__(16) float ws[2][kTile][kStrideTF32];
  if (threadIdx.x < 16) code_book[threadIdx.x] = kNF4CodeBook[threadIdx.x];
  const int t = threadIdx.x;
  const int64_t depth = kGradInput ? N : K, cols = kGradInput ? K : N;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kTile, col0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t d_begin = blockIdx.z * chunk, d_end = min(depth, d_begin + chunk);
  const bool vector_rows = depth % 4 == 0;  // x's rows start 16-byte aligned (x itself is)
  out += blockIdx.z * rows * cols;

  // One slice's global loads at depth d0: thread t takes x columns
  // d0 + 4 (t % 4) .. + 3 of rows row0 + t / 4 + 64 i; W as Run says.
  float4 xr[kXVectors];
  Run wr;
  const bool decodes = Run::kThreads == kTileThreads || t < Run::kThreads;
  auto load = [&](int64_t d0) {
    const int64_t d = d0 + 4 * (t % 4);
#pragma unroll
    for (int i = 0; i < kXVectors; ++i) {
      const int64_t r = row0 + t / 4 + (kTileThreads / 4) * i;
      const float* p = x + r * depth + d;
      if (r >= rows) xr[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      else if (vector_rows && d + 3 < d_end) xr[i] = __ldg(reinterpret_cast<const float4*>(p));
      else
        xr[i] = make_float4(d < d_end ? __ldg(p) : 0.0f, d + 1 < d_end ? __ldg(p + 1) : 0.0f,
                            d + 2 < d_end ? __ldg(p + 2) : 0.0f, d + 3 < d_end ? __ldg(p + 3) : 0.0f);
    }
    if (decodes) wr.load_slice(w, kGradInput, t, d0, col0, N, K);
  };
  auto store = [&](int buffer) {
#pragma unroll
    for (int i = 0; i < kXVectors; ++i)
      *reinterpret_cast<float4*>(&xs[buffer][t / 4 + (kTileThreads / 4) * i][4 * (t % 4)]) =
          make_float4(to_tf32(xr[i].x), to_tf32(xr[i].y), to_tf32(xr[i].z), to_tf32(xr[i].w));
    if (!decodes) return;
    constexpr int kPerRow = kDepth / Run::kElements;  // forward: threads per output column
#pragma unroll
    for (int j = 0; j < Run::kElements; j += 4) {
      float v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = to_tf32(wr.value(j + i, code_book));
      if (kGradInput) {
        // Depth t % 16 of output columns E (t / 16) + j..+3.
#pragma unroll
        for (int i = 0; i < 4; ++i) ws[buffer][Run::kElements * (t / kDepth) + j + i][t % kDepth] = v[i];
      } else {
        // Depths E (t % kPerRow) + j..+3 of output column t / kPerRow.
        *reinterpret_cast<float4*>(&ws[buffer][t / kPerRow][Run::kElements * (t % kPerRow) + j]) =
            make_float4(v[0], v[1], v[2], v[3]);
      }
    }
  };

  const int lane = t % 32, g = lane / 4, q = lane % 4;
  const int wm = 64 * (t / 32 / 4), wn = 32 * (t / 32 % 4);  // the warp's part of the tile
  float acc[4][4][4] = {};
  run_slices(d_begin, d_end, load, store, [&](int buffer) {
#pragma unroll
    for (int k = 0; k < kDepth; k += 8) {
      float a[4][4], b[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float* r = &xs[buffer][wm + 16 * i + g][k + q];
        a[i][0] = r[0], a[i][1] = r[8 * kStrideTF32], a[i][2] = r[4], a[i][3] = r[8 * kStrideTF32 + 4];
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float* c = &ws[buffer][wn + 8 * j + g][k + q];
        b[j][0] = c[0], b[j][1] = c[4];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) mma_tf32(acc[i][j], a[i], b[j]);
    }
  });
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = row0 + wm + 16 * i + g + 8 * h;
      if (r >= rows) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int64_t c = col0 + wn + 8 * j + 2 * q + e;
          if (c < cols) out[r * cols + c] = bias ? acc[i][j][2 * h + e] + bias[c] : acc[i][j][2 * h + e];
        }
    }
}

// out = the sum of `parts` partial products in part order, plus bias.
__global__ void sum_parts(const float* __restrict__ partial, int parts, int64_t count, int64_t cols,
                          const float* __restrict__ bias, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = partial[i];
    for (int p = 1; p < parts; ++p) v += partial[p * count + i];
    out[i] = bias ? v + bias[i % cols] : v;
  }
}

struct Split {
  int parts = 1;
  int64_t chunk = 0;  // reduction elements per part
};

// How many parts to split the reduction of a tiled product into: the
// count, at most 8, that least loads the busiest SM, ceil(tiles * parts /
// SMs) parts of chunk / depth of a tile each, if that is at least 10% less
// than unsplit and the partial sums fit in the workspace. Chunks are
// multiples of 64 (an absmax block), at least 256.
Split choose_split(int64_t tiles, int64_t depth, int sms, size_t out_bytes, size_t workspace_bytes) {
  auto busiest = [&](int64_t parts, int64_t chunk) {
    return static_cast<double>((tiles * parts + sms - 1) / sms) * chunk / depth;
  };
  Split best{1, depth};
  double least = busiest(1, depth);
  for (int p = 2; p <= 8; ++p) {
    const int64_t chunk = ((depth + p - 1) / p + 63) / 64 * 64, parts = (depth + chunk - 1) / chunk;
    if (chunk < 256 || parts * out_bytes > workspace_bytes) break;
    if (busiest(parts, chunk) < 0.9 * least) best = {static_cast<int>(parts), chunk}, least = busiest(parts, chunk);
  }
  return best;
}

const char* format_name(Format f) {
  switch (f) {
    case Format::int8: return "int8";
    case Format::nf4: return "nf4";
    case Format::nf4_nested: return "nf4_nested";
  }
  return "unknown format";
}

template <Format F, int M>
void launch_gemv(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                 cudaStream_t stream) {
  const int64_t blocks = (s.out_features + kBlockRows - 1) / kBlockRows;
  quant_gemv<F, M><<<static_cast<unsigned>(blocks), kGemvThreads, 0, stream>>>(x, w, bias, out, s.out_features,
                                                                                s.in_features);
}

// Chunks per thread and row of the streaming GEMV for `s`, 0 when it does
// not take s: x's chunks must fit in registers (1 row: K <= 16384, 2 rows:
// K <= 8192).
int stream_gemv_chunks(const QuantLinearShape& s) {
  if (s.grad_input || s.rows > 2) return 0;
  const int64_t c = (s.in_features / kChunk + kStreamThreads - 1) / kStreamThreads;
  return c <= (s.rows == 1 ? 4 : 2) ? static_cast<int>(c) : 0;
}

template <Format F, int M, int C>
void launch_gemv_stream(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                        cudaStream_t stream) {
  // Rows per step: 64 bytes of each thread's chunks in flight (as registers allow).
  constexpr int R = std::max(1, (M == 1 ? 8 : 4) / (C == 1 ? 1 : C == 2 ? 2 : 4) / (F == Format::int8 ? 2 : 1));
  const auto kernel = quant_gemv_stream<F, M, C, R>;
  static const int resident = [&] {
    int b = 0;
    TESSERA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, kernel, kStreamThreads, 0),
                       "quant_linear: the GEMV's blocks per SM");
    return std::max(b, 1);
  }();
  const int64_t blocks = std::min<int64_t>(s.out_features, int64_t{resident} * sm_count());
  kernel<<<static_cast<unsigned>(blocks), kStreamThreads, 0, stream>>>(x, w, bias, out, s.out_features,
                                                                       s.in_features);
}

template <Format F>
void launch(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
            cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  if (quant_gemv_mma_takes(s)) return launch_quant_gemv_mma(s, x, w, bias, out, stream);
  if constexpr (F != Format::nf4_nested) {
    switch (s.rows * 10 + stream_gemv_chunks(s)) {
      case 11: return launch_gemv_stream<F, 1, 1>(s, x, w, bias, out, stream);
      case 12: return launch_gemv_stream<F, 1, 2>(s, x, w, bias, out, stream);
      case 13: return launch_gemv_stream<F, 1, 3>(s, x, w, bias, out, stream);
      case 14: return launch_gemv_stream<F, 1, 4>(s, x, w, bias, out, stream);
      case 21: return launch_gemv_stream<F, 2, 1>(s, x, w, bias, out, stream);
      case 22: return launch_gemv_stream<F, 2, 2>(s, x, w, bias, out, stream);
      default: break;
    }
  }
  if (!s.grad_input && s.rows <= 8) {
    switch (s.rows) {
      case 1: launch_gemv<F, 1>(s, x, w, bias, out, stream); break;
      case 2: launch_gemv<F, 2>(s, x, w, bias, out, stream); break;
      case 3: launch_gemv<F, 3>(s, x, w, bias, out, stream); break;
      case 4: launch_gemv<F, 4>(s, x, w, bias, out, stream); break;
      case 5: launch_gemv<F, 5>(s, x, w, bias, out, stream); break;
      case 6: launch_gemv<F, 6>(s, x, w, bias, out, stream); break;
      case 7: launch_gemv<F, 7>(s, x, w, bias, out, stream); break;
      default: launch_gemv<F, 8>(s, x, w, bias, out, stream); break;
    }
    return;
  }
  const int64_t cols = s.grad_input ? s.in_features : s.out_features, depth = s.grad_input ? s.out_features : s.in_features;
  const int64_t tiles_x = (cols + kTile - 1) / kTile, tiles_y = (s.rows + kTile - 1) / kTile;
  const size_t out_bytes = static_cast<size_t>(s.rows * cols) * sizeof(float);
  const Split split =
      workspace ? choose_split(tiles_x * tiles_y, depth, sm_count(), out_bytes, workspace_bytes) : Split{1, depth};
  float* partial = split.parts > 1 ? static_cast<float*>(workspace) : out;
  const float* tile_bias = split.parts > 1 ? nullptr : bias;
  const dim3 grid(static_cast<unsigned>(tiles_x), static_cast<unsigned>(tiles_y), static_cast<unsigned>(split.parts));
  const auto kernel = s.grad_input ? (s.tf32 ? quant_tiled_tf32<F, true> : quant_tiled<F, true>)
                                   : (s.tf32 ? quant_tiled_tf32<F, false> : quant_tiled<F, false>);
  kernel<<<grid, kTileThreads, 0, stream>>>(x, w, tile_bias, partial, s.rows, s.out_features, s.in_features,
                                            split.chunk);
  if (split.parts > 1) {
    const int64_t count = s.rows * cols, blocks = std::min<int64_t>((count + 255) / 256, 8 * sm_count());
    sum_parts<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(partial, split.parts, count, cols, bias, out);
  }
}

}  // namespace

std::string QuantLinearShape::text() const {
  std::ostringstream o;
  const int64_t in = grad_input ? out_features : in_features, result = grad_input ? in_features : out_features;
  o << format_name(format) << (grad_input ? " grad_input" : " forward") << " [" << rows << " x " << in << "] -> ["
    << rows << " x " << result << "], W [" << out_features << " x " << in_features << "]" << (bias ? ", bias" : "")
    << (tf32 ? ", TF32" : "");
  return o.str();
}

std::string quant_linear_unsupported(const QuantLinearShape& s) {
  if (s.rows < 1 || s.out_features < 1 || s.in_features < 1) return "needs at least one row, output and input feature";
  if (s.in_features % 64 != 0) return "in_features " + std::to_string(s.in_features) + " is not a multiple of 64";
  if (s.grad_input && s.rows <= 8) return "grad_input of at most 8 rows has no kernel here";
  if (s.grad_input && s.bias) return "grad_input takes no bias";
  if ((s.rows + kTile - 1) / kTile > 65535) return "more than " + std::to_string(65535 * kTile) + " rows";
  return "";
}

void quant_linear(const QuantLinearShape& s, const float* x, const QuantWeight& qw, const float* bias, float* out,
                  cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  const std::string where = "quant_linear " + s.text();
  if (const std::string why = quant_linear_unsupported(s); !why.empty()) throw Error(where + ": " + why);
  const bool nested = s.format == Format::nf4_nested;
  if (!qw.weight || !qw.scale || !x || !out || (s.bias && !bias) ||
      (nested && (!qw.nested_absmax || !qw.nested_quant_map || !qw.nested_offset)))
    throw Error(where + ": a tensor it needs is a null pointer");
  if (reinterpret_cast<uintptr_t>(qw.weight) % 16 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0)
    throw Error(where + ": the weight and x must be 16-byte aligned");
  const Weight w{static_cast<const uint8_t*>(qw.weight), qw.scale, qw.nested_absmax, qw.nested_quant_map,
                 qw.nested_offset};
  const float* b = s.bias ? bias : nullptr;
  switch (s.format) {
    case Format::int8: launch<Format::int8>(s, x, w, b, out, stream, workspace, workspace_bytes); break;
    case Format::nf4: launch<Format::nf4>(s, x, w, b, out, stream, workspace, workspace_bytes); break;
    case Format::nf4_nested:
      launch<Format::nf4_nested>(s, x, w, b, out, stream, workspace, workspace_bytes);
      break;
  }
  TESSERA_CUDA_CHECK(cudaGetLastError(), where);
}

}  // namespace tessera::cuda
