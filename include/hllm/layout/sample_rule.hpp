// The sampling rule: how one row of logits becomes a token id, written once. The CPU sampler
// (engine/sampler.hpp) runs sample_by_rule(); the GPU sampler (kernels/hllm/cuda/sampling.cuh)
// implements the same steps with the HLLM_HOST_DEVICE pieces below, and its test uses
// sample_by_rule() as the oracle. Penalties come before the rule (layout/sample_penalty.hpp).
//
// For one row of logits l[0 .. vocab) and parameters {temperature T, top_k, top_p, min_p}, with a
// uniform draw u in [0, 1):
//
//   0. sanitize: a NaN logit counts as -inf (never kept); -0 counts as +0.
//   1. greedy: T <= 0 (or 1/T not finite), or the largest logit m not finite  ->  argmax, the
//      lowest index among equal maxima (what std::max_element, sampler.hpp's argmax, returns).
//   2. weights w_i = expf((l_i - m) · (1/T)) in fp32 (sample_weight): p_i = w_i / Σ w, and w = 1
//      at the max. Every threshold below is a threshold on logits, which order tokens exactly as
//      p does, so equal logits are always kept or dropped together.
//   3. top_k (0 < top_k < vocab, else off): keep l_i >= the k-th largest logit (counted with
//      multiplicity). Ties at the k-th value are ALL kept, so more than k tokens may survive.
//   4. top_p (top_p < 1, else off): among the top-k survivors K, keep l_i >= λ, λ the largest logit
//      value with Σ_{i∈K, l_i >= λ} w_i >= top_p · Σ_{i∈K} w_i (ties kept; "p_i >= τ" with τ the
//      largest probability threshold whose kept mass reaches top_p of K's mass).
//   5. min_p (min_p > 0, else off; values above 1 act as 1): keep w_i >= min_p, i.e.
//      p_i >= min_p · p_max. A token with w_i == 0 (-inf, NaN, or fp32 underflow) is never kept.
//   6. draw: with W = Σ_kept w_i, the first kept index (in INDEX order, not probability order)
//      whose running sum of kept w exceeds max(u, 0) · W; if rounding runs past the end, the last
//      kept index. The argmax token is always kept, so W >= 1.
//
// The CPU sums in double; the GPU finds the thresholds of steps 3 and 4 by a radix select over the
// order key of the logits (layout/sample_radix.hpp: exact for top_k; for top_p exact up to its
// fixed-point sums) and sums the draw in double. Both compute w with the shared sample_weight().
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"

namespace hllm {

// Per-row parameters of the rule (device side: an array [rows] of these in device memory).
struct SampleRuleParams {
  float temperature = 1.0f;  // <= 0: greedy
  int32_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;        // >= 1: off; <= 0 keeps only the largest logit
  float min_p = 0.0f;        // <= 0: off; > 1 acts as 1
};
static_assert(sizeof(SampleRuleParams) == 16, "SampleRuleParams is read by the GPU as 16 bytes");

// Step 0: NaN -> -inf, -0 -> +0 (IEEE: -0 + +0 = +0), so that equal logits have equal order keys.
HLLM_HOST_DEVICE float sample_logit(float logit) {
  return logit != logit ? -std::numeric_limits<float>::infinity() : logit + 0.0f;
}

// An unsigned key with the order of the (sanitized, non-NaN) float: flip all bits of negatives, the
// sign bit of non-negatives. -inf -> 0x007fffff, +0 -> 0x80000000, +inf -> 0xff800000.
HLLM_HOST_DEVICE uint32_t sample_order_key(float sanitized_logit) {
  const uint32_t bits = f32_to_bits(sanitized_logit);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Step 1: whether the row is sampled greedily.
HLLM_HOST_DEVICE bool sample_is_greedy(const SampleRuleParams& p, float max_logit) {
  const float inv_t = 1.0f / p.temperature;
  return !(p.temperature > 0.0f) || !(inv_t <= std::numeric_limits<float>::max()) ||
         !(max_logit >= -std::numeric_limits<float>::max() &&
           max_logit <= std::numeric_limits<float>::max());
}

// Step 2: the unnormalized probability, 1 at the max, 0 for -inf (also when 1/T is 0: -inf · 0).
HLLM_HOST_DEVICE float sample_weight(float sanitized_logit, float max_logit, float inv_t) {
  const float z = (sanitized_logit - max_logit) * inv_t;
  return z == z ? expf(z) : 0.0f;
}

// Step 5: the smallest weight min_p keeps (0 keeps everything).
HLLM_HOST_DEVICE float sample_min_weight(float min_p) {
  return min_p > 0.0f ? (min_p < 1.0f ? min_p : 1.0f) : 0.0f;
}

// Step 5's test, plus: a token of weight 0 (a -inf or NaN logit, or more than ~87·T below the max,
// where expf underflows) is never kept, so neither the draw nor its fallback can pick it.
HLLM_HOST_DEVICE bool sample_weight_kept(float weight, float min_weight) {
  return weight > 0.0f && weight >= min_weight;
}

// Step 1's argmax: lowest index of the largest sanitized logit (0 for an all-NaN row).
inline int32_t sample_argmax(std::span<const float> logits) {
  int32_t best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = sample_logit(logits[i]);
    if (v > best_value) best_value = v, best = static_cast<int32_t>(i);
  }
  return best;
}

// The k-th largest of `values` (1 <= k < size, counted with multiplicity): a min-heap of the k
// best so far for small k (most values lose one comparison with its top), selection otherwise.
inline float sample_kth_largest(std::span<const float> values, size_t k) {
  if (k > 4096) {
    std::vector<float> copy(values.begin(), values.end());
    std::nth_element(copy.begin(), copy.begin() + static_cast<std::ptrdiff_t>(k - 1), copy.end(),
                     std::greater<float>());
    return copy[k - 1];
  }
  std::vector<float> heap(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(k));
  std::make_heap(heap.begin(), heap.end(), std::greater<float>());  // heap.front(): the smallest
  for (size_t i = k; i < values.size(); ++i) {
    if (values[i] <= heap.front()) continue;
    std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
    heap.back() = values[i];
    std::push_heap(heap.begin(), heap.end(), std::greater<float>());
  }
  return heap.front();
}

// Step 4: the largest logit value λ >= `floor_logit` whose tokens (l >= λ) hold top_p of the mass
// of those >= floor_logit; floor_logit when the walk never gets there (rounding). The walk needs
// the sorted order only until its sum reaches the target, and the tokens of weight >= ε are a
// prefix of that order (w grows with l): it walks them first, lowering ε until it arrives, and
// sorts them progressively (the best 64, then 4x more while the walk goes on).
inline float sample_top_p_threshold(std::span<const float> l, std::span<const float> w,
                                    float floor_logit, float top_p) {
  double mass = 0.0;  // in index order, as the definition writes it
  for (size_t i = 0; i < l.size(); ++i)
    if (l[i] >= floor_logit) mass += w[i];
  const double target = static_cast<double>(top_p) * mass;
  std::vector<int32_t> order;
  for (float epsilon = 1e-3f;; epsilon = epsilon > 1e-15f ? epsilon * 1e-3f : 0.0f) {
    // The prefix: every token at or above the smallest logit whose weight is >= ε (a cut on the
    // logit, so a prefix of the order even if expf were not monotonic).
    float cut = std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < l.size(); ++i)
      if (l[i] >= floor_logit && w[i] > 0.0f && w[i] >= epsilon) cut = std::min(cut, l[i]);
    order.clear();
    double prefix_mass = 0.0;  // a guide only: the walk decides
    for (size_t i = 0; i < l.size(); ++i) {
      if (l[i] >= floor_logit && l[i] >= cut && w[i] > 0.0f) {
        order.push_back(static_cast<int32_t>(i));
        prefix_mass += w[i];
      }
    }
    if (prefix_mass < target && epsilon > 0.0f) continue;
    const auto larger = [&](int32_t a, int32_t b) { return l[a] > l[b]; };
    size_t sorted = 0;  // order[0 .. sorted) holds the largest logits, in order
    const auto sort_to = [&](size_t count) {
      count = std::min(count, order.size());
      if (count <= sorted) return;
      std::partial_sort(order.begin() + static_cast<std::ptrdiff_t>(sorted),
                        order.begin() + static_cast<std::ptrdiff_t>(count), order.end(), larger);
      sorted = count;
    };
    sort_to(64);
    double cumulative = 0.0;
    for (size_t j = 0; j < order.size();) {
      const float value = l[order[j]];
      while (true) {  // the whole group of logits equal to `value`
        if (j == sorted) sort_to(4 * sorted);
        if (j == order.size() || l[order[j]] != value) break;
        cumulative += w[order[j++]];
      }
      if (cumulative >= target) return value;  // the first (largest) value whose mass reaches it
    }
    if (epsilon == 0.0f) return floor_logit;
  }
}

// Steps 0-5 of one row, as what the draw needs: token i is kept when keeps(i).
struct SampleCut {
  bool greedy = true;
  int32_t argmax = 0;
  float threshold = -std::numeric_limits<float>::infinity();  // steps 3-4: keep l_i >= threshold
  float min_weight = 0.0f;                                    // step 5
  std::vector<float> l, w;  // sanitized logits and weights (empty when greedy)

  bool keeps(size_t i) const {
    return greedy ? i == static_cast<size_t>(argmax)
                  : l[i] >= threshold && sample_weight_kept(w[i], min_weight);
  }
};

// The CPU's rule, fast enough for every decode step: one expf per top-k survivor, top_k by a heap,
// and top_p sorting only as much of the vocabulary as its cut needs (sample_top_p_threshold).
// tests/sample_rule_test.cpp checks it against a full sort of the row.
inline SampleCut sample_rule_cut(std::span<const float> logits, const SampleRuleParams& p) {
  if (logits.empty()) fail("sample_rule_cut: empty logits");
  const size_t n = logits.size();
  SampleCut cut;
  cut.argmax = sample_argmax(logits);
  const float m = sample_logit(logits[cut.argmax]);
  cut.greedy = sample_is_greedy(p, m);
  if (cut.greedy) return cut;
  const float inv_t = 1.0f / p.temperature;
  cut.l.resize(n), cut.w.resize(n);
  for (size_t i = 0; i < n; ++i) cut.l[i] = sample_logit(logits[i]);
  const std::vector<float>& l = cut.l;
  const std::vector<float>& w = cut.w;
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n)  // step 3: the k-th largest logit
    cut.threshold = sample_kth_largest(l, static_cast<size_t>(p.top_k));
  // Weights of the tokens below the top-k threshold are never used: no expf for them.
  for (size_t i = 0; i < n; ++i)
    cut.w[i] = l[i] >= cut.threshold ? sample_weight(l[i], m, inv_t) : 0.0f;
  if (p.top_p < 1.0f) cut.threshold = sample_top_p_threshold(l, w, cut.threshold, p.top_p);
  cut.min_weight = sample_min_weight(p.min_p);
  return cut;
}

// Steps 0-5: kept[i] = 1 for every token the draw can pick (the argmax alone when greedy).
inline std::vector<uint8_t> sample_rule_kept(std::span<const float> logits,
                                             const SampleRuleParams& p) {
  const SampleCut cut = sample_rule_cut(logits, p);
  std::vector<uint8_t> kept(logits.size(), 0);
  for (size_t i = 0; i < logits.size(); ++i) kept[i] = cut.keeps(i);
  return kept;
}

// Step 6 over a cut: the first kept index whose running sum of kept w exceeds max(u, 0) · W.
inline int32_t sample_rule_draw(const SampleCut& cut, float uniform) {
  if (cut.greedy) return cut.argmax;
  double total = 0.0;
  for (size_t i = 0; i < cut.l.size(); ++i)
    if (cut.keeps(i)) total += cut.w[i];
  const double target = static_cast<double>(std::fmax(uniform, 0.0f)) * total;
  double cumulative = 0.0;
  int32_t last = cut.argmax;
  for (size_t i = 0; i < cut.l.size(); ++i) {
    if (!cut.keeps(i)) continue;
    cumulative += cut.w[i];
    last = static_cast<int32_t>(i);
    if (cumulative > target) return last;
  }
  return last;
}

// Steps 0-6: the id the rule picks for the uniform draw `uniform` in [0, 1).
inline int32_t sample_by_rule(std::span<const float> logits, const SampleRuleParams& p,
                              float uniform) {
  return sample_rule_draw(sample_rule_cut(logits, p), uniform);
}

// The uniform draw of one sampling point from 64 random bits: the top 24 bits as a float in
// [0, 1) (every value exact, never 1).
inline float sample_uniform(uint64_t random_bits) {
  return static_cast<float>(random_bits >> 40) * 0x1p-24f;
}

}  // namespace hllm
