// The float element types the CUDA runtime handles (f32, f16, bf16): their
// names and sizes. tessera_cuda links no libtessera, whose dtype_name and
// dtype_size these mirror; other dtypes are not handled here.
#pragma once

#include <cstddef>

#include "tessera/dtype.h"

namespace tessera::cuda {

inline const char* float_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    default: return "unsupported dtype";
  }
}

// Bytes per element: 4 for f32, 2 for f16 and bf16.
inline size_t float_dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

}  // namespace tessera::cuda
