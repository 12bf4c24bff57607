// cuDNN 9's backend API loaded with dlopen (cudnn_api.h). Does not build
// graphs or choose engines; a library that is missing or of another major
// version is reported, not fatal.
#include "cudnn_api.h"

#include <dlfcn.h>

#include <type_traits>

#include "tessera/error.h"

namespace tessera::cuda {

namespace {

struct Loaded {
  CudnnApi api{};
  bool ok = false;
  std::string why;
};

Loaded load() {
  Loaded l;
  void* lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    l.why = std::string("libcudnn.so.9 could not be loaded (") + (e ? e : "not found") +
            "); put cuDNN 9's lib directory on LD_LIBRARY_PATH";
    return l;
  }
  bool missing = false;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    if (!fn && !missing) {
      missing = true;
      l.why = std::string("libcudnn.so.9 lacks ") + name;
    }
  };
  CudnnApi& a = l.api;
  sym(a.GetVersion, "cudnnGetVersion");
  sym(a.GetErrorString, "cudnnGetErrorString");
  sym(a.GetLastErrorString, "cudnnGetLastErrorString");
  sym(a.Create, "cudnnCreate");
  sym(a.Destroy, "cudnnDestroy");
  sym(a.SetStream, "cudnnSetStream");
  sym(a.BackendCreateDescriptor, "cudnnBackendCreateDescriptor");
  sym(a.BackendDestroyDescriptor, "cudnnBackendDestroyDescriptor");
  sym(a.BackendFinalize, "cudnnBackendFinalize");
  sym(a.BackendSetAttribute, "cudnnBackendSetAttribute");
  sym(a.BackendGetAttribute, "cudnnBackendGetAttribute");
  sym(a.BackendExecute, "cudnnBackendExecute");
  if (missing) return l;  // the library stays loaded: harmless, and unloading cuDNN is not safe
  const size_t version = a.GetVersion();
  if (version < 90000 || version >= 100000) {
    l.why = "libcudnn.so.9 reports version " + std::to_string(version) + ", not 9.x";
    return l;
  }
  l.ok = true;
  return l;
}

}  // namespace

const CudnnApi* cudnn_api(std::string* why) {
  static const Loaded loaded = load();
  if (!loaded.ok && why) *why = loaded.why;
  return loaded.ok ? &loaded.api : nullptr;
}

void cudnn_check(const CudnnApi& api, cudnnStatus_t status, std::string_view call, std::string_view where) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char message[512] = {0};
  api.GetLastErrorString(message, sizeof message);
  fail("cuDNN call ", call, " failed in ", where, ": ", api.GetErrorString(status),
       message[0] ? std::string(" (") + message + ")" : std::string());
}

CudnnDescriptor::CudnnDescriptor(const CudnnApi& api, cudnnBackendDescriptorType_t type, std::string_view where)
    : api_(&api) {
  cudnn_check(api, api.BackendCreateDescriptor(type, &d_), "cudnnBackendCreateDescriptor", where);
}

CudnnDescriptor::~CudnnDescriptor() {
  if (d_) api_->BackendDestroyDescriptor(d_);
}

CudnnDescriptor& CudnnDescriptor::operator=(CudnnDescriptor&& o) noexcept {
  if (this != &o) {
    if (d_) api_->BackendDestroyDescriptor(d_);
    api_ = o.api_;
    d_ = o.d_;
    o.d_ = nullptr;
  }
  return *this;
}

void CudnnDescriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                          const void* values, std::string_view where) const {
  cudnn_check(*api_, api_->BackendSetAttribute(d_, name, type, count, values),
              "cudnnBackendSetAttribute(" + std::to_string(static_cast<int>(name)) + ")", where);
}

void CudnnDescriptor::finalize(std::string_view where) const {
  cudnn_check(*api_, api_->BackendFinalize(d_), "cudnnBackendFinalize", where);
}

cudnnStatus_t CudnnDescriptor::try_finalize() const {
  return api_->BackendFinalize(d_);
}

}  // namespace tessera::cuda
