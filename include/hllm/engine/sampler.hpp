// Sampler: one request's sampling parameters and random stream; turns a row of logits into the
// next token id. Shared by every path (CPU, GPU, server).
//
// What happens to a row is layout/sample_penalty.hpp (repetition, presence and frequency
// penalties) and then layout/sample_rule.hpp (temperature, top-k, top-p, min-p, and the draw): the
// one definition that the CPU runs here and the GPU runs in kernels/hllm/cuda/sampling.cuh. Each
// sampling point takes one 64-bit number from the request's seeded RNG as its uniform draw, so the
// same seed and logits give the same ids on every backend (up to the GPU's fp32 partial sums).
// Logits of -infinity (a logits processor's mask) are never drawn while one logit is finite (the
// caller checks that: see all_masked).
//
// Logprobs (OpenAI's, vLLM's default): log-softmax of the raw logits, before any of the above —
//   logprob(id) = logit[id] - (max + log Σ exp(logit - max)),   the sum in double
// plus the n most likely ids, found in one pass without sorting the vocabulary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/layout/sample_penalty.hpp"
#include "hllm/layout/sample_rule.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy
  int64_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off
  float min_p = 0.0f;               // 0 = off
  float repetition_penalty = 1.0f;  // 1 = off
  float presence_penalty = 0.0f;    // 0 = off
  float frequency_penalty = 0.0f;   // 0 = off
  uint64_t seed = 0;

  // The model's defaults from generation_config.json: its temperature, top_p and top_k when it
  // samples, greedy when it says do_sample: false; the library's defaults for what it leaves out.
  static SamplingParams from_generation_config(const GenerationConfig& g) {
    SamplingParams s;
    if (!g.do_sample) {
      s.temperature = 0.0f;
      return s;
    }
    if (g.temperature) s.temperature = static_cast<float>(*g.temperature);
    if (g.top_p) s.top_p = static_cast<float>(*g.top_p);
    if (g.top_k) s.top_k = *g.top_k;
    return s;
  }

  // Throws hllm::Error naming the first out-of-range value.
  void validate() const {
    if (!(temperature >= 0.0f) || !std::isfinite(temperature))
      fail("temperature must be >= 0 (got ", temperature, ")");
    if (top_k < 0) fail("top_k must be >= 0 (got ", top_k, "; 0 disables it)");
    if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p must be in (0, 1] (got ", top_p, ")");
    if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("min_p must be in [0, 1] (got ", min_p, ")");
    if (!(repetition_penalty > 0.0f) || !std::isfinite(repetition_penalty))
      fail("repetition_penalty must be > 0 (got ", repetition_penalty, ")");
    if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
      fail("presence_penalty must be in [-2, 2] (got ", presence_penalty, ")");
    if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
      fail("frequency_penalty must be in [-2, 2] (got ", frequency_penalty, ")");
  }
};

// One token's logprob and the `top.size()` most likely ids with theirs (most likely first; equal
// logits: lower id first).
struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;
};

// The logprob of `id` under log-softmax(logits), with the `top_n` most likely ids (see the top).
inline TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int32_t top_n) {
  const float max = *std::max_element(logits.begin(), logits.end());
  std::vector<int32_t> top;  // the best so far, most likely first (at most top_n)
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    sum += std::exp(static_cast<double>(l) - max);
    if (top_n == 0 || (static_cast<int32_t>(top.size()) == top_n && l <= logits[top.back()]))
      continue;
    if (static_cast<int32_t>(top.size()) == top_n) top.pop_back();
    const auto at = std::find_if(top.begin(), top.end(), [&](int32_t t) { return l > logits[t]; });
    top.insert(at, static_cast<int32_t>(i));
  }
  const double log_total = static_cast<double>(max) + std::log(sum);
  const auto logprob = [&](int32_t t) {
    return static_cast<float>(static_cast<double>(logits[t]) - log_total);
  };
  TokenLogprob out{id, logprob(id), {}};
  for (int32_t t : top) out.top.emplace_back(t, logprob(t));
  return out;
}

// True when no logit is above -infinity (or all are NaN): nothing can be sampled.
inline bool all_masked(std::span<const float> logits) {
  return std::none_of(logits.begin(), logits.end(),
                      [](float l) { return l > -std::numeric_limits<float>::infinity(); });
}

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
    params.validate();
    rule_.temperature = params.temperature;
    rule_.top_k =
        static_cast<int32_t>(std::min<int64_t>(params.top_k, std::numeric_limits<int32_t>::max()));
    rule_.top_p = params.top_p;
    rule_.min_p = params.min_p;
    penalties_ = {params.repetition_penalty, params.presence_penalty, params.frequency_penalty};
  }

  const SamplingParams& params() const { return params_; }
  const SampleRuleParams& rule() const { return rule_; }

  // The next sampling point of a request whose context (prompt, then the tokens generated so far)
  // ends with `n_generated` generated tokens: its rule, penalties and a fresh uniform draw. The
  // row's penalty list lives in this sampler until the next call.
  SampleRow next_row(std::span<const int32_t> context, size_t n_generated, int64_t vocab) {
    penalized_ = sample_penalty_tokens(context, n_generated, vocab, penalties_);
    return {rule_, penalties_, penalized_, sample_uniform(rng_())};
  }

  // The same, applied here: chooses the next id; `logits` gets the penalties.
  int32_t sample(std::span<float> logits, std::span<const int32_t> context, size_t n_generated) {
    return sample_row(logits, next_row(context, n_generated, static_cast<int64_t>(logits.size())));
  }

 private:
  SamplingParams params_;
  SampleRuleParams rule_;
  SamplePenalties penalties_;
  std::mt19937_64 rng_;
  std::vector<SamplePenaltyToken> penalized_;
};

}  // namespace hllm
