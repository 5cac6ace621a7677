// How the GPU sampler (kernels/hllm/cuda/sampling.cuh) finds the thresholds of the sampling rule's
// steps 3 and 4 (layout/sample_rule.hpp): a radix select over the 32-bit order keys of the logits,
// 8 bits at a time from the top, so 4 passes over the row per threshold instead of 32 bisection
// passes. The pieces are HLLM_HOST_DEVICE so tests/sample_rule_test.cpp runs the same select on the
// CPU against the rule.
//
// The select finds the largest key K with F(K) >= target, where F(K) = Σ f(i) over the tokens with
// key_i >= K (and key_i >= a floor), f = 1 (top_k: K is then the k-th largest key) or f = the
// token's weight in fixed point (top_p). Level by level:
//
//   key bits   [31 ........ 24][23 ........ 16][15 ......... 8][7 .......... 0]
//   level       shift 24        shift 16        shift 8         shift 0
//
//   histogram: hist[d] = Σ f over tokens whose key agrees with the prefix above `shift` and
//              whose digit (key >> shift) & 255 is d
//   pick:      the largest d with above + Σ_{b >= d} hist[b] >= target; then
//              above += Σ_{b > d} hist[b] (the mass of keys above the new prefix), prefix |= d << shift
//
// Invariant: above < target <= above + Σ_b hist[b], so the pick always lands on a non-empty digit
// and the final prefix is a key that occurs, with F(K) >= target > F(K + 1). That needs
// target >= 1 (k >= 1; a mass target below one unit is raised to one unit, which keeps exactly the
// largest logit, as the rule's top_p <= 0 does).
//
// Sums are integers (exact and independent of the order in which threads add them: the same
// threshold on every run); a weight w in [0, 1] counts as floor(w · 2^40) units, so a 128k row's
// mass is below 2^57 and its rounding below 2^-23 of the largest weight.
#pragma once

#include <cstdint>

#include "hllm/core/dtype.hpp"

namespace hllm {

inline constexpr int SAMPLE_RADIX_BITS = 8;
inline constexpr int SAMPLE_RADIX_BINS = 1 << SAMPLE_RADIX_BITS;
inline constexpr int SAMPLE_RADIX_TOP_SHIFT = 32 - SAMPLE_RADIX_BITS;  // the first level

// A weight in [0, 1] in the select's fixed point (exact scaling by a power of two, then truncation).
HLLM_HOST_DEVICE uint64_t sample_mass_units(float weight) {
  return static_cast<uint64_t>(weight * 0x1p40f);
}

// Whether `key` agrees with `prefix` on the bits above `shift` (every key does at the top level).
HLLM_HOST_DEVICE bool sample_radix_matches(uint32_t key, uint32_t prefix, int shift) {
  return shift == SAMPLE_RADIX_TOP_SHIFT ||
         (key >> (shift + SAMPLE_RADIX_BITS)) == (prefix >> (shift + SAMPLE_RADIX_BITS));
}

HLLM_HOST_DEVICE uint32_t sample_radix_digit(uint32_t key, int shift) {
  return (key >> shift) & (SAMPLE_RADIX_BINS - 1);
}

struct SampleRadixPick {
  uint32_t digit;
  uint64_t above;  // Σ f of the keys above the prefix extended by `digit`
};

// One level's pick from its histogram hist[0 .. SAMPLE_RADIX_BINS) (see the top).
HLLM_HOST_DEVICE SampleRadixPick sample_radix_pick(const uint64_t* hist, uint64_t above,
                                                   double target) {
  uint64_t higher = 0;  // Σ hist[b] for b > d
  for (int d = SAMPLE_RADIX_BINS - 1; d > 0; --d) {
    if (hist[d] > 0 && static_cast<double>(above + higher + hist[d]) >= target)
      return {static_cast<uint32_t>(d), above + higher};
    higher += hist[d];
  }
  return {0, above + higher};
}

}  // namespace hllm
