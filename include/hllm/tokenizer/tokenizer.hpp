// hllm::Tokenizer — the Llama-3 tokenizer, exact with Hugging Face `tokenizers`
// (PreTrainedTokenizerFast) on encode and decode. It is made from HF's files by
// tokenizer/tokenizer_load.hpp (load_tokenizer, tokenizer_from_json); this header has no JSON
// parser in it.
//
//   tokenizer.json          byte-level BPE: model.vocab (byte-level spelled token -> id),
//                           model.merges ("a b" or ["a", "b"], rank = index), model.ignore_merges,
//                           added_tokens (the 256 <|...|> specials), the Llama-3 pre_tokenizer
//   tokenizer_config.json   bos_token, eos_token, chat_template (optional)
//   generation_config.json  eos_token_id: int or list (128001, 128009 [, 128008]) (optional)
//
// encode(text): added tokens written in the text are matched first (leftmost-longest, as HF's
// AddedVocabulary); each stretch between them is split by the Llama-3 regex (pretokenize.hpp) and
// each piece becomes one token if it is in the vocab whole (ignore_merges), else goes through BPE.
// No BOS is added: the chat template writes it (chat.hpp), encode_prompt too (prompt.hpp).
// decode(ids): the bytes of each token, then UTF-8 with U+FFFD for invalid sequences (utf8.hpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/tokenizer/bpe.hpp"
#include "hllm/tokenizer/pretokenize.hpp"
#include "hllm/tokenizer/utf8.hpp"
#include "hllm/tokenizer/vocab.hpp"

namespace hllm {

// A token of tokenizer.json's added_tokens (for Llama-3: the <|...|> specials, 128000..128255).
struct AddedToken {
  TokenId id;
  std::string content;  // the text that stands for it, e.g. "<|eot_id|>"
  bool special;         // skipped by decode(..., skip_special = true)
};

namespace detail {

// The state encode() mutates: the merge cache and scratch buffers, behind one lock per call.
struct EncodeState {
  std::mutex mutex;
  BpeCache cache;
  BpeScratch scratch;
};

struct TokenizerLoader;  // tokenizer/tokenizer_load.hpp: fills a Tokenizer from HF's files

}  // namespace detail

class Tokenizer {
 public:
  // Tokenizers are made by load_tokenizer(path) and tokenizer_from_json(text, source)
  // (tokenizer/tokenizer_load.hpp).

  // Token ids of `text` (valid UTF-8). With match_special, added tokens written in the text
  // ("<|eot_id|>") become their ids, as HF encode does; without, all text is ordinary text.
  std::vector<TokenId> encode(std::string_view text, bool match_special = true) const {
    if (const size_t bad = detail::utf8_error_offset(text); bad != std::string_view::npos) {
      fail("tokenizer: input text is not valid UTF-8 (byte offset ", bad, ")");
    }
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    std::lock_guard lock(state_->mutex);
    size_t plain_start = 0;
    for (size_t i = 0; match_special && i < text.size(); ++i) {
      if (added_one_first_byte_ >= 0) {  // all added tokens start alike ('<'): memchr to the next
        const void* next = std::memchr(text.data() + i, added_one_first_byte_, text.size() - i);
        if (next == nullptr) break;
        i = static_cast<size_t>(static_cast<const char*>(next) - text.data());
      }
      if (!added_first_byte_[static_cast<unsigned char>(text[i])]) continue;
      for (const size_t len : added_lengths_) {  // longest first
        if (len > text.size() - i) continue;
        const auto it = added_by_content_.find(text.substr(i, len));
        if (it == added_by_content_.end()) continue;
        encode_plain(text.substr(plain_start, i - plain_start), out);
        out.push_back(it->second);
        plain_start = i + len;
        i = plain_start - 1;
        break;
      }
    }
    encode_plain(text.substr(plain_start), out);
    return out;
  }

  // The text of `ids`: their bytes joined, invalid UTF-8 replaced by U+FFFD (HF decode with
  // clean_up_tokenization_spaces=False). Throws for an id outside the vocabulary.
  std::string decode(std::span<const TokenId> ids, bool skip_special = false) const {
    std::string bytes;
    for (const TokenId id : ids) {
      if (skip_special && is_special(id)) continue;
      append_bytes(id, bytes);
    }
    std::string text;
    detail::append_utf8_lossy(bytes, text, true);
    return text;
  }

  // Appends the raw bytes of token `id` (possibly a partial UTF-8 sequence).
  void append_bytes(TokenId id, std::string& out) const {
    if (find_added_by_id(id) != nullptr) {
      out += added_bytes_[static_cast<size_t>(added_index_[static_cast<size_t>(id)])];
    } else if (model_.vocab.contains(id)) {
      out += model_.vocab.bytes(id);
    } else {
      fail("tokenizer: token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    }
  }

  // 1 + the largest token id (128256 for Llama-3).
  size_t vocab_size() const { return std::max(model_.vocab.id_limit(), added_index_.size()); }
  bool is_special(TokenId id) const {
    const AddedToken* t = find_added_by_id(id);
    return t != nullptr && t->special;
  }
  // The id of an added token by its text ("<|eot_id|>"), if there is one.
  std::optional<TokenId> find_added(std::string_view content) const {
    const auto it = added_by_content_.find(content);
    if (it == added_by_content_.end()) return std::nullopt;
    return it->second;
  }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

  // BOS (from the configs; -1 and "" when none was given).
  TokenId bos_id() const { return bos_id_; }
  const std::string& bos_token() const { return bos_token_; }
  // Generation stops on any of these: generation_config eos_token_id(s) and tokenizer_config
  // eos_token. Without config files, the Llama-3 end tokens that the vocabulary has.
  std::vector<TokenId> stop_ids() const {
    if (!stop_ids_.empty()) return stop_ids_;
    std::vector<TokenId> ids;
    for (const char* name : {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}) {
      if (const auto id = find_added(name)) ids.push_back(*id);
    }
    return ids;
  }
  // tokenizer_config.json's chat_template ("" when absent). chat.hpp renders the Llama-3 format.
  const std::string& chat_template() const { return chat_template_; }
  bool ignore_merges() const { return model_.ignore_merges; }
  size_t n_merges() const { return model_.merges.size(); }

 private:
  friend struct detail::TokenizerLoader;
  Tokenizer() = default;

  const AddedToken* find_added_by_id(TokenId id) const {
    if (id < 0 || static_cast<size_t>(id) >= added_index_.size()) return nullptr;
    const int32_t index = added_index_[static_cast<size_t>(id)];
    return index < 0 ? nullptr : &added_[static_cast<size_t>(index)];
  }

  void add_stop_id(TokenId id) {
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end())
      stop_ids_.push_back(id);
  }

  // Pre-tokenizes and BPE-encodes text with no added tokens in it. Holds state_->mutex.
  void encode_plain(std::string_view text, std::vector<TokenId>& out) const {
    split_llama3(text, [&](std::string_view piece) {
      const uint64_t hash = detail::hash_bytes(piece);  // for both the vocab and the cache
      if (model_.ignore_merges) {
        if (const TokenId id = model_.vocab.find(piece, hash); id >= 0) {
          out.push_back(id);
          return;
        }
      }
      if (state_->cache.lookup(piece, hash, out)) return;
      const size_t before = out.size();
      detail::bpe_merge(model_, piece, state_->scratch, out);
      state_->cache.store(piece, hash, out.data() + before, out.size() - before);
    });
  }

  detail::BpeModel model_;                // vocab, merges (bpe_load.hpp)
  std::vector<AddedToken> added_;         // added_tokens, in file order
  std::vector<std::string> added_bytes_;  // (added_) what each decodes to
  std::vector<int32_t> added_index_;      // (vocab_size) id -> index in added_, or -1
  std::unordered_map<std::string_view, TokenId> added_by_content_;  // views into added_
  std::array<bool, 256> added_first_byte_{};  // bytes that start some added token
  int added_one_first_byte_ = -1;             // the only such byte, if just one (-1: none/many)
  std::vector<size_t> added_lengths_;         // distinct content lengths, longest first
  TokenId bos_id_ = -1;
  std::string bos_token_;
  std::vector<TokenId> stop_ids_;
  std::string chat_template_;
  std::unique_ptr<detail::EncodeState> state_ = std::make_unique<detail::EncodeState>();
};

}  // namespace hllm
