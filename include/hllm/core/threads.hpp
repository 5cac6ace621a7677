// ThreadPool: a fixed set of persistent workers that run one parallel_for at a time.
//
// parallel_for(n_tasks, fn) calls fn(task) for every task in [0, n_tasks), spread over the workers
// and the calling thread, and returns when all are done. Tasks are handed out through one atomic
// counter in runs of neighbours that shrink as the loop drains (guided self-scheduling, see
// claim()), so uneven tasks balance themselves. There is no global pool: whoever computes owns one.
//
// A decode step calls parallel_for ~150 times for 0.05-1 ms each, so the hand-off must not cost a
// futex wake-up per call. Workers and the caller therefore spin first and sleep only when idle.
//
// state_ is one 64-bit word [generation | closed | active], the only thing anyone spins on.
// - Publish (caller): write job_, n_tasks_, next_task_ = 0, then store {generation + 1, open,
//   active 0} with seq_cst (so also a release: a worker that reads the new generation with acquire
//   sees the job). Only if a worker sleeps (sleepers_ > 0) take mutex_ and notify work_cv_.
// - Join (worker): on a new, open generation, CAS active + 1 (acquire). Only a joined worker reads
//   job_ and n_tasks_; the caller publishes the next job only once active is back to 0, so the job
//   cannot change under it. It claims tasks from next_task_ until none are left, then leaves with
//   fetch_sub active (release: its writes reach the caller).
// - Close (caller): once its own claims run dry, set closed (no more joins) and wait for active to
//   reach 0 (acquire). A worker that sees the generation after that (late, descheduled, or asleep
//   when it was published) skips it: the caller never waits for a wake-up.
// - Idle: a worker spins on state_ for kSpinWindow (50 us; state_ is read after each pause, the
//   steady_clock every 8 pauses of ~25 ns) after the last generation it saw, then sleeps on
//   work_cv_. The caller waits for active = 0 the same way: spin kSpinWindow, then sleep on
//   done_cv_. A sleeper announces itself (sleepers_, caller_sleeping_: seq_cst) and then re-checks
//   state_ under mutex_; the waker changes state_ (seq_cst) and then loads the announcement
//   (seq_cst). Sequential consistency makes at least one of them see the other (no lost wake-up);
//   the waker takes mutex_ before notifying, which closes the gap between the sleeper's last check
//   and its wait. 50 us covers nearly every gap between the ops of a decode step (measured on a
//   2-core VM: with a 30-100 us window the worker sleeps 10-25 times in the ~150 calls of a 1B
//   decode step), so the hand-off normally takes no lock and no syscall; a pool idle for longer
//   sleeps and uses no CPU. Longer windows gained nothing measurable and cost more on a contended
//   machine.
// - Spinning runs pause (x86) or yield (arm64) hints. In a pool with more threads than the machine
//   has hardware threads, spinners also call std::this_thread::yield(), so they give way to the
//   threads of the pool that have work. Otherwise a spinner that finds it was descheduled (the
//   clock jumped by 50 us between two reads) stops, and the whole pool skips spinning for the next
//   10 ms: on a CPU shared with other processes (a noisy VM, a parallel build) spinning only takes
//   CPU time from the threads with work, so the pool falls back to sleeping.
//
// Exceptions: if fn throws, no further tasks are started (tasks already running on other threads
// finish), and parallel_for rethrows the first exception in the caller once every worker is out of
// the job. The pool stays usable.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#include <immintrin.h>
#endif

namespace hllm {

class ThreadPool {
 public:
  // How long an idle worker (or the caller waiting for workers) spins before it sleeps.
  static constexpr std::chrono::microseconds kSpinWindow{50};

  // n_threads counts the caller too; 0 = one per hardware thread.
  explicit ThreadPool(int n_threads = 0) {
    const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (n_threads <= 0) n_threads = hardware;
    n_threads_ = std::min(n_threads, static_cast<int>(kActiveMask) + 1);
    oversubscribed_ = n_threads_ > hardware;
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  ~ThreadPool() {
    stopping_.store(true);
    { std::lock_guard lock(mutex_); }  // a worker between its last check and its wait: now waits
    work_cv_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  int size() const { return n_threads_; }

  // Not reentrant: fn must not call parallel_for on the same pool, and only one thread at a time
  // may call it.
  void parallel_for(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
      for (int64_t t = 0; t < n_tasks; ++t) fn(t);
      return;
    }
    // Publish. No worker is joined (active = 0, closed), so the job fields are ours to write.
    job_ = &fn;
    n_tasks_ = n_tasks;
    error_ = nullptr;
    failed_.store(false, std::memory_order_relaxed);
    next_task_.store(0, std::memory_order_relaxed);
    generation_ += kGenerationOne;
    state_.store(generation_);  // seq_cst: release for the job, and ordered before sleepers_
    if (sleepers_.load() > 0) {
      { std::lock_guard lock(mutex_); }
      work_cv_.notify_all();
    }

    run_tasks(fn, n_tasks);

    // All tasks are claimed; close the job to latecomers and wait for the joined workers.
    if ((state_.fetch_or(kClosed, std::memory_order_acq_rel) & kActiveMask) != 0) {
      wait_for_workers();
    }
    job_ = nullptr;
    if (failed_.load(std::memory_order_relaxed)) std::rethrow_exception(std::exchange(error_, {}));
  }

 private:
  static constexpr uint64_t kActiveMask = 0xffff;  // workers inside the current job
  static constexpr uint64_t kClosed = uint64_t{1} << 16;
  static constexpr uint64_t kGenerationOne = uint64_t{1} << 17;
  static constexpr std::chrono::microseconds kPreemptedGap{50};
  static constexpr std::chrono::milliseconds kContendedPause{10};
  static constexpr int kPausesPerRound = 8;  // ~200 ns on x86 between reads of the clock

  static uint64_t generation_of(uint64_t state) { return state & ~(kClosed | kActiveMask); }

  static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
    _mm_pause();
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    asm volatile("yield");
#else
    std::this_thread::yield();
#endif
  }

  // Spins until done() holds or kSpinWindow has passed; returns whether done() holds. A gap of
  // kPreemptedGap between two clock reads (normally ~0.3 us apart) means this thread lost its CPU
  // while spinning: other processes want the CPUs, and spinning only burns time that a thread with
  // work could have had. Then nobody in the pool spins for kContendedPause: all sleep right away,
  // as a plain condition-variable pool would. Not in an oversubscribed pool: there the gap is
  // mostly the yield handing the CPU to another worker of the pool, which is what it is for.
  template <typename Done>
  bool spin(Done&& done) {
    using Clock = std::chrono::steady_clock;
    auto now = Clock::now();
    if (now.time_since_epoch().count() < no_spin_until_.load(std::memory_order_relaxed)) {
      return done();
    }
    const auto deadline = now + kSpinWindow;
    for (;;) {
      for (int i = 0; i < kPausesPerRound; ++i) {
        cpu_relax();
        if (done()) return true;
      }
      if (oversubscribed_) std::this_thread::yield();
      const auto later = Clock::now();
      if (!oversubscribed_ && later - now > kPreemptedGap) {
        no_spin_until_.store((later + kContendedPause).time_since_epoch().count(),
                             std::memory_order_relaxed);
        return done();
      }
      if (later >= deadline) return done();
      now = later;
    }
  }

  // Claims and runs tasks until none are left. The first exception stops the handing out of tasks.
  void run_tasks(const std::function<void(int64_t)>& fn, int64_t n_tasks) noexcept {
    int64_t begin = 0, end = 0;
    while (claim(n_tasks, begin, end))
      for (int64_t t = begin; t < end; ++t) {
        try {
          fn(t);
        } catch (...) {
          if (!failed_.exchange(true, std::memory_order_relaxed)) error_ = std::current_exception();
          next_task_.store(n_tasks, std::memory_order_relaxed);
          return;
        }
      }
  }

  // Guided self-scheduling: a claim takes 1/(kClaimShare · threads) of the tasks still unclaimed
  // (at least one), so a large loop costs a few dozen claims instead of one per task, and each
  // thread runs runs of neighbouring tasks (a matmul's rows: one memory stream, whose prefetch
  // stays useful), while the small claims at the end still even out uneven tasks. Against one
  // claim per task (2-core Zen 4 VM, where the counter's cache line crosses between the cores on
  // every claim): the INT4 decode GEMV 1.1-1.4x faster in cpu_int4_bench, Llama-3.2-1B q4 decode
  // 1.25-1.3x.
  static constexpr int64_t kClaimShare = 4;
  bool claim(int64_t n_tasks, int64_t& begin, int64_t& end) noexcept {
    int64_t next = next_task_.load(std::memory_order_relaxed);
    for (;;) {
      if (next >= n_tasks) return false;
      const int64_t take = std::max<int64_t>(1, (n_tasks - next) / (kClaimShare * n_threads_));
      if (next_task_.compare_exchange_weak(next, next + take, std::memory_order_relaxed)) {
        begin = next, end = next + take;
        return true;
      }
    }
  }

  // Caller: waits until every joined worker has left the (closed) job.
  void wait_for_workers() {
    const auto idle = [this] {
      return (state_.load(std::memory_order_acquire) & kActiveMask) == 0;
    };
    if (spin(idle)) return;
    std::unique_lock lock(mutex_);
    caller_sleeping_.store(true);
    done_cv_.wait(lock, [this] { return (state_.load() & kActiveMask) == 0; });
    caller_sleeping_.store(false, std::memory_order_relaxed);
  }

  // Worker: returns the first state_ whose generation differs from seen, or 0 when stopping.
  uint64_t wait_for_generation(uint64_t seen) {
    uint64_t state = 0;
    const auto ready = [&] {
      if (stopping_.load(std::memory_order_relaxed)) return true;
      state = state_.load(std::memory_order_acquire);
      return generation_of(state) != seen;
    };
    if (ready() || spin(ready)) return stopping_.load() ? 0 : state;
    std::unique_lock lock(mutex_);
    sleepers_.fetch_add(1);  // seq_cst, before the checks below: pairs with the publisher
    work_cv_.wait(lock, [&] {
      if (stopping_.load()) return true;
      state = state_.load();
      return generation_of(state) != seen;
    });
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return stopping_.load() ? 0 : state;
  }

  void worker_loop() {
    uint64_t seen = 0;  // generation of the last job this worker looked at
    for (;;) {
      uint64_t state = wait_for_generation(seen);
      if (state == 0) return;
      seen = generation_of(state);
      // Join while the job is open; a failed CAS reloads state (another join, or closed).
      while ((state & kClosed) == 0 && generation_of(state) == seen) {
        if (!state_.compare_exchange_weak(state, state + 1, std::memory_order_acquire,
                                          std::memory_order_acquire)) {
          continue;
        }
        run_tasks(*job_, n_tasks_);
        const uint64_t before = state_.fetch_sub(1);  // seq_cst: release, then caller_sleeping_
        if ((before & kActiveMask) == 1 && caller_sleeping_.load()) {
          { std::lock_guard lock(mutex_); }
          done_cv_.notify_one();
        }
        break;
      }
    }
  }

  int n_threads_ = 1;
  bool oversubscribed_ = false;
  std::vector<std::thread> workers_;

  // The job, written by the caller only while no worker is joined.
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t n_tasks_ = 0;
  std::exception_ptr error_;
  uint64_t generation_ = 0;  // the caller's copy of the last published generation

  alignas(64) std::atomic<uint64_t> state_{kClosed};  // generation 0, closed: nothing to join
  alignas(64) std::atomic<int64_t> next_task_{0};
  alignas(64) std::atomic<bool> failed_{false};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> no_spin_until_{0};  // steady_clock ticks; see spin()
  std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
};

}  // namespace hllm
