// Sampler: turns one row of logits into the next token id. Shared by every path (CPU, GPU, server).
//
// Order of operations (vLLM's and HF generate()'s order):
//   1. repetition penalty (HF/CTRL) over prompt + generated tokens:
//        logit > 0 ? logit / r : logit * r
//   2. presence / frequency penalties (OpenAI) over generated tokens:
//        logit -= presence · [count > 0] + frequency · count
//   3. temperature: logits / T; T == 0 means greedy (argmax, lowest id on ties) and skips 4–6
//   4. top-k: keep the k largest logits
//   5. top-p (nucleus): keep the smallest set of most likely tokens whose probability reaches p
//   6. min-p: drop tokens whose probability is below min_p × the largest probability
//   7. draw from the renormalized distribution with a seeded RNG
//      (same seed + same logits = same ids)
// Logits of -infinity (a logits processor's mask) stay -infinity through every step and are never
// drawn, as long as one logit is finite (the caller checks that: see all_masked).
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
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
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
  }

  const SamplingParams& params() const { return params_; }

  // Chooses the next id. `logits` is modified (penalties, temperature, masks). `context` holds the
  // prompt followed by the tokens generated so far, of which the last `n_generated` are generated.
  int32_t sample(std::span<float> logits, std::span<const int32_t> context, size_t n_generated) {
    apply_penalties(logits, context, n_generated);
    if (params_.temperature == 0.0f) return argmax(logits);
    filter_candidates(logits);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    double draw = uniform(rng_);
    for (const auto& [id, p] : candidates_) {
      draw -= p;
      if (draw < 0.0) return id;
    }
    return candidates_.back().first;  // rounding left a sliver: the least likely kept token
  }

  // The distribution step 7 draws from, as (id, probability) sorted by probability (for tests).
  std::span<const std::pair<int32_t, double>> last_candidates() const { return candidates_; }

  static int32_t argmax(std::span<const float> logits) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }

 private:
  void apply_penalties(std::span<float> logits, std::span<const int32_t> context,
                       size_t n_generated) const {
    const auto vocab = static_cast<int64_t>(logits.size());
    if (params_.repetition_penalty != 1.0f) {
      std::vector<bool> seen(logits.size(), false);
      for (int32_t id : context) {
        if (id < 0 || id >= vocab || seen[id]) continue;
        seen[id] = true;
        float& l = logits[id];
        l = l > 0.0f ? l / params_.repetition_penalty : l * params_.repetition_penalty;
      }
    }
    if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
      std::unordered_map<int32_t, int> counts;
      for (int32_t id : context.last(std::min(n_generated, context.size())))
        if (id >= 0 && id < vocab) ++counts[id];
      for (const auto& [id, count] : counts)
        logits[id] -=
            params_.presence_penalty + params_.frequency_penalty * static_cast<float>(count);
    }
  }

  // Steps 3–6; fills candidates_ with the kept tokens and their renormalized probabilities.
  void filter_candidates(std::span<const float> logits) {
    const double inv_t = 1.0 / params_.temperature;
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    // Tokens more than 50 nats below the best carry < e^-50 each (< 1e-16 for 128k of them, below
    // double's resolution of the total), so leaving them out before sorting changes nothing.
    constexpr double NEGLIGIBLE_NATS = 50.0;
    std::vector<int32_t> order;
    for (size_t id = 0; id < logits.size(); ++id)
      if ((logits[id] - max_logit) * inv_t > -NEGLIGIBLE_NATS)
        order.push_back(static_cast<int32_t>(id));
    const auto more_likely = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    const auto weight = [&](int32_t id) { return std::exp((logits[id] - max_logit) * inv_t); };
    size_t kept = order.size();
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < kept) kept = params_.top_k;
    // Only a sorted prefix of the kept tokens is ever needed (top-p and min-p cut from the top,
    // and usually keep a few dozen of 128k), so sort progressively: the best `sorted` tokens in
    // order, then 4× more while the cut is not inside them. The softmax total is over all kept
    // tokens, summed in id order (fixed, whatever gets sorted).
    size_t sorted = 0;
    const auto sort_prefix = [&](size_t n) {
      n = std::min(n, order.size());
      if (n <= sorted) return;
      std::partial_sort(order.begin() + static_cast<std::ptrdiff_t>(sorted),
                        order.begin() + static_cast<std::ptrdiff_t>(n), order.end(), more_likely);
      sorted = n;
    };
    double total = 0.0;
    if (kept < order.size()) {  // top-k: the k best, in order; the total over them
      sort_prefix(kept);
      order.resize(kept);
      std::vector<int32_t> by_id(order.begin(), order.end());
      std::sort(by_id.begin(), by_id.end());
      for (int32_t id : by_id) total += weight(id);
    } else {
      for (int32_t id : order) total += weight(id);  // still in id order
    }
    // Cut: the first `kept` tokens of the sorted order that top-p and min-p keep.
    size_t cut = kept;
    if (params_.top_p < 1.0f || params_.min_p > 0.0f) {
      sort_prefix(64);
      const double p_max = weight(order[0]) / total;
      double cumulative = 0.0;
      size_t i = 0;
      while (true) {
        if (i == sorted) {
          if (sorted == kept) break;
          sort_prefix(sorted * 4);
        }
        const double p = weight(order[i]) / total;
        if (params_.top_p < 1.0f && cumulative >= params_.top_p) break;
        if (params_.min_p > 0.0f && i > 0 && p < params_.min_p * p_max) break;
        cumulative += p;
        ++i;
      }
      cut = std::max<size_t>(i, 1);
    } else {
      sort_prefix(kept);  // plain temperature sampling walks every kept token in order
    }
    double kept_sum = 0.0;
    std::vector<double> p(cut);
    for (size_t i = 0; i < cut; ++i) kept_sum += (p[i] = weight(order[i]) / total);
    candidates_.clear();
    for (size_t i = 0; i < cut; ++i) candidates_.emplace_back(order[i], p[i] / kept_sum);
  }

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<int32_t, double>> candidates_;
};

}  // namespace hllm
