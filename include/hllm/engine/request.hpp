// What a caller hands the engine for one completion, and what it hears back: the request (prompt,
// sampling, limits, callbacks) and how it ended.
//
// Per token, on the engine thread, in this order:
//   prompt positions 1 .. n-1:  on_prompt_logprob (when prompt_logprobs >= 0), all of them first
//   each sampling point:        raw logits ─► logprobs (raw) ─► logits_processor ─► Sampler
//   each emitted id:            on_logprob (when logprobs >= 0), then on_token
// Preemption and recompute call none of these twice: a recomputed prompt position is not
// delivered again, and every sampling point is sampled once.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "hllm/engine/sampler.hpp"

namespace hllm {

// The most alternatives logprobs / prompt_logprobs may ask for (OpenAI's top_logprobs limit).
inline constexpr int32_t MAX_LOGPROBS = 20;

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

// How a request ended, handed to its on_finish.
struct RequestEnd {
  FinishReason reason = FinishReason::cancelled;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens whose K/V came from the prefix cache
  std::string error;          // set when a failure ended it
};

struct EngineRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;        // validated by the caller
  int64_t max_tokens = 256;       // completion tokens at most
  std::vector<int64_t> stop_ids;  // ids that end the completion (not emitted)
  bool ignore_eos = false;        // keep going past stop ids
  uint64_t cache_salt = 0;        // prefix-cache blocks are shared only among equal salts
  int32_t logprobs = -1;          // -1: off; 0..20: each emitted id's logprob + that many top ids
  int32_t prompt_logprobs = -1;   // -1: off; 0..20: as logprobs, for prompt positions 1 .. n-1
                                  // (computes the whole prompt: no prefix-cache hits)
  // Engine thread, at each sampling point: the raw logits row ([vocab]) and the ids generated so
  // far (not the prompt). It may lower logits to -infinity (constrained decoding); when it masks
  // them all the request ends (cancelled, with an error).
  std::function<void(std::span<float> logits, std::span<const int32_t> generated)> logits_processor;
  // Engine thread: each generated id as soon as it is sampled; return false to stop
  // (FinishReason::cancelled, e.g. the client went away or a stop string matched).
  std::function<bool(int32_t)> on_token;
  // Engine thread, logprobs >= 0: each emitted id's logprob, just before its on_token.
  std::function<void(const TokenLogprob&)> on_logprob;
  // Engine thread, prompt_logprobs >= 0: position p's logprob (prompt[p] given prompt[0 .. p-1]),
  // for p = 1 .. n-1 in order, before anything else.
  std::function<void(int64_t position, const TokenLogprob&)> on_prompt_logprob;
  // Engine thread: exactly once, at the end (also after a failure: error is set then).
  std::function<void(const RequestEnd&)> on_finish;
};

}  // namespace hllm
