// The two status checks of include/tessera/cuda/check.h: CUDA runtime and
// cuBLAS/cuBLASLt statuses to tessera::Error. Does not retry or recover.
#include "tessera/cuda/check.h"

#include "tessera/error.h"

namespace tessera::cuda {

void check(cudaError_t status, std::string_view call, std::string_view where) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // a non-sticky error must not resurface in the next check
  fail("CUDA call ", call, " failed in ", where, ": ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

void check(cublasStatus_t status, std::string_view call, std::string_view where) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  fail("cuBLAS call ", call, " failed in ", where, ": ", cublasLtGetStatusName(status), " (",
       cublasLtGetStatusString(status), ")");
}

}  // namespace tessera::cuda
