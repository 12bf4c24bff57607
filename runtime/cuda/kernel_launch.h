// launch_kernel: launches a CUDA kernel that needs more dynamic shared memory
// than the default 48 KiB, raising the kernel's limit once (before any
// capture: the attribute call is not allowed while a stream captures), and
// checks the launch. Internal to runtime/cuda; not for kernels that need
// nothing of this (a plain <<<>>> is clearer there).
#pragma once

#include <cuda_runtime_api.h>

#include <mutex>
#include <string>

#include "tessera/cuda/check.h"

namespace tessera::cuda {

// `allowed`: one flag per kernel (a function-local static of the caller).
template <typename Kernel, typename... Args>
void launch_kernel(Kernel kernel, std::once_flag& allowed, size_t shared_bytes, dim3 grid, dim3 block,
                   cudaStream_t stream, const std::string& where, Args... args) {
  std::call_once(allowed, [&] {
    TESSERA_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared_bytes)),
        where);
  });
  kernel<<<grid, block, shared_bytes, stream>>>(args...);
  TESSERA_CUDA_CHECK(cudaGetLastError(), where);
}

}  // namespace tessera::cuda
