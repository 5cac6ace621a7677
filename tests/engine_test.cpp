// The continuous-batching engine (engine/engine.hpp over engine/engine_core.hpp) on the CPU with
// the tiny fixture model. The oracle is the plain single-sequence loop (reference_generate.hpp):
//   - a request's output does not depend on what runs beside it (greedy and seeded sampling,
//     different prompt lengths, prompts longer than one step's token budget);
//   - nor on preemption: 32 requests on a pool that holds a few at a time each produce exactly
//     their solo output;
//   - nor on the prefix cache: chat-style requests that share a long history produce the output
//     they produce with caching off, computing only what is new; a token changed in the middle
//     of a history is a miss from its block on;
//   - every KV block is free again afterwards; aborts and callbacks that stop end sequences early;
//   - requests that can never run are refused, a full queue says busy.
#include "hllm/engine/engine.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "hllm/cpu/backend.hpp"
#include "hllm/model/load.hpp"
#include "reference_generate.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

struct Outcome {
  std::vector<int32_t> ids;
  hllm::FinishReason finish = hllm::FinishReason::cancelled;
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  std::string error;
};

// Submits a request whose callbacks fill `out`; the future is ready at on_finish. `id` receives
// the engine's request id.
std::future<void> submit(hllm::Engine& engine, hllm::EngineRequest request, Outcome& out,
                         int64_t stop_after = -1, uint64_t* id = nullptr) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> ready = done->get_future();
  request.on_token = [&out, stop_after](int32_t id) {
    out.ids.push_back(id);
    return stop_after < 0 || static_cast<int64_t>(out.ids.size()) < stop_after;
  };
  request.on_finish = [&out, done](const hllm::RequestEnd& end) {
    out.finish = end.reason, out.prompt_tokens = end.prompt_tokens;
    out.completion_tokens = end.completion_tokens, out.cached_tokens = end.cached_tokens;
    out.error = end.error;
    done->set_value();
  };
  const uint64_t submitted = engine.submit(std::move(request));
  if (id != nullptr) *id = submitted;
  return ready;
}

std::vector<int32_t> random_prompt(std::mt19937& rng, size_t n, int32_t vocab) {
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = token(rng);
  return ids;
}

class EngineTest : public testing::Test {
 protected:
  EngineTest()
      : folder_(hllm::open_model_folder(MODEL_DIR)),
        backend_(2),
        model_(folder_.config, folder_.weights, backend_) {}

  hllm::EngineRequest request(std::vector<int32_t> prompt, int64_t max_tokens, uint64_t seed,
                              float temperature) const {
    hllm::EngineRequest r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = temperature;
    r.sampling.top_p = 0.9f;
    r.sampling.seed = seed;
    return r;
  }

  hllm::ModelFolder folder_;
  hllm::CpuBackend backend_;
  hllm::LlamaModel model_;
};

TEST_F(EngineTest, OutputsDoNotDependOnBatching) {
  constexpr int REQUESTS = 12;
  std::mt19937 rng(3);
  const int32_t vocab = static_cast<int32_t>(folder_.config.vocab_size);
  std::vector<hllm::EngineRequest> requests;
  for (int i = 0; i < REQUESTS; ++i) {
    requests.push_back(request(random_prompt(rng, 3 + 23 * i % 70, vocab), 6 + i % 9,
                               /*seed=*/100 + i, /*temperature=*/i % 2 == 0 ? 0.0f : 0.8f));
    if (i % 4 == 1) {  // penalties: sampled on the backend, checked against the host below (9)
      requests.back().sampling.repetition_penalty = 1.3f;
      requests.back().sampling.presence_penalty = 0.5f;
      requests.back().sampling.frequency_penalty = 0.25f;
    }
  }

  hllm::EngineOptions options;
  options.max_num_seqs = 8;             // 12 requests: some wait for a slot
  options.max_num_batched_tokens = 16;  // prompts of up to 72 tokens take several steps
  options.max_model_len = 128;
  std::vector<Outcome> alone(REQUESTS), together(REQUESTS);
  {
    hllm::Engine engine(model_, options);
    for (int i = 0; i < REQUESTS; ++i) submit(engine, requests[i], alone[i]).wait();
  }
  {
    hllm::Engine engine(model_, options);
    std::vector<std::future<void>> done;
    for (int i = 0; i < REQUESTS; ++i) done.push_back(submit(engine, requests[i], together[i]));
    for (auto& d : done) d.wait();
    const hllm::EngineStats stats = engine.stats();
    EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
    EXPECT_EQ(stats.running, 0);
    EXPECT_EQ(stats.finished, REQUESTS);
  }
  for (int i = 0; i < REQUESTS; ++i) {
    EXPECT_EQ(together[i].ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(alone[i].finish, hllm::FinishReason::length);
    EXPECT_EQ(alone[i].completion_tokens, requests[i].max_tokens);
    EXPECT_EQ(alone[i].prompt_tokens, static_cast<int64_t>(requests[i].prompt.size()));
    EXPECT_TRUE(alone[i].error.empty()) << alone[i].error;
  }

  // And the same as the plain single-sequence loop.
  for (int i = 0; i < REQUESTS; i += 3)
    EXPECT_EQ(hllm::test::reference_generate(model_, requests[i].prompt, requests[i].sampling,
                                             requests[i].max_tokens),
              alone[i].ids)
        << "request " << i;
}

TEST_F(EngineTest, PreemptionDoesNotChangeOutputs) {
  constexpr int REQUESTS = 32;
  std::mt19937 rng(7);
  const int32_t vocab = static_cast<int32_t>(folder_.config.vocab_size);
  std::vector<hllm::EngineRequest> requests;
  for (int i = 0; i < REQUESTS; ++i)
    requests.push_back(request(random_prompt(rng, 5 + 13 * i % 40, vocab), 20 + i % 25,
                               /*seed=*/500 + i, /*temperature=*/i % 3 == 0 ? 0.0f : 0.9f));

  std::vector<std::vector<int32_t>> expected;
  for (const hllm::EngineRequest& r : requests)
    expected.push_back(hllm::test::reference_generate(model_, r.prompt, r.sampling, r.max_tokens));

  // 32 requests of up to ~90 tokens on a pool of 128 positions: only a few fit at once, so
  // decodes that cross a block boundary find the pool empty and preempt the newest. With prefix
  // caching a resumed sequence mostly finds its own blocks again; without, it recomputes all.
  for (const bool caching : {true, false}) {
    hllm::EngineOptions options;
    options.max_num_seqs = 16;
    options.max_model_len = 128;
    options.kv_cache_tokens = 128;
    options.max_num_batched_tokens = 32;
    options.prefix_caching = caching;
    std::vector<Outcome> outs(REQUESTS);
    hllm::EngineStats stats;
    {
      hllm::Engine engine(model_, options);
      std::vector<std::future<void>> done;
      for (int i = 0; i < REQUESTS; ++i) done.push_back(submit(engine, requests[i], outs[i]));
      for (auto& d : done) d.wait();
      stats = engine.stats();
    }
    EXPECT_GT(stats.preemptions, 0) << "the pool was meant to be too small for every request";
    EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
    EXPECT_EQ(stats.finished, REQUESTS);
    for (int i = 0; i < REQUESTS; ++i) {
      EXPECT_EQ(outs[i].ids, expected[i]) << "request " << i << ", caching " << caching;
      EXPECT_EQ(outs[i].finish, hllm::FinishReason::length) << outs[i].error;
    }
  }
}

// Requests aborted while they wait for a slot, or before the engine thread saw them, end as
// cancelled with nothing generated, and leave every block free.
TEST_F(EngineTest, AbortsOfWaitingRequests) {
  hllm::EngineOptions options;
  options.max_model_len = 128;
  options.max_num_seqs = 1;
  hllm::Engine engine(model_, options);
  Outcome running, waiting, early;
  uint64_t waiting_id = 0, early_id = 0;
  auto running_done = submit(engine, request({1, 2, 3}, 100, 1, 0.0f), running);
  auto waiting_done = submit(engine, request({4, 5, 6}, 10, 1, 0.0f), waiting, -1, &waiting_id);
  auto early_done = submit(engine, request({7, 8, 9}, 10, 1, 0.0f), early, -1, &early_id);
  engine.abort(early_id);  // most likely still on its way to the engine thread
  engine.abort(waiting_id);
  waiting_done.wait();
  early_done.wait();
  running_done.wait();
  for (const Outcome* o : {&waiting, &early}) {
    EXPECT_EQ(o->finish, hllm::FinishReason::cancelled);
    EXPECT_TRUE(o->ids.empty());
    EXPECT_EQ(o->completion_tokens, 0);
  }
  EXPECT_EQ(running.finish, hllm::FinishReason::length);
  const hllm::EngineStats stats = engine.stats();
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
  EXPECT_EQ(stats.running + stats.waiting, 0);
  EXPECT_EQ(stats.finished, 3);
}

// Chat-style traffic: every request re-sends a shared 100-token history (a system prompt and
// earlier turns) plus its own new message. With the prefix cache the shared full blocks are
// computed once; the outputs must be the same as with caching off.
TEST_F(EngineTest, PrefixCacheSharesHistoriesWithoutChangingOutputs) {
  std::mt19937 rng(11);
  const int32_t vocab = static_cast<int32_t>(folder_.config.vocab_size);
  const std::vector<int32_t> history = random_prompt(rng, 100, vocab);
  std::vector<hllm::EngineRequest> requests;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> prompt = history;
    const std::vector<int32_t> message = random_prompt(rng, 3 + i, vocab);
    prompt.insert(prompt.end(), message.begin(), message.end());
    requests.push_back(request(prompt, 12, 900 + i, i % 2 == 0 ? 0.0f : 0.7f));
  }
  const auto run = [&](bool caching, std::vector<Outcome>& outs) {
    hllm::EngineOptions options;
    options.max_model_len = 256;
    options.prefix_caching = caching;
    hllm::Engine engine(model_, options);
    submit(engine, requests[0], outs[0]).wait();  // the first computes the history
    std::vector<std::future<void>> done;
    for (size_t i = 1; i < requests.size(); ++i)
      done.push_back(submit(engine, requests[i], outs[i]));
    for (auto& d : done) d.wait();
    return engine.stats();
  };
  std::vector<Outcome> cached(requests.size()), uncached(requests.size());
  const hllm::EngineStats with = run(true, cached);
  const hllm::EngineStats without = run(false, uncached);

  const int64_t shared = 100 / 16 * 16;  // full blocks of the history
  EXPECT_EQ(cached[0].cached_tokens, 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(cached[i].ids, uncached[i].ids) << "request " << i;
    EXPECT_EQ(uncached[i].cached_tokens, 0);
    if (i > 0) {
      EXPECT_GE(cached[i].cached_tokens, shared) << "request " << i;
    }
  }
  EXPECT_TRUE(with.prefix_caching);
  EXPECT_GE(with.prefix_hit_tokens, 7 * shared);
  EXPECT_GT(with.kv_blocks_cached, 0);
  EXPECT_EQ(with.kv_blocks_free, with.kv_blocks_total);  // cached blocks are free to evict
  EXPECT_FALSE(without.prefix_caching);
  EXPECT_EQ(without.prefix_hit_tokens, 0);
  EXPECT_EQ(without.kv_blocks_cached, 0);
}

// A token changed at position 40 of a history: blocks 0 and 1 (positions 0-31) still match,
// block 2 on must be computed again, and the output is that of the changed prompt.
TEST_F(EngineTest, PrefixCacheMissesFromAChangedBlockOn) {
  std::mt19937 rng(13);
  const int32_t vocab = static_cast<int32_t>(folder_.config.vocab_size);
  const std::vector<int32_t> original = random_prompt(rng, 90, vocab);
  std::vector<int32_t> changed = original;
  changed[40] = (changed[40] + 1) % vocab;
  hllm::EngineOptions options;
  options.max_model_len = 128;
  hllm::Engine engine(model_, options);
  Outcome first, again, edited;
  submit(engine, request(original, 8, 1, 0.0f), first).wait();
  submit(engine, request(original, 8, 1, 0.0f), again).wait();
  submit(engine, request(changed, 8, 1, 0.0f), edited).wait();
  EXPECT_EQ(first.cached_tokens, 0);
  EXPECT_EQ(again.cached_tokens, 80);  // (90 - 1) / 16 full blocks; the last token is re-fed
  EXPECT_EQ(edited.cached_tokens, 32);
  EXPECT_EQ(again.ids, first.ids);
  hllm::SamplingParams greedy;
  greedy.temperature = 0.0f;
  EXPECT_EQ(edited.ids, hllm::test::reference_generate(model_, changed, greedy, 8));
}

TEST_F(EngineTest, StopIdsAbortAndCallbacksEndSequences) {
  hllm::EngineOptions options;
  options.max_model_len = 96;
  hllm::Engine engine(model_, options);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5};

  // Greedy output first, then the same request with its 3rd token as a stop id.
  Outcome plain;
  submit(engine, request(prompt, 10, 1, 0.0f), plain).wait();
  ASSERT_EQ(plain.ids.size(), 10u);
  hllm::EngineRequest stopping = request(prompt, 10, 1, 0.0f);
  stopping.stop_ids = {plain.ids[2]};
  Outcome stopped;
  submit(engine, stopping, stopped).wait();
  EXPECT_EQ(stopped.finish, hllm::FinishReason::stop);
  const auto first_stop = std::find(plain.ids.begin(), plain.ids.end(), plain.ids[2]);
  EXPECT_EQ(stopped.ids, std::vector<int32_t>(plain.ids.begin(), first_stop));
  stopping.ignore_eos = true;
  Outcome ignored;
  submit(engine, stopping, ignored).wait();
  EXPECT_EQ(ignored.ids, plain.ids);

  // A callback that says stop after 4 tokens.
  Outcome cut;
  submit(engine, request(prompt, 50, 1, 0.0f), cut, /*stop_after=*/4).wait();
  EXPECT_EQ(cut.finish, hllm::FinishReason::cancelled);
  EXPECT_EQ(cut.ids.size(), 4u);

  // abort() of a long request.
  Outcome aborted;
  hllm::EngineRequest r = request(prompt, 80, 1, 0.0f);
  uint64_t id = 0;
  auto done = submit(engine, r, aborted, -1, &id);
  engine.abort(1'000'000);  // unknown ids are ignored
  engine.abort(id);
  done.wait();
  EXPECT_EQ(aborted.finish, hllm::FinishReason::cancelled);
  EXPECT_LT(aborted.ids.size(), 80u);
  const hllm::EngineStats stats = engine.stats();
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
}

TEST_F(EngineTest, RefusesWhatCanNeverRun) {
  hllm::EngineOptions options;
  options.max_model_len = 64;
  hllm::Engine engine(model_, options);
  EXPECT_THROW(engine.submit(request({}, 4, 1, 0.0f)), hllm::Error);
  EXPECT_THROW(engine.submit(request({1, 2}, 63, 1, 0.0f)), hllm::Error);  // 65 > 64
  EXPECT_THROW(engine.submit(request({1, 2}, 0, 1, 0.0f)), hllm::Error);
  EXPECT_THROW(engine.submit(request({1, 99999}, 4, 1, 0.0f)), hllm::Error);
  hllm::EngineOptions tiny_pool;
  tiny_pool.max_model_len = 64;
  tiny_pool.kv_cache_tokens = 32;
  EXPECT_THROW(hllm::Engine(model_, tiny_pool), hllm::Error);
}

TEST_F(EngineTest, FullQueueSaysBusy) {
  hllm::EngineOptions options;
  options.max_model_len = 96;
  options.max_num_seqs = 1;
  options.max_waiting = 2;
  hllm::Engine engine(model_, options);
  std::vector<Outcome> outs(8);
  std::vector<std::future<void>> done;
  int busy = 0;
  for (Outcome& o : outs) {
    try {
      done.push_back(submit(engine, request({1, 2, 3}, 40, 1, 0.0f), o));
    } catch (const hllm::EngineBusy&) {
      ++busy;
    }
  }
  EXPECT_GE(busy, 1);
  for (auto& d : done) d.wait();
  EXPECT_EQ(engine.stats().kv_blocks_free, engine.stats().kv_blocks_total);
}

}  // namespace
