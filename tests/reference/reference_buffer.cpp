// Conversions between the reference interpreter's RefTensor and the
// runtime's tessera::Buffer. Kept apart from the interpreter so that the
// interpreter itself does not depend on the runtime; nothing here evaluates.
#include "reference/reference.h"
#include "tessera/runtime.h"

namespace tessera::ref {

RefTensor from_buffer(const Buffer& b) {
  RefTensor t;
  t.shape = b.shape();
  t.dtype = b.dtype();
  t.data = b.to_f64();
  return t;
}

Buffer to_buffer(const RefTensor& t) { return to_buffer(t, t.dtype); }

Buffer to_buffer(const RefTensor& t, DType dtype) {
  std::vector<double> v(t.data.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = to_dtype(dtype, t.data[i]);
  return Buffer::from(v, t.shape, dtype);
}

std::map<std::string, RefTensor> from_buffers(const std::map<std::string, Buffer>& args) {
  std::map<std::string, RefTensor> r;
  for (const auto& [name, b] : args) r[name] = from_buffer(b);
  return r;
}

}  // namespace tessera::ref
