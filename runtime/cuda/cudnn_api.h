// cuDNN 9's backend (graph) API, loaded at run time with dlopen: tessera does
// not link libcudnn, so its binaries start on machines without cuDNN and
// CudnnAttention can say why it is unavailable. Only the entry points tessera
// calls are loaded. Also a descriptor that destroys itself, and a check that
// turns a cudnnStatus_t into a tessera::Error naming the call, what it
// served and cuDNN's own last message. Internal to runtime/cuda; this file
// builds no graphs (cudnn_attention.cpp does).
#pragma once

#include <cudnn_graph.h>

#include <string>
#include <string_view>

namespace tessera::cuda {

struct CudnnApi {
  decltype(&::cudnnGetVersion) GetVersion;
  decltype(&::cudnnGetErrorString) GetErrorString;
  decltype(&::cudnnGetLastErrorString) GetLastErrorString;
  decltype(&::cudnnCreate) Create;
  decltype(&::cudnnDestroy) Destroy;
  decltype(&::cudnnSetStream) SetStream;
  decltype(&::cudnnBackendCreateDescriptor) BackendCreateDescriptor;
  decltype(&::cudnnBackendDestroyDescriptor) BackendDestroyDescriptor;
  decltype(&::cudnnBackendFinalize) BackendFinalize;
  decltype(&::cudnnBackendSetAttribute) BackendSetAttribute;
  decltype(&::cudnnBackendGetAttribute) BackendGetAttribute;
  decltype(&::cudnnBackendExecute) BackendExecute;
};

// The API of libcudnn.so.9 (found as the dynamic loader finds libraries:
// LD_LIBRARY_PATH, the cache), loaded once per process. Null when it cannot
// be loaded or is not cuDNN 9; then `why` (if given) says what failed.
const CudnnApi* cudnn_api(std::string* why = nullptr);

// Throws Error when `status` is not CUDNN_STATUS_SUCCESS: the call's text,
// `where`, the status's name and cuDNN's last error message.
void cudnn_check(const CudnnApi& api, cudnnStatus_t status, std::string_view call, std::string_view where);

// A backend descriptor of one type, destroyed with this object.
class CudnnDescriptor {
 public:
  CudnnDescriptor() = default;
  CudnnDescriptor(const CudnnApi& api, cudnnBackendDescriptorType_t type, std::string_view where);
  ~CudnnDescriptor();
  CudnnDescriptor(CudnnDescriptor&& o) noexcept : api_(o.api_), d_(o.d_) { o.d_ = nullptr; }
  CudnnDescriptor& operator=(CudnnDescriptor&& o) noexcept;
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  // Sets `count` values of `type` at `values`; checked.
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values,
           std::string_view where) const;
  void finalize(std::string_view where) const;
  // Finalizes; returns the failed status instead of throwing (an engine
  // configuration that does not fit is not an error).
  cudnnStatus_t try_finalize() const;

 private:
  const CudnnApi* api_ = nullptr;
  cudnnBackendDescriptor_t d_ = nullptr;
};

}  // namespace tessera::cuda
