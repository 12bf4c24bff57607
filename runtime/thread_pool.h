// ThreadPool: the worker threads that run the parallel loops of compiled
// kernels (installed as Halide's do_par_for for JIT pipelines).
//
// Halide's own pool parks idle workers at once; waking one costs about 60 us
// on the development VM, paid by every parallel kernel of a training step
// (a 150 us matrix product took 225 us after 300 us of serial work). These
// workers instead spin for a while (kSpinMicros) after their last task, as
// OpenMP's do, then sleep. One parallel loop runs at a time; a loop started
// while another runs, or from inside a task, runs on the calling thread.
// Tasks are handed out one index at a time; the caller takes part.
//
// Threads: TESSERA_NUM_THREADS, else HL_NUM_THREADS, else the hardware's
// count (the caller counts as one). This is not a general task system: no
// futures, no nested parallelism.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // A task: fn(ctx, index, closure), returning 0 or an error code.
  template <typename Ctx>
  using Task = int (*)(Ctx*, int, uint8_t*);

  static ThreadPool& global();

  // Runs fn(ctx, i, closure) for i in [min, min + size); returns the first
  // nonzero code a task returned, else 0.
  template <typename Ctx>
  int parallel_for(Ctx* ctx, Task<Ctx> fn, int min, int size, uint8_t* closure) {
    return run(reinterpret_cast<void*>(fn), ctx, &invoke<Ctx>, min, size, closure);
  }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

 private:
  using Invoke = int (*)(void* fn, void* ctx, int index, uint8_t* closure);
  template <typename Ctx>
  static int invoke(void* fn, void* ctx, int index, uint8_t* closure) {
    return reinterpret_cast<Task<Ctx>>(fn)(static_cast<Ctx*>(ctx), index, closure);
  }
  struct Job {
    void* fn;
    void* ctx;
    Invoke call;
    int min, size;
    uint8_t* closure;
    std::atomic<int> next{0}, done{0}, error{0};
  };
  int run(void* fn, void* ctx, Invoke call, int min, int size, uint8_t* closure);
  static void work_on(Job& job);
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex submit_;                 // one loop at a time
  std::atomic<uint64_t> generation_{0};  // bumped when a job is published
  std::shared_ptr<Job> job_;          // the current job (std::atomic_load/store)
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<int> sleeping_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace tessera
