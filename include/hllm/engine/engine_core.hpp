// EngineCore: many requests over one model and one paged KV cache, one step at a time, on the
// caller's thread. The Scheduler (engine/scheduler.hpp) plans each step; the core runs the plan
// on the model, samples, and hands out tokens. What `hllm serve` runs on its engine thread
// (engine/engine.hpp), and what `hllm run` / `hllm chat` run directly (engine/generate.hpp), so
// every caller gets the same prefix cache and the same stop / length / cancel rules.
//
// One step():
//   1. the scheduler's plan: decode rows, prefill chunks, admissions, preemptions
//   2. one forward over every decode row (all rows give logits), then one forward per prefill
//      chunk (logits of its last row only when the chunk ends the known tokens; of every row
//      while it holds prompt positions whose logprobs a request asked for and has not had)
//   3. at each sampling point: logprobs of the raw logits (when asked), the request's logits
//      processor, the Sampler. A decode step whose requests ask for neither logprobs nor a
//      processor samples on the backend (Backend::sample: on a GPU only ids come back); the
//      Sampler still supplies each row's penalties and draw, so the ids are the same either way.
//   4. after the step's forwards, the requests hear of it: prompt logprobs first, then each
//      sampled id goes through accept(): a stop id ends the request (not emitted), otherwise
//      on_logprob and on_token see it (false: cancelled), then max_tokens ends it (length).
//
// Prompt logprobs need the logits of every prompt position, so such a request never takes
// blocks from the prefix cache (Scheduler::add with read_cache off); after a preemption its
// recompute delivers none of them again (next_prompt_position).
//
// KV cache: one pool (KvCache) of n_blocks × 16 positions per layer; each sequence's block table
// (its rows of the pool) comes from the scheduler. Blocks are taken as sequences grow; when the
// pool runs out the newest sequence is preempted and later recomputed. Requests longer than the
// context are refused at add().
//
// Batch invariance (CPU backend, CpuMatmul::exact): every op computes each token's row the same
// way whatever else is in the step, chunking included, and each request samples from its own
// seeded generator, so a request's output depends neither on what runs beside it nor on
// preemption and prefix-cache hits. With CpuMatmul::int8 the INT4 and GGUF kernels sum a token's
// rows in an order that depends on how many tokens share the call, and the CUDA backend picks its
// attention split and GEMV/GEMM path by batch size, so there the same holds only up to rounding.
// Dynamic NTK RoPE is an exception everywhere: its frequencies follow the longest sequence of a
// step, so prefix caching is off for it, and a preempted sequence's recomputed K/V can differ
// from those it had.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/request.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/engine/scheduler.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace hllm {

struct EngineOptions {
  int64_t max_num_seqs = 32;    // sequences decoded together at most
  int64_t max_model_len = 0;    // prompt + completion tokens per request (0: model's, <= 8192)
  int64_t kv_cache_tokens = 0;  // KV pool size in positions (0: max_num_seqs × 1024, at least
                                // max_model_len)
  // Tokens fed per step: decodes first, then prefill chunks (0: 256 on the CPU, 2048 on a GPU;
  // at least max_num_seqs).
  int64_t max_num_batched_tokens = 0;
  bool prefix_caching = true;  // share computed KV blocks between requests with the same prefix
  int64_t max_waiting = 256;   // queued requests beyond which Engine::submit refuses (HTTP 429)

  // One sequence at a time with a pool of exactly `context` positions (run, chat).
  static EngineOptions one_sequence(int64_t context, bool prefix_caching) {
    EngineOptions o;
    o.max_num_seqs = 1;
    o.max_model_len = context;
    o.kv_cache_tokens = context;
    o.prefix_caching = prefix_caching;
    return o;
  }
};

struct EngineStats {
  int64_t kv_blocks_total = 0;
  int64_t kv_blocks_free = 0;    // allocatable now: unused, or cached and held by nobody
  int64_t kv_blocks_cached = 0;  // holding a findable prefix (in use or not)
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t finished = 0;  // requests ended since start
  int64_t preemptions = 0;
  bool prefix_caching = false;
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_hit_tokens = 0;    // of which found there
  double prefix_hit_rate() const {
    return prefix_query_tokens > 0
               ? static_cast<double>(prefix_hit_tokens) / static_cast<double>(prefix_query_tokens)
               : 0.0;
  }
};

class EngineCore {
 public:
  EngineCore(LlamaModel& model, const EngineOptions& options)
      : model_(model),
        options_(resolve(options, model)),
        blocks_per_seq_((options_.max_model_len + KvCache::KV_BLOCK_SIZE - 1) /
                        KvCache::KV_BLOCK_SIZE),
        pool_(model.new_cache(options_.kv_cache_tokens)),
        scheduler_(scheduler_options(options_, pool_)) {}

  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  const EngineOptions& options() const { return options_; }
  int64_t vocab_size() const { return model_.config().vocab_size; }  // logits per row

  // Throws hllm::Error when the request can never run: empty prompt, prompt + max_tokens beyond
  // max_model_len, ids outside the vocabulary. Reads only what never changes (any thread).
  void validate(const EngineRequest& request) const {
    const int64_t prompt = static_cast<int64_t>(request.prompt.size());
    if (prompt == 0) fail("the prompt is empty");
    if (request.max_tokens < 1) fail("max_tokens must be at least 1");
    if (prompt + request.max_tokens > options_.max_model_len)
      fail("the prompt (", prompt, " tokens) plus max_tokens (", request.max_tokens,
           ") exceed the context of ", options_.max_model_len, " tokens");
    const int32_t vocab = static_cast<int32_t>(model_.config().vocab_size);
    for (int32_t id : request.prompt)
      if (id < 0 || id >= vocab) fail("token id ", id, " is outside the vocabulary");
    for (const auto& [name, n] : {std::pair{"logprobs", request.logprobs},
                                  std::pair{"prompt_logprobs", request.prompt_logprobs}})
      if (n < -1 || n > MAX_LOGPROBS)
        fail(name, " must be in [-1, ", MAX_LOGPROBS, "] (got ", n, "; -1 turns it off)");
  }

  // Queues a validated request under a fresh id (0: the core picks one) and returns the id.
  uint64_t add(EngineRequest request, uint64_t id = 0) {
    validate(request);
    if (id == 0) id = ++last_id_;
    last_id_ = std::max(last_id_, id);
    if (requests_.contains(id)) fail("engine: request id ", id, " is in use");
    std::vector<int32_t> prompt = std::move(request.prompt);  // the scheduler keeps the tokens
    const uint64_t salt = request.cache_salt;
    const bool read_cache = request.prompt_logprobs < 0;
    requests_.emplace(id, Request(std::move(request), static_cast<int64_t>(prompt.size())));
    scheduler_.add(id, std::move(prompt), salt, read_cache);
    return id;
  }

  // Ends a request now (on_finish says cancelled). Unknown or finished ids: false.
  bool abort(uint64_t id) {
    if (!requests_.contains(id)) return false;
    end(id, FinishReason::cancelled, "");
    return true;
  }

  // Ends every request (cancelled), oldest first.
  void abort_all() {
    std::vector<uint64_t> ids;
    for (const auto& [id, r] : requests_) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    for (uint64_t id : ids) end(id, FinishReason::cancelled, "");
  }

  bool has_work() const { return !requests_.empty(); }

  // Called just before each on_finish, when the stats already count the request as gone (the
  // server refreshes what /health reads there).
  void on_before_finish(std::function<void()> hook) { before_finish_ = std::move(hook); }

  // One step (see the top). A failing step ends every running request with the error; the
  // waiting ones stay queued.
  void step() {
    StepOutput out;
    try {
      const StepPlan plan = scheduler_.schedule();
      if (plan.empty()) return;
      run(plan, out);
      scheduler_.complete(plan);
    } catch (const std::exception& e) {
      const std::vector<uint64_t> running = scheduler_.running();
      for (uint64_t id : running) end(id, FinishReason::cancelled, e.what());
      return;
    }
    for (const PromptLogprob& p : out.prompt) {
      const auto it = requests_.find(p.id);
      if (it == requests_.end() || !it->second.request.on_prompt_logprob) continue;
      try {
        it->second.request.on_prompt_logprob(p.position, p.logprob);
      } catch (const std::exception& e) {  // that request ends with the error
        end(p.id, FinishReason::cancelled, e.what());
      }
    }
    for (const Sampled& s : out.sampled) {
      if (!requests_.contains(s.id)) continue;  // a callback above ended it
      if (!s.error.empty()) {
        end(s.id, FinishReason::cancelled, s.error);
        continue;
      }
      try {
        accept(s);
      } catch (const std::exception& e) {  // a callback threw: that request ends with the error
        if (requests_.contains(s.id)) end(s.id, FinishReason::cancelled, e.what());
      }
    }
  }

  EngineStats stats() const {
    const SchedulerStats s = scheduler_.stats();
    EngineStats st;
    st.kv_blocks_total = s.blocks_total;
    st.kv_blocks_free = s.blocks_free;
    st.kv_blocks_cached = s.blocks_cached;
    st.running = s.running;
    st.waiting = s.waiting;
    st.finished = finished_;
    st.preemptions = s.preemptions;
    st.prefix_caching = scheduler_.options().prefix_caching;
    st.prefix_query_tokens = s.prefix_query_tokens;
    st.prefix_hit_tokens = s.prefix_hit_tokens;
    return st;
  }

 private:
  struct Request {
    EngineRequest request;  // its prompt moved to the scheduler
    int64_t prompt_tokens;
    Sampler sampler;
    int64_t generated = 0;
    int64_t next_prompt_position = 1;  // the first prompt position whose logprob is not out yet
    Request(EngineRequest r, int64_t prompt)
        : request(std::move(r)), prompt_tokens(prompt), sampler(request.sampling) {}
  };

  static EngineOptions resolve(EngineOptions o, LlamaModel& model) {
    const LlamaConfig& c = model.config();
    if (o.max_model_len <= 0) o.max_model_len = std::min<int64_t>(c.max_position_embeddings, 8192);
    if (o.max_model_len <= 0) o.max_model_len = 2048;
    if (o.max_num_seqs < 1) fail("max_num_seqs must be at least 1");
    if (o.kv_cache_tokens <= 0)
      o.kv_cache_tokens = std::max(o.max_num_seqs * 1024, o.max_model_len);
    if (o.kv_cache_tokens < o.max_model_len)
      fail("the KV cache (", o.kv_cache_tokens,
           " tokens) must hold at least one request of max_model_len (", o.max_model_len,
           ") tokens");
    if (o.max_num_batched_tokens <= 0)
      o.max_num_batched_tokens = model.backend().device() == Device::cpu ? 256 : 2048;
    o.max_num_batched_tokens = std::max(o.max_num_batched_tokens, o.max_num_seqs);
    if (c.rope_scaling.type == RopeType::dynamic) o.prefix_caching = false;
    return o;
  }

  static SchedulerOptions scheduler_options(const EngineOptions& o, const KvCache& pool) {
    SchedulerOptions s;
    s.max_num_seqs = o.max_num_seqs;
    s.max_num_batched_tokens = o.max_num_batched_tokens;
    s.n_blocks = pool.rows() / KvCache::KV_BLOCK_SIZE;
    s.block_size = KvCache::KV_BLOCK_SIZE;
    s.watermark_blocks = std::max<int64_t>(1, s.n_blocks / 100);  // vLLM's 1%
    s.prefix_caching = o.prefix_caching;
    return s;
  }

  // What the requests hear of after a step ran (see the top).
  struct PromptLogprob {
    uint64_t id;
    int64_t position;
    TokenLogprob logprob;
  };
  struct Sampled {
    uint64_t id;
    int32_t token = -1;
    TokenLogprob logprob;  // when the request asked for logprobs
    std::string error;     // set instead of a token: the logits processor failed or masked all
  };
  struct StepOutput {
    std::vector<PromptLogprob> prompt;  // in position order per request
    std::vector<Sampled> sampled;       // in plan order
  };

  // Runs the plan's forwards; what they yield goes to `out`.
  void run(const StepPlan& plan, StepOutput& out) {
    std::vector<const ScheduledChunk*> decodes, chunks;
    for (const ScheduledChunk& c : plan.chunks)
      (c.count == 1 && c.samples ? decodes : chunks).push_back(&c);
    const int64_t vocab = model_.config().vocab_size;
    if (!decodes.empty()) {
      const int64_t b = static_cast<int64_t>(decodes.size());
      if (std::any_of(decodes.begin(), decodes.end(),
                      [&](const ScheduledChunk* c) { return needs_host_logits(c->id); })) {
        logits_.resize(static_cast<size_t>(b * vocab));
        model_.forward_step(make_step(decodes), pool_, logits_, /*all_logits=*/true);
        for (int64_t i = 0; i < b; ++i)
          out.sampled.push_back(
              sample(decodes[i]->id, std::span(logits_).subspan(i * vocab, vocab)));
      } else {  // sampled where the logits are: only the ids come back
        model_.forward_step(make_step(decodes), pool_, {}, /*all_logits=*/true);
        sample_on_backend(decodes, out.sampled);
      }
    }
    for (const ScheduledChunk* c : chunks) {
      const ScheduledChunk* one[] = {c};
      const bool all_rows = scores_prompt(*c);
      logits_.resize(static_cast<size_t>((all_rows ? c->count : 1) * vocab));
      // Dynamic NTK follows the sequence's known length, as a plain prefill of it would.
      model_.forward_step(make_step(one), pool_,
                          c->samples || all_rows ? std::span<float>(logits_) : std::span<float>(),
                          all_rows, static_cast<int64_t>(scheduler_.tokens(c->id).size()));
      if (all_rows) score_prompt(*c, out.prompt);
      if (c->samples) out.sampled.push_back(sample(c->id, std::span(logits_).last(vocab)));
    }
    // A chunk scored whole holds count × vocab floats (~1 GB at 2,048 × 128k): not kept.
    if (logits_.capacity() > static_cast<size_t>(options_.max_num_seqs * vocab))
      std::vector<float>().swap(logits_);
  }

  // Whether chunk c holds a row whose logits give a prompt logprob its request still needs: row
  // q predicts position q + 1.
  bool scores_prompt(const ScheduledChunk& c) const {
    const Request& r = requests_.at(c.id);
    return r.request.prompt_logprobs >= 0 && r.next_prompt_position < r.prompt_tokens &&
           c.begin + c.count >= r.next_prompt_position && c.begin + 1 < r.prompt_tokens;
  }

  // The prompt logprobs of chunk c's rows (logits_ holds all of them), each position once.
  void score_prompt(const ScheduledChunk& c, std::vector<PromptLogprob>& out) {
    Request& r = requests_.at(c.id);
    const std::span<const int32_t> tokens = scheduler_.tokens(c.id);
    const int64_t vocab = model_.config().vocab_size;
    for (int64_t q = c.begin; q < c.begin + c.count; ++q) {
      const int64_t p = q + 1;
      if (p < r.next_prompt_position || p >= r.prompt_tokens) continue;
      const std::span<const float> row = std::span(logits_).subspan((q - c.begin) * vocab, vocab);
      out.push_back({c.id, p, token_logprob(row, tokens[p], r.request.prompt_logprobs)});
      r.next_prompt_position = p + 1;
    }
  }

  // The step of `chunks`, sequence i of the step being chunks[i]'s (block table row i, padded to
  // blocks_per_seq_; the padding is never read).
  Step make_step(std::span<const ScheduledChunk* const> chunks) {
    ids_.clear(), seq_.clear(), positions_.clear();
    tables_.assign(chunks.size() * static_cast<size_t>(blocks_per_seq_), 0);
    int64_t end = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const ScheduledChunk& c = *chunks[i];
      const std::span<const int32_t> tokens = scheduler_.tokens(c.id);
      const std::span<const int32_t> table = scheduler_.block_table(c.id);
      std::copy(table.begin(), table.end(),
                tables_.begin() + static_cast<std::ptrdiff_t>(i * blocks_per_seq_));
      for (int64_t t = c.begin; t < c.begin + c.count; ++t) {
        ids_.push_back(tokens[static_cast<size_t>(t)]);
        seq_.push_back(static_cast<int32_t>(i));
        positions_.push_back(static_cast<int32_t>(t));
      }
      end = std::max(end, c.begin + c.count);
    }
    Step step;
    step.ids = ids_;
    step.seq = seq_;
    step.positions = positions_;
    step.block_tables = tables_;
    step.max_blocks_per_seq = static_cast<int32_t>(blocks_per_seq_);
    step.block_size = KvCache::KV_BLOCK_SIZE;
    step.max_kv_len = kv_length_bound(end, blocks_per_seq_ * KvCache::KV_BLOCK_SIZE);
    return step;
  }

  // Whether a request's sampling points need its logits on the host: for logprobs or a logits
  // processor (grammar masks), which run there.
  bool needs_host_logits(uint64_t id) const {
    const EngineRequest& q = requests_.at(id).request;
    return q.logprobs >= 0 || static_cast<bool>(q.logits_processor);
  }

  // The decode step's sampling points on the backend, from the logits it left there.
  void sample_on_backend(std::span<const ScheduledChunk* const> decodes,
                         std::vector<Sampled>& out) {
    const int64_t vocab = model_.config().vocab_size;
    rows_.clear();
    for (const ScheduledChunk* c : decodes) {  // each row's penalty list lives in its Sampler
      Request& r = requests_.at(c->id);
      rows_.push_back(
          r.sampler.next_row(scheduler_.tokens(c->id), static_cast<size_t>(r.generated), vocab));
    }
    sampled_ids_.resize(decodes.size());
    model_.backend().sample(model_.last_logits(static_cast<int64_t>(decodes.size())), rows_,
                            sampled_ids_);
    for (size_t i = 0; i < decodes.size(); ++i)
      out.push_back({decodes[i]->id, sampled_ids_[i], {}, {}});
  }

  // One sampling point of request `id` (step 3 at the top); `logits` is its raw row.
  Sampled sample(uint64_t id, std::span<float> logits) {
    Request& r = requests_.at(id);
    const EngineRequest& q = r.request;
    const std::span<const int32_t> tokens = scheduler_.tokens(id);
    if (q.logprobs >= 0) raw_logits_.assign(logits.begin(), logits.end());
    if (q.logits_processor) {
      try {
        q.logits_processor(logits, tokens.subspan(static_cast<size_t>(r.prompt_tokens)));
      } catch (const std::exception& e) {
        return {id, -1, {}, std::string("the logits processor failed: ") + e.what()};
      }
      if (all_masked(logits)) return {id, -1, {}, "the logits processor masked every token"};
    }
    Sampled s{id, r.sampler.sample(logits, tokens, static_cast<size_t>(r.generated)), {}, {}};
    if (q.logprobs >= 0) s.logprob = token_logprob(raw_logits_, s.token, q.logprobs);
    return s;
  }

  // A sampled id: ends the request (stop id, on_token says stop, max_tokens) or becomes the
  // sequence's next token.
  void accept(const Sampled& s) {
    const uint64_t id = s.id;
    const int32_t token = s.token;
    Request& r = requests_.at(id);
    const std::vector<int64_t>& stops = r.request.stop_ids;
    const bool stop_id = std::find(stops.begin(), stops.end(), token) != stops.end();
    if (stop_id && !r.request.ignore_eos) return end(id, FinishReason::stop, "");
    ++r.generated;
    if (r.request.logprobs >= 0 && r.request.on_logprob) r.request.on_logprob(s.logprob);
    if (r.request.on_token && !r.request.on_token(token))
      return end(id, FinishReason::cancelled, "");
    if (r.generated >= r.request.max_tokens) return end(id, FinishReason::length, "");
    scheduler_.append(id, token);
  }

  // Blocks back and the stats current before the caller hears of the end.
  void end(uint64_t id, FinishReason reason, const std::string& error) {
    const auto it = requests_.find(id);
    RequestEnd done;
    done.reason = reason;
    done.prompt_tokens = it->second.prompt_tokens;
    done.completion_tokens = it->second.generated;
    done.cached_tokens = std::min(scheduler_.cached_tokens(id), done.prompt_tokens);
    done.error = error;
    const std::function<void(const RequestEnd&)> on_finish =
        std::move(it->second.request.on_finish);
    requests_.erase(it);
    scheduler_.remove(id);
    ++finished_;
    if (before_finish_) before_finish_();
    try {
      if (on_finish) on_finish(done);
    } catch (...) {  // on_finish must not throw; the request is gone already, nothing to undo
    }
  }

  LlamaModel& model_;
  const EngineOptions options_;
  const int64_t blocks_per_seq_;
  KvCache pool_;
  Scheduler scheduler_;
  std::unordered_map<uint64_t, Request> requests_;
  uint64_t last_id_ = 0;
  int64_t finished_ = 0;
  std::function<void()> before_finish_;
  std::vector<int32_t> ids_, seq_, positions_, tables_;
  std::vector<float> logits_;      // [rows, vocab] of the forward that ran last
  std::vector<float> raw_logits_;  // [vocab]: a row before processor and Sampler (logprobs)
  std::vector<SampleRow> rows_;    // the sampling points of a decode step sampled on the backend
  std::vector<int32_t> sampled_ids_;
};

}  // namespace hllm
