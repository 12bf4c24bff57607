// StepGraphs (include/tessera/cuda/step_graphs.h): per-key warm-up, stream
// capture, instantiation and replay of CUDA Graphs. Does not update a graph
// in place (a changed key captures a new one).
#include "tessera/cuda/step_graphs.h"

#include "tessera/cuda/check.h"
#include "tessera/error.h"

namespace tessera::cuda {

StepGraphs::StepGraphs(const DeviceStream& stream, int warmup_runs, bool enabled)
    : stream_(stream), warmup_runs_(warmup_runs), enabled_(enabled) {
  if (warmup_runs < 0) fail("StepGraphs: warmup_runs ", warmup_runs, " is negative");
}

StepGraphs::~StepGraphs() {
  for (auto& [key, entry] : entries_)
    if (entry.exec) cudaGraphExecDestroy(entry.exec);
  cudaGetLastError();
}

size_t StepGraphs::graph_count() const {
  size_t n = 0;
  for (const auto& [key, entry] : entries_) n += entry.exec != nullptr;
  return n;
}

cudaGraphExec_t StepGraphs::capture(const std::string& key, const Work& work) {
  const std::string where = "StepGraphs capture of '" + key + "'";
  cudaStream_t s = stream_.stream();
  TESSERA_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), where);
  cudaGraph_t graph = nullptr;
  try {
    work(s);
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // ends the (possibly invalidated) capture: the stream is usable again
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  TESSERA_CUDA_CHECK(cudaStreamEndCapture(s, &graph), where);
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  TESSERA_CUDA_CHECK(status, where);
  return exec;
}

StepGraphs::Ran StepGraphs::run(const std::string& key, const Work& work) {
  Entry& entry = entries_[key];
  if (!enabled_ || (!entry.exec && entry.direct_runs < warmup_runs_)) {
    work(stream_.stream());
    ++entry.direct_runs;
    return last_ = Ran::direct;
  }
  Ran ran = Ran::replayed;
  if (!entry.exec) {
    entry.exec = capture(key, work);
    ran = Ran::captured_and_replayed;
  }
  TESSERA_CUDA_CHECK(cudaGraphLaunch(entry.exec, stream_.stream()), "StepGraphs replay of '" + key + "'");
  return last_ = ran;
}

}  // namespace tessera::cuda
