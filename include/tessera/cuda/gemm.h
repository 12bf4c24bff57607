// CublasLtGemm: row-major GEMMs through cuBLASLt on one stream, with a fixed
// workspace and the algorithm chosen once per problem (cached): the fastest
// of cuBLASLt's heuristic candidates (up to 8), timed on the problem's first
// call, unless that call is captured, reads C (beta != 0), writes over an
// operand or is f16 with an activation epilogue; then, or with
// TESSERA_GEMM_AUTOTUNE=0 in the environment, cuBLASLt's first choice. The
// choice holds for the whole process (every CublasLtGemm on the device,
// every operand alignment of 16 bytes or more), so a graph replays what
// direct runs compute, bit for bit. f16 and bf16 problems take only
// algorithms whose split-k partial sums are f32.
//
// Semantics (row-major, as tessera's ops): C[m, n] = act(alpha * op(A) @ op(B)
// + beta * C + bias[n]), f32 accumulation, where
//   A is stored [m, k], or [k, m] when trans_a (op(A) = A^T);
//   B is stored [k, n], or [n, k] when trans_b (op(B) = B^T);
//   C is [m, n]; bias is [n], one value per output column, shared by batches;
//   act is the epilogue's ReLU or GELU (tanh form, tessera's gelu with
//   tanh_form) or nothing; the gelu_aux epilogues also write the
//   pre-activation alpha * op(A) @ op(B) + bias (what the gradient of the
//   GELU reads) to the aux matrix [m, n]; dgelu instead reads the aux matrix
//   x and computes C = alpha * op(A) @ op(B) * gelu'(x), the GELU's gradient
//   (n a multiple of 8 with an aux matrix; f32 and bf16 only: cuBLASLt's
//   f16 kernels for it were less accurate, see gemm.cpp). relu_aux writes a
//   bit-mask of where the ReLU's input is >= 0 to aux instead, and drelu
//   computes C = alpha * op(A) @ op(B) where the mask's bit is set, else 0
//   (n a multiple of 128, one batch; any dtype). Their gradient at an input
//   of exactly 0 is 1, not tessera's relu'(0) = 0: plans do not use them.
// tessera's linear, y = x @ W^T + b, is trans_b with bias (GemmShape::linear);
// matmul [.., m, k] x [.., k, n] is GemmShape::matmul. A batch of problems is
// strided: operand i of batch b starts at b * stride elements.
// A, B, C and bias share one dtype: f32 (optionally TF32 tensor cores), f16
// or bf16. Pointers are device pointers (arena offsets, say). With f16/bf16,
// cuBLASLt applies the epilogue to the product already rounded to that dtype
// (seen on H100 with CUDA 13.0): about one more output ulp than rounding once.
//
// Not done here: the bias-gradient epilogues (BGRAD: for bf16
// operands cuBLASLt 13.0 offers the bias gradient only in bf16, not as the
// f32 sum tessera's graphs compute; bench/probe_cublaslt_bgrad.cpp, run on
// an H200 in bench/results/h200_cublaslt_bgrad_probe.txt), mixed dtypes,
// fp8, operands with a leading dimension other than their row length. Not
// thread-safe.
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "tessera/cuda/device_stream.h"
#include "tessera/dtype.h"

namespace tessera::cuda {

// The cuBLASLt epilogues offered: bias add, ReLU, GELU (tanh form), and
// both; GELU keeping its input (aux) for the backward, with or without bias;
// the GELU's gradient given that input (dgelu); ReLU keeping a bit-mask of
// where its input is >= 0 (relu_aux, aux a bit-mask), and the ReLU's
// gradient given that mask (drelu: C = product where the bit is set, else 0).
enum class GemmEpilogue {
  none,
  bias,
  relu,
  relu_bias,
  gelu,
  gelu_bias,
  gelu_aux,
  gelu_aux_bias,
  dgelu,
  relu_aux,
  relu_aux_bias,
  drelu
};
// "none", "bias", "relu", "relu_bias", "gelu", "gelu_bias", "gelu_aux",
// "gelu_aux_bias", "dgelu", "relu_aux", "relu_aux_bias", "drelu"
const char* epilogue_name(GemmEpilogue e);
bool epilogue_has_bias(GemmEpilogue e);
bool epilogue_has_aux(GemmEpilogue e);
// The aux matrix is a bit-mask (relu_aux, relu_aux_bias, drelu): n bits per
// row of C, laid out as cuBLASLt does; n must be a multiple of 128 and
// batch 1.
bool epilogue_has_bitmask(GemmEpilogue e);

// One (batched) GEMM problem, in the row-major terms above.
struct GemmShape {
  DType dtype = DType::f32;  // f32, f16 or bf16 for A, B, C and bias
  bool allow_tf32 = false;   // f32 only: TF32 tensor cores (inputs rounded to 10-bit mantissas)
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  // Elements between consecutive batches; -1 means packed (m*k, k*n, m*n).
  // 0 broadcasts A or B to every batch (shared weights); C needs a stride of at least m*n.
  int64_t stride_a = -1, stride_b = -1, stride_c = -1;
  GemmEpilogue epilogue = GemmEpilogue::none;

  // y[rows, out] = x[rows, in] @ W[out, in]^T (+ b[out]), like tessera's linear.
  static GemmShape linear(DType dtype, int64_t rows, int64_t in, int64_t out, GemmEpilogue epilogue);
  // C[batch, m, n] = A[batch, m, k] @ B[batch, k, n].
  static GemmShape matmul(DType dtype, int64_t batch, int64_t m, int64_t k, int64_t n);

  int64_t a_stride() const { return stride_a >= 0 ? stride_a : m * k; }
  int64_t b_stride() const { return stride_b >= 0 ? stride_b : k * n; }
  int64_t c_stride() const { return stride_c >= 0 ? stride_c : m * n; }
  // Bytes each operand spans over all batches (what a buffer must hold).
  size_t a_bytes() const;
  size_t b_bytes() const;
  size_t c_bytes() const;
  // Bytes of the aux matrix: C's, or m * n / 8 for a bit-mask.
  size_t aux_bytes() const;
  // "gemm bf16 batch 4: A[4, 64, 127]^T @ B[4, 64, 33] -> C[4, 127, 33], epilogue gelu_bias".
  std::string describe() const;
  // Throws Error naming the problem when its dtype, sizes or strides are unusable.
  void validate() const;
};

// Device pointers and scalars for one GemmShape. bias is needed exactly when
// the epilogue has one, aux (C's shape and strides, or the bit-mask;
// 16-byte aligned) when it is a gelu_aux or relu_aux one (written) or dgelu
// or drelu (read). beta != 0 reads C before
// overwriting it.
struct GemmArgs {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  const void* bias = nullptr;
  void* aux = nullptr;
  float alpha = 1.0f, beta = 0.0f;
};

class CublasLtGemm {
 public:
  // 32 MiB: what NVIDIA suggests for Hopper.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;

  // Owns its workspace: one cudaMalloc of `workspace_bytes` here, none later.
  explicit CublasLtGemm(const DeviceStream& stream, size_t workspace_bytes = kDefaultWorkspaceBytes);
  // Uses the caller's workspace (e.g. a DeviceArena range), which must outlive this.
  CublasLtGemm(const DeviceStream& stream, void* workspace, size_t workspace_bytes);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // Queues the GEMM on the stream (capturable into a CUDA Graph once the
  // problem's plan is cached: run it once outside capture first). Throws
  // Error naming the problem for a bad shape, dtype or pointer, when cuBLASLt
  // has no algorithm for it, or when a cuBLASLt call fails.
  void run(const GemmShape& shape, const GemmArgs& args);

  // Problems planned so far (one cuBLASLt heuristic query each).
  size_t cached_plans() const { return plans_.size(); }
  void* workspace() const { return workspace_; }  // free between its products (stream order)
  size_t workspace_bytes() const { return workspace_bytes_; }

  // A problem, as plans and chosen algorithms are keyed: dtype, tf32,
  // trans_a, trans_b, m, n, k, batch, strides a/b/c, epilogue, alignments
  // (up to 16 bytes) of a/b/c/bias/aux.
  using PlanKey = std::tuple<int, bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                             int, int, int, int, int>;

 private:
  struct Plan;
  static constexpr int kTuneCandidates = 8, kTuneRepeats = 3;
  Plan& plan_for(const GemmShape& shape, const GemmArgs& args);
  // Whether the first call may run several times to time the candidates.
  bool may_time(const GemmShape& shape, const GemmArgs& args) const;
  // Queues cublasLtMatmul of `plan` with `algo` on args (pointers already in plan.desc).
  cublasStatus_t matmul(const Plan& plan, const GemmArgs& args, const cublasLtMatmulAlgo_t& algo);
  // The candidate with the shortest time for kTuneRepeats runs on args.
  cublasLtMatmulAlgo_t fastest(const Plan& plan, const std::vector<cublasLtMatmulAlgo_t>& candidates,
                               const GemmArgs& args);

  const DeviceStream& stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  bool owns_workspace_ = false;
  bool autotune_ = true;
  std::map<PlanKey, std::unique_ptr<Plan>> plans_;
};

}  // namespace tessera::cuda
