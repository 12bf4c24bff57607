// ThreadPool (see thread_pool.h).
#include "thread_pool.h"

#include <chrono>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera {

namespace {

// How long an idle worker spins before it sleeps: longer than the serial
// gaps between parallel kernels of a training step, short enough that an
// idle program stops using the cores almost at once.
constexpr int64_t kSpinMicros = 2000;

thread_local bool inside_task = false;

void pause() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

int configured_threads() {
  for (const char* var : {"TESSERA_NUM_THREADS", "HL_NUM_THREADS"})
    if (const char* v = std::getenv(var)) {
      int n = std::atoi(v);
      if (n >= 1) return n;
    }
  return std::max(1u, std::thread::hardware_concurrency());
}

}  // namespace

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(configured_threads());
  return pool;
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::work_on(Job& job) {
  const bool was_inside = inside_task;
  inside_task = true;
  for (int i = job.next.fetch_add(1); i < job.size; i = job.next.fetch_add(1)) {
    int code = job.call(job.fn, job.ctx, job.min + i, job.closure);
    if (code != 0) {
      int expected = 0;
      job.error.compare_exchange_strong(expected, code);
    }
    job.done.fetch_add(1, std::memory_order_release);
  }
  inside_task = was_inside;
}

int ThreadPool::run(void* fn, void* ctx, Invoke call, int min, int size, uint8_t* closure) {
  std::unique_lock<std::mutex> lock(submit_, std::defer_lock);
  if (workers_.empty() || size <= 1 || inside_task || !lock.try_lock()) {
    for (int i = 0; i < size; ++i)
      if (int code = call(fn, ctx, min + i, closure)) return code;
    return 0;
  }
  auto job = std::make_shared<Job>();
  job->fn = fn;
  job->ctx = ctx;
  job->call = call;
  job->min = min;
  job->size = size;
  job->closure = closure;
  std::atomic_store(&job_, job);
  generation_.fetch_add(1);  // seq_cst: pairs with a worker's sleeping_ then generation_ reads
  if (sleeping_.load() > 0) {
    std::lock_guard<std::mutex> guard(sleep_mutex_);
    wake_.notify_all();
  }
  work_on(*job);
  while (job->done.load(std::memory_order_acquire) < size) pause();
  std::atomic_store(&job_, std::shared_ptr<Job>());
  return job->error.load();
}

void ThreadPool::worker_loop() {
  uint64_t seen = generation_.load();
  while (!stop_) {
    // Spin for new work, then sleep until a job is published.
    auto start = std::chrono::steady_clock::now();
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      pause();
      if (++spins % 1024 == 0 &&
          std::chrono::steady_clock::now() - start > std::chrono::microseconds(kSpinMicros)) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        sleeping_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleeping_.fetch_sub(1);
        break;
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_) return;
    if (std::shared_ptr<Job> job = std::atomic_load(&job_)) work_on(*job);
  }
}

}  // namespace tessera
