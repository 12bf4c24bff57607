// DeviceStream: one CUDA device and one stream on it that all of a step's work
// is queued on (GEMMs, copies, graph replays). Also cuda_device_count(), which
// tests use to skip when there is no GPU.
//
// Owns the stream, not the device's memory (see DeviceArena) and not the
// cuBLASLt handle (see CublasLtGemm). Errors are tessera::Error.
#pragma once

#include <cuda_runtime_api.h>

#include <string>
#include <string_view>

namespace tessera::cuda {

// CUDA devices this process can use; 0 when there is none or no driver. Never throws.
int cuda_device_count();

class DeviceStream {
 public:
  // Makes `device` current and creates a non-blocking stream on it. Throws
  // Error naming the device when it does not exist.
  explicit DeviceStream(int device = 0);
  ~DeviceStream();
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  const std::string& device_name() const { return name_; }  // e.g. "NVIDIA H100 80GB HBM3"

  // Makes this stream's device current on the calling thread.
  void make_current() const;
  // Waits for all work queued so far; a failure in that work is reported
  // here, as an Error naming `where`.
  void synchronize(std::string_view where) const;

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::string name_;
};

}  // namespace tessera::cuda
