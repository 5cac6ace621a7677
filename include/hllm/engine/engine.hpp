// Engine: continuous batching of many requests over one model and one paged KV cache, on its own
// thread. What `hllm serve` runs underneath its HTTP layer.
//
//   submit(request) ──► waiting ──admission: blocks for prompt + max_tokens free──► running
//                                                                                  │
//   every iteration of the engine thread:                                          ▼
//     1. new requests join, aborted ones leave (their blocks go back to the pool)
//     2. prefill: the next chunk (<= prefill_chunk tokens) of ONE sequence's prompt
//     3. decode: one step for every sequence past its prompt, all in one batch
//     4. sample each sequence's next token with its own Sampler (own seed), hand it to
//        on_token at once, finish sequences at a stop id / max_tokens / abort
//
// KV cache: one pool (KvCache) of n_blocks × 16 positions per layer; each sequence owns the blocks
// of its block table (engine/block_pool.hpp, layout/paged_kv.hpp). Admission reserves every block a
// request can need (prompt + max_tokens), so a running sequence never runs out and nothing is ever
// preempted; a request that fits the context but not the free blocks waits. Requests larger than
// the context are refused at submit.
//
// Batch invariance: every op computes each token's row the same way whatever else is in the
// batch, and each request samples from its own seeded generator, so a request's output does not
// depend on what runs beside it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/block_pool.hpp"
#include "hllm/engine/generate.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace hllm {

struct EngineOptions {
  int64_t max_num_seqs = 32;    // sequences decoded together at most
  int64_t max_model_len = 0;    // prompt + completion tokens per request (0: model's, <= 8192)
  int64_t kv_cache_tokens = 0;  // KV pool size in positions (0: max_num_seqs × 1024, at least
                                // max_model_len)
  int64_t prefill_chunk = 256;  // prompt tokens per iteration, so prefills do not stall decodes
  int64_t max_waiting = 256;    // queued requests beyond which submit refuses (HTTP 429)
};

struct EngineRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;        // validated by the caller
  int64_t max_tokens = 256;       // completion tokens at most
  std::vector<int64_t> stop_ids;  // ids that end the completion (not emitted)
  bool ignore_eos = false;        // keep going past stop ids
  // Engine thread: each generated id as soon as it is sampled; return false to stop
  // (FinishReason::cancelled, e.g. the client went away or a stop string matched).
  std::function<bool(int32_t)> on_token;
  // Engine thread: exactly once, at the end (also after a failure: error is set then).
  std::function<void(FinishReason, int64_t prompt_tokens, int64_t completion_tokens,
                     const std::string& error)>
      on_finish;
};

struct EngineStats {
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t finished = 0;  // requests completed since start
};

// Thrown by submit when the waiting queue is full (the server answers 429).
struct EngineBusy : Error {
  using Error::Error;
};

class Engine {
 public:
  Engine(LlamaModel& model, EngineOptions options)
      : model_(model),
        options_(resolve(options, model.config())),
        blocks_per_seq_((options_.max_model_len + KvCache::KV_BLOCK_SIZE - 1) /
                        KvCache::KV_BLOCK_SIZE),
        pool_(model.new_cache(options_.kv_cache_tokens)),
        blocks_(pool_.rows() / KvCache::KV_BLOCK_SIZE) {
    update_stats();  // the pool's size is known before the first request
    thread_ = std::thread([this] { loop(); });
  }

  ~Engine() { stop(); }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineOptions& options() const { return options_; }

  // Queues a request and returns its id. Throws hllm::Error when it can never run (empty prompt,
  // prompt + max_tokens beyond max_model_len) and EngineBusy when the queue is full.
  uint64_t submit(EngineRequest request) {
    const int64_t prompt = static_cast<int64_t>(request.prompt.size());
    if (prompt == 0) fail("the prompt is empty");
    if (request.max_tokens < 1) fail("max_tokens must be at least 1");
    if (prompt + request.max_tokens > options_.max_model_len)
      fail("the prompt (", prompt, " tokens) plus max_tokens (", request.max_tokens,
           ") exceed the context of ", options_.max_model_len, " tokens");
    const int32_t vocab = static_cast<int32_t>(model_.config().vocab_size);
    for (int32_t id : request.prompt)
      if (id < 0 || id >= vocab) fail("token id ", id, " is outside the vocabulary");
    std::lock_guard lock(mutex_);
    if (stopping_) fail("the engine is shutting down");
    if (static_cast<int64_t>(incoming_.size() + waiting_.size()) >= options_.max_waiting)
      throw EngineBusy("too many requests are waiting (" + std::to_string(options_.max_waiting) +
                       "); try again later");
    const uint64_t id = ++next_id_;
    auto seq = std::make_unique<Sequence>(id, std::move(request));
    incoming_.push_back(std::move(seq));
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

  // Finishes what runs (cancelled) and joins the engine thread.
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
  struct Sequence {
    uint64_t id;
    EngineRequest request;
    Sampler sampler;
    std::vector<int32_t> tokens;  // prompt, then the generated ids
    std::vector<int32_t> blocks;  // block table
    int64_t prompt_len;
    int64_t prefilled = 0;  // prompt tokens in the cache
    int64_t generated = 0;
    int32_t next = -1;  // sampled, not yet in the cache
    bool done = false;  // finished (on_finish called), about to leave its list
    Sequence(uint64_t id_, EngineRequest r)
        : id(id_),
          request(std::move(r)),
          sampler(request.sampling),
          tokens(request.prompt),
          prompt_len(static_cast<int64_t>(request.prompt.size())) {}
  };

  static EngineOptions resolve(EngineOptions o, const LlamaConfig& c) {
    if (o.max_model_len <= 0) o.max_model_len = std::min<int64_t>(c.max_position_embeddings, 8192);
    if (o.max_model_len <= 0) o.max_model_len = 2048;
    if (o.max_num_seqs < 1) fail("max_num_seqs must be at least 1");
    if (o.prefill_chunk < 1) fail("prefill_chunk must be at least 1");
    if (o.kv_cache_tokens <= 0)
      o.kv_cache_tokens = std::max(o.max_num_seqs * 1024, o.max_model_len);
    if (o.kv_cache_tokens < o.max_model_len)
      fail("the KV cache (", o.kv_cache_tokens,
           " tokens) must hold at least one request of "
           "max_model_len (",
           o.max_model_len, ") tokens");
    return o;
  }

  void loop() {
    std::unique_lock lock(mutex_);
    while (true) {
      wake_.wait(lock, [&] {
        return stopping_ || !incoming_.empty() || !aborted_.empty() || !running_.empty() ||
               !waiting_.empty();
      });
      if (stopping_) break;
      for (auto& s : incoming_) waiting_.push_back(std::move(s));
      incoming_.clear();
      std::unordered_set<uint64_t> aborted;
      aborted.swap(aborted_);
      update_stats();
      lock.unlock();
      iterate(aborted);
      lock.lock();
      update_stats();
    }
    // Shutting down: everything still here ends as cancelled.
    for (auto& s : incoming_) waiting_.push_back(std::move(s));
    incoming_.clear();
    lock.unlock();
    for (auto& s : running_) finish(*s, FinishReason::cancelled, "");
    for (auto& s : waiting_) finish(*s, FinishReason::cancelled, "");
    running_.clear();
    waiting_.clear();
  }

  // Under the lock.
  void update_stats() {
    const auto live = [](const std::vector<std::unique_ptr<Sequence>>& list) {
      return static_cast<int64_t>(
          std::count_if(list.begin(), list.end(), [](const auto& s) { return s && !s->done; }));
    };
    stats_.kv_blocks_total = blocks_.total();
    stats_.kv_blocks_free = blocks_.free_count();
    stats_.running = live(running_);
    stats_.waiting = live(waiting_) + static_cast<int64_t>(incoming_.size());
    stats_.finished = finished_;
  }

  // One engine iteration (engine thread, without the lock).
  void iterate(const std::unordered_set<uint64_t>& aborted) {
    const auto drop = [&](std::vector<std::unique_ptr<Sequence>>& list) {
      std::erase_if(list, [&](const std::unique_ptr<Sequence>& s) {
        if (!aborted.contains(s->id)) return false;
        finish(*s, FinishReason::cancelled, "");
        return true;
      });
    };
    drop(running_);
    drop(waiting_);
    admit();
    try {
      prefill_one_chunk();
      decode_running();
    } catch (const std::exception& e) {
      // A failed step poisons every sequence in flight: end them all with the error, keep serving.
      for (auto& s : running_) finish(*s, FinishReason::cancelled, e.what());
      running_.clear();
    }
  }

  // Waiting requests start, oldest first, while a sequence slot and their blocks are free.
  void admit() {
    while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_num_seqs) {
      Sequence& s = *waiting_.front();
      const int64_t need = (s.prompt_len + s.request.max_tokens + KvCache::KV_BLOCK_SIZE - 1) /
                           KvCache::KV_BLOCK_SIZE;
      auto blocks = blocks_.allocate(need);
      if (!blocks) break;  // first come, first served: later ones wait too
      s.blocks = std::move(*blocks);
      running_.push_back(std::move(waiting_.front()));
      waiting_.erase(waiting_.begin());
    }
  }

  // The block table rows of `seqs`, each padded to blocks_per_seq_ (padding never read).
  void fill_tables(std::span<Sequence* const> seqs) {
    tables_.assign(seqs.size() * static_cast<size_t>(blocks_per_seq_), 0);
    for (size_t i = 0; i < seqs.size(); ++i)
      std::copy(seqs[i]->blocks.begin(), seqs[i]->blocks.end(),
                tables_.begin() + static_cast<std::ptrdiff_t>(i * blocks_per_seq_));
  }

  Step make_step(int64_t max_position) {
    Step step;
    step.ids = ids_;
    step.seq = seq_;
    step.positions = positions_;
    step.block_tables = tables_;
    step.max_blocks_per_seq = static_cast<int32_t>(blocks_per_seq_);
    step.block_size = KvCache::KV_BLOCK_SIZE;
    step.max_kv_len = kv_length_bound(max_position + 1, blocks_per_seq_ * KvCache::KV_BLOCK_SIZE);
    return step;
  }

  // The next chunk of the first running sequence still in its prompt; its last chunk samples the
  // first generated token.
  void prefill_one_chunk() {
    Sequence* s = nullptr;
    for (auto& r : running_)
      if (r->prefilled < r->prompt_len) {
        s = r.get();
        break;
      }
    if (s == nullptr) return;
    const int64_t begin = s->prefilled;
    const int64_t end = std::min(s->prompt_len, begin + options_.prefill_chunk);
    const int64_t n = end - begin;
    ids_.assign(s->tokens.begin() + begin, s->tokens.begin() + end);
    seq_.assign(static_cast<size_t>(n), 0);
    positions_.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) positions_[t] = static_cast<int32_t>(begin + t);
    Sequence* one[] = {s};
    fill_tables(one);
    const bool last = end == s->prompt_len;
    logits_.resize(static_cast<size_t>(model_.config().vocab_size));
    model_.forward_step(make_step(end - 1), pool_,
                        last ? std::span<float>(logits_) : std::span<float>(),
                        /*all_logits=*/false, s->prompt_len);
    s->prefilled = end;
    if (last) accept(*s, sample(*s, logits_));
    std::erase_if(running_, [](const std::unique_ptr<Sequence>& r) { return r == nullptr; });
  }

  // One batched step for every sequence that has a sampled token not yet in the cache.
  void decode_running() {
    std::vector<Sequence*> batch;
    for (auto& r : running_)
      if (r && r->prefilled == r->prompt_len && r->next >= 0) batch.push_back(r.get());
    if (batch.empty()) {
      std::erase_if(running_, [](const std::unique_ptr<Sequence>& r) { return r == nullptr; });
      return;
    }
    const int64_t b = static_cast<int64_t>(batch.size());
    const int64_t vocab = model_.config().vocab_size;
    ids_.resize(static_cast<size_t>(b));
    seq_.resize(static_cast<size_t>(b));
    positions_.resize(static_cast<size_t>(b));
    int64_t max_position = 0;
    for (int64_t i = 0; i < b; ++i) {
      Sequence& s = *batch[i];
      ids_[i] = s.next;
      seq_[i] = static_cast<int32_t>(i);
      positions_[i] = static_cast<int32_t>(s.tokens.size() - 1);  // `next` is tokens.back()
      max_position = std::max<int64_t>(max_position, positions_[i]);
    }
    fill_tables(batch);
    logits_.resize(static_cast<size_t>(b * vocab));
    model_.forward_step(make_step(max_position), pool_, logits_, /*all_logits=*/true);
    for (int64_t i = 0; i < b; ++i)
      accept(*batch[i], sample(*batch[i], std::span<float>(logits_).subspan(i * vocab, vocab)));
    std::erase_if(running_, [](const std::unique_ptr<Sequence>& r) { return r == nullptr; });
  }

  int32_t sample(Sequence& s, std::span<float> logits) {
    return s.sampler.sample(logits, s.tokens, static_cast<size_t>(s.generated));
  }

  // Takes a sampled id: ends the sequence or hands the id out and queues it for the next step.
  void accept(Sequence& s, int32_t id) {
    const bool stop_id = std::find(s.request.stop_ids.begin(), s.request.stop_ids.end(), id) !=
                         s.request.stop_ids.end();
    if (stop_id && !s.request.ignore_eos) return end(s, FinishReason::stop, "");
    ++s.generated;
    const bool keep_going = !s.request.on_token || s.request.on_token(id);
    if (!keep_going) return end(s, FinishReason::cancelled, "");
    if (s.generated >= s.request.max_tokens) return end(s, FinishReason::length, "");
    s.tokens.push_back(id);
    s.next = id;
  }

  // Ends a running sequence: callback, blocks back, slot emptied (erased after the step).
  void end(Sequence& s, FinishReason reason, const std::string& error) {
    finish(s, reason, error);
    for (auto& r : running_)
      if (r.get() == &s) r.reset();
  }

  // Blocks back and the stats current before the caller hears of the end, so what it reads next
  // (e.g. /health) already counts this sequence as gone.
  void finish(Sequence& s, FinishReason reason, const std::string& error) {
    if (!s.blocks.empty()) blocks_.release(s.blocks);
    s.blocks.clear();
    s.done = true;
    {
      std::lock_guard lock(mutex_);
      ++finished_;
      update_stats();
    }
    if (s.request.on_finish) s.request.on_finish(reason, s.prompt_len, s.generated, error);
  }

  LlamaModel& model_;
  const EngineOptions options_;
  const int64_t blocks_per_seq_;
  KvCache pool_;
  BlockPool blocks_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<std::unique_ptr<Sequence>> incoming_;  // submitted, not yet seen by the loop
  std::unordered_set<uint64_t> aborted_;
  bool stopping_ = false;
  uint64_t next_id_ = 0;
  EngineStats stats_;
  int64_t finished_ = 0;

  // Engine thread only.
  std::vector<std::unique_ptr<Sequence>> waiting_, running_;
  std::vector<int32_t> ids_, seq_, positions_, tables_;
  std::vector<float> logits_;

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace hllm
