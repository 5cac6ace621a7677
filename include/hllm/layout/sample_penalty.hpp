// One sampling point: the penalties on a row of logits, then the sampling rule
// (layout/sample_rule.hpp). Shared by the CPU sampler (engine/sampler.hpp) and the GPU's penalty
// kernel (kernels/hllm/cuda/sampling.cuh), so both pick the same id from the same logits and draw.
//
// Penalties, in vLLM's and HF generate()'s order:
//   repetition (HF/CTRL), every distinct id of the context (prompt + generated):
//       logit > 0 ? logit / r : logit · r
//   presence / frequency (OpenAI), every distinct id generated so far, c times:
//       logit -= presence + frequency · c
// A row's penalties are a list of SamplePenaltyToken, one per distinct id they touch, so applying
// them is one independent update per entry (one GPU thread each, no two on the same logit).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "hllm/layout/sample_rule.hpp"

namespace hllm {

struct SamplePenalties {
  float repetition = 1.0f;  // 1: off
  float presence = 0.0f;    // 0: off
  float frequency = 0.0f;   // 0: off

  bool repeats() const { return repetition != 1.0f; }
  bool counts() const { return presence != 0.0f || frequency != 0.0f; }
};

// One id a row's penalties touch: `generated` = how often it was generated (0: prompt only).
struct SamplePenaltyToken {
  int32_t id = 0;
  int32_t generated = 0;
};
static_assert(sizeof(SamplePenaltyToken) == 8, "read by the GPU as 8 bytes");

// One explicit fma, so that no compiler's contraction choice makes the CPU and GPU differ.
HLLM_HOST_DEVICE float penalized_logit(float logit, const SamplePenalties& p, int32_t generated) {
  if (p.repetition != 1.0f) logit = logit > 0.0f ? logit / p.repetition : logit * p.repetition;
  if (generated > 0) logit -= fmaf(p.frequency, static_cast<float>(generated), p.presence);
  return logit;
}

// The list for a context whose last `n_generated` tokens were generated: every distinct id in
// [0, vocab) the penalties change, in order of first appearance.
inline std::vector<SamplePenaltyToken> sample_penalty_tokens(std::span<const int32_t> context,
                                                             size_t n_generated, int64_t vocab,
                                                             const SamplePenalties& p) {
  std::vector<SamplePenaltyToken> tokens;
  if (!p.repeats() && !p.counts()) return tokens;
  n_generated = std::min(n_generated, context.size());
  const size_t prompt = context.size() - n_generated;
  std::unordered_map<int32_t, size_t> at;  // id -> its entry
  for (size_t i = p.repeats() ? 0 : prompt; i < context.size(); ++i) {
    const int32_t id = context[i];
    if (id < 0 || id >= vocab) continue;
    const auto [entry, added] = at.try_emplace(id, tokens.size());
    if (added) tokens.push_back({id, 0});
    if (i >= prompt && p.counts()) ++tokens[entry->second].generated;
  }
  return tokens;
}

// Everything one sampling point needs besides its logits.
struct SampleRow {
  SampleRuleParams rule;
  SamplePenalties penalties;
  std::span<const SamplePenaltyToken> penalized;  // sample_penalty_tokens() of the context
  float uniform = 0.0f;                           // sample_uniform() of the request's RNG
};

// The id one sampling point picks, on the CPU; `logits` is penalized in place.
inline int32_t sample_row(std::span<float> logits, const SampleRow& row) {
  for (const SamplePenaltyToken& t : row.penalized)
    logits[t.id] = penalized_logit(logits[t.id], row.penalties, t.generated);
  return sample_by_rule(logits, row.rule, row.uniform);
}

}  // namespace hllm
