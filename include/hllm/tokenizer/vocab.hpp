// Byte-level BPE tables: the GPT-2 byte <-> unicode alphabet, the vocabulary and the merge table.
// Everything here works on RAW BYTES: tokenizer.json spells tokens in the byte-level alphabet
// ("Ġthe" = " the"); the loader converts each token to its bytes once, so encode never maps chars.
//
//   VocabBytes   id -> bytes (one arena) and bytes -> id (open addressing, linear probing)
//   MergeTable   (left id, right id) -> (rank, merged id); lower rank merges first
//
// Both tables are built once at load (128k + 280k inserts, 560k lookups), each a likely cache miss;
// pipelined() overlaps those misses by prefetching a few keys ahead.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
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

// Byte-level spelling (valid UTF-8) -> raw bytes. Returns false when a code point is outside the
// alphabet.
inline bool byte_level_to_bytes(std::string_view token, std::string& out) {
  out.clear();
  const auto* s = reinterpret_cast<const unsigned char*>(token.data());
  for (size_t i = 0; i < token.size();) {
    size_t len = 0;
    const char32_t cp = decode_utf8(s + i, len);
    if (cp >= BYTE_LEVEL.cp_to_byte.size() || BYTE_LEVEL.cp_to_byte[cp] < 0) return false;
    out += static_cast<char>(BYTE_LEVEL.cp_to_byte[cp]);
    i += len;
  }
  return true;
}

// The first min(8, n) bytes of p as a little-endian word, zero-padded, without a variable-length
// memcpy: short keys are the common case of every table here.
inline uint64_t load_head(const char* p, size_t n) {
  const auto u8 = [&](size_t i) { return uint64_t{static_cast<unsigned char>(p[i])}; };
  const auto u32 = [&](size_t i) {
    uint32_t w;
    std::memcpy(&w, p + i, 4);
    return uint64_t{w};
  };
  if (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  if (n >= 4) return u32(0) | (u32(n - 4) << (8 * (n - 4)));  // the two words overlap
  if (n == 0) return 0;
  return u8(0) | (u8(n / 2) << (8 * (n / 2))) | (u8(n - 1) << (8 * (n - 1)));
}

// Whether a[0..n) == b[0..n).
inline bool bytes_equal(const char* a, const char* b, size_t n) {
  return n <= 8 ? load_head(a, n) == load_head(b, n) : std::memcmp(a, b, n) == 0;
}

// A fast 64-bit hash of short byte strings (8 bytes per multiply-xorshift round).
inline uint64_t hash_bytes(std::string_view s) {
  const auto mix = [](uint64_t x) {
    x *= 0xBF58476D1CE4E5B9ull;
    return x ^ (x >> 31);
  };
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  const char* p = s.data();
  size_t n = s.size();
  for (; n > 8; p += 8, n -= 8) h = mix(h ^ load_head(p, 8));
  return mix(mix(h ^ load_head(p, n)));
}

// Software pipelining for a loop of independent hash-table accesses: stage(i) computes key i's
// hash and prefetches its slot, finish(i) does the access. stage runs DISTANCE keys ahead, so
// about that many cache misses are in flight at once instead of one. Callers keep what stage
// computed in a ring of DISTANCE entries, indexed i % DISTANCE (finish(i) runs before stage(i +
// DISTANCE) reuses the entry).
inline constexpr size_t PIPELINE_DISTANCE = 16;

template <typename Stage, typename Finish>
void pipelined(size_t n, Stage&& stage, Finish&& finish) {
  for (size_t i = 0; i < std::min(n, PIPELINE_DISTANCE); ++i) stage(i);
  for (size_t i = 0; i < n; ++i) {
    finish(i);
    if (i + PIPELINE_DISTANCE < n) stage(i + PIPELINE_DISTANCE);
  }
}

// The vocabulary as raw bytes: id -> bytes and bytes -> id. A slot keeps the token's first 8
// bytes and its length beside the id, so most lookups (tokens are ~6 bytes on average) are decided
// by one 16-byte slot read, without touching the arena.
class VocabBytes {
 public:
  struct Entry {
    TokenId id;
    uint32_t offset, len;  // the token's bytes in the arena
  };

  // Takes all tokens at once: their bytes back to back in `arena`, `entries` saying where each is.
  // Returns the index of the first entry whose id or bytes repeat an earlier entry's, or -1.
  ptrdiff_t build(std::string arena, const std::vector<Entry>& entries) {
    arena_ = std::move(arena);
    TokenId max_id = -1;
    for (const Entry& e : entries) max_id = std::max(max_id, e.id);
    spans_.assign(static_cast<size_t>(max_id + 1), ABSENT);
    size_t size = 1 << 12;
    while (size < 2 * entries.size()) size *= 2;  // load factor <= 1/2
    slots_.assign(size, Slot{0, 0, -1});
    count_ = 0;
    std::array<uint64_t, PIPELINE_DISTANCE> hashes{};
    ptrdiff_t bad = -1;
    pipelined(
        entries.size(),
        [&](size_t i) {
          const Entry& e = entries[i];
          hashes[i % PIPELINE_DISTANCE] = hash_bytes(view(e.offset, e.len));
          prefetch(hashes[i % PIPELINE_DISTANCE]);
        },
        [&](size_t i) {
          const Entry& e = entries[i];
          if (bad < 0 && !insert(e, hashes[i % PIPELINE_DISTANCE])) bad = static_cast<ptrdiff_t>(i);
        });
    return bad;
  }

  void prefetch(uint64_t hash) const { __builtin_prefetch(&slots_[hash & (slots_.size() - 1)]); }

  // The id of `bytes` (whose hash_bytes is `hash`), or -1.
  TokenId find(std::string_view bytes) const { return find(bytes, hash_bytes(bytes)); }
  TokenId find(std::string_view bytes, uint64_t hash) const {
    size_t slot = 0;
    return probe(bytes, hash, slot) ? slots_[slot].id : -1;
  }
  // Whether token `id` is spelled `left` + `right`: checks a guessed id without hashing.
  bool spells(TokenId id, std::string_view left, std::string_view right) const {
    if (!contains(id)) return false;
    const std::string_view b = bytes(id);
    return b.size() == left.size() + right.size() &&
           bytes_equal(b.data(), left.data(), left.size()) &&
           bytes_equal(b.data() + left.size(), right.data(), right.size());
  }

  bool contains(TokenId id) const {
    return id >= 0 && static_cast<size_t>(id) < spans_.size() && spans_[id].offset != UINT32_MAX;
  }
  // Bytes of a present id.
  std::string_view bytes(TokenId id) const { return view(spans_[id].offset, spans_[id].len); }
  size_t size() const { return count_; }
  size_t id_limit() const { return spans_.size(); }  // 1 + the largest id

 private:
  struct Span {
    uint32_t offset, len;
  };
  struct Slot {
    uint64_t head;  // the first 8 bytes of the token, zero-padded
    uint32_t len;   // its length in bytes
    TokenId id;     // -1 = empty
  };
  static constexpr Span ABSENT{UINT32_MAX, 0};

  std::string_view view(uint32_t offset, uint32_t len) const {
    return std::string_view(arena_.data() + offset, len);
  }
  static Slot make_slot(std::string_view bytes, TokenId id) {
    return {load_head(bytes.data(), bytes.size()), static_cast<uint32_t>(bytes.size()), id};
  }

  // Adds entry `e`; false if its id or bytes are already present.
  bool insert(const Entry& e, uint64_t hash) {
    const std::string_view b = view(e.offset, e.len);
    size_t slot = 0;
    if (spans_[e.id].offset != UINT32_MAX || probe(b, hash, slot)) return false;
    slots_[slot] = make_slot(b, e.id);
    spans_[e.id] = {e.offset, e.len};
    ++count_;
    return true;
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
          (key.len <= 8 || bytes_equal(this->bytes(s.id).data(), bytes.data(), key.len))) {
        return true;
      }
    }
  }

  std::string arena_;        // all token bytes, back to back
  std::vector<Span> spans_;  // (id_limit) where each id's bytes are in arena_
  std::vector<Slot> slots_;  // (power of 2) open addressing
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
  static constexpr uint64_t EMPTY = UINT64_MAX;  // ids are non-negative, so no pair packs to this

  static uint64_t pack(TokenId left, TokenId right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }

  void reserve(size_t n) {
    size_t size = 64;
    while (size * 3 < 4 * n) size *= 2;  // load factor <= 3/4
    if (size > slots_.size()) rehash(size);
  }
  void prefetch(uint64_t key) const {
    if (!slots_.empty()) __builtin_prefetch(&slots_[home(key)]);
  }

  // Sets the merge of key = pack(left, right). A pair listed twice keeps its LAST entry, as in HF
  // (its merges map is collected from the list in order).
  void set(uint64_t key, Merge m) {
    if ((count_ + 1) * 4 > slots_.size() * 3) rehash(std::max<size_t>(64, slots_.size() * 2));
    Slot& s = slots_[find_slot(key)];
    count_ += s.key != key;
    s = {key, m};
  }

  // The merge of key = pack(left, right), or nullptr.
  const Merge* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    const Slot& s = slots_[find_slot(key)];
    return s.key == key ? &s.merge : nullptr;
  }
  const Merge* find(TokenId left, TokenId right) const { return find(pack(left, right)); }
  size_t size() const { return count_; }

 private:
  struct Slot {
    uint64_t key;  // (left << 32) | right, EMPTY = free
    Merge merge;
  };

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
    auto old = std::move(slots_);
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

}  // namespace detail
}  // namespace hllm
