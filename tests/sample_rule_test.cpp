// CPU tests of include/hllm/layout/sample_rule.hpp, the sampling rule of every backend: greedy
// and argmax ties, top_k ties, the top_p threshold, min_p, the index-order draw, the distribution
// the draw follows (uniform sweeps and 20000 random uniforms against the renormalised
// probabilities), and the fast cut against the rule written out with a full sort.
#include "hllm/layout/sample_rule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "hllm/layout/sample_radix.hpp"

namespace hllm {
namespace {

std::vector<float> normal_logits(size_t n, float sd, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> l(n);
  for (float& x : l) x = dist(rng);
  return l;
}

std::set<int32_t> kept_set(std::span<const float> logits, const SampleRuleParams& p) {
  const std::vector<uint8_t> kept = sample_rule_kept(logits, p);
  std::set<int32_t> s;
  for (size_t i = 0; i < kept.size(); ++i)
    if (kept[i]) s.insert(static_cast<int32_t>(i));
  return s;
}

// Renormalised probabilities of the kept tokens (0 elsewhere).
std::vector<double> kept_probabilities(std::span<const float> logits, const SampleRuleParams& p) {
  const std::vector<uint8_t> kept = sample_rule_kept(logits, p);
  const float m = sample_logit(logits[sample_argmax(logits)]);
  std::vector<double> prob(logits.size(), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i)
    if (kept[i]) total += prob[i] = sample_weight(sample_logit(logits[i]), m, 1.0f / p.temperature);
  for (double& x : prob) x /= total;
  return prob;
}

TEST(SampleRule, GreedyIsArgmaxWithLowestIndexOnTies) {
  const std::vector<float> l = {1.0f, 3.0f, -2.0f, 3.0f, 3.0f};
  EXPECT_EQ(sample_argmax(l), 1);
  for (float u : {0.0f, 0.5f, 0.999f}) EXPECT_EQ(sample_by_rule(l, {0.0f, 0, 1.0f, 0.0f}, u), 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> with_nan = {nan, -1.0f, nan, 2.0f, nan};
  EXPECT_EQ(sample_argmax(with_nan), 3);
  EXPECT_EQ(kept_set(with_nan, {1.0f, 0, 1.0f, 0.0f}), (std::set<int32_t>{1, 3}));  // NaN never
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sample_argmax(std::vector<float>{-inf, -inf}), 0);
  EXPECT_EQ(sample_by_rule(std::vector<float>{-inf, -inf}, {1.0f, 0, 1.0f, 0.0f}, 0.7f), 0);
}

TEST(SampleRule, TopK1AndTinyTopPAreArgmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto l = normal_logits(1000, 3.0f, seed);
    const int32_t best = sample_argmax(l);
    for (float u : {0.0f, 0.3f, 0.9999f}) {
      EXPECT_EQ(sample_by_rule(l, {1.0f, 1, 1.0f, 0.0f}, u), best);
      EXPECT_EQ(sample_by_rule(l, {1.3f, 0, 1e-6f, 0.0f}, u), best);
      EXPECT_EQ(sample_by_rule(l, {0.7f, 0, 0.0f, 0.0f}, u), best);
      EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 1.0f}, u), best);  // min_p 1
    }
  }
}

TEST(SampleRule, TopKKeepsTiesAtTheKthValue) {
  const std::vector<float> l = {5.0f, 4.0f, 1.0f, 4.0f, 4.0f, -0.0f, 0.0f};
  EXPECT_EQ(kept_set(l, {1.0f, 2, 1.0f, 0.0f}), (std::set<int32_t>{0, 1, 3, 4}));
  EXPECT_EQ(kept_set(l, {1.0f, 4, 1.0f, 0.0f}), (std::set<int32_t>{0, 1, 3, 4}));
  EXPECT_EQ(kept_set(l, {1.0f, 5, 1.0f, 0.0f}), (std::set<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(kept_set(l, {1.0f, 6, 1.0f, 0.0f}), (std::set<int32_t>{0, 1, 2, 3, 4, 5, 6}));  // ±0
  EXPECT_EQ(kept_set(l, {1.0f, 7, 1.0f, 0.0f}).size(), 7u);
  EXPECT_EQ(kept_set(l, {1.0f, 100, 1.0f, 0.0f}).size(), 7u);
}

TEST(SampleRule, TopPAndMinPThresholds) {
  // p = 0.5, 0.3, 0.2 (as logits log p, T = 1).
  const std::vector<float> l = {std::log(0.3f), std::log(0.5f), std::log(0.2f)};
  EXPECT_EQ(kept_set(l, {1.0f, 0, 0.45f, 0.0f}), (std::set<int32_t>{1}));
  EXPECT_EQ(kept_set(l, {1.0f, 0, 0.75f, 0.0f}), (std::set<int32_t>{0, 1}));
  EXPECT_EQ(kept_set(l, {1.0f, 0, 0.85f, 0.0f}), (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ(kept_set(l, {1.0f, 0, 1.0f, 0.5f}), (std::set<int32_t>{0, 1}));   // 0.3 >= 0.25
  EXPECT_EQ(kept_set(l, {1.0f, 0, 1.0f, 0.61f}), (std::set<int32_t>{1}));     // 0.3 < 0.305
  EXPECT_EQ(kept_set(l, {1.0f, 2, 0.99f, 0.0f}), (std::set<int32_t>{0, 1}));  // top_p within top_k
  // Ties at the top_p threshold are kept together.
  const std::vector<float> tied = {1.0f, 2.0f, 1.0f, 0.0f};
  EXPECT_EQ(kept_set(tied, {1.0f, 0, 0.75f, 0.0f}), (std::set<int32_t>{0, 1, 2}));
}

TEST(SampleRule, DrawsInIndexOrder) {
  EXPECT_EQ(sample_by_rule(std::vector<float>{0.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, 0.25f), 0);
  EXPECT_EQ(sample_by_rule(std::vector<float>{0.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, 0.75f), 1);
  // Index 0 is the less likely token, yet a small u picks it: the CDF runs in index order.
  const std::vector<float> l = {0.0f, 2.0f};
  EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 0.0f}, 0.05f), 0);
  EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 0.0f}, 0.5f), 1);
  EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 0.0f}, 0.0f), 0);
  EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 0.0f}, 1.0f), 1);   // past the end: last kept
  EXPECT_EQ(sample_by_rule(l, {1.0f, 0, 1.0f, 0.0f}, -1.0f), 0);  // clamped to 0
}

struct Case {
  SampleRuleParams p;
  uint32_t seed;
};

const std::vector<Case> DISTRIBUTION_CASES = {
    {{1.0f, 10, 1.0f, 0.0f}, 1},  {{0.8f, 0, 0.8f, 0.0f}, 2},  {{1.2f, 0, 1.0f, 0.1f}, 3},
    {{1.0f, 20, 0.9f, 0.05f}, 4}, {{0.7f, 40, 0.5f, 0.0f}, 5}, {{1.3f, 0, 0.9f, 0.0f}, 6},
};

TEST(SampleRule, UniformSweepVisitsExactlyTheKeptSet) {
  constexpr int N = 200000;
  for (const Case& c : DISTRIBUTION_CASES) {
    const auto l = normal_logits(64, 1.0f, c.seed);
    const auto prob = kept_probabilities(l, c.p);
    const std::set<int32_t> kept = kept_set(l, c.p);
    for (int32_t i : kept) ASSERT_GT(prob[i], 4.0 / N) << "case too extreme for the sweep";
    std::set<int32_t> visited;
    std::vector<int> counts(l.size(), 0);
    for (int j = 0; j < N; ++j) {
      const int32_t id = sample_by_rule(l, c.p, static_cast<float>((j + 0.5) / N));
      visited.insert(id);
      ++counts[id];
    }
    EXPECT_EQ(visited, kept) << "seed " << c.seed;
    // An evenly spaced sweep hits each token in proportion to its probability, up to the grid
    // (and the float rounding of the uniforms, ~1e-7 of the range).
    for (size_t i = 0; i < l.size(); ++i)
      EXPECT_NEAR(counts[i], N * prob[i], 2.0 + 1e-6 * N) << "seed " << c.seed << " token " << i;
  }
}

TEST(SampleRule, FrequenciesMatchRenormalisedProbabilities) {
  constexpr int N = 20000;
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (const Case& c : DISTRIBUTION_CASES) {
    const auto l = normal_logits(64, 1.0f, c.seed + 100);
    const auto prob = kept_probabilities(l, c.p);
    std::vector<int> counts(l.size(), 0);
    for (int j = 0; j < N; ++j) ++counts[sample_by_rule(l, c.p, uniform(rng))];
    double chi2 = 0.0;
    int df = -1;
    for (size_t i = 0; i < l.size(); ++i) {
      const double expected = N * prob[i];
      if (expected == 0.0) {
        EXPECT_EQ(counts[i], 0) << "seed " << c.seed << " token " << i << " is not kept";
        continue;
      }
      const double sigma = std::sqrt(N * prob[i] * (1.0 - prob[i]));
      chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
      ++df;
      // 4σ per token: ~90 kept tokens over the cases make a 3σ miss somewhere likely by chance
      // (seed 99 has one at 3.1σ); the chi-square below is the joint check.
      EXPECT_LE(std::fabs(counts[i] - expected), 4.0 * sigma + 1.0)
          << "seed " << c.seed << " token " << i << " p " << prob[i];
    }
    // And jointly: chi-square well inside df + 4·sqrt(2·df).
    if (df > 0) {
      EXPECT_LE(chi2, df + 4.0 * std::sqrt(2.0 * df)) << "seed " << c.seed;
    }
  }
}

// The definition of steps 0-5 written out plainly: every candidate sorted for top_p. The
// library's sample_rule_cut sorts only what the cut needs; both must keep the same tokens.
std::vector<uint8_t> definition_kept(std::span<const float> logits, const SampleRuleParams& p) {
  const size_t n = logits.size();
  std::vector<uint8_t> kept(n, 0);
  const int32_t best = sample_argmax(logits);
  const float m = sample_logit(logits[best]);
  if (sample_is_greedy(p, m)) {
    kept[best] = 1;
    return kept;
  }
  std::vector<float> l(n), w(n);
  for (size_t i = 0; i < n; ++i) {
    l[i] = sample_logit(logits[i]);
    w[i] = sample_weight(l[i], m, 1.0f / p.temperature);
  }
  float threshold = -std::numeric_limits<float>::infinity();
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
    std::vector<float> sorted = l;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    threshold = sorted[p.top_k - 1];
  }
  if (p.top_p < 1.0f) {
    std::vector<int32_t> order;
    double mass = 0.0;
    for (size_t i = 0; i < n; ++i)
      if (l[i] >= threshold) order.push_back(static_cast<int32_t>(i)), mass += w[i];
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
    double cumulative = 0.0;
    for (size_t j = 0; j < order.size();) {
      const float value = l[order[j]];
      while (j < order.size() && l[order[j]] == value) cumulative += w[order[j++]];
      if (cumulative >= static_cast<double>(p.top_p) * mass) {
        threshold = value;
        break;
      }
    }
  }
  for (size_t i = 0; i < n; ++i)
    kept[i] = l[i] >= threshold && sample_weight_kept(w[i], sample_min_weight(p.min_p));
  return kept;
}

// Llama-3-sized rows: flat (thousands kept), peaked (a few), and rounded to 1/8 (large ties,
// across the 64-token first sort and its 4x growth), with NaN and -inf sprinkled in.
TEST(SampleRule, PartialSortKeepsWhatTheFullSortKeeps) {
  const std::vector<SampleRuleParams> params = {
      {1.0f, 0, 0.9f, 0.0f},   {0.8f, 0, 0.5f, 0.0f}, {1.0f, 40, 0.95f, 0.0f},
      {1.0f, 0, 1.0f, 0.05f},  {0.7f, 0, 0.9f, 0.1f}, {1.0f, 1000, 1.0f, 0.0f},
      {1.3f, 0, 0.999f, 0.0f}, {1.0f, 5, 0.3f, 0.0f}, {2.0f, 300, 0.99f, 0.01f},
      {1.0f, 0, 1e-7f, 0.0f},  {1.0f, 0, 0.0f, 0.0f}, {0.0f, 10, 0.9f, 0.0f},
  };
  uint32_t seed = 11;
  for (const float sd : {0.3f, 3.0f}) {
    for (const bool ties : {false, true}) {
      std::vector<float> l = normal_logits(128256, sd, seed++);
      if (ties)
        for (float& x : l) x = std::round(x * 8.0f) / 8.0f;
      l[7] = std::numeric_limits<float>::quiet_NaN();
      l[8] = -std::numeric_limits<float>::infinity();
      for (const SampleRuleParams& p : params) {
        const std::vector<uint8_t> got = sample_rule_kept(l, p), want = definition_kept(l, p);
        size_t n_kept = 0, n_differ = 0;
        for (size_t i = 0; i < l.size(); ++i) n_kept += want[i], n_differ += got[i] != want[i];
        EXPECT_EQ(n_differ, 0u) << "sd " << sd << " ties " << ties << " T " << p.temperature
                                << " top_k " << p.top_k << " top_p " << p.top_p << " min_p "
                                << p.min_p << " (" << n_kept << " kept)";
      }
    }
  }
}

// The GPU sampler's radix select (layout/sample_radix.hpp), run sequentially with the same pieces:
// the largest key K with Σ_{key >= K, key >= floor} f >= target_of(Σ_{key >= floor} f).
template <typename F, typename TargetOf>
uint32_t radix_select(std::span<const float> logits, uint32_t floor, F f, TargetOf target_of) {
  uint32_t prefix = 0;
  uint64_t above = 0;
  double target = 0.0;
  for (int shift = SAMPLE_RADIX_TOP_SHIFT; shift >= 0; shift -= SAMPLE_RADIX_BITS) {
    std::vector<uint64_t> hist(SAMPLE_RADIX_BINS, 0);
    for (float x : logits) {
      const float v = sample_logit(x);
      const uint32_t key = sample_order_key(v);
      if (key >= floor && sample_radix_matches(key, prefix, shift))
        hist[sample_radix_digit(key, shift)] += f(v);
    }
    if (shift == SAMPLE_RADIX_TOP_SHIFT) {
      uint64_t total = 0;
      for (uint64_t h : hist) total += h;
      target = target_of(total);
    }
    const SampleRadixPick pick = sample_radix_pick(hist.data(), above, target);
    prefix |= pick.digit << shift;
    above = pick.above;
  }
  return prefix;
}

// The radix select finds the rule's thresholds: the k-th largest key exactly, and the top_p cut
// the rule finds with double sums (here equal on every row and parameter set tried).
TEST(SampleRule, RadixSelectFindsTheRuleThresholds) {
  uint32_t seed = 200;
  int rows = 0;
  for (const float sd : {0.3f, 3.0f, 8.0f}) {
    for (const bool ties : {false, true}) {
      std::vector<float> l = normal_logits(32768, sd, seed++);
      if (ties)
        for (float& x : l) x = std::round(x * 4.0f) / 4.0f;
      l[5] = -0.0f;
      l[6] = std::numeric_limits<float>::quiet_NaN();
      l[9] = -std::numeric_limits<float>::infinity();
      for (const int32_t top_k : {0, 1, 2, 50, 1000, 32767}) {
        for (const float top_p : {1.0f, 0.95f, 0.5f, 0.1f, 0.0f}) {
          for (const float temperature : {0.6f, 1.0f, 1.7f}) {
            const SampleRuleParams p{temperature, top_k, top_p, 0.0f};
            const SampleCut cut = sample_rule_cut(l, p);
            const float m = l[cut.argmax];
            uint32_t key = 0;
            if (top_k > 0)
              key = radix_select(
                  l, 0u, [](float) { return uint64_t{1}; },
                  [&](uint64_t) { return static_cast<double>(top_k); });
            if (top_p < 1.0f)
              key = radix_select(
                  l, key,
                  [&](float v) {
                    return sample_mass_units(sample_weight(v, m, 1.0f / temperature));
                  },
                  [&](uint64_t total) {
                    return std::fmax(static_cast<double>(top_p) * static_cast<double>(total), 1.0);
                  });
            const uint32_t want = top_k > 0 || top_p < 1.0f ? sample_order_key(cut.threshold) : 0u;
            EXPECT_EQ(key, want) << "sd " << sd << " ties " << ties << " top_k " << top_k
                                 << " top_p " << top_p << " T " << temperature;
            ++rows;
          }
        }
      }
    }
  }
  EXPECT_EQ(rows, 540);
}

TEST(SampleRule, UniformIsTheTop24BitsInZeroOne) {
  EXPECT_EQ(sample_uniform(0), 0.0f);
  EXPECT_EQ(sample_uniform(~uint64_t{0}), 1.0f - 0x1p-24f);
  EXPECT_EQ(sample_uniform(uint64_t{1} << 63), 0.5f);
  EXPECT_EQ(sample_uniform((uint64_t{1} << 40) - 1), 0.0f);  // the low 40 bits are not used
}

}  // namespace
}  // namespace hllm
