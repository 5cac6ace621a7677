// BlockPool: the free list of a paged KV cache (layout/paged_kv.hpp). The cache's rows are cut into
// n_blocks blocks of KvCache::KV_BLOCK_SIZE positions; a sequence holds a list of blocks (its block
// table) and gives them back when it ends. Not thread-safe: the engine thread owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"

namespace hllm {

class BlockPool {
 public:
  explicit BlockPool(int64_t n_blocks) : total_(n_blocks) {
    if (n_blocks <= 0) fail("KV block pool: need at least one block (got ", n_blocks, ")");
    free_.reserve(static_cast<size_t>(n_blocks));
    // Handed out lowest id first (the free list is a stack).
    for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  }

  int64_t total() const { return total_; }
  int64_t free_count() const { return static_cast<int64_t>(free_.size()); }

  // `n` blocks, or nothing (and no change) when fewer are free.
  std::optional<std::vector<int32_t>> allocate(int64_t n) {
    if (n < 0 || n > free_count()) return std::nullopt;
    std::vector<int32_t> blocks(free_.end() - n, free_.end());
    free_.resize(free_.size() - static_cast<size_t>(n));
    return blocks;
  }

  void release(std::span<const int32_t> blocks) {
    for (int32_t b : blocks) {
      if (b < 0 || b >= total_ || free_count() >= total_)
        fail("KV block pool: block ", b, " released twice or not from this pool");
      free_.push_back(b);
    }
  }

 private:
  int64_t total_;
  std::vector<int32_t> free_;
};

}  // namespace hllm
