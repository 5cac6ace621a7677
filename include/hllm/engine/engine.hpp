// Engine: an EngineCore (engine/engine_core.hpp) on its own thread, fed from any thread. What
// `hllm serve` runs underneath its HTTP layer.
//
//   submit(request) ──► incoming ──engine thread──► EngineCore::add ──► steps until it ends
//   abort(id)       ──► aborted  ──engine thread──► EngineCore::abort
//
// The engine thread sleeps while there is nothing to do; every iteration takes in new requests
// and aborts, then runs one step. Every callback of a request (logits_processor, on_prompt_logprob,
// on_logprob, on_token, on_finish) runs on the engine thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/engine_core.hpp"
#include "hllm/engine/request.hpp"
#include "hllm/model/llama.hpp"

namespace hllm {

// Thrown by submit when the waiting queue is full (the server answers 429).
struct EngineBusy : Error {
  using Error::Error;
};

class Engine {
 public:
  Engine(LlamaModel& model, const EngineOptions& options) : core_(model, options) {
    core_.on_before_finish([this] {
      std::lock_guard lock(mutex_);
      publish();
    });
    publish();  // the pool's size is known before the first request
    thread_ = std::thread([this] { loop(); });
  }

  ~Engine() { stop(); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineOptions& options() const { return core_.options(); }
  int64_t vocab_size() const { return core_.vocab_size(); }

  // Queues a request and returns its id. Throws hllm::Error when it can never run (empty prompt,
  // prompt + max_tokens beyond max_model_len) and EngineBusy when the queue is full (preempted
  // requests waiting to resume count too: they hold a place in line).
  uint64_t submit(EngineRequest request) {
    core_.validate(request);
    std::lock_guard lock(mutex_);
    if (stopping_) fail("the engine is shutting down");
    if (stats_.waiting >= options().max_waiting)  // counts incoming_ too (publish, below)
      throw EngineBusy("too many requests are waiting (" + std::to_string(options().max_waiting) +
                       "); try again later");
    const uint64_t id = ++next_id_;
    incoming_.emplace_back(id, std::move(request));
    ++stats_.waiting;
    wake_.notify_one();
    return id;
  }

  // Stops a request at the next iteration (its on_finish says cancelled). Unknown ids: no-op.
  void abort(uint64_t id) {
    std::lock_guard lock(mutex_);
    aborted_.insert(id);
    wake_.notify_one();
  }

  EngineStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }

  // Ends what runs and waits (cancelled) and joins the engine thread.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
      wake_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] {
        return stopping_ || !incoming_.empty() || !aborted_.empty() || core_.has_work();
      });
      if (stopping_) break;
      std::vector<std::pair<uint64_t, EngineRequest>> incoming;
      incoming.swap(incoming_);
      std::unordered_set<uint64_t> aborted;
      aborted.swap(aborted_);
      lock.unlock();
      for (auto& [id, request] : incoming) core_.add(std::move(request), id);
      for (uint64_t id : aborted) core_.abort(id);
      core_.step();
      lock.lock();
      publish();
    }
    // Shutting down: everything still here ends as cancelled.
    std::vector<std::pair<uint64_t, EngineRequest>> incoming;
    incoming.swap(incoming_);
    lock.unlock();
    for (auto& [id, request] : incoming) core_.add(std::move(request), id);
    core_.abort_all();
  }

  // Under the lock: what stats() reads, including what submit queued since.
  void publish() {
    stats_ = core_.stats();
    stats_.waiting += static_cast<int64_t>(incoming_.size());
  }

  EngineCore core_;  // engine thread only (validate and options: any thread)

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::pair<uint64_t, EngineRequest>> incoming_;  // submitted, not yet in the core
  std::unordered_set<uint64_t> aborted_;
  bool stopping_ = false;
  uint64_t next_id_ = 0;
  EngineStats stats_;

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace hllm
