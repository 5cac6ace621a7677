// The Llama-3 Instruct chat format, identical to HF apply_chat_template with Meta's template:
//
//   {bos_token}                                                      once, before the first message
//   <|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>            per message
//   <|start_header_id|>assistant<|end_header_id|>\n\n                      if add_generation_prompt
//
// Jinja's `trim` is Python's str.strip(): it removes Python whitespace (str.isspace, generated
// table) from both ends. The rendered text is then encoded with added tokens matched and no extra
// BOS (the template already wrote it; a second BOS is the classic double-BOS bug).
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/unicode_tables.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace hllm {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant" (any text is rendered as given)
  std::string content;  // UTF-8
};

namespace detail {

inline bool is_python_space(char32_t cp) {
  const auto& table = unicode_tables::PYTHON_SPACE;
  return std::binary_search(table.begin(), table.end(), cp);
}

}  // namespace detail

// Python's str.strip() on UTF-8 text (invalid UTF-8 is refused by encode later, not here).
inline std::string_view python_strip(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t begin = 0, end = text.size();
  while (begin < end) {
    bool complete = false;
    const size_t len = detail::utf8_subpart(s, begin, end, complete);
    size_t decoded_len = 0;
    if (!complete || !detail::is_python_space(detail::decode_utf8(s + begin, decoded_len))) break;
    begin += len;
  }
  while (end > begin) {
    size_t start = end - 1;  // back up to the lead byte of the last code point
    while (start > begin && (s[start] & 0xC0) == 0x80 && end - start < 4) --start;
    bool complete = false;
    const size_t len = detail::utf8_subpart(s, start, end, complete);
    size_t decoded_len = 0;
    if (!complete || start + len != end ||
        !detail::is_python_space(detail::decode_utf8(s + start, decoded_len))) {
      break;
    }
    end = start;
  }
  return text.substr(begin, end - begin);
}

// One piece of a rendered chat: a control token of the format (`special`, e.g. "<|eot_id|>") or
// text that came from the messages (roles, "\n\n", stripped content).
struct ChatSegment {
  std::string_view special;  // empty for text
  std::string text;
};

// `messages` in the Llama-3 format as segments: the one place the format is written down.
inline std::vector<ChatSegment> llama3_chat_segments(std::span<const ChatMessage> messages,
                                                     bool add_generation_prompt,
                                                     std::string_view bos_token) {
  std::vector<ChatSegment> segments;
  const auto header = [&](std::string_view role) {
    segments.push_back({"<|start_header_id|>", {}});
    segments.push_back({{}, std::string(role)});
    segments.push_back({"<|end_header_id|>", {}});
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0 && !bos_token.empty()) segments.push_back({bos_token, {}});
    header(messages[i].role);
    segments.push_back({{}, "\n\n" + std::string(python_strip(messages[i].content))});
    segments.push_back({"<|eot_id|>", {}});
  }
  if (add_generation_prompt) {
    header("assistant");
    segments.push_back({{}, "\n\n"});
  }
  return segments;
}

// The prompt text for `messages` in the Llama-3 format.
inline std::string render_llama3_chat(std::span<const ChatMessage> messages,
                                      bool add_generation_prompt, std::string_view bos_token) {
  std::string text;
  for (const ChatSegment& segment :
       llama3_chat_segments(messages, add_generation_prompt, bos_token))
    text += segment.special.empty() ? std::string_view(segment.text) : segment.special;
  return text;
}

// True when a chat template (tokenizer_config.json's or a GGUF file's) writes the Llama-3 format
// that render_llama3_chat renders: its header and end-of-turn tokens. Any other template is not
// run (hllm has no Jinja engine): callers say that the Llama-3 format is used instead.
inline bool is_llama3_chat_template(std::string_view chat_template) {
  return chat_template.find("<|start_header_id|>") != std::string_view::npos &&
         chat_template.find("<|end_header_id|>") != std::string_view::npos &&
         chat_template.find("<|eot_id|>") != std::string_view::npos;
}

// The prompt ids: render, then encode with added tokens matched and no BOS added.
inline std::vector<TokenId> encode_chat(const Tokenizer& tokenizer,
                                        std::span<const ChatMessage> messages,
                                        bool add_generation_prompt = true) {
  return tokenizer.encode(
      render_llama3_chat(messages, add_generation_prompt, tokenizer.bos_token()), true);
}

}  // namespace hllm
