// A streaming detokenizer: feed token ids one at a time as they are generated, get text that is
// always complete UTF-8. A token may end in the middle of a multi-byte character (Llama-3 splits
// many CJK characters and emoji over two or three byte tokens); those bytes are held back until
// the next token completes them. Bytes that can never become valid are emitted as U+FFFD at once,
// by the same rule as the full decode, so the concatenated output always equals decode(all ids).
#pragma once

#include <string>
#include <string_view>

#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace hllm {

class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(&tokenizer), skip_special_(skip_special) {}

  // The text that `id` completes (often empty or one character; may include held-back bytes).
  std::string push(TokenId id) {
    std::string out;
    if (skip_special_ && tokenizer_->is_special(id)) return out;
    tokenizer_->append_bytes(id, pending_);
    const size_t used = detail::append_utf8_lossy(pending_, out, false);
    pending_.erase(0, used);
    return out;
  }

  // End of the stream: a held-back incomplete sequence becomes one U+FFFD (as decode does).
  std::string finish() {
    std::string out;
    detail::append_utf8_lossy(pending_, out, true);
    pending_.clear();
    return out;
  }

  // Bytes held back, waiting for the rest of a character (at most 3).
  std::string_view pending() const { return pending_; }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace hllm
