// What a caller hands the engine for one completion, and what it hears back: the request (prompt,
// sampling, limits, callbacks) and how it ended.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "hllm/engine/sampler.hpp"

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
  // Engine thread: each generated id as soon as it is sampled; return false to stop
  // (FinishReason::cancelled, e.g. the client went away or a stop string matched).
  std::function<bool(int32_t)> on_token;
  // Engine thread: exactly once, at the end (also after a failure: error is set then).
  std::function<void(const RequestEnd&)> on_finish;
};

}  // namespace hllm
