// The scheduler and block manager (engine/scheduler.hpp, engine/block_manager.hpp) alone, with no
// model: a test plays the engine, running each plan by hand (complete(), then a token for every
// chunk that samples). Checked: admission under scarce blocks, blocks taken as sequences grow,
// preemption of the newest and its resumption, decodes before prefill chunks within the token
// budget, prefix-cache hits, sharing and LRU eviction, salts, and — over thousands of random
// schedules of arrivals, aborts and finishes — every invariant after every step, no starvation,
// and every block free at the end.
#include "hllm/engine/scheduler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/block_manager.hpp"

namespace {

using hllm::BlockManager;
using hllm::ScheduledChunk;
using hllm::Scheduler;
using hllm::SchedulerOptions;
using hllm::StepPlan;

std::vector<int32_t> iota_tokens(int32_t n, int32_t first = 1) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = first + i;
  return t;
}

SchedulerOptions small(int64_t blocks, int64_t budget = 64, int64_t seqs = 8) {
  SchedulerOptions o;
  o.n_blocks = blocks;
  o.block_size = 4;  // small blocks: boundaries come quickly
  o.max_num_batched_tokens = budget;
  o.max_num_seqs = seqs;
  o.watermark_blocks = 1;
  return o;
}

// Every block a chunk writes (positions begin .. begin + count - 1) belongs to its sequence alone
// and is not findable in the prefix cache: shared and cached blocks are never written.
void expect_private_writes(const Scheduler& s, const StepPlan& plan) {
  const int64_t bs = s.options().block_size;
  for (const ScheduledChunk& c : plan.chunks) {
    const auto table = s.block_table(c.id);
    for (int64_t b = c.begin / bs; b <= (c.begin + c.count - 1) / bs; ++b) {
      ASSERT_LT(b, static_cast<int64_t>(table.size())) << "sequence " << c.id;
      EXPECT_EQ(s.blocks().ref_count(table[b]), 1) << "sequence " << c.id << " block " << b;
      EXPECT_FALSE(s.blocks().is_cached(table[b])) << "sequence " << c.id << " block " << b;
    }
  }
}

// Runs a plan as the engine would: complete it, then token 7 for every chunk that samples.
void run(Scheduler& s, const StepPlan& plan, int32_t token = 7) {
  expect_private_writes(s, plan);
  s.complete(plan);
  for (const ScheduledChunk& c : plan.chunks)
    if (c.samples) s.append(c.id, token);
  s.check_invariants();
}

const ScheduledChunk* chunk_of(const StepPlan& plan, uint64_t id) {
  for (const ScheduledChunk& c : plan.chunks)
    if (c.id == id) return &c;
  return nullptr;
}

TEST(BlockManager, CountsReferencesAndEvictsLeastRecentlyFreedFirst) {
  BlockManager m(4, 2);
  auto a = m.allocate(2), b = m.allocate(2);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(m.allocate(1));
  EXPECT_EQ(m.free_count(), 0);
  const std::vector<int32_t> t01 = {1, 2}, t23 = {3, 4};
  const uint64_t h0 = hllm::kv_block_hash(0, t01, 0), h1 = hllm::kv_block_hash(h0, t23, 0);
  EXPECT_TRUE(m.register_block((*a)[0], h0, 0, t01));
  EXPECT_TRUE(m.register_block((*a)[1], h1, h0, t23));
  EXPECT_FALSE(m.register_block((*b)[0], h0, 0, t01)) << "the content is cached already";
  m.acquire(*a);  // a second holder
  EXPECT_EQ(m.ref_count((*a)[0]), 2);
  m.release(*a);
  EXPECT_EQ(m.free_count(), 0) << "still held once";
  m.release(*a);
  m.release(*b);
  EXPECT_EQ(m.free_count(), 4);
  m.check_invariants();

  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const std::vector<uint64_t> hashes = {h0, h1};
  EXPECT_EQ(m.lookup(hashes, tokens, 0), *a);
  // b's uncached blocks are reused before a's cached ones; a's last block before its first.
  auto next = m.allocate(3);
  ASSERT_TRUE(next);
  EXPECT_EQ((*next)[0], (*b)[0]);
  EXPECT_EQ((*next)[1], (*b)[1]);
  EXPECT_EQ((*next)[2], (*a)[1]);
  EXPECT_EQ(m.lookup(hashes, tokens, 0), std::vector<int32_t>{(*a)[0]});
  EXPECT_EQ(m.cached_count(), 1);
  m.check_invariants();
}

TEST(BlockManager, LookupChecksTokensAndParentNotOnlyTheHash) {
  BlockManager m(2, 2);
  auto a = m.allocate(1);
  const std::vector<int32_t> tokens = {5, 6};
  ASSERT_TRUE(m.register_block((*a)[0], 42, 0, tokens));
  const std::vector<uint64_t> hashes = {42};
  EXPECT_EQ(m.lookup(hashes, std::vector<int32_t>{5, 6}, 0).size(), 1u);
  EXPECT_TRUE(m.lookup(hashes, std::vector<int32_t>{5, 7}, 0).empty()) << "a hash collision";
  EXPECT_TRUE(m.lookup(hashes, std::vector<int32_t>{5, 6}, 1).empty()) << "another salt";
  EXPECT_THROW(m.release(std::vector<int32_t>{(*a)[0], (*a)[0]}), hllm::Error);
}

TEST(Scheduler, AdmitsOnThePromptAndGrowsOnDemand) {
  Scheduler s(small(/*blocks=*/6));
  s.add(1, iota_tokens(8));  // 2 blocks
  s.add(2, iota_tokens(8, 100));
  s.add(3, iota_tokens(8, 200));  // would need 2 more + the watermark: waits
  StepPlan plan = s.schedule();
  ASSERT_EQ(plan.chunks.size(), 2u);
  EXPECT_EQ(s.running().size(), 2u);
  EXPECT_EQ(s.blocks().free_count(), 2);
  EXPECT_TRUE(chunk_of(plan, 1)->samples);
  run(s, plan);
  // Both decode position 8, which starts a third block each: the pool runs dry, no preemption.
  plan = s.schedule();
  ASSERT_EQ(plan.chunks.size(), 2u);
  EXPECT_TRUE(plan.preempted.empty());
  EXPECT_EQ(s.block_table(1).size(), 3u);
  EXPECT_EQ(s.blocks().free_count(), 0);
  EXPECT_EQ(chunk_of(plan, 1)->count, 1);
  run(s, plan);
}

TEST(Scheduler, PreemptsTheNewestAndResumesItFirst) {
  Scheduler s(small(/*blocks=*/4, 64, 8));
  s.add(1, iota_tokens(4));
  s.add(2, iota_tokens(3, 50));
  StepPlan plan = s.schedule();
  ASSERT_EQ(plan.chunks.size(), 2u);
  run(s, plan);
  // 1 holds 1 block (4 tokens) and decodes position 4: a new block. 2 fits in its block.
  plan = s.schedule();
  run(s, plan);
  EXPECT_EQ(s.blocks().free_count(), 1);
  for (int i = 0; i < 3; ++i) run(s, s.schedule());  // 1 reaches position 7, 2 fills block 1
  // Next: 1 needs its third block (the last free); 2 needs a second one: none left, so 2 — the
  // newest — is preempted.
  for (int step = 0; step < 8 && s.stats().preemptions == 0; ++step) run(s, s.schedule());
  ASSERT_EQ(s.stats().preemptions, 1);
  EXPECT_EQ(s.waiting().front(), 2u);
  EXPECT_EQ(s.running(), std::vector<uint64_t>{1});
  const size_t known = s.tokens(2).size();
  EXPECT_GT(known, 3u) << "the generated tokens stay with the sequence";
  s.remove(1);  // the old one ends: 2 comes back and recomputes prompt + generated
  plan = s.schedule();
  const ScheduledChunk* c = chunk_of(plan, 2);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->begin + c->count, static_cast<int64_t>(known));
  EXPECT_TRUE(c->samples);
  run(s, plan);
  s.remove(2);
  EXPECT_EQ(s.blocks().free_count(), 4);
}

TEST(Scheduler, DecodesComeFirstAndPrefillsShareTheRestOfTheBudget) {
  Scheduler s(small(/*blocks=*/64, /*budget=*/10, /*seqs=*/4));
  s.add(1, iota_tokens(3));
  s.add(2, iota_tokens(3, 20));
  run(s, s.schedule());  // both prefilled, a token each pending
  s.add(3, iota_tokens(30, 40));
  StepPlan plan = s.schedule();
  ASSERT_EQ(plan.chunks.size(), 3u);
  EXPECT_EQ(plan.chunks[0].id, 1u);
  EXPECT_EQ(plan.chunks[1].id, 2u);
  EXPECT_EQ(plan.chunks[2].id, 3u);
  EXPECT_EQ(plan.chunks[2].count, 8);  // 10 - 2 decodes
  EXPECT_FALSE(plan.chunks[2].samples);
  EXPECT_EQ(plan.tokens, 10);
  run(s, plan);
  int steps = 1;
  for (; s.tokens(3).size() == 30; ++steps) {
    plan = s.schedule();
    EXPECT_LE(plan.tokens, 10);
    EXPECT_EQ(plan.chunks[0].count, 1);  // the decodes never wait for the prompt
    EXPECT_EQ(plan.chunks[1].count, 1);
    run(s, plan);
  }
  EXPECT_EQ(steps, 4);  // 30 prompt tokens at 8 per step
  EXPECT_THROW(Scheduler(small(64, /*budget=*/3, /*seqs=*/4)), hllm::Error);
}

TEST(Scheduler, SharesCachedPrefixesAndEvictsThemWhenMemoryIsNeeded) {
  Scheduler s(small(/*blocks=*/8));
  const std::vector<int32_t> history = iota_tokens(13);  // 3 full blocks + 1 token
  s.add(1, history);
  run(s, s.schedule());
  s.remove(1);
  EXPECT_EQ(s.blocks().cached_count(), 3);
  EXPECT_EQ(s.blocks().free_count(), 8);

  std::vector<int32_t> longer = history;
  longer.insert(longer.end(), {90, 91, 92});
  s.add(2, longer);
  s.add(3, longer);
  StepPlan plan = s.schedule();
  EXPECT_EQ(s.cached_tokens(2), 12);
  EXPECT_EQ(s.cached_tokens(3), 12);
  EXPECT_EQ(chunk_of(plan, 2)->begin, 12);
  EXPECT_EQ(s.block_table(2)[0], s.block_table(3)[0]);
  EXPECT_EQ(s.blocks().ref_count(s.block_table(2)[0]), 2);
  run(s, plan);
  EXPECT_EQ(s.stats().prefix_hit_tokens, 24);
  EXPECT_EQ(s.stats().prefix_query_tokens, 13 + 16 + 16);
  s.remove(2);
  s.remove(3);

  // A different sequence that needs the whole pool evicts the cached content.
  s.add(4, iota_tokens(32, 500));
  run(s, s.schedule());
  EXPECT_EQ(s.blocks().cached_count(), 8);  // its own 8 full blocks, no others
  s.remove(4);
  s.add(5, history);
  run(s, s.schedule());
  EXPECT_EQ(s.cached_tokens(5), 0);
}

TEST(Scheduler, SaltsKeepCachesApart) {
  Scheduler s(small(/*blocks=*/16));
  s.add(1, iota_tokens(9), /*cache_salt=*/1);
  run(s, s.schedule());
  s.remove(1);
  s.add(2, iota_tokens(9), /*cache_salt=*/2);
  s.add(3, iota_tokens(9), /*cache_salt=*/1);
  run(s, s.schedule());
  EXPECT_EQ(s.cached_tokens(2), 0);
  EXPECT_EQ(s.cached_tokens(3), 8);
}

// A sequence added with read_cache off computes every position although the cache holds its
// prefix (it needs their logits); its blocks still serve others afterwards.
TEST(Scheduler, ReadCacheOffComputesEveryPosition) {
  Scheduler s(small(/*blocks=*/16));
  s.add(1, iota_tokens(13));
  run(s, s.schedule());
  s.remove(1);
  ASSERT_EQ(s.blocks().cached_count(), 3);
  const int64_t queried = s.stats().prefix_query_tokens;
  s.add(2, iota_tokens(13), /*cache_salt=*/0, /*read_cache=*/false);
  StepPlan plan = s.schedule();
  EXPECT_EQ(chunk_of(plan, 2)->begin, 0);
  EXPECT_EQ(chunk_of(plan, 2)->count, 13);
  EXPECT_EQ(s.cached_tokens(2), 0);
  EXPECT_EQ(s.stats().prefix_query_tokens, queried);  // no lookup: not a miss either
  run(s, plan);
  EXPECT_EQ(s.blocks().cached_count(), 3);  // the same content: not registered twice
  s.add(3, iota_tokens(13));
  run(s, s.schedule());
  EXPECT_EQ(s.cached_tokens(3), 12);
}

// Thousands of random schedules: arrivals with prompts drawn from a few shared prefixes, random
// completion lengths, aborts of running and waiting sequences, pools from tight to roomy, with
// and without prefix caching. After every step every invariant holds; the oldest sequence always
// progresses; when all have ended every block is free.
TEST(Scheduler, RandomSchedulesKeepEveryInvariant) {
  std::mt19937 rng(2024);
  int64_t total_preemptions = 0, total_hits = 0, total_steps = 0;
  for (int round = 0; round < 300; ++round) {
    SchedulerOptions o;
    o.block_size = 1 << std::uniform_int_distribution<int>(0, 3)(rng);  // 1..8
    const int64_t max_len = 40;
    o.n_blocks = (max_len + o.block_size - 1) / o.block_size +
                 std::uniform_int_distribution<int64_t>(0, 30)(rng);
    o.max_num_seqs = std::uniform_int_distribution<int64_t>(1, 8)(rng);
    o.max_num_batched_tokens = o.max_num_seqs + std::uniform_int_distribution<int64_t>(0, 24)(rng);
    o.watermark_blocks = std::uniform_int_distribution<int64_t>(0, 2)(rng);
    o.prefix_caching = rng() % 4 != 0;
    Scheduler s(o);

    std::vector<std::vector<int32_t>> prefixes;
    for (int p = 0; p < 3; ++p) prefixes.push_back(iota_tokens(12, 1000 * (p + 1)));
    std::map<uint64_t, int64_t> left;  // tokens each live sequence still generates
    uint64_t next_id = 0;
    const int arrivals = std::uniform_int_distribution<int>(5, 40)(rng);
    int arrived = 0, quiet = 0;
    while (arrived < arrivals || !left.empty()) {
      if (arrived < arrivals && rng() % 3 == 0) {
        const auto& prefix = prefixes[rng() % prefixes.size()];
        std::vector<int32_t> prompt(
            prefix.begin(), prefix.begin() + std::uniform_int_distribution<int>(0, 12)(rng));
        const int extra = std::uniform_int_distribution<int>(1, 10)(rng);
        for (int i = 0; i < extra; ++i) prompt.push_back(static_cast<int32_t>(rng() % 50));
        const int64_t room = max_len - static_cast<int64_t>(prompt.size());
        s.add(++next_id, prompt, rng() % 2);
        left[next_id] = std::uniform_int_distribution<int64_t>(1, room)(rng);
        ++arrived;
      }
      if (!left.empty() && rng() % 25 == 0) {  // an abort, running or waiting
        auto it = left.begin();
        std::advance(it, rng() % left.size());
        ASSERT_TRUE(s.remove(it->first));
        left.erase(it);
      }
      const uint64_t oldest = s.running().empty() ? 0 : s.running().front();
      const StepPlan plan = s.schedule();
      ASSERT_LE(plan.tokens, o.max_num_batched_tokens);
      std::vector<uint64_t> seen;
      for (const ScheduledChunk& c : plan.chunks) {
        ASSERT_EQ(std::count(seen.begin(), seen.end(), c.id), 0) << "a sequence twice in a step";
        seen.push_back(c.id);
      }
      expect_private_writes(s, plan);
      s.complete(plan);
      for (const ScheduledChunk& c : plan.chunks) {
        if (!c.samples) continue;
        if (--left[c.id] == 0) {
          s.remove(c.id);
          left.erase(c.id);
        } else {
          s.append(c.id, static_cast<int32_t>(rng() % 50));
        }
      }
      ASSERT_NO_THROW(s.check_invariants()) << "round " << round;
      // The oldest running sequence is never preempted and always advances.
      if (oldest && s.contains(oldest)) {
        ASSERT_EQ(s.running().front(), oldest);
        ASSERT_NE(chunk_of(plan, oldest), nullptr) << "round " << round;
      }
      quiet = plan.empty() ? quiet + 1 : 0;
      ASSERT_LT(quiet, 50) << "nothing scheduled for 50 steps with work left (round " << round
                           << ")";
      ++total_steps;
    }
    EXPECT_EQ(s.blocks().free_count(), o.n_blocks);
    EXPECT_EQ(s.stats().running + s.stats().waiting, 0);
    total_preemptions += s.stats().preemptions;
    total_hits += s.stats().prefix_hit_tokens;
  }
  // The random pools were tight enough to preempt and the prefixes shared enough to hit.
  EXPECT_GT(total_preemptions, 100);
  EXPECT_GT(total_hits, 1000);
  EXPECT_GT(total_steps, 10000);
}

}  // namespace
