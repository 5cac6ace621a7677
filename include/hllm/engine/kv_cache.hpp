// KvCache: the keys and values of one sequence, contiguous per layer, allocated by a backend.
//
//   layer l:  k [capacity, n_kv_heads, head_dim]   row p = the (rotated) key of position p
//             v [capacity, n_kv_heads, head_dim]
//
// length() rows are filled; the next forward appends at position length(). The server's paged cache
// (fixed-size blocks + block tables) builds on the same per-position row layout.
#pragma once

#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

class KvCache {
 public:
  KvCache(Backend& backend, const LlamaConfig& config, int64_t capacity) : capacity_(capacity) {
    if (capacity <= 0) fail("KV cache capacity must be positive (got ", capacity, ")");
    const Shape shape{capacity, config.n_kv_heads, config.head_dim};
    for (int64_t l = 0; l < config.n_layers; ++l) {
      keys_.push_back(backend.allocate(backend.activation_dtype(), shape));
      values_.push_back(backend.allocate(backend.activation_dtype(), shape));
    }
  }

  int64_t capacity() const { return capacity_; }
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
  std::vector<Buffer> keys_;
  std::vector<Buffer> values_;
};

}  // namespace hllm
