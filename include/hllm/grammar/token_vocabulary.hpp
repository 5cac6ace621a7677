// hllm::grammar::TokenVocabulary — each token id's bytes, and all of them as a byte trie, built
// once per tokenizer and shared by every compiled grammar.
//
// A grammar constrains the BYTES of the output, so a token is allowed where its bytes can be fed
// to the recognizer one by one. Added tokens (Llama-3's <|...|> specials) have no such bytes:
// they are never allowed, except the `end_ids` (the stop ids, e.g. <|eot_id|>, <|end_of_text|>),
// which are allowed exactly where the grammar may end.
//
// The trie is stored in depth-first preorder, so a walk over it is a forward scan that skips a
// whole subtree by jumping to its `subtree_end`:
//
//   tokens "a"=7, "ab"=9, "b"=3:   index  byte  depth  subtree_end  tokens (in sorted_ids)
//                                    0     'a'    1        2        [7]
//                                    1     'b'    2        2        [9]
//                                    2     'b'    1        3        [3]
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::grammar {

class TokenVocabulary {
 public:
  struct TrieNode {
    uint32_t subtree_end;  // index of the first node after this node's subtree
    uint32_t first_token;  // this node's tokens: sorted_ids()[first_token, + n_tokens)
    uint16_t depth;        // 1 + the depth of its parent (the root is implicit, depth 0)
    uint8_t byte;          // the byte on the edge into this node
    uint8_t n_tokens;      // tokens spelled by the path to here (more than one only if repeated)
  };

  TokenVocabulary(const Tokenizer& tokenizer, std::vector<int32_t> end_ids)
      : size_(tokenizer.vocab_size()), end_ids_(std::move(end_ids)) {
    kind_.assign(size_, Kind::never);
    for (const int32_t id : end_ids_) {
      if (id < 0 || static_cast<size_t>(id) >= size_) {
        fail("grammar: end id ", id, " is outside the tokenizer's vocabulary (size ", size_, ")");
      }
      kind_[static_cast<size_t>(id)] = Kind::end;
    }
    for (const AddedToken& t : tokenizer.added_tokens()) {
      if (kind_[static_cast<size_t>(t.id)] != Kind::end)
        kind_[static_cast<size_t>(t.id)] = Kind::added;
    }
    offsets_.assign(size_ + 1, 0);
    for (size_t id = 0; id < size_; ++id) {
      offsets_[id] = static_cast<uint32_t>(arena_.size());
      if (kind_[id] != Kind::never) continue;
      try {
        tokenizer.append_bytes(static_cast<int32_t>(id), arena_);
      } catch (const Error&) {  // an id with no entry (a hole in the vocabulary): never allowed
        continue;
      }
      if (arena_.size() > offsets_[id]) kind_[id] = Kind::bytes;
    }
    offsets_[size_] = static_cast<uint32_t>(arena_.size());
    build_trie();
  }

  // The logits width a matcher masks: tokenizer.vocab_size(). Ids at or beyond it are forbidden.
  size_t size() const { return size_; }
  const std::vector<int32_t>& end_ids() const { return end_ids_; }
  bool is_end(int32_t id) const {
    return in_range(id) && kind_[static_cast<size_t>(id)] == Kind::end;
  }
  // The bytes of a token a grammar may allow; empty for end ids, added tokens and unknown ids.
  std::string_view bytes(int32_t id) const {
    if (!in_range(id) || kind_[static_cast<size_t>(id)] != Kind::bytes) return {};
    const auto i = static_cast<size_t>(id);
    return std::string_view(arena_).substr(offsets_[i], offsets_[i + 1] - offsets_[i]);
  }
  const std::vector<TrieNode>& trie() const { return trie_; }
  const std::vector<int32_t>& sorted_ids() const { return sorted_ids_; }
  size_t max_depth() const { return max_depth_; }

 private:
  enum class Kind : uint8_t { never, bytes, end, added };

  bool in_range(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < size_; }

  void build_trie() {
    for (size_t id = 0; id < size_; ++id) {
      if (kind_[id] == Kind::bytes) sorted_ids_.push_back(static_cast<int32_t>(id));
    }
    std::sort(sorted_ids_.begin(), sorted_ids_.end(),
              [&](int32_t a, int32_t b) { return bytes(a) < bytes(b); });
    std::vector<uint32_t> path;  // node index at each depth - 1 of the current token's path
    std::string_view previous;
    for (size_t k = 0; k < sorted_ids_.size(); ++k) {
      const std::string_view b = bytes(sorted_ids_[k]);
      size_t common = 0;
      while (common < previous.size() && common < b.size() && previous[common] == b[common]) {
        ++common;
      }
      for (; path.size() > common; path.pop_back()) {
        trie_[path.back()].subtree_end = static_cast<uint32_t>(trie_.size());
      }
      for (size_t d = common; d < b.size(); ++d) {
        if (d + 1 > UINT16_MAX) fail("grammar: a token is longer than ", UINT16_MAX, " bytes");
        path.push_back(static_cast<uint32_t>(trie_.size()));
        trie_.push_back({0, static_cast<uint32_t>(k), static_cast<uint16_t>(d + 1),
                         static_cast<uint8_t>(b[d]), 0});
      }
      TrieNode& node = trie_[path.back()];
      if (node.n_tokens == UINT8_MAX) fail("grammar: too many tokens spell the same bytes");
      ++node.n_tokens;
      max_depth_ = std::max(max_depth_, b.size());
      previous = b;
    }
    for (; !path.empty(); path.pop_back()) {
      trie_[path.back()].subtree_end = static_cast<uint32_t>(trie_.size());
    }
  }

  size_t size_;
  std::vector<int32_t> end_ids_;
  std::vector<Kind> kind_;           // (size) what a grammar may do with each id
  std::string arena_;                // token bytes back to back
  std::vector<uint32_t> offsets_;    // (size + 1) token id -> its bytes in arena_
  std::vector<int32_t> sorted_ids_;  // ids with bytes, in byte order (= trie preorder)
  std::vector<TrieNode> trie_;
  size_t max_depth_ = 0;
};

}  // namespace hllm::grammar
