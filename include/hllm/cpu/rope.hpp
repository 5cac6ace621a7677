// Applies RoPE in place on the CPU to q or k laid out [n_tokens, n_heads, head_dim] (fp32), token t
// at positions[t]. The pairing and the frequencies are model/rope.hpp's, the rotation of a pair
// layout/rope_rotate.hpp's (shared with the CUDA kernel).
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/layout/rope_rotate.hpp"
#include "hllm/model/rope.hpp"

namespace hllm::cpu {

inline void apply_rope(const Tensor& x, std::span<const int64_t> positions, const RopeTable& table,
                       ThreadPool& pool) {
  const int64_t n = x.dim(0), n_heads = x.dim(1), head_dim = x.dim(2), half = head_dim / 2;
  if (static_cast<int64_t>(positions.size()) != n ||
      static_cast<int64_t>(table.inv_freq.size()) != half)
    fail("rope: ", positions.size(), " positions / ", table.inv_freq.size(), " frequencies for x ",
         x.shape.str());
  pool.parallel_for(n, [&](int64_t t) {
    float cos_a[512], sin_a[512];  // half <= 512: head_dim is bounded in LlamaWeights
    for (int64_t i = 0; i < half; ++i) {
      const double angle = rope_angle(positions[t], table.inv_freq[i]);
      cos_a[i] = static_cast<float>(std::cos(angle)) * table.attention_factor;
      sin_a[i] = static_cast<float>(std::sin(angle)) * table.attention_factor;
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* head = x.as<float>() + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i)
        rope_rotate_pair(head[i], head[i + half], cos_a[i], sin_a[i]);
    }
  });
}

}  // namespace hllm::cpu
