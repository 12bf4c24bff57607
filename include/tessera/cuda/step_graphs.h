// StepGraphs: runs a step's stream work directly for a few warm-up runs, then
// captures it once into a CUDA Graph and replays that graph on later runs.
// Graphs are kept per key; a new key (a new shape, new buffers) warms up and
// captures a graph of its own. set_enabled(false) runs everything directly.
//
// A replay repeats exactly the captured launches: the same pointers, sizes
// and host scalars. The key must therefore change whenever any of those does
// (with a DeviceArena and a memory plan, the pointers stay fixed per plan).
// The work must only queue stream-ordered work on the given stream (no
// cudaMalloc, no synchronization); warm-up runs let it do one-time setup such
// as cuBLASLt planning. This does not decide what a step is or own buffers.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <map>
#include <string>

#include "tessera/cuda/device_stream.h"

namespace tessera::cuda {

class StepGraphs {
 public:
  // How a run() went.
  enum class Ran { direct, captured_and_replayed, replayed };
  using Work = std::function<void(cudaStream_t)>;

  // `warmup_runs` direct runs per key before its capture.
  explicit StepGraphs(const DeviceStream& stream, int warmup_runs = 1, bool enabled = true);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // Runs `work` for `key`: directly while warming up (or when disabled), else
  // by launching the key's graph, capturing it first if there is none. If the
  // work throws or a CUDA call fails during capture, the capture is dropped
  // (the stream can be used again) and the Error propagates.
  Ran run(const std::string& key, const Work& work);

  void set_enabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }
  size_t graph_count() const;  // keys with a captured graph
  Ran last_run() const { return last_; }
  bool last_ran_as_graph() const { return last_ != Ran::direct; }

 private:
  struct Entry {
    int direct_runs = 0;
    cudaGraphExec_t exec = nullptr;
  };
  cudaGraphExec_t capture(const std::string& key, const Work& work);

  const DeviceStream& stream_;
  int warmup_runs_;
  bool enabled_;
  Ran last_ = Ran::direct;
  std::map<std::string, Entry> entries_;
};

}  // namespace tessera::cuda
