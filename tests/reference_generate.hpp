// The oracle for everything the engine generates: the plainest possible loop — the whole prompt
// through LlamaModel::forward into a contiguous KV cache, then one token at a time, sampling with
// a fresh Sampler and stopping at a stop id or the budget. No scheduler, no paging, no prefix
// cache, no batching: what a request's output must equal whatever the engine did to produce it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "hllm/engine/sampler.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace hllm::test {

inline std::vector<int32_t> reference_generate(LlamaModel& model, std::span<const int32_t> prompt,
                                               const SamplingParams& sampling, int64_t max_tokens,
                                               std::span<const int64_t> stop_ids = {}) {
  KvCache cache = model.new_cache(static_cast<int64_t>(prompt.size()) + max_tokens);
  Sampler sampler(sampling);
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  std::vector<int32_t> context(prompt.begin(), prompt.end()), out;
  model.forward(prompt, cache, logits, /*all_logits=*/false);
  while (static_cast<int64_t>(out.size()) < max_tokens) {
    const int32_t next = sampler.sample(logits, context, out.size());
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) break;
    out.push_back(next);
    context.push_back(next);
    if (static_cast<int64_t>(out.size()) == max_tokens) break;
    model.forward({&next, 1}, cache, logits, /*all_logits=*/false);
  }
  return out;
}

}  // namespace hllm::test
