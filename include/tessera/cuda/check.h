// Checked CUDA calls: a failed CUDA runtime or cuBLAS/cuBLASLt status becomes a
// tessera::Error that names the call, the step or op it served (with its shapes
// or bytes), and the status's name and text.
//
//   TESSERA_CUDA_CHECK(cudaMemsetAsync(p, 0, n, s), "arena 'x' clear 4096 bytes");
//   -> "CUDA call cudaMemsetAsync(p, 0, n, s) failed in arena 'x' clear 4096
//       bytes: cudaErrorInvalidValue (invalid argument)"
//
// Nothing here aborts or prints. This header does not launch work or own
// resources; part of tessera_cuda (built only with the CUDA toolkit).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <string_view>

namespace tessera::cuda {

// Throws Error when `status` is not cudaSuccess. `call` is the call's source
// text, `where` the step/op and its shapes. Clears the runtime's last error
// (for errors that are not sticky) before throwing.
void check(cudaError_t status, std::string_view call, std::string_view where);

// Throws Error when `status` is not CUBLAS_STATUS_SUCCESS.
void check(cublasStatus_t status, std::string_view call, std::string_view where);

}  // namespace tessera::cuda

// Runs `call` (a CUDA runtime or cuBLAS/cuBLASLt call) and checks its status.
#define TESSERA_CUDA_CHECK(call, where) ::tessera::cuda::check((call), #call, (where))
