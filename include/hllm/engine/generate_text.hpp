// Text out of an opened model: one completion (engine/generate.hpp) on a fresh engine core,
// stopping at the model's stop ids, with each generated token turned into UTF-8 text as soon as it
// is complete (tokenizer/stream.hpp) — what `hllm run` and a program embedding hllm both want
// (engine/open_model.hpp has the same call for an opened model).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/engine_core.hpp"
#include "hllm/engine/generate.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm {

// Generates up to max_new_tokens after `prompt` (encode_prompt) with `sampling`, stopping at any of
// `stop_ids`. on_text gets every piece of text as it is decoded and returns false to stop
// (FinishReason::cancelled); the last piece (bytes held back while a UTF-8 character was
// incomplete) comes after the loop, and its return value is ignored. The KV cache holds exactly
// prompt + max_new_tokens positions, which must fit the model's context. (A caller with several
// prompts keeps one EngineCore and calls generate() on it: shared prefixes are computed once.)
inline GenerationResult generate_text(LlamaModel& model, const Tokenizer& tokenizer,
                                      std::span<const int64_t> stop_ids,
                                      std::span<const int32_t> prompt,
                                      const SamplingParams& sampling, int64_t max_new_tokens,
                                      const std::function<bool(std::string_view)>& on_text,
                                      bool ignore_eos = false) {
  // Dynamic NTK re-bases RoPE past max_position_embeddings; every other type is trained up to it.
  const bool extends = model.config().rope_scaling.type == RopeType::dynamic;
  const int64_t context = model.config().max_position_embeddings;
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (max_new_tokens < 1 || (total > context && !extends))
    fail("generate_text: ", prompt.size(), " prompt tokens + ", max_new_tokens,
         " new tokens must be within the model's context of ", context, " tokens (and >= 1 new)");
  // One request: nothing to share with a later one.
  EngineCore core(model, EngineOptions::one_sequence(total, /*prefix_caching=*/false));
  StreamDecoder text(tokenizer);
  const GenerationOptions options{max_new_tokens, {stop_ids.begin(), stop_ids.end()}, ignore_eos};
  GenerationResult result =
      generate(core, prompt, sampling, options, [&](int32_t id) { return on_text(text.push(id)); });
  on_text(text.finish());
  return result;
}

}  // namespace hllm
