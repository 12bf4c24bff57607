// CublasLtGemm (include/tessera/cuda/gemm.h): maps row-major problems onto
// cuBLASLt's column-major API, plans each problem once (descriptors, layouts,
// algorithm: the fastest of cuBLASLt's heuristic candidates, timed on the
// first call) and queues cublasLtMatmul. Launches no kernels of its own.
//
// Row-major X[r, c] is column-major X^T[c, r] with the same bytes, so
// C = op(A) @ op(B) is computed as the column-major C^T = op(B)^T @ op(A)^T:
// cuBLASLt's first operand is our B, its second our A, and C^T's rows are our
// columns (bias, one per row of C^T, is one per column of C).
#include "tessera/cuda/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <vector>

#include "float_dtype.h"
#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

const char* epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none: return "none";
    case GemmEpilogue::bias: return "bias";
    case GemmEpilogue::relu: return "relu";
    case GemmEpilogue::relu_bias: return "relu_bias";
    case GemmEpilogue::gelu: return "gelu";
    case GemmEpilogue::gelu_bias: return "gelu_bias";
    case GemmEpilogue::gelu_aux: return "gelu_aux";
    case GemmEpilogue::gelu_aux_bias: return "gelu_aux_bias";
    case GemmEpilogue::dgelu: return "dgelu";
    case GemmEpilogue::relu_aux: return "relu_aux";
    case GemmEpilogue::relu_aux_bias: return "relu_aux_bias";
    case GemmEpilogue::drelu: return "drelu";
  }
  return "?";
}

bool epilogue_has_bias(GemmEpilogue e) {
  return e == GemmEpilogue::bias || e == GemmEpilogue::relu_bias || e == GemmEpilogue::gelu_bias ||
         e == GemmEpilogue::gelu_aux_bias || e == GemmEpilogue::relu_aux_bias;
}

bool epilogue_has_aux(GemmEpilogue e) {
  return e == GemmEpilogue::gelu_aux || e == GemmEpilogue::gelu_aux_bias || e == GemmEpilogue::dgelu ||
         epilogue_has_bitmask(e);
}

bool epilogue_has_bitmask(GemmEpilogue e) {
  return e == GemmEpilogue::relu_aux || e == GemmEpilogue::relu_aux_bias || e == GemmEpilogue::drelu;
}

namespace {

cublasLtEpilogue_t to_cublaslt(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none: return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::relu: return CUBLASLT_EPILOGUE_RELU;
    case GemmEpilogue::relu_bias: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case GemmEpilogue::gelu: return CUBLASLT_EPILOGUE_GELU;
    case GemmEpilogue::gelu_bias: return CUBLASLT_EPILOGUE_GELU_BIAS;
    case GemmEpilogue::gelu_aux: return CUBLASLT_EPILOGUE_GELU_AUX;
    case GemmEpilogue::gelu_aux_bias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case GemmEpilogue::dgelu: return CUBLASLT_EPILOGUE_DGELU;
    case GemmEpilogue::relu_aux: return CUBLASLT_EPILOGUE_RELU_AUX;
    case GemmEpilogue::relu_aux_bias: return CUBLASLT_EPILOGUE_RELU_AUX_BIAS;
    case GemmEpilogue::drelu: return CUBLASLT_EPILOGUE_DRELU;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

cudaDataType_t to_cuda(DType t) {
  return t == DType::f32 ? CUDA_R_32F : t == DType::f16 ? CUDA_R_16F : CUDA_R_16BF;
}

// Largest power of two (at most 256) that divides the address: what cuBLASLt may assume.
int alignment_of(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  if (u == 0) return 256;
  int a = 1;
  while (a < 256 && u % (2 * a) == 0) a *= 2;
  return a;
}

// The alignment a problem is planned for: the pointer's, up to 16 bytes
// (what cuBLASLt's vector loads need), so that every call of a problem on
// arena buffers plans, and times, the same candidates.
int plan_alignment(const void* p) { return std::min(alignment_of(p), 16); }

// Bytes spanned by `batch` matrices of `elems` elements each, `stride` apart.
size_t span_bytes(int64_t batch, int64_t stride, int64_t elems, DType t) {
  return static_cast<size_t>((batch - 1) * stride + elems) * float_dtype_size(t);
}

// Whether the byte ranges [a, a + an) and [b, b + bn) overlap.
bool overlap(const void* a, size_t an, const void* b, size_t bn) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return a && b && x < y + bn && y < x + an;
}

// The algorithm chosen for each problem (plan key) on each device, timed
// or not, for the whole process: every CublasLtGemm (a graph's and a direct
// run's, an executor's updating in place and one copying) computes a
// problem with the same algorithm, so the same bits.
struct ChosenAlgos {
  std::mutex mutex;
  std::map<std::pair<int, CublasLtGemm::PlanKey>, cublasLtMatmulAlgo_t> chosen;
};
ChosenAlgos& chosen_algos() {
  static ChosenAlgos t;
  return t;
}

bool autotune_from_environment() {
  const char* v = std::getenv("TESSERA_GEMM_AUTOTUNE");
  return !(v && std::strcmp(v, "0") == 0);
}

void validate(const GemmShape& s, const GemmArgs& args) {
  s.validate();
  if (!args.a || !args.b || !args.c) fail("CublasLtGemm: ", s.describe(), ": A, B and C must be device pointers");
  if (epilogue_has_bias(s.epilogue) != (args.bias != nullptr))
    fail("CublasLtGemm: ", s.describe(), ": ",
         epilogue_has_bias(s.epilogue) ? "needs a bias pointer" : "got a bias pointer but its epilogue adds none");
  if (epilogue_has_aux(s.epilogue) != (args.aux != nullptr))
    fail("CublasLtGemm: ", s.describe(), ": ",
         epilogue_has_aux(s.epilogue) ? "needs an aux pointer" : "got an aux pointer but its epilogue uses none");
  if (args.aux && alignment_of(args.aux) < 16)
    fail("CublasLtGemm: ", s.describe(), ": the aux pointer must be 16-byte aligned, is ", alignment_of(args.aux));
}

}  // namespace

GemmShape GemmShape::linear(DType dtype, int64_t rows, int64_t in, int64_t out, GemmEpilogue epilogue) {
  GemmShape s;
  s.dtype = dtype;
  s.trans_b = true;
  s.m = rows, s.k = in, s.n = out;
  s.epilogue = epilogue;
  return s;
}

GemmShape GemmShape::matmul(DType dtype, int64_t batch, int64_t m, int64_t k, int64_t n) {
  GemmShape s;
  s.dtype = dtype;
  s.batch = batch;
  s.m = m, s.k = k, s.n = n;
  return s;
}

void GemmShape::validate() const {
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    fail("CublasLtGemm: ", describe(), ": dtype must be f32, f16 or bf16");
  if (allow_tf32 && dtype != DType::f32) fail("CublasLtGemm: ", describe(), ": allow_tf32 is for f32 only");
  if (m < 1 || n < 1 || k < 1 || batch < 1)
    fail("CublasLtGemm: ", describe(), ": m, n, k and batch must be at least 1");
  if (epilogue_has_bitmask(epilogue) && (n % 128 != 0 || batch != 1))
    fail("CublasLtGemm: ", describe(), ": a ReLU bit-mask needs rows of a multiple of 128 bits (n = ", n,
         ") and one batch (", batch, ")");
  if (epilogue_has_aux(epilogue) && n % 8 != 0)
    fail("CublasLtGemm: ", describe(), ": the aux matrix's rows (n = ", n, ") must be a multiple of 8 elements");
  // On an H200 with cuBLAS 13.0 the f16 GELU_AUX kernels were up to 6 times
  // our tolerance off (C and aux; bf16 and f32 within it): not offered.
  if (epilogue_has_aux(epilogue) && !epilogue_has_bitmask(epilogue) && dtype == DType::f16)
    fail("CublasLtGemm: ", describe(), ": the epilogues with an aux matrix (gelu_aux, dgelu) are for f32 and bf16, not f16");
  if (a_stride() < 0 || b_stride() < 0 || c_stride() < m * n)
    fail("CublasLtGemm: ", describe(), ": strides (", a_stride(), ", ", b_stride(), ", ", c_stride(),
         ") must be >= 0, and C's at least m*n = ", m * n);
}

size_t GemmShape::a_bytes() const {
  return span_bytes(batch, a_stride(), m * k, dtype);
}
size_t GemmShape::b_bytes() const {
  return span_bytes(batch, b_stride(), k * n, dtype);
}
size_t GemmShape::c_bytes() const {
  return span_bytes(batch, c_stride(), m * n, dtype);
}
size_t GemmShape::aux_bytes() const {
  return epilogue_has_bitmask(epilogue) ? static_cast<size_t>(m * n / 8) : c_bytes();
}

std::string GemmShape::describe() const {
  std::ostringstream os;
  auto dims = [&](int64_t r, int64_t c) {
    std::ostringstream d;
    d << "[";
    if (batch > 1) d << batch << ", ";
    d << r << ", " << c << "]";
    return d.str();
  };
  os << "gemm " << float_dtype_name(dtype) << (allow_tf32 ? " (tf32)" : "");
  if (batch > 1)
    os << " batch " << batch << " strides (" << a_stride() << ", " << b_stride() << ", " << c_stride() << ")";
  os << ": A" << (trans_a ? dims(k, m) + "^T" : dims(m, k)) << " @ B" << (trans_b ? dims(n, k) + "^T" : dims(k, n))
     << " -> C" << dims(m, n) << ", epilogue " << epilogue_name(epilogue);
  return os.str();
}

// Everything cublasLtMatmul needs for one problem, made once.
struct CublasLtGemm::Plan {
  std::string where;  // GemmShape::describe(), for errors
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr,
                         layout_c = nullptr;  // cuBLASLt's A (our B), B (our A), C
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (layout_c) cublasLtMatrixLayoutDestroy(layout_c);
    if (layout_b) cublasLtMatrixLayoutDestroy(layout_b);
    if (layout_a) cublasLtMatrixLayoutDestroy(layout_a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

CublasLtGemm::CublasLtGemm(const DeviceStream& stream, size_t workspace_bytes)
    : stream_(stream), workspace_bytes_(workspace_bytes), owns_workspace_(true), autotune_(autotune_from_environment()) {
  stream_.make_current();
  const std::string where = "CublasLtGemm workspace of " + std::to_string(workspace_bytes) + " bytes";
  if (workspace_bytes > 0) TESSERA_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes), where);
  try {
    TESSERA_CUDA_CHECK(cublasLtCreate(&handle_), "CublasLtGemm");
  } catch (...) {
    cudaFree(workspace_);
    throw;
  }
}

CublasLtGemm::CublasLtGemm(const DeviceStream& stream, void* workspace, size_t workspace_bytes)
    : stream_(stream),
      workspace_(workspace),
      workspace_bytes_(workspace_bytes),
      owns_workspace_(false),
      autotune_(autotune_from_environment()) {
  if (workspace_bytes > 0 && !workspace) fail("CublasLtGemm: a workspace of ", workspace_bytes, " bytes at null");
  stream_.make_current();
  TESSERA_CUDA_CHECK(cublasLtCreate(&handle_), "CublasLtGemm");
}

CublasLtGemm::~CublasLtGemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
  if (owns_workspace_ && workspace_) cudaFree(workspace_);
  cudaGetLastError();
}

CublasLtGemm::Plan& CublasLtGemm::plan_for(const GemmShape& s, const GemmArgs& args) {
  const PlanKey key{static_cast<int>(s.dtype),
                    s.allow_tf32,
                    s.trans_a,
                    s.trans_b,
                    s.m,
                    s.n,
                    s.k,
                    s.batch,
                    s.a_stride(),
                    s.b_stride(),
                    s.c_stride(),
                    static_cast<int>(s.epilogue),
                    plan_alignment(args.a),
                    plan_alignment(args.b),
                    plan_alignment(args.c),
                    plan_alignment(args.bias),
                    plan_alignment(args.aux)};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  auto plan = std::make_unique<Plan>();
  plan->where = s.describe();
  const std::string& where = plan->where;
  const cublasComputeType_t compute =
      s.dtype == DType::f32 && s.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  TESSERA_CUDA_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute, CUDA_R_32F), where);
  auto set_desc = [&](cublasLtMatmulDescAttributes_t attr, const auto& value) {
    TESSERA_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, attr, &value, sizeof(value)), where);
  };
  // cuBLASLt's A is our B: column-major, B^T [n, k] is stored B [k, n] as is;
  // with trans_b, stored B [n, k] is column-major [k, n] and needs transposing.
  const cublasOperation_t op_b = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(CUBLASLT_MATMUL_DESC_TRANSA, op_b);
  set_desc(CUBLASLT_MATMUL_DESC_TRANSB, op_a);
  set_desc(CUBLASLT_MATMUL_DESC_EPILOGUE, to_cublaslt(s.epilogue));
  if (args.bias) set_desc(CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);  // heuristics read its alignment
  if (args.aux) {  // laid out as C: column-major [n, m], n apart (elements, or bits of a mask)
    set_desc(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, args.aux);
    set_desc(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(s.n));
    if (s.batch > 1) set_desc(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, static_cast<int64_t>(s.c_stride()));
  }

  const cudaDataType_t type = to_cuda(s.dtype);
  auto make_layout = [&](cublasLtMatrixLayout_t* layout, int64_t rows, int64_t cols, int64_t stride) {
    TESSERA_CUDA_CHECK(
        cublasLtMatrixLayoutCreate(layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), rows),
        where);
    if (s.batch > 1) {
      const int32_t count = static_cast<int32_t>(s.batch);
      TESSERA_CUDA_CHECK(
          cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)), where);
      TESSERA_CUDA_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                          sizeof(stride)),
                         where);
    }
  };
  // Column-major views (rows = leading dimension) of the stored operands.
  make_layout(&plan->layout_a, s.trans_b ? s.k : s.n, s.trans_b ? s.n : s.k, s.b_stride());
  make_layout(&plan->layout_b, s.trans_a ? s.m : s.k, s.trans_a ? s.k : s.m, s.a_stride());
  make_layout(&plan->layout_c, s.n, s.m, s.c_stride());

  cublasLtMatmulPreference_t pref = nullptr;
  TESSERA_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref), where);
  cublasLtMatmulHeuristicResult_t results[kTuneCandidates]{};
  int found = 0;
  try {
    auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, const auto& value) {
      TESSERA_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)), where);
    };
    set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(workspace_bytes_));
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(plan_alignment(args.b)));
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(plan_alignment(args.a)));
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(plan_alignment(args.c)));
    set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(plan_alignment(args.c)));
    // Split-k partial sums in f32 only: f16 or bf16 partials (the output
    // type, or in place in the output) were up to 34 times our tolerance
    // off at k = 999 on an H200.
    if (s.dtype != DType::f32)
      set_pref(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
               static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
    TESSERA_CUDA_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->layout_a, plan->layout_b,
                                                      plan->layout_c, plan->layout_c, pref, kTuneCandidates, results,
                                                      &found),
                       where);
  } catch (...) {
    cublasLtMatmulPreferenceDestroy(pref);
    throw;
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0)
    fail("CublasLtGemm: cuBLASLt has no algorithm for ", where, " with a workspace of ", workspace_bytes_, " bytes");
  int device = 0;
  TESSERA_CUDA_CHECK(cudaGetDevice(&device), where);
  ChosenAlgos& algos = chosen_algos();
  std::lock_guard<std::mutex> lock(algos.mutex);
  const auto problem = std::make_pair(device, key);
  if (auto chosen = algos.chosen.find(problem); chosen != algos.chosen.end()) {
    plan->algo = chosen->second;
  } else {
    plan->algo = results[0].algo;
    if (autotune_ && found > 1 && may_time(s, args)) {
      std::vector<cublasLtMatmulAlgo_t> candidates;
      for (int i = 0; i < found; ++i) candidates.push_back(results[i].algo);
      plan->algo = fastest(*plan, candidates, args);
    }
    algos.chosen.emplace(problem, plan->algo);
  }
  return *plans_.emplace(key, std::move(plan)).first->second;
}

bool CublasLtGemm::may_time(const GemmShape& s, const GemmArgs& args) const {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TESSERA_CUDA_CHECK(cudaStreamIsCapturing(stream_.stream(), &capture), s.describe());
  if (capture != cudaStreamCaptureStatusNone || args.beta != 0.0f) return false;  // C is read
  // f16 epilogues: some of cuBLASLt's candidates were out of our tolerance (H200).
  if (s.dtype == DType::f16 && s.epilogue != GemmEpilogue::none && s.epilogue != GemmEpilogue::bias) return false;
  // Repeated runs must read the same operands: C (and a written aux) apart from what is read.
  const size_t c = s.c_bytes(), aux = s.aux_bytes();
  const bool aux_read = s.epilogue == GemmEpilogue::dgelu || s.epilogue == GemmEpilogue::drelu;
  struct Range {
    const void* p;
    size_t n;
  };
  const Range read[] = {{args.a, s.a_bytes()},
                        {args.b, s.b_bytes()},
                        {args.bias, static_cast<size_t>(s.n) * float_dtype_size(s.dtype)},
                        {aux_read ? args.aux : nullptr, aux}};
  for (const Range& r : read)
    if (overlap(args.c, c, r.p, r.n) || (!aux_read && overlap(args.aux, aux, r.p, r.n))) return false;
  return true;
}

cublasStatus_t CublasLtGemm::matmul(const Plan& plan, const GemmArgs& args, const cublasLtMatmulAlgo_t& algo) {
  return cublasLtMatmul(handle_, plan.desc, &args.alpha, args.b, plan.layout_a, args.a, plan.layout_b, &args.beta,
                        args.c, plan.layout_c, args.c, plan.layout_c, &algo, workspace_, workspace_bytes_,
                        stream_.stream());
}

cublasLtMatmulAlgo_t CublasLtGemm::fastest(const Plan& plan, const std::vector<cublasLtMatmulAlgo_t>& candidates,
                                           const GemmArgs& args) {
  struct Events {  // destroyed however the timing ends
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start) cudaEventDestroy(start);
      if (stop) cudaEventDestroy(stop);
    }
  } events;
  TESSERA_CUDA_CHECK(cudaEventCreate(&events.start), plan.where);
  TESSERA_CUDA_CHECK(cudaEventCreate(&events.stop), plan.where);
  cublasLtMatmulAlgo_t best = candidates[0];
  float best_ms = 0;
  bool timed = false;
  for (const cublasLtMatmulAlgo_t& algo : candidates) {
    if (matmul(plan, args, algo) != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that cannot run here is skipped
    TESSERA_CUDA_CHECK(cudaEventRecord(events.start, stream_.stream()), plan.where);
    bool ok = true;
    for (int rep = 0; rep < kTuneRepeats && ok; ++rep) ok = matmul(plan, args, algo) == CUBLAS_STATUS_SUCCESS;
    TESSERA_CUDA_CHECK(cudaEventRecord(events.stop, stream_.stream()), plan.where);
    TESSERA_CUDA_CHECK(cudaEventSynchronize(events.stop), plan.where);
    float ms = 0;
    TESSERA_CUDA_CHECK(cudaEventElapsedTime(&ms, events.start, events.stop), plan.where);
    if (ok && (!timed || ms < best_ms)) {
      best = algo;
      best_ms = ms;
      timed = true;
    }
  }
  return best;
}

void CublasLtGemm::run(const GemmShape& s, const GemmArgs& args) {
  validate(s, args);
  Plan& plan = plan_for(s, args);
  if (args.bias)
    TESSERA_CUDA_CHECK(
        cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias, sizeof(args.bias)),
        plan.where);
  if (args.aux)
    TESSERA_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &args.aux,
                                                      sizeof(args.aux)),
                       plan.where);
  TESSERA_CUDA_CHECK(matmul(plan, args, plan.algo), plan.where);
}

}  // namespace tessera::cuda
