// ThreadPool: a fixed set of workers that run one parallel_for at a time.
//
// parallel_for(n_tasks, fn) calls fn(task) for every task in [0, n_tasks), spread over the workers
// and the calling thread, and returns when all are done. Tasks are handed out through one atomic
// counter, so uneven tasks balance themselves. There is no global pool: whoever computes owns one.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hllm {

class ThreadPool {
 public:
  // n_threads counts the caller too; 0 = one per hardware thread.
  explicit ThreadPool(int n_threads = 0) {
    if (n_threads <= 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ~ThreadPool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  int size() const { return n_threads_; }

  // Not reentrant: fn must not call parallel_for on the same pool.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      job_ = &fn;
      n_tasks_ = n_tasks;
      next_task_.store(0);
      busy_workers_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    work_ready_.notify_all();
    run_tasks(fn, n_tasks);
    std::unique_lock lock(mutex_);
    work_done_.wait(lock, [this] { return busy_workers_ == 0; });
    job_ = nullptr;
  }

 private:
  void run_tasks(const std::function<void(int64_t)>& fn, int64_t n_tasks) {
    for (int64_t t = next_task_.fetch_add(1); t < n_tasks; t = next_task_.fetch_add(1)) fn(t);
  }

  void worker_loop() {
    uint64_t seen_generation = 0;
    for (;;) {
      const std::function<void(int64_t)>* job;
      int64_t n_tasks;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
        if (stopping_) return;
        seen_generation = generation_;
        job = job_;
        n_tasks = n_tasks_;
      }
      run_tasks(*job, n_tasks);
      {
        std::lock_guard lock(mutex_);
        if (--busy_workers_ == 0) work_done_.notify_one();
      }
    }
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace hllm
