// KvCache: the keys and values of one sequence, allocated by a backend, in the paged layout
// (layout/paged_kv.hpp) with the identity block table: block b holds positions b*16 .. b*16+15.
//
//   layer l:  k [rows, n_kv_heads, head_dim]   row p = the (rotated) key of position p
//             v [rows, n_kv_heads, head_dim]   rows = capacity rounded up to whole blocks
//
// length() rows are filled; the next forward appends at position length(). The server's cache
// hands out the same blocks to many sequences through their own block tables.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

class KvCache {
 public:
  KvCache(Backend& backend, const LlamaConfig& config, int64_t capacity) : capacity_(capacity) {
    if (capacity <= 0) fail("KV cache capacity must be positive (got ", capacity, ")");
    const int64_t blocks = (capacity + KV_BLOCK_SIZE - 1) / KV_BLOCK_SIZE;
    const Shape shape{blocks * KV_BLOCK_SIZE, config.n_kv_heads, config.head_dim};
    block_table_.resize(static_cast<size_t>(blocks));
    for (int64_t b = 0; b < blocks; ++b) block_table_[b] = static_cast<int32_t>(b);
    for (int64_t l = 0; l < config.n_layers; ++l) {
      keys_.push_back(backend.allocate(backend.kv_dtype(), shape));
      values_.push_back(backend.allocate(backend.kv_dtype(), shape));
    }
  }

  // Positions per block of every paged cache (a multiple of 16 keeps rows of blocks aligned).
  static constexpr int32_t KV_BLOCK_SIZE = 16;

  int64_t capacity() const { return capacity_; }
  // Unique per cache (next_object_id): recorded steps are keyed by it, not by addresses.
  uint64_t id() const { return id_; }
  // Allocated rows (capacity rounded up to whole blocks) and the identity block table over them.
  int64_t rows() const { return static_cast<int64_t>(block_table_.size()) * KV_BLOCK_SIZE; }
  std::span<const int32_t> block_table() const { return block_table_; }
  int64_t length() const { return length_; }
  KvLayer layer(int64_t l) const { return KvLayer{keys_[l].tensor, values_[l].tensor}; }

  // Called by the model after it wrote n more positions.
  void advance(int64_t n) { length_ += n; }
  void clear() { length_ = 0; }
  // Forgets every position from `length` on (e.g. to re-use a shared prefix of a new prompt).
  void truncate(int64_t length) {
    if (length < 0 || length > length_)
      fail("KV cache truncate to ", length, " of ", length_, " positions");
    length_ = length;
  }

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  uint64_t id_ = next_object_id();
  std::vector<int32_t> block_table_;
  std::vector<Buffer> keys_;
  std::vector<Buffer> values_;
};

}  // namespace hllm
