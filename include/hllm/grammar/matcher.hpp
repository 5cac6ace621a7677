// hllm::grammar::GrammarMatcher — one request's position in a CompiledGrammar: which tokens may
// come next (mask_logits / fill_bitmask) and the advance by the sampled one (accept_token).
//
//   auto compiled = compile(json_schema_grammar(schema), vocabulary);   // once per schema
//   GrammarMatcher m(compiled);                                         // once per request
//   for each step: m.mask_logits(logits); id = sample(logits); m.accept_token(id);
//                  stop when m.is_finished() (an end id was accepted)
//
// Copying a matcher is cheap (two shared pointers and an int) and copies are independent.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/compiled.hpp"

// Tokens before the end of a budget from which growth() guards each step; a single token that adds
// more than this to the shortest completion is not guarded against.
#ifndef HLLM_GRAMMAR_GROWTH_WINDOW
#define HLLM_GRAMMAR_GROWTH_WINDOW 256
#endif

namespace hllm::grammar {

class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<CompiledGrammar> compiled)
      : compiled_(std::move(compiled)) {
    if (compiled_ == nullptr) fail("grammar: GrammarMatcher needs a compiled grammar");
    tables_ = compiled_->tables();
    state_ = tables_->start();
  }

  // Advances by token `id`; false (and nothing changes) when the grammar forbids it here. An end
  // id is accepted only where the grammar can end, and then is_finished().
  bool accept_token(int32_t id) {
    if (finished_) return false;
    const TokenVocabulary& v = compiled_->vocabulary();
    if (v.is_end(id)) {
      if (!tables_->can_end(state_)) return false;
      finished_ = true;
      return true;
    }
    const std::string_view bytes = v.bytes(id);
    if (bytes.empty()) return false;
    const int32_t next = tables_->advance(state_, bytes);
    if (next == detail::StackSets::DEAD) return false;
    state_ = next;
    return true;
  }

  // Sets every forbidden token's logit to -infinity, ids at or beyond the vocabulary's size too.
  // logits.size() is the model's vocabulary, at least the tokenizer's.
  void mask_logits(std::span<float> logits) const {
    const size_t n = logits.size();
    if (n < compiled_->vocabulary().size()) {
      fail("grammar: mask_logits got ", n, " logits for a vocabulary of ",
           compiled_->vocabulary().size());
    }
    constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
    if (finished_) {
      std::fill(logits.begin(), logits.end(), NEG_INF);
      return;
    }
    const std::shared_ptr<const TokenMask> mask = tables_->mask(state_);
    const auto word = [&](size_t w) { return w < mask->size() ? (*mask)[w] : 0u; };
    const size_t n_words = (n + 31) / 32;
    for (size_t w = 0; w < n_words; ++w) {
      const uint32_t bits = word(w);
      if (bits == UINT32_MAX) continue;
      float* p = logits.data() + w * 32;
      if (bits == 0) {  // a run of all-forbidden words: one fill
        size_t end = w + 1;
        while (end < n_words && word(end) == 0) ++end;
        std::fill(p, logits.data() + std::min(n, end * 32), NEG_INF);
        w = end - 1;
        continue;
      }
      const size_t count = std::min<size_t>(32, n - w * 32);
      const uint32_t in_range = count == 32 ? UINT32_MAX : (1u << count) - 1;
      if (std::popcount(~bits & in_range) <= 16) {  // few forbidden: write just those
        for (uint32_t z = ~bits & in_range; z != 0; z &= z - 1) p[std::countr_zero(z)] = NEG_INF;
        continue;
      }
      std::array<float, 32> keep;  // few allowed: fill the word, then put those back
      for (uint32_t b = bits; b != 0; b &= b - 1)
        keep[std::countr_zero(b)] = p[std::countr_zero(b)];
      std::fill(p, p + count, NEG_INF);
      for (uint32_t b = bits; b != 0; b &= b - 1)
        p[std::countr_zero(b)] = keep[std::countr_zero(b)];
    }
  }

  // Bit i of words[i / 32] set = token i allowed. words.size() >= ceil(vocabulary size / 32);
  // words beyond are zeroed.
  void fill_bitmask(std::span<uint32_t> words) const {
    const size_t needed = (compiled_->vocabulary().size() + 31) / 32;
    if (words.size() < needed) {
      fail("grammar: fill_bitmask got ", words.size(), " words, needs ", needed);
    }
    std::fill(words.begin(), words.end(), 0u);
    if (finished_) return;
    const std::shared_ptr<const TokenMask> mask = tables_->mask(state_);
    std::copy(mask->begin(), mask->end(), words.begin());
  }

  // mask_logits within a token budget: `tokens_left` more tokens may come, an end id included.
  // Allows only what still leaves room for the shortest completion, so the document is always
  // complete within the budget: once it needs all of it, only the tokens that spell it
  // (mask_closing); before, every allowed token but those that would lengthen it past the budget
  // (StackSets::growth, computed once a state is within HLLM_GRAMMAR_GROWTH_WINDOW tokens of it).
  // Exact when every byte is a token of its own (byte-level BPE) and the shortest completion of
  // the state is known; otherwise the same as mask_logits.
  void mask_logits(std::span<float> logits, size_t tokens_left) const {
    const size_t closing = closing_length();
    if (finished_ || closing == SIZE_MAX) return mask_logits(logits);
    if (closing + 1 >= tokens_left) return mask_closing(logits);
    mask_logits(logits);
    if (tokens_left > closing + 1 + HLLM_GRAMMAR_GROWTH_WINDOW) return;
    for (const auto& [id, length] : *tables_->growth(state_))
      if (length == SIZE_MAX || length + 2 > tokens_left)  // after it: length + 1 <= left - 1
        logits[static_cast<size_t>(id)] = -std::numeric_limits<float>::infinity();
  }

  // The fewest bytes that still complete the document from here (0: it may end now); SIZE_MAX
  // when it can never be completed. Every byte is a token of its own in a byte-level BPE
  // vocabulary, so the document can always be finished within closing_length() + 1 tokens.
  size_t closing_length() const { return finished_ ? 0 : tables_->closing_length(state_); }

  // Masks all but the tokens that spell a prefix of the shortest completion (the end ids once the
  // document may end): what a caller applies when the token budget runs out, so that the output
  // is still complete. Needs closing_length() != SIZE_MAX.
  void mask_closing(std::span<float> logits) const {
    const auto bytes = finished_ ? std::optional<std::string>() : tables_->closing(state_);
    if (!finished_ && !bytes) fail("grammar: mask_closing without a known completion");
    std::vector<std::pair<int32_t, float>> keep;
    const TokenVocabulary& v = compiled_->vocabulary();
    if (!finished_ && bytes->empty())
      for (const int32_t id : v.end_ids()) keep.emplace_back(id, logits[static_cast<size_t>(id)]);
    if (!finished_) {  // the trie path that spells the completion: each node's tokens are prefixes
      const auto& trie = v.trie();
      size_t i = 0, end = trie.size();
      for (size_t depth = 0; depth < bytes->size(); ++depth) {
        while (i < end && trie[i].byte != static_cast<uint8_t>((*bytes)[depth]))
          i = trie[i].subtree_end;
        if (i >= end) break;
        for (uint32_t k = 0; k < trie[i].n_tokens; ++k) {
          const int32_t id = v.sorted_ids()[trie[i].first_token + k];
          keep.emplace_back(id, logits[static_cast<size_t>(id)]);
        }
        end = trie[i].subtree_end;
        ++i;  // its first child
      }
    }
    std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
    for (const auto& [id, logit] : keep) logits[static_cast<size_t>(id)] = logit;
  }

  // The root rule is complete here (an end id would be accepted).
  bool can_end() const { return tables_->can_end(state_); }
  // An end id was accepted: nothing more is allowed.
  bool is_finished() const { return finished_; }

 private:
  std::shared_ptr<CompiledGrammar> compiled_;
  std::shared_ptr<detail::StackSets> tables_;  // the interned states state_ lives in
  int32_t state_ = detail::StackSets::DEAD;
  bool finished_ = false;
};

}  // namespace hllm::grammar
