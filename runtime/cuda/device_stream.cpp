// DeviceStream and cuda_device_count (include/tessera/cuda/device_stream.h).
// Does not allocate device memory.
#include "tessera/cuda/device_stream.h"

#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return n;
}

DeviceStream::DeviceStream(int device) : device_(device) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count) fail("DeviceStream: no CUDA device ", device, " (", count, " present)");
  const std::string where = "DeviceStream(device " + std::to_string(device) + ")";
  TESSERA_CUDA_CHECK(cudaSetDevice(device), where);
  cudaDeviceProp prop{};
  TESSERA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device), where);
  name_ = prop.name;
  TESSERA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), where);
}

DeviceStream::~DeviceStream() {
  if (!stream_) return;
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);  // destructors do not throw: work still queued finishes first
  cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void DeviceStream::make_current() const {
  TESSERA_CUDA_CHECK(cudaSetDevice(device_), "DeviceStream::make_current(device " + std::to_string(device_) + ")");
}

void DeviceStream::synchronize(std::string_view where) const {
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(stream_), where);
}

}  // namespace tessera::cuda
