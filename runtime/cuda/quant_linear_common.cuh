// What the quantized-linear kernels (quant_linear.cu, quant_gemv_mma.cu)
// share: the NF4 code book, the device pointers of a weight, how a block's
// scale is read, the device's SM count, and the tensor-core GEMV's entry
// points (quant_linear.cu decides which kernel runs). Internal to
// tessera_cuda; the public interface is tessera/cuda/quant_linear.h.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "tessera/cuda/check.h"
#include "tessera/cuda/quant_linear.h"

namespace tessera::cuda::detail {

using Format = QuantLinearFormat;

// The QLoRA paper's NormalFloat code book as bitsandbytes stores it
// (tessera/quant_ops.h's nf4_code_book(), which tests/ check against the
// paper's definition). One copy per translation unit (static).
static __constant__ float kNF4CodeBook[16] = {-1.0f,
                                              -0.6961928009986877f,
                                              -0.5250730514526367f,
                                              -0.39491748809814453f,
                                              -0.28444138169288635f,
                                              -0.18477343022823334f,
                                              -0.09105003625154495f,
                                              0.0f,
                                              0.07958029955625534f,
                                              0.16093020141124725f,
                                              0.24611230194568634f,
                                              0.33791524726295471f,
                                              0.44070982933044434f,
                                              0.5626170039176941f,
                                              0.7229568362236023f,
                                              1.0f};

struct Weight {
  const uint8_t* packed;       // NF4: two codes per byte, the first in the high nibble; int8: one per byte
  const void* scale;           // absmax f32 (nf4), codes u8 (nf4_nested) or scale f32 (int8)
  const float* nested_absmax;  // nf4_nested
  const float* nested_map;
  const float* nested_offset;
};

// The double-quantized absmax of a block from its code and nested absmax:
// map[code] * nested_absmax + offset, in that f32 order (the CPU's).
__device__ __forceinline__ float nested_value(float mapped, float nested_absmax, float offset) {
  return __fadd_rn(__fmul_rn(mapped, nested_absmax), offset);
}

// The double-quantized absmax of block `block`; `offset` is *w.nested_offset.
__device__ __forceinline__ float nested_scale(const Weight& w, int64_t block, float offset) {
  const uint8_t code = __ldg(static_cast<const uint8_t*>(w.scale) + block);
  return nested_value(__ldg(w.nested_map + code), __ldg(w.nested_absmax + block / 256), offset);
}

// The absmax of NF4 block `block` (64 elements, counted over all of W).
template <Format F>
__device__ __forceinline__ float block_scale(const Weight& w, int64_t block) {
  if constexpr (F == Format::nf4)
    return __ldg(static_cast<const float*>(w.scale) + block);
  else
    return nested_scale(w, block, __ldg(w.nested_offset));
}

// The scale of the slice of row n that starts at column k.
template <Format F>
__device__ __forceinline__ float slice_scale(const Weight& w, int64_t n, int64_t k, int64_t K) {
  if constexpr (F == Format::int8)
    return static_cast<const float*>(w.scale)[n];
  else
    return block_scale<F>(w, (n * K + k) / 64);
}

// Attribute A of the current device, read once per device; `what` names it
// in the error if the read fails.
template <cudaDeviceAttr A>
int device_attribute(const char* what) {
  static std::atomic<int> cached[64];
  int device = 0;
  TESSERA_CUDA_CHECK(cudaGetDevice(&device), "quant_linear: cudaGetDevice");
  std::atomic<int>& c = cached[device % 64];
  if (c.load() == 0) {
    int value = 0;
    TESSERA_CUDA_CHECK(cudaDeviceGetAttribute(&value, A, device), std::string("quant_linear: ") + what);
    c.store(value);
  }
  return c.load();
}

inline int sm_count() {
  return device_attribute<cudaDevAttrMultiProcessorCount>("the device's SM count");
}

// The tensor-core GEMV (quant_gemv_mma.cu): whether it takes `s` (a
// forward of 3 to 8 rows whose x fits in shared memory), and its launch.
bool quant_gemv_mma_takes(const QuantLinearShape& s);
void launch_quant_gemv_mma(const QuantLinearShape& s, const float* x, const Weight& w, const float* bias, float* out,
                           cudaStream_t stream);

}  // namespace tessera::cuda::detail
