// Byte-level BPE: the GPT-2 byte <-> unicode alphabet, the vocab and merge tables, and the merge
// loop. Everything here works on RAW BYTES: tokenizer.json spells tokens in the byte-level alphabet
// ("Ġthe" = " the"); the loader converts each token to its bytes once, so encode never maps chars.
//
//   VocabBytes   id -> bytes (one arena) and bytes -> id (open addressing, linear probing)
//   MergeTable   (left id, right id) -> (rank, merged id); lower rank merges first
//   bpe_merge     one pre-token: start from single bytes, repeatedly merge the adjacent pair of
//                 lowest rank (leftmost on ties) with a min-heap over a doubly linked symbol list,
//                 O(n log n) - the algorithm of HF tokenizers' Word::merge_all, with the same
//                 order.
//   BpeCache     results for recently seen pre-tokens that needed merging
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/tokenizer/utf8.hpp"

namespace hllm {

using TokenId = int32_t;

namespace detail {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves; the other 68 bytes map, in byte order, to U+0100, U+0101, ... (so ' ' -> 'Ġ').
struct ByteLevelAlphabet {
  std::array<char32_t, 256> byte_to_cp{};
  std::array<int16_t, 0x144> cp_to_byte{};  // -1: not in the alphabet (all its cps are < U+0144)

  constexpr ByteLevelAlphabet() {
    cp_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

inline constexpr ByteLevelAlphabet BYTE_LEVEL{};

// Byte-level spelling -> raw bytes. Returns false when a code point is outside the alphabet.
inline bool byte_level_to_bytes(std::string_view token, std::string& out) {
  out.clear();
  const auto* s = reinterpret_cast<const unsigned char*>(token.data());
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    const char32_t cp = decode_utf8(s + i, len);  // JsonScanner has validated the UTF-8
    if (cp >= BYTE_LEVEL.cp_to_byte.size() || BYTE_LEVEL.cp_to_byte[cp] < 0) return false;
    out += static_cast<char>(BYTE_LEVEL.cp_to_byte[cp]);
    i += len;
  }
  return true;
}

// A fast 64-bit hash of short byte strings (8 bytes per multiply-xorshift round).
inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  const char* p = s.data();
  size_t n = s.size();
  const auto mix = [](uint64_t x) {
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 31);
  };
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = mix(h ^ w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p, n);
  return mix(mix(h ^ tail));
}

// The vocabulary as raw bytes: id -> bytes and bytes -> id. A slot keeps the token's first 8
// bytes and its length beside the id, so most lookups (tokens are ~6 bytes on average) are decided
// by one 16-byte slot read, without touching the arena. Loading resolves ~1M lookups (the merges),
// each a likely cache miss in a 4 MiB table: callers that know many keys ahead compute their hashes
// and prefetch() the slots first, so the misses overlap.
class VocabBytes {
 public:
  void reserve(size_t n_tokens) {
    while (slots_.size() < 2 * n_tokens) grow();
  }
  void prefetch(uint64_t hash) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[hash & (slots_.size() - 1)]);
  }

  // Adds `bytes` as token `id`. Returns false if the id or the bytes are already present.
  bool add(TokenId id, std::string_view bytes) { return add(id, bytes, hash_bytes(bytes)); }
  bool add(TokenId id, std::string_view bytes, uint64_t hash) {
    if (static_cast<size_t>(id) >= spans_.size())
      spans_.resize(static_cast<size_t>(id) + 1, ABSENT);
    if (spans_[id] != ABSENT) return false;
    if ((count_ + 1) * 2 > slots_.size()) grow();
    size_t slot = 0;
    if (probe(bytes, hash, slot)) return false;
    slots_[slot] = make_slot(bytes, id);
    spans_[id] = {static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(bytes.size())};
    arena_.append(bytes);
    ++count_;
    return true;
  }

  // The id of `bytes` (whose hash_bytes is `hash`), or -1.
  TokenId find(std::string_view bytes) const { return find(bytes, hash_bytes(bytes)); }
  TokenId find(std::string_view bytes, uint64_t hash) const {
    size_t slot = 0;
    return probe(bytes, hash, slot) ? slots_[slot].id : -1;
  }

  bool contains(TokenId id) const {
    return id >= 0 && static_cast<size_t>(id) < spans_.size() && spans_[id] != ABSENT;
  }
  // Bytes of a present id.
  std::string_view bytes(TokenId id) const {
    return std::string_view(arena_).substr(spans_[id].first, spans_[id].second);
  }
  size_t size() const { return count_; }
  size_t id_limit() const { return spans_.size(); }  // 1 + the largest id

 private:
  struct Slot {
    uint64_t head;  // the first 8 bytes of the token, zero-padded
    uint32_t len;   // its length in bytes
    TokenId id;     // -1 = empty
  };
  static constexpr std::pair<uint32_t, uint32_t> ABSENT{UINT32_MAX, 0};

  static Slot make_slot(std::string_view bytes, TokenId id) {
    Slot s{0, static_cast<uint32_t>(bytes.size()), id};
    std::memcpy(&s.head, bytes.data(), std::min<size_t>(8, bytes.size()));
    return s;
  }

  // Finds `bytes`: true with its slot, or false with the empty slot where it would go.
  bool probe(std::string_view bytes, uint64_t hash, size_t& slot) const {
    if (slots_.empty()) return false;
    const Slot key = make_slot(bytes, 0);
    const size_t mask = slots_.size() - 1;
    for (slot = hash & mask;; slot = (slot + 1) & mask) {
      const Slot& s = slots_[slot];
      if (s.id < 0) return false;
      if (s.head == key.head && s.len == key.len &&
          (key.len <= 8 || this->bytes(s.id).substr(8) == bytes.substr(8))) {
        return true;
      }
    }
  }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::max<size_t>(1 << 12, old.size() * 2), Slot{0, 0, -1});
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.id < 0) continue;
      size_t slot = hash_bytes(bytes(s.id)) & mask;
      while (slots_[slot].id >= 0) slot = (slot + 1) & mask;
      slots_[slot] = s;
    }
  }

  std::string arena_;                                 // all token bytes, back to back
  std::vector<std::pair<uint32_t, uint32_t>> spans_;  // (id_limit) offset, length in arena_
  std::vector<Slot> slots_;                           // (power of 2) open addressing
  size_t count_ = 0;
};

// (left, right) -> (rank, merged id), open addressing on the packed 64-bit pair; key and value
// share a 16-byte slot so a lookup is one memory access.
class MergeTable {
 public:
  struct Merge {
    uint32_t rank;
    TokenId id;
  };

  void reserve(size_t n) {
    size_t size = 64;
    while (size * 3 < 4 * n) size *= 2;  // load factor <= 3/4
    if (size > slots_.size()) rehash(size);
  }
  void prefetch(TokenId left, TokenId right) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[home(pack(left, right))]);
  }

  // Sets the merge of (left, right). A pair listed twice keeps its LAST entry, as in HF (its merges
  // map is collected from the list in order).
  void set(TokenId left, TokenId right, Merge m) {
    if ((count_ + 1) * 4 > slots_.size() * 3) rehash(std::max<size_t>(64, slots_.size() * 2));
    const uint64_t key = pack(left, right);
    Slot& s = slots_[find_slot(key)];
    count_ += s.key != key;
    s = {key, m};
  }

  // The merge of (left, right), or nullptr.
  const Merge* find(TokenId left, TokenId right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = pack(left, right);
    const Slot& s = slots_[find_slot(key)];
    return s.key == key ? &s.merge : nullptr;
  }
  size_t size() const { return count_; }

 private:
  static constexpr uint64_t EMPTY = UINT64_MAX;  // ids are non-negative, so no pair packs to this
  struct Slot {
    uint64_t key;  // (left << 32) | right, EMPTY = free
    Merge merge;
  };

  static uint64_t pack(TokenId left, TokenId right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  // Fibonacci hashing: the top bits of the product depend on every bit of both ids.
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  size_t find_slot(uint64_t key) const {
    const size_t mask = slots_.size() - 1;
    size_t slot = home(key);
    while (slots_[slot].key != key && slots_[slot].key != EMPTY) slot = (slot + 1) & mask;
    return slot;
  }
  void rehash(size_t size) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(size, Slot{EMPTY, {}});
    shift_ = 64 - std::countr_zero(size);
    for (const Slot& s : old) {
      if (s.key != EMPTY) slots_[find_slot(s.key)] = s;
    }
  }

  std::vector<Slot> slots_;  // (power of 2)
  int shift_ = 64;           // 64 - log2(slots_.size())
  size_t count_ = 0;
};

// Reusable buffers of bpe_merge, so that encoding allocates nothing in steady state.
struct BpeScratch {
  struct Symbol {
    TokenId id;
    int32_t prev, next;  // neighbours in the list, -1 at the ends; id -1 once merged away
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;  // left symbol of the pair
    TokenId id;   // the merge result, to detect pairs that changed since they were pushed
    // Heap order: lowest rank first, then leftmost (std heaps are max-heaps, hence reversed).
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

// Appends the BPE tokens of one pre-token (raw bytes, non-empty) to `out`.
inline void bpe_merge(const MergeTable& merges, const std::array<TokenId, 256>& byte_ids,
                      std::string_view bytes, BpeScratch& scratch, std::vector<TokenId>& out) {
  auto& sym = scratch.symbols;
  auto& heap = scratch.heap;
  const auto n = static_cast<int32_t>(bytes.size());
  sym.resize(static_cast<size_t>(n));
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = {byte_ids[static_cast<unsigned char>(bytes[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  const auto push_pair = [&](int32_t left) {
    const int32_t right = sym[left].next;
    if (right < 0) return;
    if (const auto* m = merges.find(sym[left].id, sym[right].id)) {
      heap.push_back({m->rank, left, m->id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const auto top = heap.back();
    heap.pop_back();
    auto& left = sym[top.pos];
    if (left.id < 0 || left.next < 0) continue;  // merged away, or no right neighbour any more
    const int32_t right = left.next;
    const auto* m = merges.find(left.id, sym[right].id);
    if (m == nullptr || m->id != top.id) continue;  // this pair changed since it was pushed
    left.id = m->id;
    left.next = sym[right].next;
    if (left.next >= 0) sym[left.next].prev = top.pos;
    sym[right].id = -1;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

// Merge results of recent pre-tokens (only those that needed bpe_merge: whole-vocab hits are
// already one lookup). Bounded: cleared when full, so memory stays flat on endless input.
class BpeCache {
 public:
  static constexpr size_t MAX_ENTRIES = 1 << 16;
  static constexpr size_t MAX_KEY_BYTES = 256;  // as HF (256 chars): longer ones rarely repeat

  // Appends the cached ids of `key` to out and returns true, or returns false.
  bool lookup(std::string_view key, std::vector<TokenId>& out) const {
    const auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    out.insert(out.end(), ids_.begin() + it->second.first, ids_.begin() + it->second.second);
    return true;
  }
  void store(std::string_view key, const TokenId* ids, size_t count) {
    if (key.size() > MAX_KEY_BYTES) return;
    if (entries_.size() >= MAX_ENTRIES) {
      entries_.clear();
      ids_.clear();
    }
    const auto begin = static_cast<uint32_t>(ids_.size());
    ids_.insert(ids_.end(), ids, ids + count);
    entries_.emplace(std::string(key), std::pair{begin, static_cast<uint32_t>(ids_.size())});
  }

 private:
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return hash_bytes(s); }
  };
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, KeyHash, std::equal_to<>>
      entries_;               // pre-token bytes -> [begin, end) in ids_
  std::vector<TokenId> ids_;  // the cached results, back to back
};

}  // namespace detail
}  // namespace hllm
