// tessera::Buffer: dense row-major host tensors with shared, aligned storage.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "half.h"
#include "tessera/error.h"
#include "tessera/runtime.h"

namespace tessera {

namespace {
std::shared_ptr<uint8_t> allocate(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) fail("Buffer: cannot allocate ", bytes, " bytes");
  std::memset(p, 0, rounded);
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}
}  // namespace

Buffer::Buffer(DType dtype, Shape shape) : type_{dtype, std::move(shape)} {
  for (int64_t d : type_.shape)
    if (d < 0) fail("Buffer: negative dimension in shape ", to_string(type_.shape));
  data_ = allocate(type_.bytes());
}

Buffer Buffer::from(const std::vector<double>& values, Shape shape, DType dtype) {
  Buffer b(dtype, std::move(shape));
  if (static_cast<int64_t>(values.size()) != b.numel())
    fail("Buffer::from: ", values.size(), " values for shape ", to_string(b.shape()), " (", b.numel(),
         " elements)");
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, values[i]);
  return b;
}

void Buffer::check_element_size(size_t size) const {
  if (size != dtype_size(dtype()))
    fail("Buffer: element type of ", size, " bytes does not match dtype ", dtype_name(dtype()));
}

double Buffer::get(int64_t i) const {
  if (i < 0 || i >= numel()) fail("Buffer::get: index ", i, " out of range for ", to_string(type_));
  const uint8_t* p = data_.get();
  switch (dtype()) {
    case DType::f64: return reinterpret_cast<const double*>(p)[i];
    case DType::f32: return reinterpret_cast<const float*>(p)[i];
    case DType::f16: return f16_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::bf16: return bf16_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::i64: return static_cast<double>(reinterpret_cast<const int64_t*>(p)[i]);
    case DType::i32: return reinterpret_cast<const int32_t*>(p)[i];
    case DType::i8: return reinterpret_cast<const int8_t*>(p)[i];
    case DType::u8: return p[i];
    case DType::boolean: return p[i] ? 1.0 : 0.0;
  }
  return 0;
}

void Buffer::set(int64_t i, double v) {
  if (i < 0 || i >= numel()) fail("Buffer::set: index ", i, " out of range for ", to_string(type_));
  uint8_t* p = data_.get();
  switch (dtype()) {
    case DType::f64: reinterpret_cast<double*>(p)[i] = v; break;
    case DType::f32: reinterpret_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f16: reinterpret_cast<uint16_t*>(p)[i] = float_to_f16(double_to_float_round_odd(v)); break;
    case DType::bf16: reinterpret_cast<uint16_t*>(p)[i] = float_to_bf16(double_to_float_round_odd(v)); break;
    case DType::i64: reinterpret_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case DType::i32: reinterpret_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::i8: reinterpret_cast<int8_t*>(p)[i] = static_cast<int8_t>(v); break;
    case DType::u8: p[i] = static_cast<uint8_t>(v); break;
    case DType::boolean: p[i] = v != 0; break;
  }
}

std::vector<double> Buffer::to_f64() const {
  std::vector<double> r(numel());
  for (int64_t i = 0; i < numel(); ++i) r[i] = get(i);
  return r;
}

Buffer Buffer::clone() const {
  Buffer b(dtype(), shape());
  if (bytes()) std::memcpy(b.data(), data(), bytes());
  return b;
}

Buffer Buffer::view(const Buffer& storage, size_t offset, TensorType type) {
  if (!storage.defined()) fail("Buffer::view: the storage Buffer is empty");
  if (offset > storage.bytes() || type.bytes() > storage.bytes() - offset)
    fail("Buffer::view: ", to_string(type), " (", type.bytes(), " bytes) at offset ", offset, " does not fit in ",
         storage.bytes(), " bytes");
  Buffer b;
  b.type_ = std::move(type);
  b.data_ = std::shared_ptr<uint8_t>(storage.data_, storage.data_.get() + offset);
  return b;
}

}  // namespace tessera
