// DeviceArena: ONE device allocation, sized up front (e.g. by a MemoryPlan's
// peak bytes plus a GEMM workspace), from which a step takes its buffers as
// byte offsets. Nothing is allocated after construction, so a step (and a
// CUDA Graph captured from it) never calls cudaMalloc.
//
// Sub-buffers are views: the arena does not track which ranges are live or
// overlap (the memory plan decides that). It checks bounds and alignment and
// records the high-water mark (the largest end offset handed out). Errors are
// tessera::Error naming the arena, offset, bytes and size.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::cuda {

class DeviceArena {
 public:
  // Offsets must be multiples of this by default: the memory plan's
  // kArenaAlignment (64); cuBLASLt needs 16 bytes for its vector loads.
  static constexpr size_t kDefaultAlignment = 64;

  // cudaMalloc of `bytes` on the current device (make a DeviceStream's device
  // current first). `alignment` must be a power of two, at most 256 (what
  // cudaMalloc guarantees for the base).
  explicit DeviceArena(size_t bytes, std::string name = "arena", size_t alignment = kDefaultAlignment);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  const std::string& name() const { return name_; }
  size_t size() const { return size_; }
  size_t alignment() const { return alignment_; }
  void* base() const { return base_; }

  // Device pointer to bytes [offset, offset + bytes). Throws when offset is
  // not a multiple of alignment() or the range does not lie inside the arena.
  void* at(size_t offset, size_t bytes);
  template <typename T>
  T* at(size_t offset, size_t count) {
    return static_cast<T*>(at(offset, count * sizeof(T)));
  }

  // Takes the next `bytes` after the previous reserve(), rounded up to
  // alignment(); returns its offset. For buffers outside a plan (a GEMM
  // workspace, test data). Throws naming `what` when the arena is full.
  size_t reserve(size_t bytes, std::string_view what);
  // reserve() starts again from offset 0. The high-water mark is kept.
  void release_reserved() { reserved_ = 0; }
  size_t reserved() const { return reserved_; }

  // Largest end offset of any range handed out by at() or reserve().
  size_t high_water() const { return high_water_; }

 private:
  std::string name_;
  size_t size_ = 0, alignment_ = kDefaultAlignment;
  void* base_ = nullptr;
  size_t reserved_ = 0, high_water_ = 0;
};

}  // namespace tessera::cuda
