// The generation loop shared by `run`, `chat` and the server: prefill, then sample one token at a
// time through the KV cache until a stop id, the token budget, or the caller says stop.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace hllm {

enum class FinishReason { stop, length, cancelled };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::stop:
      return "stop";
    case FinishReason::length:
      return "length";
    case FinishReason::cancelled:
      return "cancelled";
  }
  return "?";
}

struct GenerationOptions {
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_ids;  // ending ids (eos, <|eot_id|>); not emitted
  bool ignore_eos = false;        // keep going past stop ids (benchmarks, tests)
};

struct GenerationResult {
  std::vector<int32_t> ids;  // generated ids, the stop id excluded
  FinishReason finish = FinishReason::length;
  int64_t prompt_tokens = 0;     // tokens prefilled by this call (after any cached prefix)
  double prefill_seconds = 0.0;  // until the first token's logits
  double decode_seconds = 0.0;   // the rest
};

// Makes `cache` hold exactly `prompt` (re-using the longest prefix it already holds, feeding only
// the rest), then generates. `on_token(id)` sees every generated id as it comes and returns false
// to stop (FinishReason::cancelled). The generated ids are appended to `cache` as they are fed
// back.
inline GenerationResult generate(LlamaModel& model, KvCache& cache, std::span<const int32_t> prompt,
                                 std::vector<int32_t>& cached_ids, Sampler& sampler,
                                 const GenerationOptions& options,
                                 const std::function<bool(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) fail("generate: the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) + options.max_new_tokens > cache.capacity())
    fail("the prompt (", prompt.size(), " tokens) plus ", options.max_new_tokens,
         " new tokens exceed the context of ", cache.capacity(), " tokens");

  // Longest common prefix with what the cache holds; at least the last prompt token is re-fed so
  // there are logits to sample from.
  size_t reuse = 0;
  while (reuse < cached_ids.size() && reuse + 1 < prompt.size() &&
         cached_ids[reuse] == prompt[reuse])
    ++reuse;
  cache.truncate(static_cast<int64_t>(reuse));
  cached_ids.assign(prompt.begin(), prompt.end());

  GenerationResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size() - reuse);
  std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
  const auto start = clock::now();
  model.forward(prompt.subspan(reuse), cache, logits, /*all_logits=*/false);
  const auto prefilled = clock::now();
  result.prefill_seconds = std::chrono::duration<double>(prefilled - start).count();

  std::vector<int32_t> context(prompt.begin(), prompt.end());  // for the penalties
  for (int64_t step = 0;; ++step) {
    const int32_t next = sampler.sample(logits, context, result.ids.size());
    const bool is_stop =
        std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end();
    if (is_stop && !options.ignore_eos) {
      result.finish = FinishReason::stop;
      break;
    }
    result.ids.push_back(next);
    context.push_back(next);
    if (!on_token(next)) {
      result.finish = FinishReason::cancelled;
      break;
    }
    if (step + 1 >= options.max_new_tokens) {
      result.finish = FinishReason::length;
      break;
    }
    model.forward({&next, 1}, cache, logits, /*all_logits=*/false);
    cached_ids.push_back(next);
  }
  result.decode_seconds = std::chrono::duration<double>(clock::now() - prefilled).count();
  return result;
}

}  // namespace hllm
