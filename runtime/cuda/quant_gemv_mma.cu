// The tensor-core GEMV: NF4 (plain or double-quantized) and int8 forwards
// of a few rows, out = x @ W^T (+ bias), with f32 x, bias and out as
// tessera/cuda/quant_linear.h promises. quant_linear.cu decides when it
// runs (quant_gemv_mma_takes): 3 to 8 rows, with exact operands or, with
// QuantLinearShape::tf32, rounded ones. It does not take grad_input, 1 or
// 2 rows (the f32 GEMVs are faster there, below) or x too large for
// shared memory.
//
// Idea: decoding into f32 costs, per element, an FMA and for NF4 a byte
// permute and a code-book load; the f32 GEMVs reload x for every four
// output features. Here W is decoded into the f16 pairs an mma.sync
// m16n8k16 operand register holds (NF4: one code-book load per byte for
// both its elements; int8: a byte permute builds 1024 + byte, an f16
// subtraction removes the bias), the multiply-adds go to the tensor cores
// (a 16 x 16 slice of W each), and x, in shared memory, is shared by all.
//
// Exactness. f16 holds 11 significant bits, f32 24.
//  - Exact operands: x is carried as two f16, hi + lo (hi = f16(v), lo =
//    f16(v - hi)): 22 bits, and so is an NF4 code-book value (int8 values
//    are f16 integers). One mma multiplies W (NF4: its hi parts) by x's hi
//    and lo columns, a second NF4's lo parts: all the products, summed in
//    f32. More than 4 rows take a second group of 8 columns (two mmas per
//    decoded operand). Each has the error of 22-bit operands (about 2^-22 relative,
//    f32's is 2^-24); the tests hold it to f32's tolerance.
//  - tf32: x and NF4's W rounded to f16 once (as precise as TF32), one mma.
//  - NF4's 16 code-book values are split once, into a table. x is split
//    per 64-element slice after scaling by a power of two (2^-e, e the
//    exponent of the slice's largest |x|), so the slice lies in (-2, 2):
//    nothing overflows, and elements below 2^-24 of the slice's largest
//    are lost (f32's sum all but loses them too). The scale and 2^e
//    multiply each slice's sum in f32. A slice of x that holds an inf or
//    NaN makes its row's outputs NaN.
//
// Work. Block b (one per SM, 16 warps) computes output features
// [b N / G, (b + 1) N / G), 16 at a time (the mma's rows). The 16 warps
// split K: warp w multiplies 64-element blocks [w KB / 16, (w + 1) KB / 16)
// (KB = K / 64, NF4's absmax blocks) of the 16 rows, two blocks of both its
// rows g and g + 8 a step, the next step's loads issued before this one is
// multiplied. The warps' sums meet in shared memory once per 16 rows, added
// in warp order (deterministic). Lane (g, q) holds, for its two rows,
// elements 16q..16q+15 of a block (NF4: bytes 8q..8q+7); the mma's k slots
// are permuted to match (a dot product does not care about order), so that
// x's operand is 16 contiguous elements of a column and all four lanes of
// a row read one absmax block.
//
// Shared memory (one block per SM): NF4's code-book table, per byte the hi
// pairs of 32 lanes then their lo pairs (64 KiB; each lane its own column,
// so 32 lanes' loads of random bytes never conflict; a byte permute turns
// byte and lane into the address); x as [block][column][64] f16, columns
// x row j's hi and lo (or its hi with tf32); the slices' scales; the
// nested map; the warps' sums.
//
// Measured on an H200 (bench_quant_gpu, 11008 x 4096; cuBLASLt's bf16
// GEMV 23-25 us, a device copy 4.25 TB/s), against the f32 GEMVs:
//  - exact, 3, 4 and 8 rows: NF4 26.8, 26.6 and 36.5 us (f32 GEMV 28.4,
//    28.9, 46.2), double-quantized 26.4, 27.5 and 36.7 (28.5, 35.6, 48.9),
//    int8 21.6, 19.8 and 25.5 (25.9, 32.1, 42.7).
//  - tf32, 3, 4 and 8 rows: NF4 22.2, 22.6 and 27.6 us (8 rows: f32 GEMV
//    46.2), double-quantized 22.3, 21.9 and 28.2 (48.9), int8 21.0, 21.3
//    and 23.5 (42.7; cuBLASLt's bf16 GEMV 24.3).
//  - 1 row of NF4, tf32: 20.7 us against the streaming f32 GEMV's 14.1;
//    exact: 21-24 us. Nsight Compute (4096 x 4096): 8 instructions per
//    element, 2 issued per cycle and SM, stalls led by the shared-memory
//    queue (MIO throttle) and the mma and table-load dependencies; so it
//    does not take 1 or 2 rows.
//  - Tried and not kept: prefetching 2 steps ahead in registers (22-24 us
//    exact, 1 row), steps of 4 or 3 blocks (slower: spills, or partial
//    steps at K = 4096), a cp.async ring of 4 steps in shared memory per
//    warp (tf32, 1 row: 35 us; its tests failed too), 2 blocks of 8 warps
//    per SM (tf32: 1 row 18.2 us, 8 rows 33.7).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <type_traits>

#include "quant_linear_common.cuh"
#include "tessera/cuda/check.h"

namespace tessera::cuda::detail {

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kGroup = 2;   // 64-element blocks per row a lane loads at a time (a step)
constexpr int kXBatch = 8;  // slices of x a warp loads at once
// NF4's code-book table (int8 needs none: its values are f16 integers).
__host__ __device__ constexpr size_t table_bytes(Format f) {
  return f == Format::int8 ? 0 : 256 * 2 * 32 * sizeof(uint32_t);
}

// Shared memory for R rows of x, K inputs: table, x, scales, nested map, sums.
size_t shared_bytes(Format f, int R, int64_t K, bool precise) {
  const size_t KB = static_cast<size_t>(K / 64), cols = precise ? 2 * R : R;
  return table_bytes(f) + KB * cols * 64 * sizeof(__half) + KB * R * sizeof(float) + 256 * sizeof(float) +
         2 * kWarps * R * 16 * sizeof(float);
}

__device__ __forceinline__ uint32_t bits_of(__half2 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}

// d += a (16 x 16, row-major) * b (16 x 8, column-major): f16 in, f32 sums.
__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// One lane's loads for kGroup 64-element blocks of its two rows
// (h = 0: g, 1: g + 8): elements 16q..16q+15 of each.
template <Format F>
struct Group {
  std::conditional_t<F == Format::int8, uint4, uint2> bits[2][kGroup];
  float scale[2][kGroup];  // nf4: the absmax; nf4_nested: the nested absmax; int8: the row's scale
  int code[2][kGroup];     // nf4_nested: the absmax's code
};

// Elements i, i + 1 of an int8 word as an f16 pair: 1024 + (byte ^ 0x80)
// is the f16 whose low byte is that, less 1152 (all exact).
__device__ __forceinline__ uint32_t int8_pair(uint32_t word, int i) {
  const uint32_t biased = __byte_perm(word ^ 0x80808080u, 0x64646464u, 0x4040u | i | ((i + 1) << 8));
  __half2 h = *reinterpret_cast<const __half2*>(&biased);
  h = __hsub2(h, __float2half2_rn(1152.0f));
  return bits_of(h);
}

template <Format F, int R, bool kPrecise>
__global__ void __launch_bounds__(kThreads, 1)
    quant_gemv_mma(const float* __restrict__ x, Weight w, const float* __restrict__ bias, float* __restrict__ out,
                   int N, int K) {
  constexpr int kCols = kPrecise ? 2 * R : R;  // x row j's hi and lo, or its hi
  constexpr int kCG = (kCols + 7) / 8;         // groups of the mma's 8 columns
  static_assert(kCG <= 2, "at most 16 columns of x");
  extern __shared__ __align__(16) unsigned char smem[];
  const int KB = K / 64;
  uint32_t* table = reinterpret_cast<uint32_t*>(smem);
  __half* xs = reinterpret_cast<__half*>(smem + table_bytes(F));                         // [KB][kCols][64]
  float* x_scale = reinterpret_cast<float*>(xs + static_cast<size_t>(KB) * kCols * 64);  // [R][KB]
  float* map = x_scale + KB * R;
  float* partial = map + 256;  // [2][kWarps][R][16]

  const int t = threadIdx.x, lane = t % 32, warp = t / 32, g = lane / 4, q = lane % 4;
  const int first = static_cast<int>(static_cast<int64_t>(blockIdx.x) * N / gridDim.x);
  const int last = static_cast<int>(static_cast<int64_t>(blockIdx.x + 1) * N / gridDim.x);
  const int kb_begin = warp * KB / kWarps, kb_end = (warp + 1) * KB / kWarps;
  // Groups per 16 rows; a warp without blocks (K < 1024) runs one of zeros.
  const int groups = max((kb_end - kb_begin + kGroup - 1) / kGroup, 1);
  const int tiles = (last - first + 15) / 16;

  // Group `gi` of 16-row tile `tile`. Rows past `last` and blocks past
  // kb_end load a valid block (clamped) with a zero scale.
  auto load = [&](Group<F>& s, int tile, int gi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = first + 16 * tile + g + 8 * h;
      const int64_t row = min(n, last - 1);
      using Bits = std::remove_reference_t<decltype(s.bits[0][0])>;
      const Bits* bits = reinterpret_cast<const Bits*>(w.packed) + row * KB * 4 + q;  // 4 per block
      const int64_t row_block = row * KB;
      float row_scale = 0.0f;
      if constexpr (F == Format::int8) row_scale = __ldg(static_cast<const float*>(w.scale) + row);
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        const int kb = kb_begin + kGroup * gi + u, clamped = max(min(kb, kb_end - 1), 0);
        const bool ok = n < last && kb < kb_end;
        s.bits[h][u] = __ldg(bits + clamped * 4);
        if constexpr (F == Format::int8) {
          s.scale[h][u] = ok ? row_scale : 0.0f;
        } else if constexpr (F == Format::nf4) {
          const float a = __ldg(static_cast<const float*>(w.scale) + row_block + clamped);
          s.scale[h][u] = ok ? a : 0.0f;
        } else {
          s.code[h][u] = __ldg(static_cast<const uint8_t*>(w.scale) + row_block + clamped);
          const float a = __ldg(w.nested_absmax + (row_block + clamped) / 256);
          s.scale[h][u] = ok ? a : 0.0f;
        }
      }
    }
  };
  // The first group loads while the table and x are set up.
  Group<F> buffer[2];
  load(buffer[0], 0, 0);

  // The table: byte b's two elements as an f16 pair, hi at b * 256 + lane
  // * 4, lo 128 bytes on.
  for (int e = t; F != Format::int8 && e < 256 * 32; e += kThreads) {
    const int byte = e / 32, l = e % 32;
    const float v0 = kNF4CodeBook[byte >> 4], v1 = kNF4CodeBook[byte & 15];
    const __half h0 = __float2half_rn(v0), h1 = __float2half_rn(v1);
    table[byte * 64 + l] = bits_of(__halves2half2(h0, h1));
    table[byte * 64 + 32 + l] = bits_of(__floats2half2_rn(v0 - __half2float(h0), v1 - __half2float(h1)));
  }
  // x, a 64-element slice per warp at a time (slice i is x[i * 64..]: row
  // i / KB, block i % KB), scaled by 2^-e and split into hi (and lo); each
  // warp loads kXBatch slices before it uses any.
  for (int first_slice = warp; first_slice < R * KB; first_slice += kWarps * kXBatch) {
    float2 v[kXBatch];
#pragma unroll
    for (int b = 0; b < kXBatch; ++b) {
      const int i = first_slice + b * kWarps;
      v[b] = i < R * KB ? __ldg(reinterpret_cast<const float2*>(x + static_cast<int64_t>(i) * 64) + lane)
                        : make_float2(0.0f, 0.0f);
    }
#pragma unroll
    for (int b = 0; b < kXBatch; ++b) {
      const int i = first_slice + b * kWarps, j = i / KB, kb = i % KB;
      float m = fmaxf(fabsf(v[b].x), fabsf(v[b].y));
#pragma unroll
      for (int d = 16; d > 0; d /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, d));
      const bool finite = __all_sync(0xffffffffu, isfinite(v[b].x) && isfinite(v[b].y));
      const int e = min(max(__float_as_int(m) >> 23, 27), 253);  // biased exponent, so 1 / 2^e is a normal float
      const float inv = __int_as_float((254 - e) << 23), v0 = v[b].x * inv, v1 = v[b].y * inv;
      const __half h0 = __float2half_rn(v0), h1 = __float2half_rn(v1);
      if (i < R * KB) {
        __half2* column =
            reinterpret_cast<__half2*>(xs + (static_cast<size_t>(kb) * kCols + (kPrecise ? 2 * j : j)) * 64);
        column[lane] = __halves2half2(h0, h1);
        if constexpr (kPrecise) column[32 + lane] = __floats2half2_rn(v0 - __half2float(h0), v1 - __half2float(h1));
        if (lane == 0) x_scale[j * KB + kb] = finite ? __int_as_float(e << 23) : __int_as_float(0x7fc00000);
      }
    }
  }
  float offset = 0.0f;
  if constexpr (F == Format::nf4_nested) {
    for (int i = t; i < 256; i += kThreads) map[i] = __ldg(w.nested_map + i);
    offset = __ldg(w.nested_offset);
  }
  __syncthreads();

  const uint32_t lane_bytes = lane * 4;
  const char* table_base = reinterpret_cast<const char*>(table);
  // Byte i of `word` as the hi (lo: +128) f16 pair of this lane's column:
  // a byte permute makes the address byte * 256 + lane * 4.
  auto lookup = [&](uint32_t word, int i, int lo) {
    return *reinterpret_cast<const uint32_t*>(table_base + __byte_perm(word, lane_bytes, 0x5504u | (i << 4)) +
                                              128 * lo);
  };
  // The x row of this lane's accumulator column 8 cg + 2q + e (e = 0, 1).
  auto x_row = [&](int cg, int e) { return kPrecise ? 4 * cg + q : 8 * cg + 2 * q + e; };
  // Group `gi` of buffer `s` into acc: W rows g, g + 8 x columns 8 cg + 2q, 8 cg + 2q + 1.
  auto multiply = [&](const Group<F>& s, int gi, float(&acc)[kCG][4]) {
#pragma unroll
    for (int u = 0; u < kGroup; ++u) {
      // A block past kb_end multiplies zeros, so that no inf or NaN of x reaches the sums.
      const int kb = kb_begin + kGroup * gi + u;
      uint32_t xb[kCG][8] = {};
#pragma unroll
      for (int cg = 0; cg < kCG; ++cg)
        if (8 * cg + g < kCols && kb < kb_end) {
          const uint4* src =
              reinterpret_cast<const uint4*>(xs + (static_cast<size_t>(kb) * kCols + 8 * cg + g) * 64 + q * 16);
          const uint4 lo = src[0], hi = src[1];
          xb[cg][0] = lo.x, xb[cg][1] = lo.y, xb[cg][2] = lo.z, xb[cg][3] = lo.w;
          xb[cg][4] = hi.x, xb[cg][5] = hi.y, xb[cg][6] = hi.z, xb[cg][7] = hi.w;
        }
      float c[kCG][4] = {}, c_lo[kCG][4] = {};  // W's hi and lo parts: two chains of mmas
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        // k slots 2q, 2q + 1 hold elements 16q + 4m + {0, 1} (NF4: byte 2m
        // of the lane's eight), slots 2q + 8, 2q + 9 elements 16q + 4m + {2, 3}.
        if constexpr (F == Format::int8) {
          // f16 holds int8 values exactly: no lo part.
          const uint32_t wa = reinterpret_cast<const uint32_t*>(&s.bits[0][u])[m];
          const uint32_t wb = reinterpret_cast<const uint32_t*>(&s.bits[1][u])[m];
          const uint32_t a0 = int8_pair(wa, 0), a1 = int8_pair(wb, 0), a2 = int8_pair(wa, 2), a3 = int8_pair(wb, 2);
#pragma unroll
          for (int cg = 0; cg < kCG; ++cg) mma_f16(c[cg], a0, a1, a2, a3, xb[cg][2 * m], xb[cg][2 * m + 1]);
        } else {
          const uint32_t wa = m < 2 ? s.bits[0][u].x : s.bits[0][u].y;
          const uint32_t wb = m < 2 ? s.bits[1][u].x : s.bits[1][u].y;
          const int i = 2 * (m % 2);
          const uint32_t a0 = lookup(wa, i, 0), a1 = lookup(wb, i, 0), a2 = lookup(wa, i + 1, 0),
                         a3 = lookup(wb, i + 1, 0);
#pragma unroll
          for (int cg = 0; cg < kCG; ++cg) mma_f16(c[cg], a0, a1, a2, a3, xb[cg][2 * m], xb[cg][2 * m + 1]);
          if constexpr (kPrecise) {
            const uint32_t l0 = lookup(wa, i, 1), l1 = lookup(wb, i, 1), l2 = lookup(wa, i + 1, 1),
                           l3 = lookup(wb, i + 1, 1);
#pragma unroll
            for (int cg = 0; cg < kCG; ++cg) mma_f16(c_lo[cg], l0, l1, l2, l3, xb[cg][2 * m], xb[cg][2 * m + 1]);
          }
        }
      }
      float sa = s.scale[0][u], sb = s.scale[1][u];
      if constexpr (F == Format::nf4_nested) {
        sa = nested_value(map[s.code[0][u]], sa, offset);
        sb = nested_value(map[s.code[1][u]], sb, offset);
      }
      const bool used = kb < kb_end;
#pragma unroll
      for (int cg = 0; cg < kCG; ++cg) {
        if constexpr (kPrecise) {
#pragma unroll
          for (int i = 0; i < 4; ++i) c[cg][i] += c_lo[cg][i];
        }
        const int r0 = x_row(cg, 0), r1 = x_row(cg, 1);
        const float sx0 = used && r0 < R ? x_scale[r0 * KB + kb] : 0.0f;
        const float sx1 = used && r1 < R ? x_scale[r1 * KB + kb] : 0.0f;
        acc[cg][0] = fmaf(c[cg][0], sa * sx0, acc[cg][0]), acc[cg][1] = fmaf(c[cg][1], sa * sx1, acc[cg][1]);
        acc[cg][2] = fmaf(c[cg][2], sb * sx0, acc[cg][2]), acc[cg][3] = fmaf(c[cg][3], sb * sx1, acc[cg][3]);
      }
    }
  };
  // The warps' sums of a tile's 16 rows, added in warp order.
  auto finish_tile = [&](int tile, const float(&acc)[kCG][4]) {
    float* sums = partial + (tile % 2) * kWarps * R * 16;
#pragma unroll
    for (int cg = 0; cg < kCG; ++cg) {
      const int r0 = x_row(cg, 0), r1 = x_row(cg, 1);
      if (kPrecise && r0 < R) {
        sums[(warp * R + r0) * 16 + g] = acc[cg][0] + acc[cg][1];
        sums[(warp * R + r0) * 16 + g + 8] = acc[cg][2] + acc[cg][3];
      }
      if (!kPrecise && r0 < R) {
        sums[(warp * R + r0) * 16 + g] = acc[cg][0];
        sums[(warp * R + r0) * 16 + g + 8] = acc[cg][2];
      }
      if (!kPrecise && r1 < R) {
        sums[(warp * R + r1) * 16 + g] = acc[cg][1];
        sums[(warp * R + r1) * 16 + g + 8] = acc[cg][3];
      }
    }
    __syncthreads();  // sums[tile % 2] is next written two tiles on, after the next barrier
    if (t < 16 * R) {
      const int j = t / 16, r = t % 16, n = first + 16 * tile + r;
      if (n < last) {
        float v = sums[j * 16 + r];
        for (int i = 1; i < kWarps; ++i) v += sums[(i * R + j) * 16 + r];
        out[static_cast<int64_t>(j) * N + n] = bias ? v + bias[n] : v;
      }
    }
  };
  // Step i (group i % groups of tile i / groups) is in buffer[i % 2]; the
  // next step loads into the other buffer before this one is multiplied.
  // Warps end their tiles at different steps but meet at one barrier per tile.
  int load_tile = 0, load_group = 0, tile = 0, gi = 0;
  auto advance = [&](int& tile_, int& group_) {
    if (++group_ == groups) group_ = 0, ++tile_;
  };
  advance(load_tile, load_group);  // buffer[0] holds step 0
  float acc[kCG][4] = {};
  auto step = [&](const Group<F>& use, Group<F>& fill) {
    if (load_tile < tiles) load(fill, load_tile, load_group), advance(load_tile, load_group);
    multiply(use, gi, acc);
    if (gi + 1 == groups) {
      finish_tile(tile, acc);
#pragma unroll
      for (int cg = 0; cg < kCG; ++cg) acc[cg][0] = acc[cg][1] = acc[cg][2] = acc[cg][3] = 0.0f;
    }
    advance(tile, gi);
  };
  for (int i = 0; i < tiles * groups; i += 2) {
    step(buffer[0], buffer[1]);
    if (i + 1 < tiles * groups) step(buffer[1], buffer[0]);
  }
}

// The most dynamic shared memory a block may have on the current device.
int shared_limit() {
  return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>("the device's shared memory per block");
}

template <Format F, int R, bool kPrecise>
void launch(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
            cudaStream_t stream) {
  const auto kernel = quant_gemv_mma<F, R, kPrecise>;
  // Raised once to the device's limit (the attribute call is not allowed
  // while a stream captures; plans run once before they capture).
  static std::once_flag allowed;
  std::call_once(allowed, [&] {
    TESSERA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_limit()),
                       "quant_linear: the tensor-core GEMV's shared memory");
  });
  const int64_t blocks = std::min<int64_t>(sm_count(), (s.out_features + 15) / 16);
  kernel<<<static_cast<unsigned>(blocks), kThreads, shared_bytes(F, R, s.in_features, kPrecise), stream>>>(
      x, w, bias, out, static_cast<int>(s.out_features), static_cast<int>(s.in_features));
}

template <Format F, bool kPrecise>
void launch_rows(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                 cudaStream_t stream) {
  switch (s.rows) {
    case 3: return launch<F, 3, kPrecise>(s, x, w, bias, out, stream);
    case 4: return launch<F, 4, kPrecise>(s, x, w, bias, out, stream);
    case 5: return launch<F, 5, kPrecise>(s, x, w, bias, out, stream);
    case 6: return launch<F, 6, kPrecise>(s, x, w, bias, out, stream);
    case 7: return launch<F, 7, kPrecise>(s, x, w, bias, out, stream);
    default: return launch<F, 8, kPrecise>(s, x, w, bias, out, stream);
  }
}

template <Format F>
void launch_format(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                   cudaStream_t stream) {
  if (s.tf32)
    launch_rows<F, false>(s, x, w, bias, out, stream);
  else
    launch_rows<F, true>(s, x, w, bias, out, stream);
}

}  // namespace

bool quant_gemv_mma_takes(const QuantLinearShape& s) {
  if (s.grad_input) return false;
  // 3 to 8 rows: fewer run faster in the f32 GEMVs (see the header).
  if (s.rows < 3 || s.rows > 8) return false;
  if (s.out_features > INT_MAX || s.in_features > INT_MAX / 2) return false;
  return shared_bytes(s.format, static_cast<int>(s.rows), s.in_features, !s.tf32) <=
         static_cast<size_t>(shared_limit());
}

void launch_quant_gemv_mma(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                           cudaStream_t stream) {
  switch (s.format) {
    case Format::int8: return launch_format<Format::int8>(s, x, w, bias, out, stream);
    case Format::nf4: return launch_format<Format::nf4>(s, x, w, bias, out, stream);
    case Format::nf4_nested: return launch_format<Format::nf4_nested>(s, x, w, bias, out, stream);
  }
}

}  // namespace tessera::cuda::detail
