// The engine's per-request hooks (engine/request.hpp) on the CPU with the tiny fixture model: the
// logits processor, logprobs of emitted ids and prompt logprobs. The oracle is the Hugging Face
// golden (tests/data, golden.base: input_ids [200] and the logits of every position [200, 512]):
//   - logprobs are log-softmax of the raw logits: with a processor that forces the golden ids
//     and sampling transforms that would change any later distribution, each emitted id's logprob
//     and top ids are the golden's;
//   - prompt logprobs at every position are the golden's, and the same with a warm prefix cache
//     (not read for such a request), chunked prefill, and preemption (each position once);
//   - a processor that allows a few ids yields only those, in every sampling mode; one that
//     masks everything ends the request with an error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "golden_util.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/engine/engine_core.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";
constexpr float MASKED = -std::numeric_limits<float>::infinity();
// The CPU forward's logits are within ~1e-4 of the float64 golden (model_golden_test); a logprob
// (a logit minus the log-sum) can be off by about twice that.
constexpr double TOLERANCE = 1e-4;

// What a request's callbacks saw; `events` records their order: 'p' on_prompt_logprob,
// 'l' on_logprob, 't' on_token.
struct Record {
  std::vector<std::pair<int64_t, hllm::TokenLogprob>> prompt;
  std::vector<hllm::TokenLogprob> logprobs;
  std::vector<int32_t> ids;
  std::string events;
  hllm::RequestEnd end;
  bool finished = false;
};

void record_into(hllm::EngineRequest& r, Record& out) {
  r.on_prompt_logprob = [&out](int64_t position, const hllm::TokenLogprob& t) {
    out.prompt.emplace_back(position, t);
    out.events += 'p';
  };
  r.on_logprob = [&out](const hllm::TokenLogprob& t) {
    out.logprobs.push_back(t);
    out.events += 'l';
  };
  r.on_token = [&out](int32_t id) {
    out.ids.push_back(id);
    out.events += 't';
    return true;
  };
  r.on_finish = [&out](const hllm::RequestEnd& end) {
    out.end = end;
    out.finished = true;
  };
}

void run_all(hllm::EngineCore& core) {
  while (core.has_work()) core.step();
}

// Only one id may come next: the golden input_ids continue the prompt (n tokens of them). Also
// checks that `generated` is what was emitted so far.
hllm::EngineRequest forced(const std::vector<int32_t>& golden, int64_t n, int64_t max_tokens) {
  hllm::EngineRequest r;
  r.prompt.assign(golden.begin(), golden.begin() + n);
  r.max_tokens = max_tokens;
  r.logits_processor = [&golden, n](std::span<float> logits, std::span<const int32_t> generated) {
    const auto expected = golden.begin() + n;
    EXPECT_TRUE(std::equal(generated.begin(), generated.end(), expected));
    const int32_t next = *(expected + static_cast<std::ptrdiff_t>(generated.size()));
    for (size_t i = 0; i < logits.size(); ++i)
      if (static_cast<int32_t>(i) != next) logits[i] = MASKED;
  };
  return r;
}

class EngineLogprobsTest : public testing::Test {
 protected:
  EngineLogprobsTest()
      : folder_(hllm::open_model_folder(MODEL_DIR)),
        backend_(2),
        model_(folder_.config, folder_.weights, backend_),
        golden_(MODEL_DIR / "golden.base.safetensors"),
        ids_(hllm::test::golden_ids(golden_.tensor("input_ids"))),
        logits_(golden_.tensor("logits")) {}

  // Row `row` of the golden logits as log-softmax, in double.
  std::vector<double> golden_logprobs(int64_t row) const {
    const int64_t vocab = logits_.dim(1);
    const float* l = logits_.as<float>() + row * vocab;
    const double max = *std::max_element(l, l + vocab);
    double sum = 0.0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(l[i] - max);
    std::vector<double> out(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) out[i] = l[i] - max - std::log(sum);
    return out;
  }

  // `t` (the logprob of t.id after position `row`) against the golden: its value, and its top
  // ids, each with the golden value of that id and the golden's i-th largest value (an exact
  // ranking is not asked of ids whose logits the forward's rounding may swap).
  void expect_golden(const hllm::TokenLogprob& t, int64_t row, size_t top_n) const {
    const std::vector<double> g = golden_logprobs(row);
    EXPECT_NEAR(t.logprob, g[t.id], TOLERANCE) << "row " << row;
    ASSERT_EQ(t.top.size(), top_n) << "row " << row;
    std::vector<double> sorted = g;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (size_t i = 0; i < top_n; ++i) {
      EXPECT_NEAR(t.top[i].second, g[t.top[i].first], TOLERANCE) << "row " << row << " top " << i;
      EXPECT_NEAR(t.top[i].second, sorted[i], TOLERANCE) << "row " << row << " top " << i;
      if (i > 0) {
        EXPECT_LE(t.top[i].second, t.top[i - 1].second);
      }
    }
  }

  // Prompt positions 1 .. n-1 of `r`, each once and in order, with the golden values.
  void expect_golden_prompt(const Record& r, int64_t n, size_t top_n) const {
    ASSERT_EQ(static_cast<int64_t>(r.prompt.size()), n - 1);
    for (int64_t p = 1; p < n; ++p) {
      const auto& [position, t] = r.prompt[static_cast<size_t>(p - 1)];
      ASSERT_EQ(position, p);
      EXPECT_EQ(t.id, ids_[static_cast<size_t>(p)]);
      expect_golden(t, p - 1, top_n);
    }
  }

  hllm::ModelFolder folder_;
  hllm::CpuBackend backend_;
  hllm::LlamaModel model_;
  hllm::SafetensorsFile golden_;
  std::vector<int32_t> ids_;
  hllm::Tensor logits_;
};

// Greedy would pick other ids and temperature, top-p and penalties would reshape the distribution:
// the logprobs are still those of the raw logits, the forced ids come out in order, and every
// on_logprob comes right before its on_token, after every prompt logprob.
TEST_F(EngineLogprobsTest, LogprobsAreLogSoftmaxOfTheRawLogits) {
  constexpr int64_t N = 40, MAX_TOKENS = 30;
  hllm::EngineOptions options;
  options.max_model_len = 128;
  hllm::EngineCore core(model_, options);
  hllm::EngineRequest r = forced(ids_, N, MAX_TOKENS);
  r.sampling.temperature = 0.7f, r.sampling.top_p = 0.5f, r.sampling.repetition_penalty = 1.5f;
  r.sampling.presence_penalty = 1.0f, r.sampling.frequency_penalty = 1.0f;
  r.logprobs = 5;
  r.prompt_logprobs = 3;
  Record out;
  record_into(r, out);
  core.add(std::move(r));
  run_all(core);

  ASSERT_TRUE(out.finished);
  EXPECT_EQ(out.end.reason, hllm::FinishReason::length) << out.end.error;
  EXPECT_EQ(out.ids, std::vector<int32_t>(ids_.begin() + N, ids_.begin() + N + MAX_TOKENS));
  std::string order(N - 1, 'p');
  for (int64_t i = 0; i < MAX_TOKENS; ++i) order += "lt";
  EXPECT_EQ(out.events, order);
  expect_golden_prompt(out, N, 3);
  for (int64_t k = 0; k < MAX_TOKENS; ++k) {
    const hllm::TokenLogprob& t = out.logprobs[static_cast<size_t>(k)];
    EXPECT_EQ(t.id, out.ids[static_cast<size_t>(k)]);
    expect_golden(t, N + k - 1, 5);
  }
}

// The same prompt's logprobs alone, after the same prompt warmed the prefix cache, in chunks of 16
// tokens, and beside other requests on a pool so small that they preempt each other.
TEST_F(EngineLogprobsTest, PromptLogprobsIgnoreCacheChunkingAndPreemption) {
  constexpr int64_t N = 120;
  const auto prompt_request = [&](Record& out) {
    hllm::EngineRequest r;
    r.prompt.assign(ids_.begin(), ids_.begin() + N);
    r.max_tokens = 1;
    r.prompt_logprobs = 2;
    record_into(r, out);
    return r;
  };
  hllm::EngineOptions options;
  options.max_model_len = 128;

  Record alone;
  {
    hllm::EngineCore core(model_, options);
    core.add(prompt_request(alone));
    run_all(core);
  }
  expect_golden_prompt(alone, N, 2);
  EXPECT_EQ(alone.events.substr(0, N - 1), std::string(N - 1, 'p'));

  Record warm, cached;
  {
    hllm::EngineCore core(model_, options);
    hllm::EngineRequest first;
    first.prompt.assign(ids_.begin(), ids_.begin() + N);
    first.max_tokens = 1;
    record_into(first, warm);
    core.add(std::move(first));
    run_all(core);
    ASSERT_GT(core.stats().kv_blocks_cached, 0);
    core.add(prompt_request(cached));
    run_all(core);
  }
  EXPECT_EQ(cached.end.cached_tokens, 0);
  ASSERT_EQ(cached.prompt.size(), alone.prompt.size());
  for (size_t i = 0; i < alone.prompt.size(); ++i) {
    EXPECT_EQ(cached.prompt[i].second.logprob, alone.prompt[i].second.logprob) << i;
    EXPECT_EQ(cached.prompt[i].second.top, alone.prompt[i].second.top) << i;
  }
  EXPECT_EQ(cached.ids, alone.ids);

  Record chunked;
  {
    hllm::EngineOptions small_steps = options;
    small_steps.max_num_batched_tokens = 16;
    hllm::EngineCore core(model_, small_steps);
    core.add(prompt_request(chunked));
    run_all(core);
  }
  ASSERT_EQ(chunked.prompt.size(), alone.prompt.size());
  for (size_t i = 0; i < alone.prompt.size(); ++i) {
    EXPECT_EQ(chunked.prompt[i].first, alone.prompt[i].first);
    EXPECT_EQ(chunked.prompt[i].second.logprob, alone.prompt[i].second.logprob) << i;
    EXPECT_EQ(chunked.prompt[i].second.top, alone.prompt[i].second.top) << i;
  }

  // Six requests of 20..80 prompt tokens + 40 forced golden ids each, on 128 positions.
  constexpr int REQUESTS = 6;
  constexpr int64_t MAX_TOKENS = 40;
  std::vector<Record> outs(REQUESTS);
  hllm::EngineStats stats;
  {
    hllm::EngineOptions tight = options;
    tight.kv_cache_tokens = 128;
    tight.max_num_seqs = 8;
    tight.max_num_batched_tokens = 32;
    hllm::EngineCore core(model_, tight);
    for (int i = 0; i < REQUESTS; ++i) {
      hllm::EngineRequest r = forced(ids_, 20 + 12 * i, MAX_TOKENS);
      r.sampling.temperature = 0.0f;
      r.logprobs = 1;
      r.prompt_logprobs = 2;
      record_into(r, outs[i]);
      core.add(std::move(r));
    }
    run_all(core);
    stats = core.stats();
  }
  EXPECT_GT(stats.preemptions, 0) << "the pool was meant to be too small for every request";
  EXPECT_EQ(stats.kv_blocks_free, stats.kv_blocks_total);
  for (int i = 0; i < REQUESTS; ++i) {
    const int64_t n = 20 + 12 * i;
    const Record& out = outs[i];
    EXPECT_EQ(out.end.reason, hllm::FinishReason::length) << out.end.error;
    expect_golden_prompt(out, n, 2);
    for (int64_t p = 1; p < n; ++p) {
      const size_t at = static_cast<size_t>(p - 1);
      EXPECT_EQ(out.prompt[at].second.logprob, alone.prompt[at].second.logprob) << i << " " << p;
    }
    ASSERT_EQ(out.ids, std::vector<int32_t>(ids_.begin() + n, ids_.begin() + n + MAX_TOKENS));
    for (int64_t k = 0; k < MAX_TOKENS; ++k) expect_golden(out.logprobs[k], n + k - 1, 1);
  }
}

// A processor that allows a few ids: only they come out, greedy or sampled with every filter and
// penalty; with one id allowed, only it.
TEST_F(EngineLogprobsTest, LogitsProcessorRestrictsTheIds) {
  hllm::EngineOptions options;
  options.max_model_len = 96;
  hllm::EngineCore core(model_, options);
  const std::vector<std::vector<int32_t>> allowed_sets = {{5, 77, 300}, {411}};
  std::vector<hllm::SamplingParams> modes(3);
  modes[0].temperature = 0.0f;
  modes[1].temperature = 1.0f, modes[1].top_p = 0.9f, modes[1].top_k = 40, modes[1].min_p = 0.05f;
  modes[1].repetition_penalty = 1.3f, modes[1].presence_penalty = 0.5f;
  modes[1].frequency_penalty = 0.5f;
  modes[2] = modes[1];
  modes[2].presence_penalty = -2.0f, modes[2].frequency_penalty = -2.0f;
  modes[2].repetition_penalty = 0.5f;
  std::vector<Record> outs(allowed_sets.size() * modes.size());
  for (size_t a = 0; a < allowed_sets.size(); ++a) {
    for (size_t m = 0; m < modes.size(); ++m) {
      hllm::EngineRequest r;
      r.prompt.assign(ids_.begin(), ids_.begin() + 10);
      r.max_tokens = 40;
      r.sampling = modes[m];
      r.sampling.seed = 3 + m;
      Record& out = outs[a * modes.size() + m];
      r.logits_processor = [&allowed = allowed_sets[a], &out](std::span<float> logits,
                                                              std::span<const int32_t> generated) {
        EXPECT_TRUE(std::equal(generated.begin(), generated.end(), out.ids.begin(), out.ids.end()));
        for (size_t i = 0; i < logits.size(); ++i)
          if (std::find(allowed.begin(), allowed.end(), static_cast<int32_t>(i)) == allowed.end())
            logits[i] = MASKED;
      };
      record_into(r, out);
      core.add(std::move(r));
    }
  }
  run_all(core);
  for (size_t a = 0; a < allowed_sets.size(); ++a) {
    for (size_t m = 0; m < modes.size(); ++m) {
      const Record& out = outs[a * modes.size() + m];
      EXPECT_EQ(out.end.reason, hllm::FinishReason::length) << out.end.error;
      ASSERT_EQ(out.ids.size(), 40u);
      for (int32_t id : out.ids)
        EXPECT_NE(std::find(allowed_sets[a].begin(), allowed_sets[a].end(), id),
                  allowed_sets[a].end())
            << "mode " << m << " emitted " << id;
      EXPECT_TRUE(out.events.find('l') == std::string::npos);  // logprobs were not asked for
    }
  }
}

// Masking every id (at the third token) or throwing ends that request with an error and nothing
// more emitted; the request beside it runs on. A stop id that ends a request gets no logprob.
TEST_F(EngineLogprobsTest, MaskingEverythingEndsTheRequestWithAnError) {
  hllm::EngineOptions options;
  options.max_model_len = 96;
  hllm::EngineCore core(model_, options);
  const std::vector<int32_t> prompt(ids_.begin(), ids_.begin() + 12);
  Record masked, throwing, plain, stopped;
  hllm::EngineRequest r;
  r.prompt = prompt;
  r.max_tokens = 20;
  r.logprobs = 0;
  r.logits_processor = [](std::span<float> logits, std::span<const int32_t> generated) {
    if (generated.size() == 2) std::fill(logits.begin(), logits.end(), MASKED);
  };
  record_into(r, masked);
  core.add(r);
  r.logits_processor = [](std::span<float>, std::span<const int32_t>) {
    throw std::runtime_error("grammar broke");
  };
  record_into(r, throwing);
  core.add(r);
  r.logits_processor = nullptr;
  r.sampling.temperature = 0.0f;
  record_into(r, plain);
  core.add(r);
  run_all(core);

  EXPECT_EQ(masked.end.reason, hllm::FinishReason::cancelled);
  EXPECT_NE(masked.end.error, "");
  EXPECT_EQ(masked.ids.size(), 2u);
  EXPECT_EQ(masked.events, "ltlt");
  EXPECT_EQ(throwing.end.reason, hllm::FinishReason::cancelled);
  EXPECT_NE(throwing.end.error.find("grammar broke"), std::string::npos) << throwing.end.error;
  EXPECT_TRUE(throwing.ids.empty());
  EXPECT_EQ(plain.end.reason, hllm::FinishReason::length) << plain.end.error;
  ASSERT_EQ(plain.ids.size(), 20u);
  EXPECT_EQ(plain.logprobs.size(), 20u);

  r.stop_ids = {plain.ids[3]};  // greedy: the same ids again, up to that one
  record_into(r, stopped);
  core.add(r);
  run_all(core);
  EXPECT_EQ(stopped.end.reason, hllm::FinishReason::stop);
  const size_t emitted = static_cast<size_t>(
      std::find(plain.ids.begin(), plain.ids.end(), plain.ids[3]) - plain.ids.begin());
  EXPECT_EQ(stopped.ids.size(), emitted);
  EXPECT_EQ(stopped.logprobs.size(), emitted);
  EXPECT_EQ(core.stats().kv_blocks_free, core.stats().kv_blocks_total);
}

TEST_F(EngineLogprobsTest, RefusesLogprobCountsOutOfRange) {
  hllm::EngineOptions options;
  options.max_model_len = 64;
  hllm::EngineCore core(model_, options);
  const auto refusal = [&](int32_t logprobs, int32_t prompt_logprobs) -> std::string {
    hllm::EngineRequest r;
    r.prompt = {1, 2, 3};
    r.max_tokens = 4;
    r.logprobs = logprobs;
    r.prompt_logprobs = prompt_logprobs;
    try {
      core.validate(r);
    } catch (const hllm::Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(refusal(20, 20), "");
  EXPECT_EQ(refusal(-1, 0), "");
  EXPECT_NE(refusal(21, -1).find("logprobs must be in [-1, 20]"), std::string::npos);
  EXPECT_NE(refusal(-2, -1).find("logprobs"), std::string::npos);
  EXPECT_NE(refusal(-1, 21).find("prompt_logprobs"), std::string::npos);
  EXPECT_NE(refusal(0, -5).find("prompt_logprobs"), std::string::npos);
}

}  // namespace
