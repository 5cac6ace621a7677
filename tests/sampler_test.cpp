// Sampler: each filter on crafted distributions, penalties, seeded determinism, and a chi-square
// test that sampled frequencies follow the renormalized distribution.
#include "hllm/engine/sampler.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

namespace {

using hllm::Sampler;
using hllm::SamplingParams;

// Logits whose softmax (temperature 1) is exactly `probs`.
std::vector<float> logits_for(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return logits;
}

// The ids the sampler's rule keeps for `logits` (no penalties), in id order.
std::vector<int32_t> kept_after(SamplingParams params, const std::vector<float>& logits) {
  const Sampler s(params);
  const std::vector<uint8_t> kept = hllm::sample_rule_kept(logits, s.rule());
  std::vector<int32_t> ids;
  for (size_t i = 0; i < kept.size(); ++i)
    if (kept[i]) ids.push_back(static_cast<int32_t>(i));
  return ids;
}

// The renormalized probabilities the draw follows, by id (0 for dropped ids).
std::vector<double> distribution(const Sampler& s, const std::vector<float>& logits) {
  const hllm::SampleCut cut = hllm::sample_rule_cut(logits, s.rule());
  std::vector<double> p(logits.size(), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i)
    if (cut.keeps(i)) total += p[i] = cut.greedy ? 1.0 : cut.w[i];
  for (double& x : p) x /= total;
  return p;
}

const std::vector<double> PROBS = {0.05, 0.5, 0.15, 0.3};  // most likely first: ids 1, 3, 2, 0

TEST(Sampler, TemperatureZeroIsArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p);
  std::vector<float> logits = {0.1f, 3.0f, 3.0f, -1.0f};
  EXPECT_EQ(s.sample(logits, {}, 0), 1);  // ties go to the lowest id
}

TEST(Sampler, TopKKeepsTheKLargest) {
  SamplingParams p;
  p.top_k = 2;
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1, 3}));
  p.top_k = 10;  // more than the vocabulary: no-op
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(Sampler, TopPKeepsTheSmallestNucleus) {
  SamplingParams p;
  p.top_p = 0.75f;  // 0.5 < 0.75 <= 0.5 + 0.3
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1, 3}));
  p.top_p = 0.85f;  // needs 0.5 + 0.3 + 0.15
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1, 2, 3}));
  p.top_p = 0.1f;  // always at least one
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1}));
}

TEST(Sampler, MinPIsRelativeToTheTopProbability) {
  SamplingParams p;
  p.min_p = 0.2f;  // threshold 0.1: drops 0.05
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1, 2, 3}));
  p.min_p = 0.7f;  // threshold 0.35: keeps only 0.5
  EXPECT_EQ(kept_after(p, logits_for(PROBS)), (std::vector<int32_t>{1}));
}

TEST(Sampler, FiltersComposeInOrderAndRenormalize) {
  SamplingParams p;
  p.top_k = 3;      // {1, 3, 2} renormalized: 0.5/0.95, 0.3/0.95, 0.15/0.95
  p.top_p = 0.84f;  // 0.526 + 0.316 = 0.842 >= 0.84 -> {1, 3}
  const Sampler s(p);
  const std::vector<double> d = distribution(s, logits_for(PROBS));
  EXPECT_EQ(d[0], 0.0);
  EXPECT_EQ(d[2], 0.0);
  EXPECT_NEAR(d[1], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(d[3], 0.3 / 0.8, 1e-6);
}

TEST(Sampler, TemperatureSharpensAndFlattens) {
  for (const float t : {0.5f, 2.0f}) {  // p_i ∝ p_i^(1/T)
    SamplingParams p;
    p.temperature = t;
    const std::vector<double> d = distribution(Sampler(p), logits_for(PROBS));
    double norm = 0.0;
    for (double q : PROBS) norm += std::pow(q, 1.0 / t);
    for (size_t i = 0; i < PROBS.size(); ++i)
      EXPECT_NEAR(d[i], std::pow(PROBS[i], 1.0 / t) / norm, 1e-6) << "T " << t << " id " << i;
  }
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> logits = {2.0f, -2.0f, 1.5f};
  const std::vector<int32_t> context = {0, 1, 0};  // counted once each
  EXPECT_EQ(s.sample(logits, context, 0), 2);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);
  EXPECT_FLOAT_EQ(logits[1], -4.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.5f);
}

TEST(Sampler, PresenceAndFrequencyPenalizeGeneratedTokensOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p);
  std::vector<float> logits = {1.0f, 1.0f, 1.0f};
  const std::vector<int32_t> context = {2, 2, 0, 0, 1};  // prompt {2, 2}, generated {0, 0, 1}
  s.sample(logits, context, 3);
  EXPECT_FLOAT_EQ(logits[0], 1.0f - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(logits[1], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f);
}

TEST(Sampler, PenaltyListNamesEachTouchedIdOnce) {
  using hllm::SamplePenalties, hllm::SamplePenaltyToken;
  const std::vector<int32_t> context = {5, 9, 5, -1, 7, 9, 9, 1000};  // generated: 7, 9, 9, 1000
  const auto list = [&](SamplePenalties p) {
    std::vector<std::pair<int32_t, int32_t>> out;
    for (const SamplePenaltyToken& t : hllm::sample_penalty_tokens(context, 4, 1000, p))
      out.emplace_back(t.id, t.generated);
    return out;
  };
  using List = std::vector<std::pair<int32_t, int32_t>>;
  EXPECT_EQ(list({1.0f, 0.0f, 0.0f}), List{});
  EXPECT_EQ(list({1.2f, 0.0f, 0.0f}), (List{{5, 0}, {9, 0}, {7, 0}}));  // ids out of range: none
  EXPECT_EQ(list({1.0f, 0.5f, 0.0f}), (List{{7, 1}, {9, 2}}));
  EXPECT_EQ(list({1.2f, 0.0f, -0.5f}), (List{{5, 0}, {9, 2}, {7, 1}}));
}

TEST(Sampler, SameSeedSameTokens) {
  const auto draw = [](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> ids;
    for (int i = 0; i < 64; ++i) {
      std::vector<float> logits = logits_for(PROBS);
      ids.push_back(s.sample(logits, {}, 0));
    }
    return ids;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, FrequenciesFollowTheDistribution) {
  SamplingParams p;
  p.seed = 7;
  p.top_k = 3;  // sample from {0.5, 0.3, 0.15} / 0.95
  Sampler s(p);
  const int n = 100000;
  std::map<int32_t, int> counts;
  for (int i = 0; i < n; ++i) {
    std::vector<float> logits = logits_for(PROBS);
    ++counts[s.sample(logits, {}, 0)];
  }
  EXPECT_EQ(counts.count(0), 0u);  // filtered out: never drawn
  double chi_square = 0.0;
  for (const auto& [id, expected_p] : std::map<int32_t, double>{{1, 0.5}, {3, 0.3}, {2, 0.15}}) {
    const double expected = n * expected_p / 0.95;
    chi_square += (counts[id] - expected) * (counts[id] - expected) / expected;
  }
  EXPECT_LT(chi_square, 13.82);  // chi-square, 2 degrees of freedom, p = 0.001
}

// A logits processor's mask: -infinity everywhere but a few ids. Every mode, with every filter
// and penalty (penalties that lower and that raise logits), draws only unmasked ids, from a
// finite distribution that sums to 1.
TEST(Sampler, MaskedLogitsAreNeverDrawn) {
  constexpr float MASKED = -std::numeric_limits<float>::infinity();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const std::vector<int32_t> context = {3, 900, 900, 17, 3, 1000, 17};  // generated: last 4
  for (const std::vector<int32_t>& allowed :
       {std::vector<int32_t>{900}, {3, 17, 1000}, {0, 1023}, {5, 6, 7, 8, 9, 10, 11}}) {
    for (const float temperature : {0.0f, 1.0f, 0.3f}) {
      for (const auto& [top_k, top_p, min_p] : {std::tuple<int64_t, float, float>{0, 1.0f, 0.0f},
                                                {2, 0.9f, 0.1f},
                                                {1, 1.0f, 0.0f},
                                                {50, 0.5f, 0.0f},
                                                {0, 1.0f, 0.9f}}) {
        for (const float penalty : {-2.0f, 0.0f, 2.0f}) {
          SamplingParams p;
          p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
          p.repetition_penalty = penalty < 0 ? 0.5f : 1.0f + penalty;
          p.presence_penalty = penalty, p.frequency_penalty = penalty;
          p.seed = 9;
          Sampler s(p);
          for (int draw = 0; draw < 20; ++draw) {
            std::vector<float> logits(1024, MASKED);
            for (int32_t id : allowed) logits[id] = normal(rng);
            const int32_t id = s.sample(logits, context, 4);
            ASSERT_NE(std::find(allowed.begin(), allowed.end(), id), allowed.end())
                << "drew " << id << " at temperature " << temperature;
            // `logits` now carries the penalties: the distribution drawn from.
            const std::vector<double> d = distribution(s, logits);
            for (size_t kept = 0; kept < d.size(); ++kept) {
              ASSERT_TRUE(std::isfinite(d[kept])) << kept;
              if (d[kept] > 0.0) {
                ASSERT_NE(std::find(allowed.begin(), allowed.end(), kept), allowed.end());
              }
            }
          }
        }
      }
    }
  }
  EXPECT_TRUE(hllm::all_masked(std::vector<float>{MASKED, MASKED, NAN}));
  EXPECT_FALSE(hllm::all_masked(std::vector<float>{MASKED, -1e30f, MASKED}));
}

// token_logprob against log-softmax written out, the top ids against a full sort (ties: lower id
// first), on a small row with ties and a large random one.
TEST(Sampler, TokenLogprobIsLogSoftmaxWithTheTopIds) {
  const std::vector<float> small = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  double total = 0.0;
  for (float l : small) total += std::exp(static_cast<double>(l));
  const hllm::TokenLogprob t = hllm::token_logprob(small, 4, 3);
  EXPECT_EQ(t.id, 4);
  EXPECT_NEAR(t.logprob, 0.5 - std::log(total), 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 0);
  EXPECT_NEAR(t.top[2].second, 1.0 - std::log(total), 1e-6);
  EXPECT_TRUE(hllm::token_logprob(small, 2, 0).top.empty());
  EXPECT_EQ(hllm::token_logprob(small, 2, 20).top.size(), small.size());

  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> large(128256);
  for (float& l : large) l = std::round(normal(rng) * 8.0f) / 8.0f;  // many ties
  large[77] = 1000.0f;  // far above the rest: exp(logit) would overflow without the max shift
  std::vector<int32_t> order(large.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return large[a] > large[b] || (large[a] == large[b] && a < b);
  });
  total = 0.0;
  for (float l : large) total += std::exp(static_cast<double>(l) - 1000.0);
  const hllm::TokenLogprob u = hllm::token_logprob(large, 1234, 20);
  EXPECT_NEAR(u.logprob, large[1234] - 1000.0 - std::log(total), 1e-3);
  ASSERT_EQ(u.top.size(), 20u);
  for (size_t i = 0; i < 20; ++i) {
    EXPECT_EQ(u.top[i].first, order[i]) << i;
    EXPECT_NEAR(u.top[i].second, large[order[i]] - 1000.0 - std::log(total), 1e-3);
  }
}

TEST(Sampler, InvalidParametersAreErrors) {
  const auto invalid = [](auto change) {
    SamplingParams p;
    change(p);
    EXPECT_THROW(Sampler{p}, hllm::Error);
  };
  invalid([](SamplingParams& p) { p.temperature = -1.0f; });
  invalid([](SamplingParams& p) { p.temperature = NAN; });
  invalid([](SamplingParams& p) { p.top_k = -1; });
  invalid([](SamplingParams& p) { p.top_p = 0.0f; });
  invalid([](SamplingParams& p) { p.top_p = 1.5f; });
  invalid([](SamplingParams& p) { p.min_p = -0.1f; });
  invalid([](SamplingParams& p) { p.repetition_penalty = 0.0f; });
  invalid([](SamplingParams& p) { p.presence_penalty = 3.0f; });
}

}  // namespace
