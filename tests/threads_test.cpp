// ThreadPool: every task runs exactly once for any task count and pool size (1 to 8 threads, more
// than the machine has cores), thousands of back-to-back calls (lost wake-ups), calls spaced wider
// than the spin window (workers and caller asleep), exceptions, destruction in every state, and an
// idle pool that sleeps instead of spinning.
#include "hllm/core/threads.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using hllm::ThreadPool;

constexpr int kPoolSizes[] = {1, 2, 4, 8};

// About `iterations` × a few ns of work the compiler cannot drop.
void busy_work(int iterations) {
  volatile int sink = 0;
  for (int i = 0; i < iterations; ++i) sink = sink + i;
}

// Runs parallel_for(n_tasks) and checks that each task ran exactly once and that its plain
// (non-atomic) writes are visible to the caller afterwards. Tasks do up to `work` busy iterations,
// so that workers get there before the caller has done everything alone.
void expect_each_task_once(ThreadPool& pool, int64_t n_tasks, int64_t salt, int work = 0) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n_tasks));
  std::vector<int64_t> out(static_cast<size_t>(n_tasks), -1);
  pool.parallel_for(n_tasks, [&](int64_t t) {
    runs[static_cast<size_t>(t)].fetch_add(1, std::memory_order_relaxed);
    busy_work(static_cast<int>((t * 7 + salt) % 5) * work / 4);
    out[static_cast<size_t>(t)] = t * 3 + salt;
  });
  for (int64_t t = 0; t < n_tasks; ++t) {
    ASSERT_EQ(runs[static_cast<size_t>(t)].load(), 1) << "task " << t << " of " << n_tasks;
    ASSERT_EQ(out[static_cast<size_t>(t)], t * 3 + salt) << "task " << t << " of " << n_tasks;
  }
}

TEST(ThreadPool, SizeCountsTheCaller) {
  for (int n : kPoolSizes) EXPECT_EQ(ThreadPool(n).size(), n);
  EXPECT_GE(ThreadPool(0).size(), 1);
}

TEST(ThreadPool, EveryTaskRunsExactlyOnce) {
  for (int threads : kPoolSizes) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099}) {
      SCOPED_TRACE("threads " + std::to_string(threads) + ", tasks " + std::to_string(n));
      expect_each_task_once(pool, n, threads);
      expect_each_task_once(pool, n, threads, 2000);
    }
  }
}

// Tasks are claimed in runs (guided self-scheduling): a claim takes 1/(4 · threads) of what is
// left (at least one), so n tasks take fewer than 4T·(ln(n / 4T) + 1) + 4T claims, whoever wins
// them (59 for 2 threads and 4096 tasks), and the tasks one thread ran form at most that many runs
// of neighbours. One claim per task, shared by several threads, gives hundreds of runs.
TEST(ThreadPool, TasksAreClaimedInRunsOfNeighbours) {
  for (int threads : {2, 4, 8}) {
    ThreadPool pool(threads);
    constexpr int64_t n = 4096;
    std::vector<std::thread::id> ran_on(static_cast<size_t>(n));
    pool.parallel_for(n, [&](int64_t t) {
      ran_on[static_cast<size_t>(t)] = std::this_thread::get_id();
      busy_work(200);
    });
    int64_t runs = 1;
    for (int64_t t = 1; t < n; ++t)
      runs += ran_on[static_cast<size_t>(t)] != ran_on[static_cast<size_t>(t - 1)];
    const double share = 4.0 * threads;
    EXPECT_LT(static_cast<double>(runs), share * (std::log(n / share) + 1) + share)
        << threads << " threads";
  }
}

TEST(ThreadPool, SingleTaskAndSingleThreadRunOnTheCaller) {
  const auto caller = std::this_thread::get_id();
  ThreadPool four(4);
  four.parallel_for(1, [&](int64_t) { EXPECT_EQ(std::this_thread::get_id(), caller); });
  ThreadPool one(1);
  one.parallel_for(10, [&](int64_t) { EXPECT_EQ(std::this_thread::get_id(), caller); });
}

// Back-to-back calls with no gap: the path where workers are spinning, and where a lost wake-up or
// a worker that joins a stale job would hang or double-run a task. Empty tasks (the caller often
// finishes alone) and tasks of a few microseconds (workers join).
TEST(ThreadPool, ThousandsOfBackToBackCalls) {
  for (int threads : kPoolSizes) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    ThreadPool pool(threads);
    for (int call = 0; call < 6000; ++call) {
      expect_each_task_once(pool, 1 + call % 17, call, call % 2 == 0 ? 0 : 1000);
      if (HasFatalFailure()) return;
    }
  }
}

// Tiny tasks on many threads: workers arrive after the caller has finished everything, so they
// must skip the closed job, not run the next one with the old function.
TEST(ThreadPool, LateWorkersSkipFinishedJobs) {
  ThreadPool pool(8);
  int64_t total = 0;
  for (int call = 0; call < 20000; ++call) {
    std::atomic<int64_t> sum{0};
    pool.parallel_for(2, [&](int64_t t) { sum.fetch_add(call + t, std::memory_order_relaxed); });
    total += sum.load();
  }
  int64_t expected = 0;
  for (int call = 0; call < 20000; ++call) expected += 2 * int64_t{call} + 1;
  EXPECT_EQ(total, expected);
}

// Workers take part in back-to-back calls (they spin, join and claim tasks), not only the caller.
// On a loaded machine a descheduled worker misses calls, so this runs until one took part (at
// least 2000 calls, at most 10 s).
TEST(ThreadPool, WorkersTakePartInBackToBackCalls) {
  for (int threads : {2, 4}) {
    ThreadPool pool(threads);
    const auto caller = std::this_thread::get_id();
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::atomic<int64_t> on_workers{0};
    for (int call = 0;
         call < 2000 || (on_workers.load() == 0 && std::chrono::steady_clock::now() < give_up);
         ++call) {
      pool.parallel_for(8, [&](int64_t) {
        busy_work(2000);
        if (std::this_thread::get_id() != caller) on_workers.fetch_add(1);
      });
    }
    EXPECT_GT(on_workers.load(), 0) << threads << " threads";
  }
}

// Calls spaced wider than the spin window: workers go to sleep between calls and must be woken.
TEST(ThreadPool, CallsSpacedBySleeps) {
  for (int threads : kPoolSizes) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    ThreadPool pool(threads);
    for (int call = 0; call < 15; ++call) {
      std::this_thread::sleep_for(ThreadPool::kSpinWindow * 3 +
                                  std::chrono::milliseconds(call % 3));
      expect_each_task_once(pool, 1 + call * 5, call);
      if (HasFatalFailure()) return;
    }
  }
}

// Workers that sleep are woken for work: with tasks that block for a while, a sleeping pool of N
// threads finishes N tasks in about one task's time, not N.
TEST(ThreadPool, SleepingWorkersWakeUpAndShareTheWork) {
  ThreadPool pool(4);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // every worker asleep
  std::atomic<int> concurrent{0}, peak{0};
  pool.parallel_for(4, [&](int64_t) {
    const int now = concurrent.fetch_add(1) + 1;
    for (int seen = peak.load(); now > seen && !peak.compare_exchange_weak(seen, now);) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    concurrent.fetch_sub(1);
  });
  EXPECT_GE(peak.load(),
            2);  // at least one worker woke up and took a task (sleeps don't need cores)
}

// The caller runs out of tasks long before the workers finish theirs: it outlasts its spin window
// and sleeps until the last worker wakes it. (The caller's tasks wait for a worker to start, so the
// workers join before the caller has done every task itself.)
TEST(ThreadPool, CallerSleepsWhileWorkersFinish) {
  for (int threads : {2, 4, 8}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    ThreadPool pool(threads);
    const auto caller = std::this_thread::get_id();
    for (int call = 0; call < 5; ++call) {
      std::atomic<int> done{0};
      std::atomic<bool> worker_started{false};
      pool.parallel_for(threads * 2, [&](int64_t) {
        if (std::this_thread::get_id() != caller) {
          worker_started.store(true);
          std::this_thread::sleep_for(ThreadPool::kSpinWindow * 5);
        } else {
          const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
          while (!worker_started.load() && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::yield();
          }
        }
        done.fetch_add(1);
      });
      EXPECT_TRUE(worker_started.load());
      EXPECT_EQ(done.load(), threads * 2);
    }
  }
}

TEST(ThreadPool, ExceptionPropagatesToTheCallerAndThePoolStaysUsable) {
  for (int threads : kPoolSizes) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    ThreadPool pool(threads);
    for (int round = 0; round < 50; ++round) {
      std::vector<std::atomic<int>> runs(100);
      const int64_t bad = round % 100;
      try {
        pool.parallel_for(100, [&](int64_t t) {
          runs[static_cast<size_t>(t)].fetch_add(1);
          if (t == bad) throw std::runtime_error("task " + std::to_string(t));
        });
        FAIL() << "no exception";
      } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()), "task " + std::to_string(bad));
      }
      for (auto& r : runs) EXPECT_LE(r.load(), 1);
      EXPECT_EQ(runs[static_cast<size_t>(bad)].load(), 1);
      expect_each_task_once(pool, 37, round);
    }
  }
}

TEST(ThreadPool, EveryTaskThrowingGivesOneException) {
  ThreadPool pool(4);
  for (int round = 0; round < 200; ++round) {
    EXPECT_THROW(pool.parallel_for(64, [](int64_t t) { throw static_cast<int>(t); }), int);
  }
  expect_each_task_once(pool, 64, 0);
}

TEST(ThreadPool, DestructionInEveryState) {
  for (int threads : kPoolSizes) {
    for (int i = 0; i < 50; ++i) ThreadPool pool(threads);  // right after construction
    for (int i = 0; i < 50; ++i) {                          // right after a call, workers spinning
      ThreadPool pool(threads);
      expect_each_task_once(pool, 7, i);
    }
    {  // after the spin window, workers asleep
      ThreadPool pool(threads);
      expect_each_task_once(pool, 7, 0);
      std::this_thread::sleep_for(ThreadPool::kSpinWindow * 10);
    }
  }
}

// An idle pool sleeps: after the spin window it uses (almost) no CPU.
TEST(ThreadPool, IdlePoolDoesNotSpin) {
  ThreadPool pool(4);
  for (int i = 0; i < 100; ++i) expect_each_task_once(pool, 16, i);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the spin window
  const std::clock_t cpu0 = std::clock();
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double cpu_s = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  EXPECT_LT(cpu_s, 0.05 * wall_s) << "idle pool used " << cpu_s << " s of CPU in " << wall_s
                                  << " s";
}

}  // namespace
