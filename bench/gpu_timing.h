// time_on_stream: times work queued on a CUDA stream for the GPU
// benchmarks: warm-up launches first, then an event pair around each
// repetition; the median, minimum and maximum in milliseconds. Times what
// the stream runs, not host overhead between launches. time_copy: the
// device-to-device copy the benchmarks compare bandwidths with. Not a test.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <vector>

#include "tessera/cuda/check.h"
#include "tessera/cuda/device_arena.h"

namespace tessera::cuda {

constexpr int kWarmup = 5, kReps = 25;

struct Timing {
  double median_ms, min_ms, max_ms;
};

// Times `launch` (which queues work on `s`) with an event pair per repetition.
template <typename F>
Timing time_on_stream(cudaStream_t s, F&& launch) {
  for (int i = 0; i < kWarmup; ++i) launch();
  std::vector<cudaEvent_t> ev(2 * kReps);
  for (auto& e : ev) TESSERA_CUDA_CHECK(cudaEventCreate(&e), "bench events");
  for (int i = 0; i < kReps; ++i) {
    TESSERA_CUDA_CHECK(cudaEventRecord(ev[2 * i], s), "bench");
    launch();
    TESSERA_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], s), "bench");
  }
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(s), "bench");
  std::vector<double> ms(kReps);
  for (int i = 0; i < kReps; ++i) {
    float t = 0;
    TESSERA_CUDA_CHECK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]), "bench");
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return {ms[kReps / 2], ms.front(), ms.back()};
}

// A device-to-device copy of 1 GiB (cudaMemcpyAsync; it reads and writes
// 2 GiB), timed as above; GB/s = 2 GiB / median.
inline Timing time_copy(cudaStream_t s, double* gbs) {
  const size_t bytes = size_t{1} << 30;
  DeviceArena arena(2 * bytes, "copy bench");
  void* src = arena.at(0, bytes);
  void* dst = arena.at(bytes, bytes);
  TESSERA_CUDA_CHECK(cudaMemsetAsync(src, 0x3C, bytes, s), "copy bench");
  const Timing t = time_on_stream(s, [&] {
    TESSERA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "copy bench");
  });
  *gbs = 2.0 * bytes / (t.median_ms * 1e6);
  return t;
}

}  // namespace tessera::cuda
