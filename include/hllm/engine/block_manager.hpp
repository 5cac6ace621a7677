// BlockManager: the blocks of a paged KV cache (layout/paged_kv.hpp) — who holds which block, and
// which full blocks can be found again by their content (automatic prefix caching, as vLLM does).
//
// Every block has a reference count: the number of sequences whose block table holds it. A block
// with count 0 is free and sits in the free queue; allocate() takes blocks from the queue's head.
//
// A block whose 16 positions all hold computed K/V can be registered under a hash of its content:
//
//   hash(block i) = H(hash(block i-1), the 16 token ids of block i, salt)     hash(block -1) = salt
//
// so a hash names a whole prefix, not only the block's own tokens (the K/V of a position depend on
// every token before it). A new sequence whose prompt starts with the same tokens looks the chain
// up block by block and shares what it finds instead of computing it again. Shared blocks are
// full, so nobody ever writes into them again: no copy-on-write. The salt separates requests
// whose blocks must not be shared with each other (a per-request cache salt); one pool serves one
// model with one RoPE setting, so those need no salt.
//
// A registered block stays findable after its last holder leaves: it goes to the queue's tail
// and is only evicted (its hash forgotten) when allocate() reaches it — least recently freed
// first. Blocks that were never registered go to the head instead, so they are reused before any
// cached content is given up. A sequence's blocks are released last block first, so the end of a
// chain is evicted before its start (a prefix without its end is still useful, not the reverse).
//
// A lookup checks each candidate's stored tokens and parent hash, so a wrong hit needs two
// different prefixes whose 64-bit chain hashes collide and whose next blocks hold the same
// tokens (odds ~2^-64 per lookup). Not thread-safe: the scheduler owns it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "hllm/core/error.hpp"

namespace hllm {

// H(parent, tokens, salt): 64-bit, from splitmix64's finalizer over FNV-style chaining. Fast
// and well mixed; collisions are caught by the lookup's token check, so it need not be
// cryptographic.
inline uint64_t kv_block_hash(uint64_t parent, std::span<const int32_t> tokens, uint64_t salt) {
  const auto mix = [](uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ull) ^ mix(salt + 0x632be59bd9b4e019ull);
  for (int32_t t : tokens) h = mix(h + static_cast<uint32_t>(t));
  return mix(h + tokens.size());
}

class BlockManager {
 public:
  BlockManager(int64_t n_blocks, int32_t block_size)
      : block_size_(checked_block_size(block_size)), blocks_(checked_count(n_blocks)) {
    // The free queue is a doubly linked list through next/prev with a sentinel (index n_blocks).
    next_.assign(static_cast<size_t>(n_blocks) + 1, SENTINEL_UNSET);
    prev_.assign(static_cast<size_t>(n_blocks) + 1, SENTINEL_UNSET);
    sentinel_ = static_cast<int32_t>(n_blocks);
    next_[sentinel_] = prev_[sentinel_] = sentinel_;
    for (int32_t b = 0; b < sentinel_; ++b) push_back(b);  // lowest id handed out first
  }

  int64_t total() const { return static_cast<int64_t>(blocks_.size()); }
  int32_t block_size() const { return block_size_; }
  // Blocks allocate() can hand out now (free, cached or not).
  int64_t free_count() const { return free_; }
  // Registered blocks, held or free: the prefix cache's content.
  int64_t cached_count() const { return static_cast<int64_t>(by_hash_.size()); }
  int32_t ref_count(int32_t block) const { return at(block).refs; }
  bool is_cached(int32_t block) const { return at(block).cached; }

  // The longest run of registered blocks matching a sequence's first full blocks: hashes[i] is
  // the chain hash of block i, whose tokens are tokens[i*block_size ...]. Nothing is acquired.
  std::vector<int32_t> lookup(std::span<const uint64_t> hashes, std::span<const int32_t> tokens,
                              uint64_t salt) const {
    std::vector<int32_t> found;
    for (size_t i = 0; i < hashes.size(); ++i) {
      const auto it = by_hash_.find(hashes[i]);
      if (it == by_hash_.end()) break;
      const Block& b = blocks_[static_cast<size_t>(it->second)];
      const auto want =
          tokens.subspan(i * static_cast<size_t>(block_size_), static_cast<size_t>(block_size_));
      const uint64_t parent = i == 0 ? salt : hashes[i - 1];
      if (b.parent != parent || !std::equal(want.begin(), want.end(), b.tokens.begin())) break;
      found.push_back(it->second);
    }
    return found;
  }

  // Blocks found by lookup() join a sequence: one more holder each.
  void acquire(std::span<const int32_t> blocks) {
    for (int32_t id : blocks) {
      Block& b = at(id);
      if (b.refs == 0) unlink(id);
      ++b.refs;
    }
  }

  // Of the blocks in `blocks`, how many are free now (acquiring them takes them off the queue).
  int64_t free_among(std::span<const int32_t> blocks) const {
    int64_t n = 0;
    for (int32_t id : blocks) n += at(id).refs == 0 ? 1 : 0;
    return n;
  }

  // `n` blocks for one new holder, least recently freed first (a cached block taken here is
  // evicted: its hash is forgotten), or nothing (and no change) when fewer are free.
  std::optional<std::vector<int32_t>> allocate(int64_t n) {
    if (n < 0 || n > free_) return std::nullopt;
    std::vector<int32_t> out;
    out.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t id = next_[sentinel_];
      unlink(id);
      forget(id);
      blocks_[static_cast<size_t>(id)].refs = 1;
      out.push_back(id);
    }
    return out;
  }

  // One holder lets go of a block table; blocks nobody holds become free (see the top).
  void release(std::span<const int32_t> blocks) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
      Block& b = at(*it);
      if (b.refs <= 0) fail("KV block pool: block ", *it, " released more often than acquired");
      if (--b.refs > 0) continue;
      if (b.cached)
        push_back(*it);
      else
        push_front(*it);
    }
  }

  // Makes a held, completely computed block findable under `hash` (its chain hash: parent hash,
  // its tokens, salt). Returns false when another block already holds that content (two
  // sequences computed the same prefix at once); this one then stays private.
  bool register_block(int32_t id, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
    Block& b = at(id);
    if (b.refs <= 0) fail("KV block pool: registering block ", id, " that nobody holds");
    if (static_cast<int64_t>(tokens.size()) != block_size_)
      fail("KV block pool: a registered block holds ", block_size_, " tokens, got ", tokens.size());
    if (b.cached || by_hash_.contains(hash)) return false;
    b.cached = true;
    b.hash = hash;
    b.parent = parent;
    b.tokens.assign(tokens.begin(), tokens.end());
    by_hash_.emplace(hash, id);
    return true;
  }

  // Consistency of the counts, the queue and the hash index; fails naming the first broken rule.
  // For tests (O(n_blocks)).
  void check_invariants() const {
    int64_t queued = 0;
    for (int32_t id = next_[sentinel_]; id != sentinel_; id = next_[id]) {
      if (prev_[next_[id]] != id) fail("free queue: broken link at block ", id);
      if (blocks_[static_cast<size_t>(id)].refs != 0) fail("free queue: block ", id, " is held");
      if (++queued > total()) fail("free queue: cycle");
    }
    int64_t unheld = 0, cached = 0;
    for (int32_t id = 0; id < sentinel_; ++id) {
      const Block& b = blocks_[static_cast<size_t>(id)];
      if (b.refs < 0) fail("block ", id, " has reference count ", b.refs);
      unheld += b.refs == 0 ? 1 : 0;
      if (b.cached) {
        ++cached;
        const auto it = by_hash_.find(b.hash);
        if (it == by_hash_.end() || it->second != id) fail("block ", id, " cached but not indexed");
      }
    }
    if (queued != unheld || queued != free_)
      fail("free queue holds ", queued, " blocks, ", unheld, " have no holder, count says ", free_);
    if (cached != cached_count()) fail(cached, " blocks cached, index holds ", cached_count());
  }

 private:
  static constexpr int32_t SENTINEL_UNSET = -1;

  static size_t checked_count(int64_t n_blocks) {
    if (n_blocks <= 0 || n_blocks > INT32_MAX - 1)
      fail("KV block pool: need 1 .. 2^31-2 blocks (got ", n_blocks, ")");
    return static_cast<size_t>(n_blocks);
  }
  static int32_t checked_block_size(int32_t block_size) {
    if (block_size <= 0) fail("KV block pool: block size must be positive (got ", block_size, ")");
    return block_size;
  }

  struct Block {
    int32_t refs = 0;
    bool cached = false;
    uint64_t hash = 0, parent = 0;
    std::vector<int32_t> tokens;  // the content, when cached
  };

  Block& at(int32_t id) {
    if (id < 0 || id >= sentinel_) fail("KV block pool: no block ", id);
    return blocks_[static_cast<size_t>(id)];
  }
  const Block& at(int32_t id) const {
    if (id < 0 || id >= sentinel_) fail("KV block pool: no block ", id);
    return blocks_[static_cast<size_t>(id)];
  }

  void forget(int32_t id) {
    Block& b = blocks_[static_cast<size_t>(id)];
    if (!b.cached) return;
    by_hash_.erase(b.hash);
    b.cached = false;
    b.tokens.clear();
  }

  void push_back(int32_t id) { insert_after(prev_[sentinel_], id); }
  void push_front(int32_t id) { insert_after(sentinel_, id); }
  void insert_after(int32_t at_id, int32_t id) {
    next_[id] = next_[at_id];
    prev_[id] = at_id;
    prev_[next_[at_id]] = id;
    next_[at_id] = id;
    ++free_;
  }
  void unlink(int32_t id) {
    next_[prev_[id]] = next_[id];
    prev_[next_[id]] = prev_[id];
    --free_;
  }

  int32_t block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> next_, prev_;  // free queue links; index sentinel_ is the list head
  int32_t sentinel_ = 0;
  int64_t free_ = 0;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace hllm
