// Running graphs: host Buffers, Targets, compile() and Executable.
//
// compile(graph, target) lowers the graph to Halide, schedules it for the
// target and JIT-compiles it; executables are cached by graph signature and
// target, so compiling the same graph twice costs one compile. Executable::run
// takes every input and param by name and returns the named outputs. This
// header does not expose Halide.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/graph.h"

namespace tessera {

// A dense, row-major host tensor with shared storage (copying a Buffer
// shares its bytes; use clone() for a deep copy). Storage is 64-byte aligned.
class Buffer {
 public:
  Buffer() = default;
  Buffer(DType dtype, Shape shape);  // zero-filled

  // From doubles, converted to `dtype` (rounded to nearest for f16/bf16).
  static Buffer from(const std::vector<double>& values, Shape shape, DType dtype = DType::f32);

  bool defined() const { return data_ != nullptr; }
  DType dtype() const { return type_.dtype; }
  const Shape& shape() const { return type_.shape; }
  const TensorType& type() const { return type_; }
  int64_t numel() const { return type_.numel(); }
  size_t bytes() const { return type_.bytes(); }
  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  template <typename T>
  T* data_as() {
    check_element_size(sizeof(T));
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* data_as() const {
    check_element_size(sizeof(T));
    return static_cast<const T*>(data());
  }

  // Element i (row-major flat index) as a double, and its inverse.
  double get(int64_t i) const;
  void set(int64_t i, double v);
  std::vector<double> to_f64() const;
  Buffer clone() const;
  // A Buffer of `type` over the bytes of `storage` starting at `offset` (no
  // copy; it keeps `storage` alive). Throws Error if they do not fit. For
  // arenas: many tensors in one allocation.
  static Buffer view(const Buffer& storage, size_t offset, TensorType type);

 private:
  void check_element_size(size_t size) const;
  TensorType type_;
  std::shared_ptr<uint8_t> data_;
};

// What to compile for: "host" (this CPU, its vector features detected),
// "host-cuda-sm80", "host-cuda-sm90". Only the CPU runs in this build stage;
// CUDA targets parse but compile() refuses them until the CUDA runtime lands.
struct Target {
  std::string cpu = "host";  // "host" or an explicit Halide CPU target string
  int cuda_sm = 0;           // 0: no GPU; 80, 90: the CUDA schedule set

  static Target host() { return Target{}; }
  static Target parse(const std::string& text);  // throws Error on unknown text
  std::string str() const;
};

// Bytes of the arena that holds a compiled graph's intermediate results
// (not its inputs, params or outputs, which are the caller's Buffers).
struct MemoryStats {
  size_t planned_peak = 0;   // the memory plan's figure
  size_t arena_bytes = 0;    // what the executable allocated (once, at compile)
  size_t high_water = 0;     // measured: the end of the highest byte runs have written, rounded up to 64
  size_t without_reuse = 0;  // every intermediate in a buffer of its own
};

struct CompiledGraph;  // the lowered, JIT-compiled pipeline (src/schedules)

class Executable {
 public:
  Executable() = default;
  explicit Executable(std::shared_ptr<const CompiledGraph> impl) : impl_(std::move(impl)) {}

  // Runs the graph. `args` holds every input and param by name, each with
  // the graph's dtype and shape; returns every graph output by name.
  std::map<std::string, Buffer> run(const std::map<std::string, Buffer>& args) const;
  // The same, writing into caller-owned output Buffers (allocated here if
  // absent or of the wrong type, reused otherwise): steady-state loops
  // then allocate nothing. An output Buffer may share its bytes with an
  // argument only as in_place_updates() allows (an optimizer's "new.X"
  // written over X); any other overlap is an Error naming both.
  void run(const std::map<std::string, Buffer>& args, std::map<std::string, Buffer>& outputs) const;
  // Outputs that may be given their argument's Buffer, output name -> input
  // or param name: the memory plan found that the step reads X for the last
  // time, at each element's own index, where it writes "new.X"
  // (memory_plan.h). A training loop that does so keeps one copy of its
  // params and optimizer state, updated in place, as torch.optim does.
  std::map<std::string, std::string> in_place_updates() const;

  const Graph& graph() const;
  const Target& target() const;
  // Seconds spent lowering and JIT-compiling (0 when it came from the cache).
  double compile_seconds() const;
  // The kernels and the Halide schedule each node got, for reading.
  std::string schedule_text() const;
  // With the environment variable TESSERA_PROFILE set, run() times every
  // kernel; this gives the mean time per run of each, slowest first.
  std::string profile_text() const;
  // Where each intermediate lives in the arena and when it is live. With the
  // environment variable TESSERA_POISON_FREED set, run() overwrites every
  // intermediate with NaN bytes once its last reader has run (a check that
  // no buffer is reused while live).
  std::string memory_plan_text() const;
  MemoryStats memory_stats() const;

 private:
  std::shared_ptr<const CompiledGraph> impl_;
  double compile_seconds_ = 0;
  friend Executable compile(const Graph&, const Target&);
  friend Executable compile(const Graph&, const Target&, const struct CompileOptions&);
  friend std::string kernel_stmt(const Executable&, const std::string&);
};

// Lowers, schedules and JIT-compiles `graph` for `target` (cached by the
// graph's printed form and the target).
Executable compile(const Graph& graph, const Target& target = Target::host());

}  // namespace tessera
