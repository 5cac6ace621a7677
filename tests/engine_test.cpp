// The continuous-batching engine (engine/engine.hpp) on the CPU with the tiny fixture model:
//   - a request's output does not depend on what runs beside it (greedy and seeded sampling,
//     different prompt lengths, prompts longer than one prefill chunk), and equals the plain
//     single-sequence generation loop's;
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
#include "hllm/engine/generate.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

struct Outcome {
  std::vector<int32_t> ids;
  hllm::FinishReason finish = hllm::FinishReason::cancelled;
  int64_t prompt_tokens = 0, completion_tokens = 0;
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
  request.on_finish = [&out, done](hllm::FinishReason r, int64_t prompt, int64_t completion,
                                   const std::string& error) {
    out.finish = r, out.prompt_tokens = prompt, out.completion_tokens = completion;
    out.error = error;
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
  for (int i = 0; i < REQUESTS; ++i)
    requests.push_back(request(random_prompt(rng, 3 + 23 * i % 70, vocab), 6 + i % 9,
                               /*seed=*/100 + i, /*temperature=*/i % 2 == 0 ? 0.0f : 0.8f));

  hllm::EngineOptions options;
  options.max_num_seqs = 8;    // 12 requests: some wait for a slot
  options.prefill_chunk = 16;  // prompts of up to 72 tokens take several chunks
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

  // And the same as the single-sequence loop `hllm run` uses.
  for (int i = 0; i < REQUESTS; i += 3) {
    hllm::KvCache cache = model_.new_cache(128);
    std::vector<int32_t> cached;
    hllm::Sampler sampler(requests[i].sampling);
    hllm::GenerationOptions gen;
    gen.max_new_tokens = requests[i].max_tokens;
    const hllm::GenerationResult r = hllm::generate(model_, cache, requests[i].prompt, cached,
                                                    sampler, gen, [](int32_t) { return true; });
    EXPECT_EQ(r.ids, alone[i].ids) << "request " << i;
  }
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
