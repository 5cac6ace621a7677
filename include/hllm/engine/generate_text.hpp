// Text out of an opened model: the generation loop (engine/generate.hpp) in a fresh KV cache,
// stopping at the model's stop ids, with each generated token turned into UTF-8 text as soon as it
// is complete (tokenizer/stream.hpp) — what `hllm run` and a program embedding hllm both want.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/generate.hpp"
#include "hllm/engine/open_model.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/tokenizer/stream.hpp"

namespace hllm {

// Generates up to max_new_tokens after `prompt` (encode_prompt) with `sampling`. on_text gets every
// piece of text as it is decoded and returns false to stop (FinishReason::cancelled); the last
// piece (bytes held back while a UTF-8 character was incomplete) comes after the loop, and its
// return value is ignored.
inline GenerationResult generate_text(LoadedModel& m, std::span<const int32_t> prompt,
                                      const SamplingParams& sampling, int64_t max_new_tokens,
                                      const std::function<bool(std::string_view)>& on_text,
                                      bool ignore_eos = false) {
  if (!m.tokenizer) fail("generate_text: the model was opened without its tokenizer");
  KvCache cache = m.model.new_cache(static_cast<int64_t>(prompt.size()) + max_new_tokens);
  std::vector<int32_t> cached;
  Sampler sampler(sampling);
  StreamDecoder text(*m.tokenizer);
  const GenerationOptions options{max_new_tokens, m.stop_ids, ignore_eos};
  GenerationResult result = generate(m.model, cache, prompt, cached, sampler, options,
                                     [&](int32_t id) { return on_text(text.push(id)); });
  on_text(text.finish());
  return result;
}

}  // namespace hllm
