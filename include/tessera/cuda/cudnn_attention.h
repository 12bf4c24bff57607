// CudnnAttention: tessera's attention op (tessera/cuda/attention.h: out =
// softmax(q k^T * scale, causal or not) v, and its gradient) on cuDNN's fused
// flash-attention kernels, which cuDNN 9 picks for a graph of matmul,
// pointwise and reduction operations that spells scaled-dot-product
// attention (built here with the backend API, as cuDNN's frontend builds it).
//
// - cuDNN is loaded at run time (libcudnn.so.9 on the loader's path, e.g.
//   the one in PyTorch's wheel: .../site-packages/nvidia/cudnn/lib);
//   tessera does not link it. create() says why when it is unavailable, and
//   callers then keep tessera's own kernels.
// - bf16 tensors in any AttentionLayout whose rows are contiguous and 16-byte
//   aligned, head dims cuDNN takes (multiples of 8, at most 128 here).
// - The forward writes each query row's logsumexp (natural log, of the
//   scaled, masked scores) when asked: the same statistic attention_forward
//   writes, so either backward can read either forward's.
// - The backward needs that logsumexp and computes dq, dk and dv together.
//   It sums dq with atomics: it is NOT bitwise repeatable (graph replays
//   differ from direct launches in the last bits). Use tessera's kernels
//   (attention.h) where that matters.
//
// Plans are built per shape and layout on first use (a heuristic query and
// plan finalization: milliseconds) and cached; the workspace is one
// cudaMalloc that grows only in prepare(). Run a shape once outside CUDA
// Graph capture (or prepare() it) before capturing it. Errors are
// tessera::Error naming the shape and the cuDNN call.
#pragma once

#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "tessera/cuda/attention.h"
#include "tessera/cuda/device_stream.h"

namespace tessera::cuda {

class CudnnAttention {
 public:
  enum class Pass { forward, forward_lse, backward };

  // Null, with `why` set, when cuDNN 9 cannot be loaded or gives no handle on
  // the stream's device.
  static std::unique_ptr<CudnnAttention> create(const DeviceStream& stream, std::string* why);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // "cuDNN 9.19.0"
  std::string version() const;

  // Builds and caches the plan of `pass` for this shape and layout (strides
  // resolved with AttentionLayout::of) and grows the workspace to fit it.
  // False, with `why`, when cuDNN does not take it (dtype, head dim, strides,
  // or no engine for the graph); a cuDNN failure is an Error.
  bool prepare(Pass pass, const AttentionShape& s, const AttentionLayout& layout, std::string* why = nullptr);

  // As attention_forward / attention_backward (every gradient wanted;
  // forward_lse required). False when this call is not taken (not
  // preparable, or a pointer not 16-byte aligned): nothing was queued.
  bool forward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k, const void* v,
               void* out, float* lse);
  bool backward(const AttentionShape& s, const AttentionLayout& layout, const void* q, const void* k, const void* v,
                const void* out, const void* grad, void* dq, void* dk, void* dv, const float* forward_lse);

  size_t workspace_bytes() const { return workspace_bytes_; }
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  // pass, dtype, batch, heads, seq, dim, causal, scale, every tensor's strides
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, bool, float, std::vector<int64_t>>;

  explicit CudnnAttention(const DeviceStream& stream);
  Key key_of(Pass pass, const AttentionShape& s, const AttentionLayout& layout) const;
  Plan* plan_for(Pass pass, const AttentionShape& s, const AttentionLayout& layout, std::string* why);
  void execute(Plan& plan, const std::vector<std::pair<int64_t, void*>>& tensors);

  const DeviceStream& stream_;
  void* handle_ = nullptr;  // cudnnHandle_t
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<Key, std::string> refused_;  // why a shape is not taken, once found
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

}  // namespace tessera::cuda
