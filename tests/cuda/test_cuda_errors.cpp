// Error paths of tessera_cuda: a failed CUDA runtime or cuBLASLt status
// becomes a tessera::Error naming the call, the step and the status; a
// deliberately bad call on a real device is reported that way and leaves the
// device usable; GEMM problems that cannot run are refused naming the shape.
// The status-to-Error tests need no device; the others skip without one (label gpu).
#include <gtest/gtest.h>

#include <string>

#include "cuda_test_util.h"
#include "tessera/cuda/device_arena.h"
#include "tessera/cuda/gemm.h"
#include "tessera/error.h"

namespace tessera::cuda {
namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(CudaCheck, RuntimeStatusBecomesAnErrorNamingCallStepAndStatus) {
  const std::string e = error_of([] { check(cudaErrorInvalidValue, "cudaFoo(p, 12)", "step 3 (matmul [2, 3])"); });
  expect_contains(e, "cudaFoo(p, 12)");
  expect_contains(e, "step 3 (matmul [2, 3])");
  expect_contains(e, "cudaErrorInvalidValue");
  expect_contains(e, cudaGetErrorString(cudaErrorInvalidValue));
  EXPECT_EQ(error_of([] { check(cudaSuccess, "cudaFoo()", "step"); }), "");
}

TEST(CudaCheck, CublasStatusBecomesAnErrorNamingCallStepAndStatus) {
  const std::string e = error_of([] { check(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul(...)", "gemm f16 [7, 9]"); });
  expect_contains(e, "cublasLtMatmul(...)");
  expect_contains(e, "gemm f16 [7, 9]");
  expect_contains(e, "CUBLAS_STATUS_NOT_SUPPORTED");
  EXPECT_EQ(error_of([] { check(CUBLAS_STATUS_SUCCESS, "cublasLtMatmul()", "step"); }), "");
}

TEST(CudaCheck, TheMacroNamesTheCallsSourceText) {
  const std::string e = error_of([] { TESSERA_CUDA_CHECK(cudaErrorNotReady, "step 1"); });
  expect_contains(e, "cudaErrorNotReady failed in step 1");
}

TEST(CudaErrors, AMissingDeviceIsNamed) {
  const std::string e = error_of([] { DeviceStream stream(999); });
  expect_contains(e, "no CUDA device 999");
}

TEST(CudaErrors, ABadRuntimeCallIsNamedAndTheDeviceStaysUsable) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  DeviceArena arena(4096, "errors");
  void* p = arena.at(0, 4096);
  const auto bad_kind = static_cast<cudaMemcpyKind>(42);  // refused before anything is queued
  const std::string e = error_of(
      [&] { TESSERA_CUDA_CHECK(cudaMemcpyAsync(p, p, 4096, bad_kind, stream.stream()), "step 7 copy of 4096 bytes"); });
  expect_contains(e, "cudaMemcpyAsync(p, p, 4096, bad_kind, stream.stream())");
  expect_contains(e, "step 7 copy of 4096 bytes");
  expect_contains(e, "cudaErrorInvalidMemcpyDirection");
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the failed call's error must not linger";
  testing::upload(p, std::vector<uint8_t>(4096, 7));
  EXPECT_EQ(testing::download(p, 4096), std::vector<uint8_t>(4096, 7));
}

TEST(CudaErrors, ABadCublasLtCallIsNamed) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  cublasLtMatmulDesc_t desc = nullptr;
  TESSERA_CUDA_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "error test");
  const int32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  const std::string e = error_of([&] {
    TESSERA_CUDA_CHECK(
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, 1),  // 1 byte: wrong size
        "error test step");
  });
  cublasLtMatmulDescDestroy(desc);
  expect_contains(e, "cublasLtMatmulDescSetAttribute(");
  expect_contains(e, "error test step");
  expect_contains(e, "CUBLAS_STATUS_INVALID_VALUE");
}

TEST(CudaErrors, GemmRefusesProblemsItCannotRunNamingTheShape) {
  TESSERA_SKIP_WITHOUT_CUDA_DEVICE();
  DeviceStream stream(0);
  CublasLtGemm gemm(stream, size_t{1} << 20);
  DeviceArena arena(1 << 16, "gemm errors");
  void* p = arena.at(0, 1 << 16);

  GemmShape s = GemmShape::matmul(DType::f32, 1, 5, 0, 3);
  std::string e = error_of([&] { gemm.run(s, {p, p, p}); });
  expect_contains(e, "A[5, 0] @ B[0, 3] -> C[5, 3]");
  expect_contains(e, "at least 1");

  s = GemmShape::linear(DType::bf16, 8, 16, 4, GemmEpilogue::gelu_bias);
  e = error_of([&] { gemm.run(s, {p, p, p}); });
  expect_contains(e, "gemm bf16: A[8, 16] @ B[4, 16]^T -> C[8, 4], epilogue gelu_bias");
  expect_contains(e, "needs a bias pointer");
  e = error_of([&] { gemm.run(GemmShape::matmul(DType::f32, 1, 2, 2, 2), {p, p, p, p}); });
  expect_contains(e, "adds none");
  // The GELU epilogue that keeps its input: an aux pointer, aligned, rows of a multiple of 8.
  s = GemmShape::linear(DType::bf16, 8, 16, 24, GemmEpilogue::gelu_aux);
  expect_contains(error_of([&] { gemm.run(s, {p, p, p}); }), "needs an aux pointer");
  expect_contains(error_of([&] { gemm.run(s, {p, p, p, nullptr, static_cast<char*>(p) + 2}); }),
                  "aux pointer must be 16-byte aligned, is 2");
  expect_contains(error_of([&] { gemm.run(GemmShape::matmul(DType::f32, 1, 2, 2, 2), {p, p, p, nullptr, p}); }),
                  "got an aux pointer but its epilogue uses none");
  s = GemmShape::linear(DType::bf16, 8, 16, 12, GemmEpilogue::gelu_aux);
  expect_contains(error_of([&] { gemm.run(s, {p, p, p, nullptr, p}); }), "(n = 12) must be a multiple of 8");
  s = GemmShape::linear(DType::f16, 8, 16, 24, GemmEpilogue::gelu_aux_bias);
  expect_contains(error_of([&] { gemm.run(s, {p, p, p, p, p}); }), "are for f32 and bf16, not f16");
  s = GemmShape::matmul(DType::bf16, 1, 8, 16, 24);
  s.epilogue = GemmEpilogue::dgelu;
  expect_contains(error_of([&] { gemm.run(s, {p, p, p}); }), "epilogue dgelu: needs an aux pointer");

  s = GemmShape::matmul(DType::f16, 1, 4, 4, 4);
  s.allow_tf32 = true;
  expect_contains(error_of([&] { gemm.run(s, {p, p, p}); }), "allow_tf32 is for f32 only");

  s = GemmShape::matmul(DType::f32, 3, 4, 4, 4);
  s.stride_c = 8;
  e = error_of([&] { gemm.run(s, {p, p, p}); });
  expect_contains(e, "batch 3");
  expect_contains(e, "m*n = 16");

  expect_contains(error_of([&] {
                    gemm.run(GemmShape::matmul(DType::f32, 1, 2, 2, 2), {p, nullptr, p});
                  }),
                  "must be device pointers");
  expect_contains(error_of([&] {
                    gemm.run(GemmShape::matmul(DType::i8, 1, 2, 2, 2), {p, p, p});
                  }),
                  "dtype must be f32, f16 or bf16");
  EXPECT_EQ(gemm.cached_plans(), 0u) << "a refused problem must not be planned";
}

}  // namespace
}  // namespace tessera::cuda
