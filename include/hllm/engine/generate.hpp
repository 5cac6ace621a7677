// One completion, start to end, on an EngineCore (engine/engine_core.hpp) on the caller's thread:
// what `run` and `chat` use. The core's scheduler, prefix cache and stop / length / cancel rules
// are the server's, so a chat keeps the K/V of its history between turns the same way the server
// does between requests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/engine_core.hpp"
#include "hllm/engine/request.hpp"
#include "hllm/engine/sampler.hpp"

namespace hllm {

struct GenerationOptions {
  int64_t max_new_tokens = 256;
  std::vector<int64_t> stop_ids;  // ending ids (eos, <|eot_id|>); not emitted
  bool ignore_eos = false;        // keep going past stop ids (benchmarks, tests)
};

struct GenerationResult {
  std::vector<int32_t> ids;  // generated ids, the stop id excluded
  FinishReason finish = FinishReason::length;
  int64_t prompt_tokens = 0;     // the whole prompt
  int64_t cached_tokens = 0;     // of which found in the prefix cache (not computed again)
  double prefill_seconds = 0.0;  // until the first token was sampled
  double decode_seconds = 0.0;   // the rest
  int64_t computed_prompt_tokens() const { return prompt_tokens - cached_tokens; }
};

// Generates after `prompt` on `core` until a stop id, the token budget, or on_token returns false
// (FinishReason::cancelled); on_token sees every generated id as it comes. Other requests on the
// core advance too. Throws hllm::Error when the request can never run (see EngineCore::validate);
// a failing forward pass is rethrown as hllm::Error.
inline GenerationResult generate(EngineCore& core, std::span<const int32_t> prompt,
                                 const SamplingParams& sampling, const GenerationOptions& options,
                                 const std::function<bool(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  GenerationResult result;
  std::optional<RequestEnd> ended;
  std::optional<clock::time_point> first_token;
  const auto start = clock::now();

  EngineRequest request;
  request.prompt.assign(prompt.begin(), prompt.end());
  request.sampling = sampling;
  request.max_tokens = options.max_new_tokens;
  request.stop_ids = options.stop_ids;
  request.ignore_eos = options.ignore_eos;
  request.on_token = [&](int32_t id) {
    if (!first_token) first_token = clock::now();
    result.ids.push_back(id);
    return on_token(id);
  };
  request.on_finish = [&](const RequestEnd& end) { ended = end; };
  core.add(std::move(request));
  while (!ended) core.step();

  const auto finished = clock::now();
  const auto prefilled = first_token.value_or(finished);
  if (!ended->error.empty()) fail(ended->error);
  result.finish = ended->reason;
  result.prompt_tokens = ended->prompt_tokens;
  result.cached_tokens = ended->cached_tokens;
  result.prefill_seconds = std::chrono::duration<double>(prefilled - start).count();
  result.decode_seconds = std::chrono::duration<double>(finished - prefilled).count();
  return result;
}

}  // namespace hllm
