// hllm::grammar::CompiledGrammar — a Grammar bound to a TokenVocabulary, plus the caches that make
// per-token masking cheap. One is shared by every request that uses the same grammar; a
// GrammarMatcher (matcher.hpp) is one request's position in it.
//
// The recognizer is a nondeterministic pushdown automaton over bytes (the approach of llama.cpp's
// grammar sampler): its state is the SET of parse stacks still alive. Stacks are interned as
// immutable linked nodes, so a stack is one int and a stack set one sorted vector of ints:
//
//   node  {pos, parent}      pos: a position in Grammar::elements(); the top node's pos is a
//                            byte-set terminal, a parent's pos is where its rule resumes
//   set   {nodes, can_end}   sorted node ids; can_end: the root rule is complete here
//
// Sets are interned too (equal sets, one id), and everything is memoized by set id:
//
//   step(set, byte) -> set        a row of 256 ids per set, filled lazily
//   mask(set)       -> bitmask    (vocab_size / 32) words; computed by a depth-first walk of the
//                                 vocabulary's byte trie, pruning a subtree once its set is DEAD
//   closing(set)    -> bytes      the shortest text that completes the document from there (each
//                                 stack's shortest completion is known structurally: the fewest
//                                 bytes each grammar position still needs), for token budgets
//
// A generated token therefore costs, in steady state, a bitmask copy plus one row lookup per byte.
// Memory: transition rows and masks are caches, cleared when over their budget (below). The
// interned nodes and sets are not (matchers hold their ids): once a table holds MAX_SETS sets,
// new matchers start on a fresh table and the old one is freed with its last matcher.
// A step whose result would hold more than MAX_STACKS stacks throws: the grammar is too ambiguous.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/grammar.hpp"
#include "hllm/grammar/token_vocabulary.hpp"

#ifndef HLLM_GRAMMAR_MAX_STACKS
#define HLLM_GRAMMAR_MAX_STACKS 4096  // stacks alive at once; more is an Error (ambiguous grammar)
#endif
#ifndef HLLM_GRAMMAR_MASK_CACHE_BYTES
#define HLLM_GRAMMAR_MASK_CACHE_BYTES (size_t{64} << 20)  // 4,000 masks of a 128k vocabulary
#endif
#ifndef HLLM_GRAMMAR_ROW_CACHE_BYTES
#define HLLM_GRAMMAR_ROW_CACHE_BYTES (size_t{64} << 20)  // 64k transition rows of 1 KiB
#endif
#ifndef HLLM_GRAMMAR_MAX_SETS
#define HLLM_GRAMMAR_MAX_SETS (size_t{1} << 20)  // interned stack sets per table (~ 50 MB)
#endif

namespace hllm::grammar {

using TokenMask = std::vector<uint32_t>;  // bit i of word i / 32: token i allowed

namespace detail {

// The interned stacks and stack sets of one grammar, and the caches keyed by set id. Every public
// member locks `mutex_`.
class StackSets {
 public:
  static constexpr int32_t DEAD = 0;  // the empty set that cannot end: no byte is accepted

  StackSets(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenVocabulary> vocab)
      : grammar_(std::move(grammar)), vocab_(std::move(vocab)) {
    shortest_rests();
    scratch_.clear();
    intern_scratch(false);  // id 0 = DEAD
    for (const uint32_t alt : grammar_->rules()[grammar_->root()].alternatives) {
      closure(static_cast<int32_t>(alt), -1);
    }
    start_ = intern_scratch(scratch_end_);
  }

  int32_t start() const { return start_; }
  size_t size() const {
    std::lock_guard lock(mutex_);
    return sets_.size();
  }
  bool can_end(int32_t set) const {
    std::lock_guard lock(mutex_);
    return sets_[static_cast<size_t>(set)].can_end;
  }

  // The set after feeding `bytes` from `set`; DEAD when some byte is refused.
  int32_t advance(int32_t set, std::string_view bytes) {
    std::lock_guard lock(mutex_);
    return advance_locked(set, bytes);
  }

  // The length of closing(set) (SIZE_MAX: none), without spelling it.
  size_t closing_length(int32_t set) const {
    std::lock_guard lock(mutex_);
    const uint32_t n = sets_[static_cast<size_t>(set)].min_len;
    return n == NO_END ? SIZE_MAX : n;
  }

  // The shortest bytes that take `set` to where the root rule can end ("" when it can already);
  // nullopt when it never can.
  std::optional<std::string> closing(int32_t set) {
    std::lock_guard lock(mutex_);
    return closing_locked(set);
  }

  std::shared_ptr<const TokenMask> mask(int32_t set) {
    std::lock_guard lock(mutex_);
    return mask_locked(set);
  }

  // The tokens allowed at `set` after which the shortest completion is longer than from `set`,
  // each with that length (SIZE_MAX: none is known), memoized per set. Few: the tokens that commit
  // to more structure (a ',' before an optional property, a '[' ...), not the text inside a value.
  using Growth = std::vector<std::pair<int32_t, size_t>>;
  std::shared_ptr<const Growth> growth(int32_t set) {
    std::lock_guard lock(mutex_);
    if (const auto it = growths_.find(set); it != growths_.end()) return it->second;
    auto growth = std::make_shared<Growth>();
    const uint32_t here = sets_[static_cast<size_t>(set)].min_len;
    const std::shared_ptr<const TokenMask> allowed = mask_locked(set);
    for (size_t w = 0; here != NO_END && w < allowed->size(); ++w)
      for (uint32_t bits = (*allowed)[w]; bits != 0; bits &= bits - 1) {
        const auto id = static_cast<int32_t>(w * 32 + static_cast<size_t>(std::countr_zero(bits)));
        const std::string_view bytes = vocab_->bytes(id);
        if (bytes.empty()) continue;  // an end id
        const uint32_t after = sets_[static_cast<size_t>(advance_locked(set, bytes))].min_len;
        const size_t length = after == NO_END ? SIZE_MAX : after;
        if (length > here) growth->emplace_back(id, length);
      }
    if (growths_.size() > (size_t{1} << 12)) growths_.clear();
    growths_.emplace(set, growth);
    return growth;
  }

 private:
  int32_t advance_locked(int32_t set, std::string_view bytes) {
    for (const char c : bytes) {
      set = step(set, static_cast<uint8_t>(c));
      if (set == DEAD) break;
    }
    return set;
  }

  // The shortest completion, byte by byte: from each set, a byte whose set is one shorter to
  // complete (one exists: the top terminal of a shortest stack).
  std::optional<std::string> closing_locked(int32_t set) {
    if (sets_[static_cast<size_t>(set)].min_len == NO_END) return std::nullopt;
    std::string bytes;
    while (sets_[static_cast<size_t>(set)].min_len > 0) {
      const uint32_t want = sets_[static_cast<size_t>(set)].min_len - 1;
      int b = 0;
      for (; b < 256; ++b) {
        const int32_t next = step(set, static_cast<uint8_t>(b));
        if (next != DEAD && sets_[static_cast<size_t>(next)].min_len == want) {
          set = next;
          break;
        }
      }
      if (b == 256) return std::nullopt;  // cannot happen (see above); no guess either
      bytes += static_cast<char>(b);
    }
    return bytes;
  }

  // rest_[p]: the fewest bytes that derive elements p.. of p's alternative (to its end); the
  // fixed point of rest(end) = 0, rest(byte set) = 1 + rest(p + 1), rest(rule) = min over the
  // rule's alternatives of rest(start) + rest(p + 1). NO_END where nothing finite derives.
  void shortest_rests() {
    const std::vector<Element>& e = grammar_->elements();
    const std::vector<Rule>& rules = grammar_->rules();
    const auto add = [](uint32_t a, uint32_t b) { return a >= NO_END - b ? NO_END : a + b; };
    rest_.assign(e.size(), NO_END);
    std::vector<uint32_t> rule_min(rules.size(), NO_END);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t p = e.size(); p-- > 0;) {
        uint32_t v = 0;
        if (e[p].kind == Element::Kind::bytes) v = add(1, rest_[p + 1]);
        if (e[p].kind == Element::Kind::rule) v = add(rule_min[e[p].index], rest_[p + 1]);
        if (v < rest_[p]) rest_[p] = v, changed = true;
      }
      for (size_t r = 0; r < rules.size(); ++r)
        for (const uint32_t alt : rules[r].alternatives)
          if (rest_[alt] < rule_min[r]) rule_min[r] = rest_[alt], changed = true;
    }
  }

  std::shared_ptr<const TokenMask> mask_locked(int32_t set) {
    if (const auto it = masks_.find(set); it != masks_.end()) return it->second;
    auto mask = std::make_shared<TokenMask>(compute_mask(set));
    const size_t bytes = mask->size() * sizeof(uint32_t);
    if (mask_bytes_ + bytes > HLLM_GRAMMAR_MASK_CACHE_BYTES) {
      masks_.clear();
      mask_bytes_ = 0;
    }
    masks_.emplace(set, mask);
    mask_bytes_ += bytes;
    return mask;
  }

  struct Node {
    int32_t pos, parent;  // parent -1: the bottom of the stack (the root rule)
  };
  struct SetInfo {
    uint32_t begin, size;  // its node ids: set_nodes_[begin, begin + size)
    bool can_end;
    uint32_t min_len;  // the fewest bytes to where it can end (0: it can; NO_END: never)
  };
  static constexpr uint32_t NO_END = UINT32_MAX;
  using Row = std::array<int32_t, 256>;
  static constexpr int32_t UNKNOWN = -1;  // a row entry not computed yet

  int32_t node(int32_t pos, int32_t parent) {
    const uint64_t key =
        (uint64_t{static_cast<uint32_t>(pos)} << 32) | static_cast<uint32_t>(parent);
    const auto [it, inserted] = node_ids_.try_emplace(key, static_cast<int32_t>(nodes_.size()));
    if (inserted) {
      nodes_.push_back({pos, parent});
      // A stack completes with the rest of its top rule, then of each rule below it.
      const uint32_t below = parent < 0 ? 0 : node_len_[static_cast<size_t>(parent)];
      const uint32_t here = rest_[static_cast<size_t>(pos)];
      node_len_.push_back(here >= NO_END - below ? NO_END : here + below);
    }
    return it->second;
  }

  // Appends to scratch_ the stacks whose tops are terminals reached from `pos` on top of `parent`
  // without consuming a byte; sets scratch_end_ when the root rule can complete.
  void closure(int32_t pos, int32_t parent) {
    const std::vector<Element>& elements = grammar_->elements();
    for (;;) {
      const Element e = elements[static_cast<size_t>(pos)];
      if (e.kind == Element::Kind::bytes) {
        scratch_.push_back(node(pos, parent));
        if (scratch_.size() > 8 * size_t{HLLM_GRAMMAR_MAX_STACKS}) too_ambiguous();
        return;
      }
      if (e.kind == Element::Kind::end) {
        if (parent < 0) {
          scratch_end_ = true;
          return;
        }
        const Node p = nodes_[static_cast<size_t>(parent)];
        pos = p.pos;
        parent = p.parent;
        continue;
      }
      // A rule reference: resume after it; when nothing follows, resume where the parent does
      // (tail call), so right recursion (repetition) does not grow the stack.
      const bool tail = elements[static_cast<size_t>(pos) + 1].kind == Element::Kind::end;
      const int32_t resume = tail ? parent : node(pos + 1, parent);
      for (const uint32_t alt : grammar_->rules()[e.index].alternatives) {
        closure(static_cast<int32_t>(alt), resume);
      }
      return;
    }
  }

  [[noreturn]] void too_ambiguous() const {
    fail("grammar: more than ", HLLM_GRAMMAR_MAX_STACKS,
         " parse stacks alive at once: the grammar is too ambiguous (the same text parses in too "
         "many ways); make its alternatives and repetitions distinguishable");
  }

  // The id of the set in scratch_ (sorted and deduplicated here) with `can_end`.
  int32_t intern_scratch(bool can_end) {
    std::sort(scratch_.begin(), scratch_.end());
    scratch_.erase(std::unique(scratch_.begin(), scratch_.end()), scratch_.end());
    if (scratch_.size() > HLLM_GRAMMAR_MAX_STACKS) too_ambiguous();
    uint64_t h = can_end ? 0x9E3779B97F4A7C15ull : 0;
    for (const int32_t n : scratch_) h = (h ^ static_cast<uint32_t>(n)) * 0x100000001B3ull;
    const auto range = set_ids_.equal_range(h);
    for (auto it = range.first; it != range.second; ++it) {
      const SetInfo& s = sets_[static_cast<size_t>(it->second)];
      if (s.can_end == can_end && s.size == scratch_.size() &&
          std::equal(scratch_.begin(), scratch_.end(), set_nodes_.begin() + s.begin)) {
        return it->second;
      }
    }
    const auto id = static_cast<int32_t>(sets_.size());
    uint32_t min_len = can_end ? 0 : NO_END;
    for (const int32_t n : scratch_) min_len = std::min(min_len, node_len_[static_cast<size_t>(n)]);
    sets_.push_back({static_cast<uint32_t>(set_nodes_.size()),
                     static_cast<uint32_t>(scratch_.size()), can_end, min_len});
    set_nodes_.insert(set_nodes_.end(), scratch_.begin(), scratch_.end());
    set_ids_.emplace(h, id);
    rows_.emplace_back();
    return id;
  }

  int32_t step(int32_t set, uint8_t byte) {
    const Row* row = rows_[static_cast<size_t>(set)].get();
    if (row != nullptr && (*row)[byte] != UNKNOWN) return (*row)[byte];
    const SetInfo info = sets_[static_cast<size_t>(set)];
    scratch_.clear();
    scratch_end_ = false;
    const std::vector<Element>& elements = grammar_->elements();
    for (uint32_t i = 0; i < info.size; ++i) {
      const Node n = nodes_[static_cast<size_t>(set_nodes_[info.begin + i])];
      const Element e = elements[static_cast<size_t>(n.pos)];
      if (grammar_->byte_sets()[e.index].contains(byte)) closure(n.pos + 1, n.parent);
    }
    const int32_t next = intern_scratch(scratch_end_);
    if (rows_[static_cast<size_t>(set)] == nullptr) {
      if ((n_rows_ + 1) * sizeof(Row) > HLLM_GRAMMAR_ROW_CACHE_BYTES) {
        for (auto& r : rows_) r.reset();
        n_rows_ = 0;
      }
      rows_[static_cast<size_t>(set)] = std::make_unique<Row>();
      rows_[static_cast<size_t>(set)]->fill(UNKNOWN);
      ++n_rows_;
    }
    (*rows_[static_cast<size_t>(set)])[byte] = next;
    return next;
  }

  // Walks the vocabulary trie in preorder; at[d] is the set after the first d bytes of the path.
  TokenMask compute_mask(int32_t set) {
    const TokenVocabulary& v = *vocab_;
    TokenMask mask((v.size() + 31) / 32, 0);
    const auto allow = [&](int32_t id) { mask[static_cast<size_t>(id) >> 5] |= 1u << (id & 31); };
    if (sets_[static_cast<size_t>(set)].can_end) {
      for (const int32_t id : v.end_ids()) allow(id);
    }
    const std::vector<TokenVocabulary::TrieNode>& trie = v.trie();
    const std::vector<int32_t>& ids = v.sorted_ids();
    at_.assign(v.max_depth() + 1, DEAD);
    at_[0] = set;
    for (size_t i = 0; i < trie.size();) {
      const TokenVocabulary::TrieNode& n = trie[i];
      const int32_t next = step(at_[n.depth - 1u], n.byte);
      if (next == DEAD) {
        i = n.subtree_end;
        continue;
      }
      at_[n.depth] = next;
      for (uint32_t k = 0; k < n.n_tokens; ++k) allow(ids[n.first_token + k]);
      ++i;
    }
    return mask;
  }

  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  mutable std::mutex mutex_;
  std::vector<Node> nodes_;         // interned stack nodes
  std::vector<uint32_t> node_len_;  // (nodes_) the fewest bytes that complete each stack
  std::vector<uint32_t> rest_;      // (elements) see shortest_rests()
  std::unordered_map<uint64_t, int32_t> node_ids_;      // (pos, parent) -> node id
  std::vector<SetInfo> sets_;                           // interned stack sets
  std::vector<int32_t> set_nodes_;                      // every set's node ids, back to back
  std::unordered_multimap<uint64_t, int32_t> set_ids_;  // hash of a set -> candidate ids
  std::vector<std::unique_ptr<Row>> rows_;              // (sets) step cache; null = none yet
  size_t n_rows_ = 0;
  std::unordered_map<int32_t, std::shared_ptr<const TokenMask>> masks_;  // set -> mask cache
  std::unordered_map<int32_t, std::shared_ptr<const Growth>> growths_;   // set -> growth()
  size_t mask_bytes_ = 0;
  std::vector<int32_t> scratch_;  // the set being built by step()
  bool scratch_end_ = false;
  std::vector<int32_t> at_;  // compute_mask's set per trie depth
  int32_t start_ = DEAD;
};

}  // namespace detail

class CompiledGrammar {
 public:
  CompiledGrammar(Grammar grammar, std::shared_ptr<const TokenVocabulary> vocab)
      : grammar_(std::make_shared<const Grammar>(std::move(grammar))), vocab_(std::move(vocab)) {
    if (vocab_ == nullptr) fail("grammar: compile() needs a TokenVocabulary");
    tables_ = std::make_shared<detail::StackSets>(grammar_, vocab_);
  }

  const Grammar& grammar() const { return *grammar_; }
  const TokenVocabulary& vocabulary() const { return *vocab_; }

  // The tables a new matcher starts on: the current ones, or fresh ones once those are full.
  std::shared_ptr<detail::StackSets> tables() {
    std::lock_guard lock(mutex_);
    if (tables_->size() >= HLLM_GRAMMAR_MAX_SETS) {
      tables_ = std::make_shared<detail::StackSets>(grammar_, vocab_);
    }
    return tables_;
  }

 private:
  std::shared_ptr<const Grammar> grammar_;
  std::shared_ptr<const TokenVocabulary> vocab_;
  std::mutex mutex_;
  std::shared_ptr<detail::StackSets> tables_;
};

inline std::shared_ptr<CompiledGrammar> compile(Grammar grammar,
                                                std::shared_ptr<const TokenVocabulary> vocab) {
  return std::make_shared<CompiledGrammar>(std::move(grammar), std::move(vocab));
}

}  // namespace hllm::grammar
