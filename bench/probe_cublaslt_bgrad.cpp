// Which bias-gradient epilogues (BGRADA, BGRADB) cuBLASLt offers for bf16
// products with f32 accumulation, by transposes and bias data type. Prints
// one line per case: whether cublasLtMatmulAlgoGetHeuristic finds an
// algorithm and its status. A probe for a design decision, not a benchmark:
// tessera's bias gradients are f32 sums (autocast keeps reductions in f32),
// so the GEMM can take them only if cuBLASLt writes an f32 bias gradient for
// bf16 operands (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = CUDA_R_32F). Column
// major, as cuBLASLt: D[m, n] = op(A) op(B). Raw output of a run:
// bench/results/h200_cublaslt_bgrad_probe.txt.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdio>

namespace {

struct Case {
  int m, n, k;
  bool trans_a, trans_b;
  cublasLtEpilogue_t epilogue;
  cudaDataType_t bias_type;
};

// The heuristic's status and number of algorithms for one case (no launch).
void probe(cublasLtHandle_t handle, const Case& c) {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t op_a = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &c.epilogue, sizeof c.epilogue);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &c.bias_type, sizeof c.bias_type);
  const uint64_t rows_a = c.trans_a ? c.k : c.m, cols_a = c.trans_a ? c.m : c.k;
  const uint64_t rows_b = c.trans_b ? c.n : c.k, cols_b = c.trans_b ? c.k : c.n;
  cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, rows_a, cols_a, static_cast<int64_t>(rows_a));
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, rows_b, cols_b, static_cast<int64_t>(rows_b));
  cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, c.m, c.n, c.m);
  cublasLtMatmulPreferenceCreate(&pref);
  const uint64_t workspace = uint64_t{32} << 20;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, ld, ld, pref, 1, &result, &found);
  std::printf("m %5d n %5d k %5d  op(A) %s op(B) %s  %s  bias %-4s : %s (status %d)\n", c.m, c.n, c.k,
              c.trans_a ? "T" : "N", c.trans_b ? "T" : "N",
              c.epilogue == CUBLASLT_EPILOGUE_BGRADA ? "BGRADA" : "BGRADB", c.bias_type == CUDA_R_32F ? "f32" : "bf16",
              status == CUBLAS_STATUS_SUCCESS && found > 0 ? "offered    " : "not offered", static_cast<int>(status));
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatmulDescDestroy(desc);
}

}  // namespace

int main() {
  cublasLtHandle_t handle = nullptr;
  if (cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    std::printf("probe_cublaslt_bgrad: no cuBLASLt handle (no GPU?)\n");
    return 1;
  }
  // GPT-2's weight-gradient products (K = batch x context) and two awkward sizes.
  const int sizes[][3] = {{768, 2304, 8192}, {2304, 768, 8192}, {33, 17, 129}};
  for (const auto& s : sizes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (cublasLtEpilogue_t e : {CUBLASLT_EPILOGUE_BGRADA, CUBLASLT_EPILOGUE_BGRADB})
          for (cudaDataType_t bias : {CUDA_R_32F, CUDA_R_16BF}) probe(handle, {s[0], s[1], s[2], ta, tb, e, bias});
  cublasLtDestroy(handle);
  return 0;
}
