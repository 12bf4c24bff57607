// Shared by the tests of tessera_cuda (label gpu): skipping without a CUDA
// device, host values in a GEMM dtype (f32, f16, bf16) as raw bytes, and
// copies to and from device pointers. Not a reference implementation (each
// test computes its own in double precision).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "half.h"
#include "tessera/cuda/check.h"
#include "tessera/cuda/device_stream.h"
#include "tessera/dtype.h"

// Skips the current test, with the reason, when this process sees no CUDA device.
#define TESSERA_SKIP_WITHOUT_CUDA_DEVICE()                                                                 \
  do {                                                                                                     \
    if (::tessera::cuda::cuda_device_count() == 0)                                                         \
      GTEST_SKIP() << "no CUDA device (or no driver) visible: this gpu-labelled test needs an NVIDIA GPU"; \
  } while (0)

namespace tessera::cuda::testing {

inline size_t elem_size(DType t) {
  return t == DType::f32 ? 4 : 2;
}

// The value `v` rounded to `t` (f32, f16 or bf16), back in double.
inline double round_to(double v, DType t) {
  const float f = static_cast<float>(v);
  if (t == DType::f16) return f16_to_float(float_to_f16(f));
  if (t == DType::bf16) return bf16_to_float(float_to_bf16(f));
  return f;
}

// n uniform values in [lo, hi), each exactly representable in `t`.
inline std::vector<double> random_values(size_t n, DType t, std::mt19937& rng, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = round_to(u(rng), t);
  return v;
}

inline std::vector<uint8_t> to_bytes(const std::vector<double>& v, DType t) {
  std::vector<uint8_t> bytes(v.size() * elem_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    const float f = static_cast<float>(v[i]);
    if (t == DType::f32) {
      std::memcpy(&bytes[i * 4], &f, 4);
    } else {
      const uint16_t h = t == DType::f16 ? float_to_f16(f) : float_to_bf16(f);
      std::memcpy(&bytes[i * 2], &h, 2);
    }
  }
  return bytes;
}

inline std::vector<double> from_bytes(const std::vector<uint8_t>& bytes, DType t) {
  std::vector<double> v(bytes.size() / elem_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::f32) {
      float f;
      std::memcpy(&f, &bytes[i * 4], 4);
      v[i] = f;
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[i * 2], 2);
      v[i] = t == DType::f16 ? f16_to_float(h) : bf16_to_float(h);
    }
  }
  return v;
}

// DeviceStream's stream does not wait for the legacy default stream that
// cudaMemcpy and cudaMemset use: these helpers wait for the whole device.
inline void upload(void* dst, const std::vector<uint8_t>& bytes) {
  TESSERA_CUDA_CHECK(cudaMemcpy(dst, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "test upload");
  TESSERA_CUDA_CHECK(cudaDeviceSynchronize(), "test upload");
}

inline void fill_bytes(void* dst, int byte, size_t bytes) {
  TESSERA_CUDA_CHECK(cudaMemset(dst, byte, bytes), "test fill");
  TESSERA_CUDA_CHECK(cudaDeviceSynchronize(), "test fill");
}

// Call after synchronizing the stream that wrote `src`.
inline std::vector<uint8_t> download(const void* src, size_t bytes) {
  std::vector<uint8_t> out(bytes);
  TESSERA_CUDA_CHECK(cudaMemcpy(out.data(), src, bytes, cudaMemcpyDeviceToHost), "test download");
  return out;
}

}  // namespace tessera::cuda::testing
