// DType, Shape and TensorType: the static type of every tensor in a Graph.
//
// Shapes are static and row-major (the last dimension is contiguous). A rank-0
// shape [] is a scalar. This header knows nothing about Halide; the mapping to
// Halide types lives in src/frontend/halide_types.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

enum class DType : uint8_t { f64, f32, f16, bf16, i64, i32, i8, u8, boolean };

// "f64", "f32", "f16", "bf16", "i64", "i32", "i8", "u8", "bool".
const char* dtype_name(DType t);
// Inverse of dtype_name; throws Error naming the text on an unknown dtype.
DType parse_dtype(std::string_view name);
size_t dtype_size(DType t);
bool is_float(DType t);
bool is_integer(DType t);  // i64, i32, i8, u8 (not bool)
inline const DType all_dtypes[] = {DType::f64, DType::f32, DType::f16, DType::bf16, DType::i64,
                                   DType::i32, DType::i8,  DType::u8,  DType::boolean};

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);
// "[64, 256]"; "[]" for a scalar.
std::string to_string(const Shape& s);

struct TensorType {
  DType dtype = DType::f32;
  Shape shape;

  int rank() const { return static_cast<int>(shape.size()); }
  int64_t numel() const { return tessera::numel(shape); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool operator==(const TensorType& o) const { return dtype == o.dtype && shape == o.shape; }
  bool operator!=(const TensorType& o) const { return !(*this == o); }
};

// "f32[64, 256]".
std::string to_string(const TensorType& t);

}  // namespace tessera
