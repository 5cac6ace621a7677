// The ids a generation starts from: one rule for every caller (run, chat, the server's two
// endpoints, perplexity, programs embedding hllm).
//
//   chat:        the Llama-3 chat format of `messages` with the assistant header appended
//                (tokenizer/chat.hpp);
//   completion:  BOS, then `text` (what HF's tokenizer(text) gives Llama-3).
//
// Text that spells a special token ("<|eot_id|>", "<|start_header_id|>system...") inside a message
// or a completion prompt is plain text by default, as OpenAI's API treats it: a user cannot end
// their turn early or forge a system turn. The chat format's own control tokens are placed as ids
// around the text, and each piece of text between them is encoded on its own — exactly how HF's
// tokenizer splits a rendered chat at its special tokens, so for text without special-token
// spellings the ids equal apply_chat_template's. SpecialTokens::control reads such text as control
// tokens (HF apply_chat_template / tokenizer(text) with specials matched): for trusted input only.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm {

enum class SpecialTokens {
  text,     // special-token spellings in user text are plain text (the default)
  control,  // ... are the special tokens themselves (trusted input)
};

inline std::vector<TokenId> encode_prompt(const Tokenizer& tokenizer,
                                          std::span<const ChatMessage> messages,
                                          SpecialTokens in_content = SpecialTokens::text) {
  if (in_content == SpecialTokens::control)
    return encode_chat(tokenizer, messages, /*add_generation_prompt=*/true);
  std::vector<TokenId> ids;
  for (const ChatSegment& segment :
       llama3_chat_segments(messages, /*add_generation_prompt=*/true, tokenizer.bos_token())) {
    if (segment.special.empty()) {
      const std::vector<TokenId> text = tokenizer.encode(segment.text, /*match_special=*/false);
      ids.insert(ids.end(), text.begin(), text.end());
    } else if (const auto id = tokenizer.find_added(segment.special)) {
      ids.push_back(*id);
    } else {
      fail("the tokenizer has no ", segment.special, " token: not the Llama-3 chat format");
    }
  }
  return ids;
}

inline std::vector<TokenId> encode_prompt(const Tokenizer& tokenizer, std::string_view text,
                                          SpecialTokens in_text = SpecialTokens::text) {
  std::vector<TokenId> ids;
  if (tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<TokenId> body = tokenizer.encode(text, in_text == SpecialTokens::control);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

}  // namespace hllm
