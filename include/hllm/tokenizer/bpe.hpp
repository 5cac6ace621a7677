// Byte-level BPE encoding of one pre-token, and the cache of recent results.
//
//   BpeModel     the tables of tokenizer.json's model section (vocab.hpp), loaded by bpe_load.hpp
//   bpe_merge    one pre-token: start from single bytes, repeatedly merge the adjacent pair of
//                lowest rank (leftmost on ties) with a min-heap over a doubly linked symbol list,
//                O(n log n) - the algorithm of HF tokenizers' Word::merge_all, with the same order.
//   BpeCache     results for recently seen pre-tokens that needed merging
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/tokenizer/vocab.hpp"

namespace hllm::detail {

// tokenizer.json's model: {"type": "BPE", "vocab": ..., "merges": ..., "ignore_merges": ...}.
struct BpeModel {
  VocabBytes vocab;                     // model.vocab as raw bytes
  MergeTable merges;                    // model.merges
  std::array<TokenId, 256> byte_ids{};  // the single-byte tokens, BPE's starting point
  bool ignore_merges = false;           // a pre-token found whole in the vocab is one token
};

// Reusable buffers of bpe_merge, so that encoding allocates nothing in steady state.
struct BpeScratch {
  static constexpr uint32_t NO_MERGE = UINT32_MAX;
  // One symbol per byte of the pre-token at first; a merge keeps the left symbol and unlinks the
  // right one. Each live symbol knows the merge it would make with its right neighbour, so a heap
  // entry is checked by comparing ranks (a rank names exactly one pair) instead of a second lookup.
  struct Symbol {
    TokenId id;          // -1 once merged into its left neighbour
    int32_t prev, next;  // neighbours in the list, -1 at the ends
    uint32_t pair_rank;  // rank of the merge with `next`, NO_MERGE if none
    TokenId pair_id;     // the token that merge makes
  };
  std::vector<Symbol> symbols;  // (piece bytes)
  // Pending merges as (rank << 32) | left symbol: the smallest is the lowest rank, then leftmost.
  // Entries go stale when their pair changes; popping skips them (lazy invalidation).
  std::vector<uint64_t> heap;
};

// Looks up the merge of symbol `pos` with its right neighbour (key = their packed ids, or EMPTY
// when there is none), records it in the symbol and appends it to the heap's vector (the caller
// restores the heap order). Returns whether there was a merge.
inline bool bpe_queue_pair(const MergeTable& merges, uint64_t key, int32_t pos, BpeScratch& s) {
  BpeScratch::Symbol& sym = s.symbols[static_cast<size_t>(pos)];
  const MergeTable::Merge* m = key == MergeTable::EMPTY ? nullptr : merges.find(key);
  sym.pair_rank = m != nullptr ? m->rank : BpeScratch::NO_MERGE;
  if (m == nullptr) return false;
  sym.pair_id = m->id;
  s.heap.push_back((uint64_t{m->rank} << 32) | static_cast<uint32_t>(pos));
  return true;
}

// Appends the BPE tokens of one pre-token (raw bytes, non-empty) to `out`.
inline void bpe_merge(const BpeModel& model, std::string_view bytes, BpeScratch& scratch,
                      std::vector<TokenId>& out) {
  auto& sym = scratch.symbols;
  auto& heap = scratch.heap;
  const MergeTable& merges = model.merges;
  const auto n = static_cast<int32_t>(bytes.size());
  sym.resize(static_cast<size_t>(n));
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    const TokenId id = model.byte_ids[static_cast<unsigned char>(bytes[i])];
    sym[i] = {id, i - 1, i + 1 < n ? i + 1 : -1, BpeScratch::NO_MERGE, -1};
  }
  // The first n - 1 lookups are independent: prefetch ahead so that their misses overlap.
  std::array<uint64_t, PIPELINE_DISTANCE> keys{};
  pipelined(
      static_cast<size_t>(n - 1),
      [&](size_t i) {
        keys[i % PIPELINE_DISTANCE] = MergeTable::pack(sym[i].id, sym[i + 1].id);
        merges.prefetch(keys[i % PIPELINE_DISTANCE]);
      },
      [&](size_t i) {
        bpe_queue_pair(merges, keys[i % PIPELINE_DISTANCE], static_cast<int32_t>(i), scratch);
      });
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const uint64_t top = heap.back();
    heap.pop_back();
    const auto pos = static_cast<int32_t>(top & UINT32_MAX);
    auto& left = sym[pos];
    if (left.id < 0 || left.pair_rank != top >> 32) continue;  // stale: the pair has changed
    const int32_t right = left.next;
    left.id = left.pair_id;
    left.next = sym[right].next;
    if (left.next >= 0) sym[left.next].prev = pos;
    sym[right].id = -1;
    // The merged symbol forms new pairs with both neighbours: look both up at once.
    const uint64_t key_prev =
        left.prev >= 0 ? MergeTable::pack(sym[left.prev].id, left.id) : MergeTable::EMPTY;
    const uint64_t key_next =
        left.next >= 0 ? MergeTable::pack(left.id, sym[left.next].id) : MergeTable::EMPTY;
    merges.prefetch(key_prev);
    merges.prefetch(key_next);
    if (left.prev >= 0 && bpe_queue_pair(merges, key_prev, left.prev, scratch)) {
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
    if (bpe_queue_pair(merges, key_next, pos, scratch)) {
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

// Merge results of recent pre-tokens (only those that needed bpe_merge: whole-vocab hits are
// already one lookup). Bounded: cleared when full, so memory stays flat on endless input.
// Open addressing over two arenas (keys, ids); callers pass the key's hash_bytes, which they
// computed once for the vocab lookup too.
class BpeCache {
 public:
  static constexpr size_t MAX_ENTRIES = 1 << 16;
  static constexpr size_t MAX_KEY_BYTES = 256;  // as HF (256 chars): longer ones rarely repeat

  // Appends the cached ids of `key` to out and returns true, or returns false.
  bool lookup(std::string_view key, uint64_t hash, std::vector<TokenId>& out) const {
    if (count_ == 0) return false;
    const Slot* s = &slots_[find_slot(key, hash)];
    if (s->key_len == 0) return false;
    const TokenId* ids = ids_.data() + s->ids_begin;
    out.insert(out.end(), ids, ids + s->n_ids);
    return true;
  }

  void store(std::string_view key, uint64_t hash, const TokenId* ids, size_t count) {
    if (key.empty() || key.size() > MAX_KEY_BYTES) return;
    if (count_ >= MAX_ENTRIES) clear();
    if (2 * (count_ + 1) > slots_.size()) grow();
    Slot& s = slots_[find_slot(key, hash)];
    if (s.key_len != 0) return;  // already there
    s = {static_cast<uint32_t>(hash >> 32), static_cast<uint32_t>(keys_.size()),
         static_cast<uint32_t>(ids_.size()), static_cast<uint16_t>(key.size()),
         static_cast<uint16_t>(count)};
    keys_.append(key);
    ids_.insert(ids_.end(), ids, ids + count);
    ++count_;
  }

 private:
  struct Slot {
    uint32_t tag;        // the high half of the key's hash
    uint32_t key_begin;  // the key's bytes in keys_
    uint32_t ids_begin;  // its ids in ids_
    uint16_t key_len;    // 0 = empty slot (keys are never empty)
    uint16_t n_ids;      // <= key_len <= MAX_KEY_BYTES
  };

  // The slot of `key`, or the empty slot where it would go.
  size_t find_slot(std::string_view key, uint64_t hash) const {
    const size_t mask = slots_.size() - 1;
    const auto tag = static_cast<uint32_t>(hash >> 32);
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return i;
      if (s.tag == tag && s.key_len == key.size() &&
          std::memcmp(keys_.data() + s.key_begin, key.data(), key.size()) == 0) {
        return i;
      }
    }
  }
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    count_ = 0;
  }
  // Doubles the table (load factor <= 1/2), re-placing entries by their keys' hashes.
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(1 << 10, 2 * old.size()), Slot{});
    for (const Slot& s : old) {
      if (s.key_len == 0) continue;
      const std::string_view key(keys_.data() + s.key_begin, s.key_len);
      slots_[find_slot(key, hash_bytes(key))] = s;
    }
  }

  std::vector<Slot> slots_;   // (power of 2, <= 2 * MAX_ENTRIES)
  std::string keys_;          // the cached pre-tokens, back to back
  std::vector<TokenId> ids_;  // their ids, back to back
  size_t count_ = 0;
};

}  // namespace hllm::detail
