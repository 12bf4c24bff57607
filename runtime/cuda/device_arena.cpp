// DeviceArena (include/tessera/cuda/device_arena.h): one cudaMalloc, checked
// offset views into it. Does not decide which buffers may share bytes.
#include "tessera/cuda/device_arena.h"

#include <cuda_runtime_api.h>

#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

DeviceArena::DeviceArena(size_t bytes, std::string name, size_t alignment)
    : name_(std::move(name)), size_(bytes), alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > 256)
    fail("DeviceArena '", name_, "': alignment ", alignment, " is not a power of two in [1, 256]");
  if (bytes > 0)
    TESSERA_CUDA_CHECK(cudaMalloc(&base_, bytes), "DeviceArena '" + name_ + "' of " + std::to_string(bytes) + " bytes");
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);  // waits for work using it; destructors do not throw
  cudaGetLastError();
}

void* DeviceArena::at(size_t offset, size_t bytes) {
  if (offset % alignment_ != 0)
    fail("DeviceArena '", name_, "': offset ", offset, " (", bytes, " bytes) is not a multiple of the alignment ",
         alignment_);
  if (offset > size_ || bytes > size_ - offset)
    fail("DeviceArena '", name_, "': bytes [", offset, ", ", offset + bytes, ") lie outside the arena of ", size_,
         " bytes");
  if (offset + bytes > high_water_) high_water_ = offset + bytes;
  return static_cast<char*>(base_) + offset;
}

size_t DeviceArena::reserve(size_t bytes, std::string_view what) {
  const size_t rounded = (bytes + alignment_ - 1) / alignment_ * alignment_;
  if (rounded < bytes || reserved_ > size_ || rounded > size_ - reserved_)
    fail("DeviceArena '", name_, "': no room for ", what, " (", bytes, " bytes): ", reserved_, " of ", size_,
         " bytes already reserved");
  const size_t offset = reserved_;
  reserved_ += rounded;
  if (offset + bytes > high_water_) high_water_ = offset + bytes;
  return offset;
}

}  // namespace tessera::cuda
