// bf16 fused attention on the tensor cores (see attention_mma.h).
//
// Blocks of 4 warps take 64 rows (queries; keys for dk/dv); warp w owns
// rows 16w..16w+15 and computes, against a 64-row tile of the other side,
// its 16 x 64 strip of scores as mma.sync m16n8k16 accumulators in
// registers. mma's accumulator layout is its A-operand layout, so the
// probabilities (or score gradients) feed the next product straight from
// registers, rounded to bf16, without passing through shared memory.
//
// Register layout of a strip (PTX ISA, mma.m16n8k16): lane l holds rows
// g = l / 4 and g + 8, and in each 8-column block n the columns 8n + 2(l % 4)
// and + 1; s[n][0..1] is row g, s[n][2..3] row g + 8. A row's statistics
// combine over the 4 lanes of a group (shuffles by 1 and 2).
//
// Shared tiles are 64 rows of D bf16, padded by 8 elements so that the
// 8 row addresses of every ldmatrix fall in distinct banks. Tiles move
// global -> shared by cp.async (16-byte chunks; rows past seq zero-filled),
// the next tile's copy overlapping the current tile's products.
// Exponentials are exp2 of scores pre-scaled by log2(e).
//
// Tensors are addressed through their strides (AttentionLayout, resolved):
// block y's [seq, D] matrix of tensor X starts (y / heads) * X.batch +
// (y % heads) * X.head elements from X's pointer, and its row t is t * X.row
// further (BlockMatrices, computed once per block). The row statistics
// (lse, rowdot) are dense [batch, seq] floats.
#include <cuda_bf16.h>

#include <cstdint>
#include <mutex>
#include <type_traits>

#include "attention_mma.h"
#include "kernel_launch.h"

namespace tessera::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kRows = 64;  // rows of a block's tile and of a score strip's columns
constexpr int kThreads = 128;
constexpr int kPad = 8;  // bf16 elements of padding per shared row
constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

template <int D>
constexpr int kLd = D + kPad;  // a shared tile's row stride, in elements
template <int D>
constexpr int kTileElems = kRows * kLd<D>;

// ---- PTX wrappers ----

__device__ uint32_t shared_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, asynchronously; zeros when !valid (src unread).
__device__ void copy16_async(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ void async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ void async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Four 8x8 b16 matrices from shared memory; lane l gives the address of row
// l % 8 of matrix l / 8.
__device__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

// c += a b for one 16 x 8 accumulator, a 16 x 16 and b 16 x 8 (bf16).
__device__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as a bf16 pair (round to nearest even), lo in the low half.
__device__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ---- operand fragments from a shared tile (row stride ld) ----

// A operand: rows r0..r0+15, columns c0..c0+15 of the tile.
__device__ void load_a(uint32_t (&a)[4], const bf16* tile, int ld, int r0, int c0) {
  const int lane = threadIdx.x % 32, m = lane / 8;
  ldmatrix_x4(a, tile + (r0 + (m & 1) * 8 + lane % 8) * ld + c0 + (m >> 1) * 8);
}
// B operands of two 8-column blocks n0.. and n0+8.. (b[0..1] and b[2..3]),
// rows k0..k0+15 of B, where B[k][n] = tile[n][k] (the tile holds B^T).
__device__ void load_b_transposed(uint32_t (&b)[4], const bf16* tile, int ld, int n0, int k0) {
  const int lane = threadIdx.x % 32, m = lane / 8;
  ldmatrix_x4(b, tile + (n0 + (m >> 1) * 8 + lane % 8) * ld + k0 + (m & 1) * 8);
}
// The same where B[k][n] = tile[k][n] (the tile holds B).
__device__ void load_b(uint32_t (&b)[4], const bf16* tile, int ld, int k0, int n0) {
  const int lane = threadIdx.x % 32, m = lane / 8;
  ldmatrix_x4_trans(b, tile + (k0 + (m & 1) * 8 + lane % 8) * ld + n0 + (m >> 1) * 8);
}

// ---- strip products ----

// s = A B^T for the warp's 16 x 64 strip: A from registers (16 x D, as
// fragments), B^T a 64 x D shared tile (its rows are the strip's columns).
template <int D>
__device__ void strip_scores(float (&s)[8][4], const uint32_t (&a)[D / 16][4], const bf16* tile) {
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc)
#pragma unroll
    for (int np = 0; np < 4; ++np) {
      uint32_t b[4];
      load_b_transposed(b, tile, kLd<D>, 16 * np, 16 * kc);
      mma(s[2 * np], a[kc], b[0], b[1]);
      mma(s[2 * np + 1], a[kc], b[2], b[3]);
    }
}

// acc += p B for the warp's 16 x D accumulator: p the 16 x 64 strip in
// registers (rounded to bf16 here), B a 64 x D shared tile.
template <int D>
__device__ void strip_accumulate(float (&acc)[D / 8][4], const float (&p)[8][4], const bf16* tile) {
#pragma unroll
  for (int kc = 0; kc < 4; ++kc) {
    const uint32_t a[4] = {pack_bf16(p[2 * kc][0], p[2 * kc][1]), pack_bf16(p[2 * kc][2], p[2 * kc][3]),
                           pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]),
                           pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
    for (int np = 0; np < D / 16; ++np) {
      uint32_t b[4];
      load_b(b, tile, kLd<D>, 16 * kc, 16 * np);
      mma(acc[2 * np], a, b[0], b[1]);
      mma(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// The warp's 16 rows of a shared tile as A fragments.
template <int D>
__device__ void strip_fragments(uint32_t (&a)[D / 16][4], const bf16* tile) {
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int kc = 0; kc < D / 16; ++kc) load_a(a[kc], tile, kLd<D>, 16 * warp, 16 * kc);
}

// ---- tensors, tiles, rows, stores ----

// A block's [seq, D] matrix of one tensor: row t starts at data + t * stride
// (elements; |stride| < 2^31, mma_attention_takes); its D elements are
// contiguous.
template <typename T>
struct Matrix {
  T* data;
  int stride;
  __device__ T* row(int64_t t) const { return data + t * stride; }
};

// Block blockIdx.y = outer * heads + head's matrix of a tensor with strides x
// starts outer * x.batch + head * x.head elements from the tensor's pointer.
struct BlockMatrices {
  int64_t outer, head;
  __device__ explicit BlockMatrices(int64_t heads)
      : outer(blockIdx.y / static_cast<unsigned>(heads)), head(blockIdx.y % static_cast<unsigned>(heads)) {}
  template <typename T>
  __device__ Matrix<T> operator()(T* data, const AttentionStrides& x) const {
    return {data + outer * x.batch + head * x.head, static_cast<int>(x.row)};
  }
};

// Starts copying rows row0..row0+63 of matrix m into a shared tile. Thread
// i copies chunk i % kChunks of rows i / kChunks + kStep * u: one pointer
// per thread, stepped by kStep rows.
template <int D>
__device__ void load_tile_async(bf16* tile, const Matrix<const bf16>& m, int64_t row0, int64_t seq) {
  constexpr int kChunks = D / 8;             // 16-byte chunks per row
  constexpr int kStep = kThreads / kChunks;  // rows between a thread's chunks
  const int r = threadIdx.x / kChunks, c = (threadIdx.x % kChunks) * 8;
  const bf16* src = m.row(row0 + r) + c;
  const int64_t step = static_cast<int64_t>(kStep) * m.stride;
#pragma unroll
  for (int u = 0; u < kRows / kStep; ++u) {
    const bool valid = row0 + r + u * kStep < seq;
    copy16_async(tile + (r + u * kStep) * kLd<D> + c, valid ? src : m.data, valid);
    src += step;
  }
}

// The key and value tiles t of a loop over `last` of them, double-buffered
// (tile t in buffer t & 1): starts copying tile t + 1 into the other
// buffer, then waits for tile t (copies of every thread, then the block).
// The caller's loop ends with __syncthreads(), so no warp still reads the
// buffer being refilled.
template <int D>
__device__ void await_key_tile(bf16* Ks, bf16* Vs, const Matrix<const bf16>& k, const Matrix<const bf16>& v,
                               int64_t t, int64_t last, int64_t seq) {
  if (t + 1 < last) {
    const int next = (t + 1) & 1;
    load_tile_async<D>(Ks + next * kTileElems<D>, k, (t + 1) * kRows, seq);
    load_tile_async<D>(Vs + next * kTileElems<D>, v, (t + 1) * kRows, seq);
    async_commit();
    async_wait<1>();
  } else {
    async_wait<0>();
  }
  __syncthreads();
}

// The lane's two rows (g, g + 8) of its warp's strip, from row0 of the tile.
struct LaneRows {
  int64_t row[2];
  __device__ explicit LaneRows(int64_t row0) {
    const int64_t r = row0 + 16 * (threadIdx.x / 32) + (threadIdx.x % 32) / 4;
    row[0] = r;
    row[1] = r + 8;
  }
};
// Column of accumulator element e of 8-column block n.
__device__ int strip_column(int n, int e) { return 8 * n + 2 * (threadIdx.x % 4) + (e & 1); }

// Sum and max over the 4 lanes that share a row.
__device__ float row_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ float row_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Stores a 16 x D accumulator times `factor[h]` (per row) to rows of matrix dst.
template <int D>
__device__ void store_strip(const Matrix<bf16>& dst, const float (&acc)[D / 8][4], const LaneRows& rows, int64_t seq,
                            const float (&factor)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (rows.row[h] >= seq) continue;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<__nv_bfloat162*>(dst.row(rows.row[h]) + strip_column(n, 0)) =
          __floats2bfloat162_rn(acc[n][2 * h] * factor[h], acc[n][2 * h + 1] * factor[h]);
  }
}

template <int D>
__device__ void zero(float (&acc)[D / 8][4]) {
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
}

// Key j is hidden from query i: past the sequence, or after i when causal.
__device__ bool masked(int64_t i, int64_t j, int64_t seq, bool causal) { return j >= seq || (causal && j > i); }

__host__ __device__ int64_t tiles_of(int64_t seq) { return (seq + kRows - 1) / kRows; }

// Minimum blocks per SM in __launch_bounds__ where ptxas, left alone, takes
// a few registers more than 128 and fits 3 blocks instead of 4: the dq
// kernel at D 32 (on sm_80) and the dk/dv kernel at D 16 (9% slower on an
// H200). No spills at 128 (-Xptxas -v, sm_80 and sm_90). Elsewhere 0: no
// hint (even a hint of 1 changes ptxas's choices).
constexpr int kFourBlocks = 4;

// ---- forward: one block per (query tile, batch), heaviest causal tiles first ----

// `layout`: every tensor's strides, resolved (in elements; see BlockMatrices).
template <int D>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, AttentionLayout layout,
                   int64_t seq, float scale, bool causal) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Ks = Qs + kTileElems<D>;      // two buffers
  bf16* Vs = Ks + 2 * kTileElems<D>;  // two buffers
  const int64_t tiles = tiles_of(seq), qt = tiles - 1 - blockIdx.x, q0 = qt * kRows;
  const BlockMatrices at(layout.heads);
  const Matrix<const bf16> qm = at(q, layout.q), km = at(k, layout.k), vm = at(v, layout.v);
  const int64_t last = causal ? qt + 1 : tiles;  // key tiles read
  const LaneRows rows(q0);
  load_tile_async<D>(Qs, qm, q0, seq);
  load_tile_async<D>(Ks, km, 0, seq);
  load_tile_async<D>(Vs, vm, 0, seq);
  async_commit();
  const float scale2 = scale * kLog2e;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // per row, in log2 units; l lane-partial
  float o[D / 8][4];
  zero<D>(o);
  uint32_t qa[D / 16][4];
  for (int64_t t = 0; t < last; ++t) {
    const int buf = t & 1;
    await_key_tile<D>(Ks, Vs, km, vm, t, last, seq);
    if (t == 0) strip_fragments<D>(qa, Qs);
    float s[8][4];
    strip_scores<D>(s, qa, Ks + buf * kTileElems<D>);
    const int64_t k0 = t * kRows;
    const bool edge = (causal && t == qt) || k0 + kRows > seq;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * scale2;
        if (edge && masked(rows.row[e / 2], k0 + strip_column(n, e), seq, causal)) x = -INFINITY;
        s[n][e] = x;
        mx[e / 2] = fmaxf(mx[e / 2], x);
      }
    float shift[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m_new = fmaxf(m[h], row_max(mx[h]));
      shift[h] = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2_approx(m[h] - shift[h]);
      m[h] = m_new;
      l[h] *= alpha;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[n][2 * h] *= alpha;
        o[n][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2_approx(s[n][e] - shift[e / 2]);
        l[e / 2] += s[n][e];
      }
    strip_accumulate<D>(o, s, Vs + buf * kTileElems<D>);
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] = row_sum(l[h]);
    inv[h] = 1.0f / l[h];
  }
  store_strip<D>(at(out, layout.out), o, rows, seq, inv);
  if (lse && threadIdx.x % 4 == 0)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (rows.row[h] < seq) lse[static_cast<int64_t>(blockIdx.y) * seq + rows.row[h]] = (m[h] + __log2f(l[h])) * kLn2;
}

// ---- backward, per query tile: statistics (logsumexp unless given,
// rowsum(grad * out)) and dq = sum_j dS_ij k_j ----

// `layout`: as forward_kernel's. Launch bounds: see kFourBlocks.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 32 ? kFourBlocks : 0)
    backward_dq_kernel(const bf16* q, const bf16* k, const bf16* v, const bf16* out, const bf16* grad, bf16* dq,
                       float* lse, bool lse_known, float* rowdot, AttentionLayout layout, int64_t seq, float scale,
                       bool causal) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem);
  bf16* Gs = Qs + kTileElems<D>;
  bf16* Ks = Gs + kTileElems<D>;      // two buffers
  bf16* Vs = Ks + 2 * kTileElems<D>;  // two buffers
  const int64_t tiles = tiles_of(seq), qt = tiles - 1 - blockIdx.x, q0 = qt * kRows;
  const int64_t stat = static_cast<int64_t>(blockIdx.y) * seq;
  const BlockMatrices at(layout.heads);
  const Matrix<const bf16> qm = at(q, layout.q), km = at(k, layout.k), vm = at(v, layout.v);
  const Matrix<const bf16> om = at(out, layout.out), gm = at(grad, layout.grad);
  const int64_t last = causal ? qt + 1 : tiles;
  const LaneRows rows(q0);
  const float scale2 = scale * kLog2e;
  load_tile_async<D>(Qs, qm, q0, seq);
  load_tile_async<D>(Gs, gm, q0, seq);
  async_commit();
  // rowsum(grad * out) of the lane's rows: its columns, then its group's.
  float dot[2] = {0.0f, 0.0f};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (rows.row[h] < seq)
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const int c = strip_column(n, 0);
        const float2 g2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gm.row(rows.row[h]) + c));
        const float2 o2 = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(om.row(rows.row[h]) + c));
        dot[h] += g2.x * o2.x + g2.y * o2.y;
      }
    dot[h] = row_sum(dot[h]);
  }
  async_wait<0>();
  __syncthreads();
  uint32_t qa[D / 16][4];
  strip_fragments<D>(qa, Qs);
  // Logsumexp of each row, in log2 units: given, or one online pass over the keys.
  float lse2[2];
  if (lse_known) {
#pragma unroll
    for (int h = 0; h < 2; ++h) lse2[h] = rows.row[h] < seq ? lse[stat + rows.row[h]] * kLog2e : 0.0f;
  } else {
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int64_t t = 0; t < last; ++t) {
      load_tile_async<D>(Ks, km, t * kRows, seq);
      async_commit();
      async_wait<0>();
      __syncthreads();
      float s[8][4];
      strip_scores<D>(s, qa, Ks);
      const int64_t k0 = t * kRows;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[n][e] = masked(rows.row[e / 2], k0 + strip_column(n, e), seq, causal) ? -INFINITY : s[n][e] * scale2;
          mx[e / 2] = fmaxf(mx[e / 2], s[n][e]);
        }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_new = fmaxf(m[h], row_max(mx[h]));
        const float shift = m_new == -INFINITY ? 0.0f : m_new;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; ++n) sum += exp2_approx(s[n][2 * h] - shift) + exp2_approx(s[n][2 * h + 1] - shift);
        l[h] = l[h] * exp2_approx(m[h] - shift) + sum;
        m[h] = m_new;
      }
      __syncthreads();
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) lse2[h] = m[h] + __log2f(row_sum(l[h]));
  }
  if (threadIdx.x % 4 == 0)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      if (rows.row[h] < seq) {
        if (!lse_known) lse[stat + rows.row[h]] = lse2[h] * kLn2;
        rowdot[stat + rows.row[h]] = dot[h];
      }
  if (!dq) return;
  uint32_t ga[D / 16][4];
  strip_fragments<D>(ga, Gs);
  float acc[D / 8][4];
  zero<D>(acc);
  load_tile_async<D>(Ks, km, 0, seq);
  load_tile_async<D>(Vs, vm, 0, seq);
  async_commit();
  for (int64_t t = 0; t < last; ++t) {
    const int buf = t & 1;
    await_key_tile<D>(Ks, Vs, km, vm, t, last, seq);
    const bf16* Kt = Ks + buf * kTileElems<D>;
    float s[8][4], dp[8][4];
    strip_scores<D>(s, qa, Kt);
    strip_scores<D>(dp, ga, Vs + buf * kTileElems<D>);
    const int64_t k0 = t * kRows;
    const bool edge = (causal && t == qt) || k0 + kRows > seq;
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        const float p = edge && masked(rows.row[h], k0 + strip_column(n, e), seq, causal)
                            ? 0.0f
                            : exp2_approx(s[n][e] * scale2 - lse2[h]);
        s[n][e] = p * (dp[n][e] - dot[h]) * scale;  // dS
      }
    strip_accumulate<D>(acc, s, Kt);
    __syncthreads();
  }
  const float one[2] = {1.0f, 1.0f};
  store_strip<D>(at(dq, layout.dq), acc, rows, seq, one);
}

// ---- backward, per key tile: dk and dv (strips transposed: rows are keys,
// columns queries) ----

// `layout`: as forward_kernel's. Launch bounds: see kFourBlocks.
template <int D>
__global__ void __launch_bounds__(kThreads, D == 16 ? kFourBlocks : 0)
    backward_dkdv_kernel(const bf16* q, const bf16* k, const bf16* v, const bf16* grad, const float* lse,
                         const float* rowdot, bf16* dk, bf16* dv, AttentionLayout layout, int64_t seq, float scale,
                         bool causal) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Ks = reinterpret_cast<bf16*>(smem);
  bf16* Vs = Ks + kTileElems<D>;
  bf16* Qs = Vs + kTileElems<D>;      // two buffers
  bf16* Gs = Qs + 2 * kTileElems<D>;  // two buffers
  float* lse_s = reinterpret_cast<float*>(Gs + 2 * kTileElems<D>);  // two buffers of 64, log2 units
  float* dot_s = lse_s + 2 * kRows;                                  // two buffers of 64
  const int64_t tiles = tiles_of(seq), kt = blockIdx.x, k0 = kt * kRows;  // heaviest (causal) first
  const int64_t stat = static_cast<int64_t>(blockIdx.y) * seq;
  const BlockMatrices at(layout.heads);
  const Matrix<const bf16> qm = at(q, layout.q), km = at(k, layout.k), vm = at(v, layout.v);
  const Matrix<const bf16> gm = at(grad, layout.grad);
  const int64_t first = causal ? kt : 0;  // query tiles read: first..tiles-1
  const LaneRows keys(k0);
  const float scale2 = scale * kLog2e;
  // Starts loading query tile t into buffer `buf`; its statistics are plain stores.
  auto load_queries = [&](int64_t t, int buf) {
    load_tile_async<D>(Qs + buf * kTileElems<D>, qm, t * kRows, seq);
    load_tile_async<D>(Gs + buf * kTileElems<D>, gm, t * kRows, seq);
    async_commit();
    for (int r = threadIdx.x; r < kRows; r += kThreads) {
      const int64_t i = t * kRows + r;
      lse_s[buf * kRows + r] = i < seq ? lse[stat + i] * kLog2e : 0.0f;
      dot_s[buf * kRows + r] = i < seq ? rowdot[stat + i] : 0.0f;
    }
  };
  load_tile_async<D>(Ks, km, k0, seq);
  load_tile_async<D>(Vs, vm, k0, seq);
  load_queries(first, 0);
  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  zero<D>(dk_acc);
  zero<D>(dv_acc);
  uint32_t ka[D / 16][4], va[D / 16][4];
  for (int64_t t = first; t < tiles; ++t) {
    const int buf = (t - first) & 1;
    if (t + 1 < tiles) {
      load_queries(t + 1, buf ^ 1);
      async_wait<1>();
    } else {
      async_wait<0>();
    }
    __syncthreads();
    if (t == first) {
      strip_fragments<D>(ka, Ks);
      strip_fragments<D>(va, Vs);
    }
    const bf16 *Qt = Qs + buf * kTileElems<D>, *Gt = Gs + buf * kTileElems<D>;
    const float *lse_t = lse_s + buf * kRows, *dot_t = dot_s + buf * kRows;
    float p[8][4], ds[8][4];
    strip_scores<D>(p, ka, Qt);   // S^T
    strip_scores<D>(ds, va, Gt);  // dP^T
    const int64_t q0 = t * kRows;
    const bool edge = (causal && t == kt) || q0 + kRows > seq;
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = strip_column(n, e);
        const float pe = edge && (q0 + c >= seq || masked(q0 + c, keys.row[e / 2], seq, causal))
                             ? 0.0f
                             : exp2_approx(p[n][e] * scale2 - lse_t[c]);
        p[n][e] = pe;
        ds[n][e] = pe * (ds[n][e] - dot_t[c]) * scale;
      }
    if (dv) strip_accumulate<D>(dv_acc, p, Gt);
    if (dk) strip_accumulate<D>(dk_acc, ds, Qt);
    __syncthreads();
  }
  const float one[2] = {1.0f, 1.0f};
  if (dk) store_strip<D>(at(dk, layout.dk), dk_acc, keys, seq, one);
  if (dv) store_strip<D>(at(dv, layout.dv), dv_acc, keys, seq, one);
}

template <int D>
constexpr size_t tile_bytes(int tiles, int vectors) {
  return static_cast<size_t>(tiles) * kTileElems<D> * sizeof(bf16) + static_cast<size_t>(vectors) * kRows * 4;
}

template <int D>
void run_forward(const AttentionShape& s, const AttentionLayout& layout, const bf16* q, const bf16* k, const bf16* v,
                 bf16* out, float* lse, cudaStream_t stream) {
  static std::once_flag allowed;
  launch_kernel(forward_kernel<D>, allowed, tile_bytes<D>(5, 0),
                dim3(static_cast<unsigned>(tiles_of(s.seq)), static_cast<unsigned>(s.batch)), dim3(kThreads), stream,
                "fused attention forward (bf16 mma) " + s.text(), q, k, v, out, lse, layout, s.seq, s.scale,
                s.causal);
}

template <int D>
void run_backward(const AttentionShape& s, const AttentionLayout& layout, const bf16* q, const bf16* k, const bf16* v,
                  const bf16* out, const bf16* grad, bf16* dq, bf16* dk, bf16* dv, float* scratch,
                  const float* forward_lse, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(tiles_of(s.seq)), static_cast<unsigned>(s.batch));
  float *lse = forward_lse ? const_cast<float*>(forward_lse) : scratch, *rowdot = scratch + s.batch * s.seq;
  static std::once_flag allowed_dq, allowed_dkdv;
  launch_kernel(backward_dq_kernel<D>, allowed_dq, tile_bytes<D>(6, 0), grid, dim3(kThreads), stream,
                "fused attention backward (dq, bf16 mma) " + s.text(), q, k, v, out, grad, dq, lse,
                forward_lse != nullptr, rowdot, layout, s.seq, s.scale, s.causal);
  if (dk || dv)
    launch_kernel(backward_dkdv_kernel<D>, allowed_dkdv, tile_bytes<D>(6, 4), grid, dim3(kThreads), stream,
                  "fused attention backward (dk, dv, bf16 mma) " + s.text(), q, k, v, grad,
                  static_cast<const float*>(lse), static_cast<const float*>(rowdot), dk, dv, layout, s.seq, s.scale,
                  s.causal);
}

// Calls f(D) with the head dim as a compile-time constant.
template <typename F>
void by_dim(int64_t dim, F&& f) {
  if (dim == 16) f(std::integral_constant<int, 16>{});
  else if (dim == 32) f(std::integral_constant<int, 32>{});
  else f(std::integral_constant<int, 64>{});
}

}  // namespace

bool mma_attention_takes(const AttentionShape& s, std::initializer_list<MmaTensor> tensors) {
  if (s.dtype != DType::bf16 || (s.dim != 16 && s.dim != 32 && s.dim != 64)) return false;
  for (const MmaTensor& t : tensors) {
    if (!t.data) continue;
    const AttentionStrides& x = t.strides;
    if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0 || x.batch % 8 != 0 || x.head % 8 != 0 || x.row % 8 != 0 ||
        x.row > INT32_MAX || x.row < -INT32_MAX)
      return false;
  }
  return true;
}

void mma_attention_forward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                           const void* v, void* out, float* lse, cudaStream_t stream) {
  by_dim(s.dim, [&](auto d) {
    run_forward<decltype(d)::value>(s, layout, static_cast<const bf16*>(q), static_cast<const bf16*>(k),
                                    static_cast<const bf16*>(v), static_cast<bf16*>(out), lse, stream);
  });
}

void mma_attention_backward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                            const void* v, const void* out, const void* grad, void* dq, void* dk, void* dv,
                            float* scratch, const float* forward_lse, cudaStream_t stream) {
  by_dim(s.dim, [&](auto d) {
    run_backward<decltype(d)::value>(s, layout, static_cast<const bf16*>(q), static_cast<const bf16*>(k),
                                     static_cast<const bf16*>(v), static_cast<const bf16*>(out),
                                     static_cast<const bf16*>(grad), static_cast<bf16*>(dq), static_cast<bf16*>(dk),
                                     static_cast<bf16*>(dv), scratch, forward_lse, stream);
  });
}

}  // namespace tessera::cuda
