// Scheduler: what the engine computes next, decided from state alone — no model, no thread, no
// callbacks (vLLM v1's shape). The engine core (engine/engine_core.hpp) runs its plans.
//
// A sequence is its known tokens (the prompt, then every sampled id) and how many of them have
// their K/V in the cache (`computed`). Each step feeds every running sequence's uncomputed
// tokens, or the part of them that fits the step's token budget; a chunk that reaches the last
// known token yields logits, from which the engine samples the next token (append()).
//
//   add() ──► waiting ──admission──► running ──remove()──► gone (blocks released)
//               ▲                        │
//               └────── preemption ──────┘   (blocks released; on return it recomputes
//                                             prompt + generated tokens, prefix cache first)
//
// One step, schedule():
//   1. decodes: running sequences with one token to feed, oldest admitted first. A position past
//      its last block needs a new block; when none is free, the most recently admitted running
//      sequence is preempted (maybe this one), as vLLM's recompute preemption does.
//   2. prefill chunks: running sequences with more to feed, oldest first, while budget is left.
//   3. admission, first come first served, while a sequence slot and budget are left: a waiting
//      sequence first shares the longest chain of cached full blocks of its tokens
//      (engine/block_manager.hpp; not one added with read_cache off, which must compute every
//      position itself), then needs blocks for the rest of its known tokens, plus a
//      watermark left free for the running sequences' growth (none when nothing runs, so a lone
//      request can always start). Nothing is admitted in a step that preempted.
// Blocks for decoded tokens are taken as sequences grow, one at a time, never reserved ahead.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <unordered_map>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/block_manager.hpp"

namespace hllm {

struct SchedulerOptions {
  int64_t max_num_seqs = 32;             // running sequences at most
  int64_t max_num_batched_tokens = 256;  // tokens fed per step at most (>= max_num_seqs)
  int64_t n_blocks = 0;                  // the KV pool, in blocks
  int32_t block_size = 16;               // positions per block
  int64_t watermark_blocks = 1;          // kept free at admission while others run
  bool prefix_caching = true;
};

// `count` tokens of sequence `id` from position `begin` on, fed in one step.
struct ScheduledChunk {
  uint64_t id = 0;
  int64_t begin = 0;
  int64_t count = 0;
  bool samples = false;  // reaches the last known token: its last row's logits pick the next one
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // decodes first (count 1), then prefill chunks
  std::vector<uint64_t> preempted;     // sent back to waiting by this step
  int64_t tokens = 0;                  // sum of the chunks' counts
  bool empty() const { return chunks.empty(); }
};

struct SchedulerStats {
  int64_t running = 0, waiting = 0;
  int64_t blocks_total = 0, blocks_free = 0, blocks_cached = 0;
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up at first admission (caching on)
  int64_t prefix_hit_tokens = 0;    // of which found in the cache
  int64_t preemptions = 0;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options)
      : options_(options), blocks_(options.n_blocks, options.block_size) {
    if (options.max_num_seqs < 1) fail("max_num_seqs must be at least 1");
    if (options.max_num_batched_tokens < options.max_num_seqs)
      fail("max_num_batched_tokens (", options.max_num_batched_tokens,
           ") must be at least max_num_seqs (", options.max_num_seqs,
           "): every running sequence decodes one token per step");
    if (options.watermark_blocks < 0) fail("the block watermark must not be negative");
  }

  const SchedulerOptions& options() const { return options_; }

  // A new sequence joins the back of the queue. `cache_salt` keeps its cached blocks apart from
  // those of requests with another salt (0: shared with every request of salt 0). With
  // `read_cache` off it never takes blocks from the prefix cache (its computed blocks still go
  // there for others): every position of it is computed, e.g. for the logits of every position.
  void add(uint64_t id, std::vector<int32_t> prompt, uint64_t cache_salt = 0,
           bool read_cache = true) {
    if (prompt.empty()) fail("scheduler: sequence ", id, " has no tokens");
    if (seqs_.contains(id)) fail("scheduler: sequence ", id, " added twice");
    Seq s;
    s.id = id;
    s.tokens = std::move(prompt);
    s.salt = cache_salt;
    s.read_cache = read_cache;
    seqs_.emplace(id, std::move(s));
    waiting_.push_back(id);
  }

  // Ends a sequence (finished or aborted): its blocks go back. Unknown ids: false.
  bool remove(uint64_t id) {
    const auto it = seqs_.find(id);
    if (it == seqs_.end()) return false;
    blocks_.release(it->second.blocks);
    std::erase(running_, id);
    std::erase(waiting_, id);
    seqs_.erase(it);
    return true;
  }

  StepPlan schedule() {
    StepPlan plan;
    int64_t budget = options_.max_num_batched_tokens;
    for (size_t i = 0; i < running_.size() && budget > 0;) {  // 1. decodes
      Seq& s = seq(running_[i]);
      if (s.pending() != 1) {
        ++i;
        continue;
      }
      if (!grow(s, s.computed + 1, plan)) break;  // s itself was preempted: it was the last
      add_chunk(plan, s, 1, budget);
      ++i;
    }
    for (uint64_t id : running_) {  // 2. prefill chunks
      if (budget == 0) break;
      Seq& s = seq(id);
      if (s.pending() > 1) add_chunk(plan, s, std::min(s.pending(), budget), budget);
    }
    while (plan.preempted.empty() && budget > 0 && !waiting_.empty() &&  // 3. admission
           static_cast<int64_t>(running_.size()) < options_.max_num_seqs) {
      Seq& s = seq(waiting_.front());
      if (!admit(s)) break;
      waiting_.pop_front();
      running_.push_back(s.id);
      add_chunk(plan, s, std::min(s.pending(), budget), budget);
    }
    return plan;
  }

  // The plan ran: each chunk's tokens are in the cache now, and full blocks become findable.
  void complete(const StepPlan& plan) {
    for (const ScheduledChunk& c : plan.chunks) {
      Seq& s = seq(c.id);
      if (c.begin != s.computed || c.begin + c.count > static_cast<int64_t>(s.tokens.size()))
        fail("scheduler: a chunk of sequence ", c.id, " does not continue its tokens");
      s.computed += c.count;
      register_full_blocks(s);
    }
  }

  // The token sampled after the sequence's last known one.
  void append(uint64_t id, int32_t token) {
    Seq& s = seq(id);
    if (s.computed != static_cast<int64_t>(s.tokens.size()))
      fail("scheduler: sequence ", id, " gets a token before its last one was computed");
    s.tokens.push_back(token);
  }

  bool contains(uint64_t id) const { return seqs_.contains(id); }
  std::span<const int32_t> tokens(uint64_t id) const { return seq(id).tokens; }
  std::span<const int32_t> block_table(uint64_t id) const { return seq(id).blocks; }
  // Tokens found in the prefix cache when the sequence was first admitted.
  int64_t cached_tokens(uint64_t id) const { return seq(id).cached_tokens; }
  const std::vector<uint64_t>& running() const { return running_; }
  const std::deque<uint64_t>& waiting() const { return waiting_; }
  const BlockManager& blocks() const { return blocks_; }

  SchedulerStats stats() const {
    SchedulerStats st = stats_;
    st.running = static_cast<int64_t>(running_.size());
    st.waiting = static_cast<int64_t>(waiting_.size());
    st.blocks_total = blocks_.total();
    st.blocks_free = blocks_.free_count();
    st.blocks_cached = blocks_.cached_count();
    return st;
  }

  // Every rule that must hold between steps; fails naming the first broken one. For tests.
  void check_invariants() const {
    blocks_.check_invariants();
    const int64_t bs = options_.block_size;
    if (static_cast<int64_t>(running_.size()) > options_.max_num_seqs)
      fail(running_.size(), " sequences run, max_num_seqs is ", options_.max_num_seqs);
    if (running_.size() + waiting_.size() != seqs_.size())
      fail(seqs_.size(), " sequences known, ", running_.size(), " running + ", waiting_.size(),
           " waiting");
    std::unordered_map<int32_t, int32_t> holders;
    for (const auto& [id, s] : seqs_) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      const int64_t capacity = static_cast<int64_t>(s.blocks.size()) * bs;
      const bool running = std::find(running_.begin(), running_.end(), id) != running_.end();
      if (!running && (!s.blocks.empty() || s.computed != 0))
        fail("waiting sequence ", id, " holds ", s.blocks.size(), " blocks, ", s.computed,
             " computed");
      if (running && (capacity < s.computed || capacity < n - 1 || s.computed > n))
        fail("sequence ", id, ": ", n, " tokens, ", s.computed, " computed, ", s.blocks.size(),
             " blocks");
      for (int32_t b : s.blocks) ++holders[b];
    }
    for (int32_t b = 0; b < blocks_.total(); ++b) {
      const auto it = holders.find(b);
      const int32_t held = it == holders.end() ? 0 : it->second;
      if (held != blocks_.ref_count(b))
        fail("block ", b, " is in ", held, " block tables, reference count ", blocks_.ref_count(b));
      if (held > 1 && !blocks_.is_cached(b)) fail("block ", b, " is shared but not a cached block");
    }
  }

 private:
  struct Seq {
    uint64_t id = 0;
    std::vector<int32_t> tokens;   // known: the prompt, then the sampled ids
    int64_t computed = 0;          // tokens whose K/V are in the cache
    std::vector<int32_t> blocks;   // block table
    std::vector<uint64_t> hashes;  // chain hashes of the full blocks of `tokens` seen so far
    int64_t registered = 0;        // leading blocks already offered to the prefix cache
    int64_t cached_tokens = 0;     // found in the prefix cache at the first admission
    bool admitted = false;         // at least once (a preempted sequence comes back)
    uint64_t salt = 0;
    bool read_cache = true;  // admission may share cached blocks
    int64_t pending() const { return static_cast<int64_t>(tokens.size()) - computed; }
  };

  Seq& seq(uint64_t id) {
    const auto it = seqs_.find(id);
    if (it == seqs_.end()) fail("scheduler: no sequence ", id);
    return it->second;
  }
  const Seq& seq(uint64_t id) const {
    const auto it = seqs_.find(id);
    if (it == seqs_.end()) fail("scheduler: no sequence ", id);
    return it->second;
  }

  void add_chunk(StepPlan& plan, const Seq& s, int64_t count, int64_t& budget) {
    plan.chunks.push_back({s.id, s.computed, count, count == s.pending()});
    plan.tokens += count;
    budget -= count;
  }

  // Blocks for `positions` positions of running sequence s, preempting the most recently
  // admitted running sequences while none are free. False when s itself had to go.
  bool grow(Seq& s, int64_t positions, StepPlan& plan) {
    const int64_t bs = options_.block_size;
    while (static_cast<int64_t>(s.blocks.size()) * bs < positions) {
      if (auto block = blocks_.allocate(1)) {
        s.blocks.push_back(block->front());
        continue;
      }
      const uint64_t victim = running_.back();
      preempt(seq(victim), plan);
      if (victim == s.id) return false;
    }
    return true;
  }

  void preempt(Seq& s, StepPlan& plan) {
    blocks_.release(s.blocks);
    s.blocks.clear();
    s.computed = 0;
    s.registered = 0;
    std::erase(running_, s.id);
    waiting_.push_front(s.id);  // several in one step: the older one ends up first
    plan.preempted.push_back(s.id);
    ++stats_.preemptions;
  }

  // Takes the blocks waiting sequence s needs to start (see the top). False: not now.
  bool admit(Seq& s) {
    const int64_t bs = options_.block_size, n = static_cast<int64_t>(s.tokens.size());
    std::vector<int32_t> hits;
    const bool lookup = options_.prefix_caching && s.read_cache;
    if (lookup) {
      // At least the last token is fed again: its logits pick the next token.
      const int64_t full = (n - 1) / bs;
      extend_hashes(s, full);
      hits = blocks_.lookup(std::span(s.hashes).first(static_cast<size_t>(full)), s.tokens, s.salt);
    }
    const int64_t fresh = (n + bs - 1) / bs - static_cast<int64_t>(hits.size());
    const int64_t reserve = running_.empty() ? 0 : options_.watermark_blocks;
    if (fresh + blocks_.free_among(hits) + reserve > blocks_.free_count()) return false;
    blocks_.acquire(hits);
    std::vector<int32_t> table = std::move(hits);
    const auto more = blocks_.allocate(fresh);
    if (!more) fail("scheduler: ", fresh, " free blocks counted but not there");
    table.insert(table.end(), more->begin(), more->end());
    const int64_t hit_tokens = static_cast<int64_t>(table.size() - more->size()) * bs;
    s.blocks = std::move(table);
    s.computed = hit_tokens;
    s.registered = hit_tokens / bs;
    if (!s.admitted && lookup) {        // prompts only: not the recompute of a
      stats_.prefix_query_tokens += n;  // preempted sequence
      stats_.prefix_hit_tokens += hit_tokens;
    }
    if (!s.admitted) s.cached_tokens = hit_tokens;
    s.admitted = true;
    return true;
  }

  // Chain hashes for the first `n_blocks` blocks of s's tokens (all known).
  void extend_hashes(Seq& s, int64_t n_blocks) {
    const size_t bs = static_cast<size_t>(options_.block_size);
    while (static_cast<int64_t>(s.hashes.size()) < n_blocks) {
      const size_t i = s.hashes.size();
      const uint64_t parent = i == 0 ? s.salt : s.hashes[i - 1];
      s.hashes.push_back(kv_block_hash(parent, std::span(s.tokens).subspan(i * bs, bs), s.salt));
    }
  }

  void register_full_blocks(Seq& s) {
    if (!options_.prefix_caching) return;
    const int64_t bs = options_.block_size, full = s.computed / bs;
    extend_hashes(s, full);
    for (; s.registered < full; ++s.registered) {
      const size_t i = static_cast<size_t>(s.registered);
      const uint64_t parent = i == 0 ? s.salt : s.hashes[i - 1];
      blocks_.register_block(
          s.blocks[i], s.hashes[i], parent,
          std::span(s.tokens).subspan(i * static_cast<size_t>(bs), static_cast<size_t>(bs)));
    }
  }

  SchedulerOptions options_;
  BlockManager blocks_;
  std::unordered_map<uint64_t, Seq> seqs_;
  std::vector<uint64_t> running_;  // admission order
  std::deque<uint64_t> waiting_;
  SchedulerStats stats_;
};

}  // namespace hllm
