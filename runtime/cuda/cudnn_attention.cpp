// CudnnAttention (tessera/cuda/cudnn_attention.h): builds cuDNN backend
// operation graphs that spell scaled-dot-product attention, lets cuDNN's
// heuristics pick an engine (its fused flash-attention kernels match these
// graphs), caches the finalized plans and executes them on the stream.
//
// The graphs follow the composition cuDNN's frontend uses for SDPA, which
// is what the fused engines recognize. In cuDNN's [batch, heads, seq, dim]
// terms, with S = Q K^T (K given transposed, by its strides):
//   forward:  P = softmax(mask(S * scale)); O = P V; lse = max + log(sum)
//   backward: D = rowsum(dO * O); P = exp(mask(S * scale - lse));
//             dV = P^T dO; dS = P * (dO V^T - D) * scale;
//             dK = dS^T Q; dQ = dS K (summed in an f32 buffer, then cast)
// The mask is row >= column (causal). Nothing here launches kernels of its
// own or computes anything on the host.
#include "tessera/cuda/cudnn_attention.h"

#include <cstdint>
#include <limits>
#include <utility>

#include "cudnn_api.h"
#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

namespace {

using Dims = std::vector<int64_t>;

// Unique ids of the tensors bound at execution: the operands, the by-value
// scalars (kScale, kNegInf, kOne) and the backward's buffers in the
// workspace (kRowSum, kDqSum). Virtual tensors count from kFirstVirtual.
// clang-format off
enum Uid : int64_t {
  kQ = 1, kK, kV, kOut, kLse, kGrad, kDq, kDk, kDv,
  kScale, kNegInf, kOne,
  kRowSum, kDqSum,
  kFirstVirtual = 100,
};
// clang-format on

constexpr size_t kWorkspaceAlign = 256;

size_t round_up(size_t n) {
  return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// One operation graph under construction: tensor and operation descriptors,
// kept alive until the graph is finalized.
class GraphBuilder {
 public:
  GraphBuilder(const CudnnApi& api, std::string where) : api_(api), where_(std::move(where)) {}

  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
                                  bool is_virtual = false, bool by_value = false) {
    CudnnDescriptor d(api_, CUDNN_BACKEND_TENSOR_DESCRIPTOR, where_);
    const int64_t alignment = 16;
    d.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, where_);
    d.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, static_cast<int64_t>(dims.size()), dims.data(), where_);
    d.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, static_cast<int64_t>(strides.size()), strides.data(), where_);
    d.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, where_);
    d.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, where_);
    d.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, where_);
    if (by_value) d.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, where_);
    d.finalize(where_);
    return keep(std::move(d));
  }
  // An intermediate the engine keeps on chip (f32 unless said otherwise).
  cudnnBackendDescriptor_t temp(const Dims& dims, const Dims& strides, cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return tensor(next_virtual_++, type, dims, strides, true);
  }
  cudnnBackendDescriptor_t scalar(int64_t uid) {
    return tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  // y = mode(x[, b[, t]]); `axis` for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                 cudnnBackendDescriptor_t b = nullptr, cudnnBackendDescriptor_t t = nullptr,
                 cudnnDataType_t precision = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    CudnnDescriptor pw(api_, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, where_);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, where_);
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &precision, where_);
    if (mode == CUDNN_POINTWISE_GEN_INDEX) pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, where_);
    operation(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
              {CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, std::move(pw)},
              {{CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x},
               {CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b},
               {CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t},
               {CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y}});
  }

  // y = reduce(x) over the dims where y is 1.
  void reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    CudnnDescriptor r(api_, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, where_);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    r.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, where_);
    r.set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &precision, where_);
    operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, {CUDNN_ATTR_OPERATION_REDUCTION_DESC, std::move(r)},
              {{CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x}, {CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y}});
  }

  // c = a b (batched over the leading dims), f32 accumulation.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c) {
    CudnnDescriptor mm(api_, CUDNN_BACKEND_MATMUL_DESCRIPTOR, where_);
    const cudnnDataType_t precision = CUDNN_DATA_FLOAT;
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &precision, where_);
    operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, {CUDNN_ATTR_OPERATION_MATMUL_DESC, std::move(mm)},
              {{CUDNN_ATTR_OPERATION_MATMUL_ADESC, a},
               {CUDNN_ATTR_OPERATION_MATMUL_BDESC, b},
               {CUDNN_ATTR_OPERATION_MATMUL_CDESC, c}});
  }

  // y: x's elements under other dims and strides (a view; no data moves).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    operation(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, {},
              {{CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x}, {CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y}});
  }

  // Scores masked where the key comes after the query (column > row).
  cudnnBackendDescriptor_t causal_mask(cudnnBackendDescriptor_t scores, const Dims& dims, const Dims& strides) {
    cudnnBackendDescriptor_t row = temp(dims, strides, CUDNN_DATA_INT32), col = temp(dims, strides, CUDNN_DATA_INT32);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, scores, row, nullptr, nullptr, CUDNN_DATA_FLOAT, 2);
    pointwise(CUDNN_POINTWISE_GEN_INDEX, scores, col, nullptr, nullptr, CUDNN_DATA_FLOAT, 3);
    cudnnBackendDescriptor_t keep_it = temp(dims, strides, CUDNN_DATA_BOOLEAN), masked = temp(dims, strides);
    pointwise(CUDNN_POINTWISE_CMP_GE, row, keep_it, col, nullptr, CUDNN_DATA_BOOLEAN);
    pointwise(CUDNN_POINTWISE_BINARY_SELECT, scores, masked, scalar(kNegInf), keep_it);
    return masked;
  }

  CudnnDescriptor finalize(cudnnHandle_t handle) {
    CudnnDescriptor graph(api_, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, where_);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops_.size()),
              ops_.data(), where_);
    graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, where_);
    graph.finalize(where_);
    return graph;
  }

 private:
  using Attribute = std::pair<cudnnBackendAttributeName_t, cudnnBackendDescriptor_t>;
  struct Inner {
    cudnnBackendAttributeName_t name{};
    CudnnDescriptor descriptor;  // none: the operation has no math descriptor
  };

  // One operation of `type`: its math descriptor (finalized here) and its
  // tensors (null ones left unset), finalized and appended to the graph.
  void operation(cudnnBackendDescriptorType_t type, Inner inner, std::initializer_list<Attribute> tensors) {
    CudnnDescriptor op(api_, type, where_);
    if (inner.descriptor.get()) {
      inner.descriptor.finalize(where_);
      cudnnBackendDescriptor_t d = keep(std::move(inner.descriptor));
      op.set(inner.name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d, where_);
    }
    for (const auto& [name, tensor] : tensors)
      if (tensor) op.set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tensor, where_);
    op.finalize(where_);
    ops_.push_back(keep(std::move(op)));
  }

  cudnnBackendDescriptor_t keep(CudnnDescriptor d) {
    kept_.push_back(std::move(d));
    return kept_.back().get();
  }

  const CudnnApi& api_;
  std::string where_;
  std::vector<CudnnDescriptor> kept_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_ = kFirstVirtual;
};

Dims strides_of(const AttentionStrides& s) {
  return {s.batch, s.head, s.row, 1};
}
// The same tensor seen as [batch, heads, dim, seq].
Dims transposed_strides_of(const AttentionStrides& s) {
  return {s.batch, s.head, 1, s.row};
}

const char* pass_name(CudnnAttention::Pass p) {
  switch (p) {
    case CudnnAttention::Pass::forward: return "forward";
    case CudnnAttention::Pass::forward_lse: return "forward (with logsumexp)";
    case CudnnAttention::Pass::backward: return "backward";
  }
  return "?";
}

}  // namespace

struct CudnnAttention::Plan {
  CudnnDescriptor plan;
  size_t plan_workspace = 0;                     // the engine's own
  size_t row_sum_offset = 0, dq_sum_offset = 0;  // backward buffers, after it
  size_t workspace = 0;                          // all of it
  float scale = 0, neg_inf = 0, one = 1;         // the by-value scalars (their addresses are bound)
  std::string where;
  // The last variant pack and its pointers: reused while they do not change.
  CudnnDescriptor pack;
  std::vector<void*> pack_pointers;
};

std::unique_ptr<CudnnAttention> CudnnAttention::create(const DeviceStream& stream, std::string* why) {
  const CudnnApi* api = cudnn_api(why);
  if (!api) return nullptr;
  std::unique_ptr<CudnnAttention> a(new CudnnAttention(stream));
  stream.make_current();
  cudnnHandle_t handle = nullptr;
  if (const cudnnStatus_t st = api->Create(&handle); st != CUDNN_STATUS_SUCCESS) {
    if (why) *why = std::string("cudnnCreate failed: ") + api->GetErrorString(st);
    return nullptr;
  }
  a->handle_ = handle;
  cudnn_check(*api, api->SetStream(handle, stream.stream()), "cudnnSetStream", "cuDNN attention");
  return a;
}

CudnnAttention::CudnnAttention(const DeviceStream& stream) : stream_(stream) {}

CudnnAttention::~CudnnAttention() {
  plans_.clear();
  if (handle_) cudnn_api()->Destroy(static_cast<cudnnHandle_t>(handle_));
  if (workspace_) cudaFree(workspace_);
}

std::string CudnnAttention::version() const {
  const size_t v = cudnn_api()->GetVersion();
  return "cuDNN " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

CudnnAttention::Key CudnnAttention::key_of(Pass pass, const AttentionShape& s, const AttentionLayout& layout) const {
  std::vector<int64_t> strides;
  auto add = [&](const AttentionStrides& t) {
    const AttentionStrides r = layout.of(t, s);
    strides.insert(strides.end(), {r.batch, r.head, r.row});
  };
  add(layout.q), add(layout.k), add(layout.v), add(layout.out);
  if (pass == Pass::backward) add(layout.grad), add(layout.dq), add(layout.dk), add(layout.dv);
  return {static_cast<int>(pass),
          static_cast<int>(s.dtype),
          s.batch,
          layout.heads,
          s.seq,
          s.dim,
          s.causal,
          s.scale,
          strides};
}

bool CudnnAttention::prepare(Pass pass, const AttentionShape& s, const AttentionLayout& layout, std::string* why) {
  return plan_for(pass, s, layout, why) != nullptr;
}

CudnnAttention::Plan* CudnnAttention::plan_for(Pass pass, const AttentionShape& s, const AttentionLayout& layout,
                                               std::string* why) {
  const Key key = key_of(pass, s, layout);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  if (auto it = refused_.find(key); it != refused_.end()) {
    if (why) *why = it->second;
    return nullptr;
  }
  auto refuse = [&](std::string reason) -> Plan* {
    if (why) *why = reason;
    refused_[key] = std::move(reason);
    return nullptr;
  };
  const std::string where = std::string("cuDNN attention ") + pass_name(pass) + " " + s.text() +
                            (layout.dense(s) ? "" : "; " + layout.text());
  if (s.dtype != DType::bf16) return refuse("cuDNN's fused attention is used for bf16 only");
  if (s.dim % 8 != 0 || s.dim > 128) return refuse("cuDNN's fused attention takes head dims 8, 16, ..., 128");
  if (layout.heads < 1 || s.batch % layout.heads != 0) return refuse("the heads do not divide the batch");
  for (int64_t v : std::get<8>(key))
    if (v % 8 != 0) return refuse("a stride is not a multiple of 8 elements (16 bytes)");

  const CudnnApi& api = *cudnn_api();
  const auto handle = static_cast<cudnnHandle_t>(handle_);
  const int64_t B = s.batch / layout.heads, H = layout.heads, S = s.seq, D = s.dim;
  const Dims scores = {B, H, S, S}, score_strides = {H * S * S, S * S, S, 1};
  const Dims rows = {B, H, S, 1}, row_strides = {H * S, S, 1, 1};
  const Dims head = {B, H, S, D}, head_t = {B, H, D, S};
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16;
  auto plan = std::make_unique<Plan>();
  plan->scale = s.scale;
  plan->neg_inf = -std::numeric_limits<float>::infinity();
  plan->where = where;

  GraphBuilder g(api, where);
  const auto st = [&](const AttentionStrides& t) { return layout.of(t, s); };
  cudnnBackendDescriptor_t q = g.tensor(kQ, bf16, head, strides_of(st(layout.q)));
  cudnnBackendDescriptor_t kt = g.tensor(kK, bf16, head_t, transposed_strides_of(st(layout.k)));
  cudnnBackendDescriptor_t out = g.tensor(kOut, bf16, head, strides_of(st(layout.out)));
  cudnnBackendDescriptor_t scale = g.scalar(kScale);
  cudnnBackendDescriptor_t product = g.temp(scores, score_strides), scaled = g.temp(scores, score_strides);
  g.matmul(q, kt, product);
  g.pointwise(CUDNN_POINTWISE_MUL, product, scaled, scale);
  if (pass != Pass::backward) {
    cudnnBackendDescriptor_t v = g.tensor(kV, bf16, head, strides_of(st(layout.v)));
    cudnnBackendDescriptor_t masked = s.causal ? g.causal_mask(scaled, scores, score_strides) : scaled;
    cudnnBackendDescriptor_t max = g.temp(rows, row_strides), sum = g.temp(rows, row_strides);
    cudnnBackendDescriptor_t shifted = g.temp(scores, score_strides), e = g.temp(scores, score_strides);
    g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, max);
    g.pointwise(CUDNN_POINTWISE_SUB, masked, shifted, max);
    g.pointwise(CUDNN_POINTWISE_EXP, shifted, e);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
    // The logsumexp, kept on chip when not wanted (the fused engines expect it in the graph).
    cudnnBackendDescriptor_t log = g.temp(rows, row_strides);
    g.pointwise(CUDNN_POINTWISE_LOG, sum, log);
    g.pointwise(
        CUDNN_POINTWISE_ADD, max,
        pass == Pass::forward_lse ? g.tensor(kLse, CUDNN_DATA_FLOAT, rows, row_strides) : g.temp(rows, row_strides),
        log);
    cudnnBackendDescriptor_t p = g.temp(scores, score_strides, bf16);
    g.pointwise(CUDNN_POINTWISE_DIV, e, p, sum);
    g.matmul(p, v, out);
  } else {
    const Dims transposed_score_strides = {H * S * S, S * S, 1, S};  // the scores seen as [.., key, query]
    cudnnBackendDescriptor_t vt = g.tensor(kV, bf16, head_t, transposed_strides_of(st(layout.v)));
    cudnnBackendDescriptor_t grad = g.tensor(kGrad, bf16, head, strides_of(st(layout.grad)));
    cudnnBackendDescriptor_t lse = g.tensor(kLse, CUDNN_DATA_FLOAT, rows, row_strides);
    // D = rowsum(dO * O), into the workspace.
    cudnnBackendDescriptor_t grad_out = g.temp(head, {H * S * D, S * D, H * D, 1}), partial = g.temp(rows, row_strides);
    cudnnBackendDescriptor_t row_sum = g.tensor(kRowSum, CUDNN_DATA_FLOAT, rows, row_strides);
    g.pointwise(CUDNN_POINTWISE_MUL, grad, grad_out, out);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, grad_out, partial);
    g.pointwise(CUDNN_POINTWISE_MUL, partial, row_sum, g.scalar(kOne));
    // P = exp(mask(S * scale - lse)); dV = P^T dO.
    cudnnBackendDescriptor_t centered = g.temp(scores, score_strides);
    g.pointwise(CUDNN_POINTWISE_SUB, scaled, centered, lse);
    cudnnBackendDescriptor_t masked = s.causal ? g.causal_mask(centered, scores, score_strides) : centered;
    cudnnBackendDescriptor_t p = g.temp(scores, score_strides), pt = g.temp(scores, transposed_score_strides, bf16);
    g.pointwise(CUDNN_POINTWISE_EXP, masked, p);
    g.reshape(p, pt);
    g.matmul(pt, grad, g.tensor(kDv, bf16, head, strides_of(st(layout.dv))));
    // dS = P * (dO V^T - D) * scale; dK = dS^T Q.
    cudnnBackendDescriptor_t dp = g.temp(scores, score_strides), centered_dp = g.temp(scores, score_strides);
    cudnnBackendDescriptor_t ds_unscaled = g.temp(scores, score_strides), ds = g.temp(scores, score_strides);
    g.matmul(grad, vt, dp);
    g.pointwise(CUDNN_POINTWISE_SUB, dp, centered_dp, row_sum);
    g.pointwise(CUDNN_POINTWISE_MUL, centered_dp, ds_unscaled, p);
    g.pointwise(CUDNN_POINTWISE_MUL, ds_unscaled, ds, scale);
    cudnnBackendDescriptor_t dst = g.temp(scores, transposed_score_strides, bf16);
    g.reshape(ds, dst);
    g.matmul(dst, q, g.tensor(kDk, bf16, head, strides_of(st(layout.dk))));
    // dQ = dS K, summed in f32 in the workspace, then rounded to bf16.
    cudnnBackendDescriptor_t k = g.temp(head, strides_of(st(layout.k)), bf16);
    g.reshape(kt, k);
    cudnnBackendDescriptor_t dq_sum = g.tensor(kDqSum, CUDNN_DATA_FLOAT, head, {H * S * D, S * D, D, 1});
    g.matmul(ds, k, dq_sum);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_sum, g.tensor(kDq, bf16, head, strides_of(st(layout.dq))));
  }
  CudnnDescriptor graph = g.finalize(handle);

  // cuDNN's heuristics rank the engine configurations; the first that finalizes is kept.
  CudnnDescriptor heuristics(api, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, where);
  cudnnBackendDescriptor_t gd = graph.get();
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  heuristics.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gd, where);
  heuristics.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, where);
  if (heuristics.try_finalize() != CUDNN_STATUS_SUCCESS) {
    char message[512] = {0};
    api.GetLastErrorString(message, sizeof message);
    return refuse(std::string("cuDNN has no engine for this attention graph (") + message + ")");
  }
  int64_t count = 0;
  cudnn_check(api,
              api.BackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0,
                                      &count, nullptr),
              "cudnnBackendGetAttribute(ENGINEHEUR_RESULTS count)", where);
  std::vector<CudnnDescriptor> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.emplace_back(api, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, where);
    raw.push_back(configs.back().get());
  }
  int64_t returned = 0;
  if (count > 0)
    cudnn_check(api,
                api.BackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                        count, &returned, raw.data()),
                "cudnnBackendGetAttribute(ENGINEHEUR_RESULTS)", where);
  std::string last_failure = "no engine configuration";
  for (int64_t i = 0; i < returned; ++i) {
    CudnnDescriptor candidate(api, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, where);
    cudnnBackendDescriptor_t cfg = raw[i];
    candidate.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, where);
    candidate.set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg, where);
    if (const cudnnStatus_t status = candidate.try_finalize(); status != CUDNN_STATUS_SUCCESS) {
      char message[512] = {0};
      api.GetLastErrorString(message, sizeof message);
      last_failure = std::string(api.GetErrorString(status)) + (message[0] ? std::string(": ") + message : "");
      continue;
    }
    int64_t bytes = 0, n = 0;
    cudnn_check(api,
                api.BackendGetAttribute(candidate.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                        &n, &bytes),
                "cudnnBackendGetAttribute(EXECUTION_PLAN_WORKSPACE_SIZE)", where);
    plan->plan = std::move(candidate);
    plan->plan_workspace = round_up(static_cast<size_t>(bytes));
    break;
  }
  if (!plan->plan.get())
    return refuse("none of cuDNN's " + std::to_string(returned) + " engine configurations finalized (" + last_failure +
                  ")");
  plan->workspace = plan->plan_workspace;
  if (pass == Pass::backward) {
    plan->row_sum_offset = plan->workspace;
    plan->workspace += round_up(static_cast<size_t>(B * H * S) * sizeof(float));
    plan->dq_sum_offset = plan->workspace;
    plan->workspace += round_up(static_cast<size_t>(B * H * S * D) * sizeof(float));
  }
  if (plan->workspace > workspace_bytes_) {
    stream_.make_current();
    TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream_.stream()), where);  // the old workspace may be in use
    if (workspace_) TESSERA_CUDA_CHECK(cudaFree(workspace_), where);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
    TESSERA_CUDA_CHECK(cudaMalloc(&workspace_, plan->workspace),
                       where + ": workspace of " + std::to_string(plan->workspace) + " bytes");
    workspace_bytes_ = plan->workspace;
  }
  return plans_.emplace(key, std::move(plan)).first->second.get();
}

void CudnnAttention::execute(Plan& plan, const std::vector<std::pair<int64_t, void*>>& tensors) {
  const CudnnApi& api = *cudnn_api();
  const std::string& where = plan.where;
  std::vector<int64_t> uids;
  std::vector<void*> pointers;
  for (const auto& [uid, p] : tensors) uids.push_back(uid), pointers.push_back(p);
  pointers.push_back(workspace_);
  if (!plan.pack.get() || pointers != plan.pack_pointers) {
    CudnnDescriptor pack(api, CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, where);
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(),
             where);
    pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(uids.size()),
             pointers.data(), where);
    pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &pointers.back(), where);
    pack.finalize(where);
    plan.pack = std::move(pack);
    plan.pack_pointers = std::move(pointers);
  }
  cudnn_check(api, api.BackendExecute(static_cast<cudnnHandle_t>(handle_), plan.plan.get(), plan.pack.get()),
              "cudnnBackendExecute", where);
}

namespace {
bool aligned(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}
}  // namespace

bool CudnnAttention::forward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                             const void* v, void* out, float* lse) {
  if (!q || !k || !v || !out || !aligned({q, k, v, out, lse})) return false;
  Plan* plan = plan_for(lse ? Pass::forward_lse : Pass::forward, s, layout, nullptr);
  if (!plan) return false;
  std::vector<std::pair<int64_t, void*>> t = {{kQ, const_cast<void*>(q)},
                                              {kK, const_cast<void*>(k)},
                                              {kV, const_cast<void*>(v)},
                                              {kOut, out},
                                              {kScale, &plan->scale}};
  if (lse) t.emplace_back(kLse, lse);
  if (s.causal) t.emplace_back(kNegInf, &plan->neg_inf);
  execute(*plan, t);
  return true;
}

bool CudnnAttention::backward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k,
                              const void* v, const void* out, const void* grad, void* dq, void* dk, void* dv,
                              const float* forward_lse) {
  if (!q || !k || !v || !out || !grad || !dq || !dk || !dv || !forward_lse ||
      !aligned({q, k, v, out, grad, dq, dk, dv, forward_lse}))
    return false;
  Plan* plan = plan_for(Pass::backward, s, layout, nullptr);
  if (!plan) return false;
  char* w = static_cast<char*>(workspace_);
  std::vector<std::pair<int64_t, void*>> t = {{kQ, const_cast<void*>(q)},
                                              {kK, const_cast<void*>(k)},
                                              {kV, const_cast<void*>(v)},
                                              {kOut, const_cast<void*>(out)},
                                              {kGrad, const_cast<void*>(grad)},
                                              {kLse, const_cast<float*>(forward_lse)},
                                              {kDq, dq},
                                              {kDk, dk},
                                              {kDv, dv},
                                              {kScale, &plan->scale},
                                              {kOne, &plan->one},
                                              {kRowSum, w + plan->row_sum_offset},
                                              {kDqSum, w + plan->dq_sum_offset}};
  if (s.causal) t.emplace_back(kNegInf, &plan->neg_inf);
  execute(*plan, t);
  return true;
}

}  // namespace tessera::cuda
