// SPDX-License-Identifier: Apache-2.0
// How many threads qlr may use, and the one parallel loop everything runs on. Work is split
// into contiguous index ranges whose items are independent, so results never depend on the
// thread count (ALGORITHMS.md §1.2).
#pragma once

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"

namespace qlr {
namespace detail {

/// A fixed set of worker threads that, with the calling thread, run the tasks of one job.
class ThreadPool {
 public:
  /// A pool that runs jobs on `threads` threads: the caller plus threads − 1 workers.
  explicit ThreadPool(int threads) {
    try {
      workers_.reserve(static_cast<std::size_t>(threads - 1));
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::exception& e) {  // out of threads or memory: stop those we started
      stop_workers();
      detail::fail(Errc::unsupported, "set_num_threads: n = {}; could not start the threads ({})",
                   threads, e.what());
    }
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop_workers(); }

  /// Threads a job runs on, the caller included.
  [[nodiscard]] int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  /// Calls task(context, i) for every i in [0, tasks) and returns when all are done.
  /// The first exception a task throws is rethrown here; the remaining tasks are skipped.
  void run(int tasks, void (*task)(void*, int), void* context) {
    const std::lock_guard job_lock(job_mutex_);  // one job at a time per pool
    {
      const std::lock_guard lock(mutex_);
      task_ = task;
      context_ = context;
      tasks_ = tasks;
      rounding_mode_ = std::fegetround();  // workers round the way the caller does
      next_.store(0, std::memory_order_relaxed);
      busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
      error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on_current_job();
    if (!spin_until([this] { return busy_workers_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    }
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

  /// True on a thread that is currently running a task of some pool.
  static bool& inside_task() noexcept {
    thread_local bool inside = false;
    return inside;
  }

 private:
  // Waking a sleeping thread costs tens of microseconds (more on a VM), as much as a small
  // job's work: a thread waiting for a job, or for the workers to finish one, first spins
  // this long. Returns whether `ready` became true.
  static constexpr std::chrono::microseconds spin_time{200};

  template <class Ready>
  static bool spin_until(Ready ready) noexcept {
    const auto deadline = std::chrono::steady_clock::now() + spin_time;
    for (;;) {
      for (int i = 0; i < 64; ++i) {
        if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
      }
      if (std::chrono::steady_clock::now() >= deadline) return false;
    }
  }

  void stop_workers() noexcept {
    {
      const std::lock_guard lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  void work_on_current_job() {
    if (std::fegetround() != rounding_mode_) std::fesetround(rounding_mode_);
    inside_task() = true;
    for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_;) {
      try {
        task_(context_, i);
      } catch (...) {
        const std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(tasks_, std::memory_order_relaxed);
      }
    }
    inside_task() = false;
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      const auto has_news = [&] {
        return stopping_.load(std::memory_order_acquire) ||
               generation_.load(std::memory_order_acquire) != seen;
      };
      if (!spin_until(has_news)) {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, has_news);
      }
      if (stopping_.load(std::memory_order_acquire)) return;
      seen = generation_.load(std::memory_order_acquire);
      work_on_current_job();
      // The caller may be asleep on done_: take the mutex so the notice cannot fall between
      // its check and its wait.
      if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        const std::lock_guard lock(mutex_);
        done_.notify_one();
      }
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  void (*task_)(void*, int) = nullptr;
  void* context_ = nullptr;
  int tasks_ = 0;
  int rounding_mode_ = FE_TONEAREST;
  std::atomic<int> next_{0};
  std::atomic<int> busy_workers_{0};
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::exception_ptr error_;
};

/// Thread count from QLR_NUM_THREADS if it is a positive integer, else the hardware's.
inline int default_thread_count() noexcept {
  if (const char* env = std::getenv("QLR_NUM_THREADS")) {
    const std::string_view text(env);
    int n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc() && end == text.data() + text.size() && n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

struct PoolState {
  std::mutex mutex;
  std::shared_ptr<ThreadPool> pool = std::make_shared<ThreadPool>(default_thread_count());
};

inline PoolState& pool_state() {
  static PoolState state;
  return state;
}

inline std::shared_ptr<ThreadPool> current_pool() {
  auto& state = pool_state();
  const std::lock_guard lock(state.mutex);
  return state.pool;
}

}  // namespace detail

/// Threads qlr uses for its parallel loops (QLR_NUM_THREADS, else the hardware's count).
inline int num_threads() { return detail::current_pool()->size(); }

/// Sets the threads qlr may use (n ≥ 1). Jobs already running finish on the old pool.
inline void set_num_threads(int n) {
  QLR_CHECK(n >= 1, invalid_argument, "set_num_threads: n = {}; expected n >= 1", n);
  auto& state = detail::pool_state();
  auto pool = std::make_shared<detail::ThreadPool>(n);
  const std::lock_guard lock(state.mutex);
  state.pool = std::move(pool);
}

/// Calls body(begin, end) on contiguous, disjoint ranges covering [0, count), in parallel,
/// with at least `grain` items per range. The items must be independent of each other; then
/// the result does not depend on how many threads run. Nested calls run serially.
template <class Body>
void parallel_for(index_t count, index_t grain, Body&& body) {
  if (count <= 0) return;
  const auto pool = detail::current_pool();
  const index_t max_chunks = std::max<index_t>(1, count / std::max<index_t>(1, grain));
  const auto chunks = static_cast<int>(std::min<index_t>(pool->size(), max_chunks));
  if (chunks == 1 || detail::ThreadPool::inside_task()) {
    body(index_t{0}, count);
    return;
  }
  struct Job {
    Body* body;
    index_t count;
    int chunks;
  } job{&body, count, chunks};
  pool->run(
      chunks,
      [](void* context, int chunk) {
        auto& j = *static_cast<Job*>(context);
        const index_t begin = j.count * chunk / j.chunks;
        const index_t end = j.count * (chunk + 1) / j.chunks;
        (*j.body)(begin, end);
      },
      &job);
}

}  // namespace qlr
