// Causal grouped-query attention on the CPU over a contiguous KV cache, fp32.
//
//   q      [n, n_heads, head_dim]            queries of tokens at positions
//                                            start_pos .. start_pos + n - 1
//   k, v   [capacity, n_kv_heads, head_dim]  cache rows 0 .. start_pos + n - 1 are filled
//                                            (k rotated)
//   out    [n, n_heads, head_dim]
//
// Query head h reads KV head h / (n_heads / n_kv_heads). Token t sees cache rows
// 0 .. start_pos + t:
//   out = softmax(scale · q kᵀ) v, the softmax shifted by its max for range safety.
// One task per (token, KV head) so the query heads of a group reuse the K/V rows while they are
// in cache.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/simd.hpp"

namespace hllm::cpu {

inline void attention_causal(const Tensor& q, const Tensor& k, const Tensor& v, int64_t start_pos,
                             float scale, const Tensor& out, ThreadPool& pool) {
  const int64_t n = q.dim(0), n_heads = q.dim(1), head_dim = q.dim(2);
  const int64_t n_kv_heads = k.dim(1), group = n_heads / n_kv_heads;
  if (k.dim(2) != head_dim || !(k.shape == v.shape) || n_heads % n_kv_heads != 0 ||
      !(out.shape == q.shape) || start_pos + n > k.dim(0))
    fail("attention: q ", q.shape.str(), ", kv ", k.shape.str(), ", out ", out.shape.str(),
         " at start ", start_pos, " do not match");
  const int64_t kv_row =
      n_kv_heads * head_dim;  // floats between consecutive positions in the cache
  pool.parallel_for(n * n_kv_heads, [&](int64_t task) {
    const int64_t t = task / n_kv_heads, kv_head = task % n_kv_heads;
    const int64_t kv_len = start_pos + t + 1;
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(kv_len));
    const float* k_base = k.as<float>() + kv_head * head_dim;
    const float* v_base = v.as<float>() + kv_head * head_dim;
    for (int64_t g = 0; g < group; ++g) {
      const int64_t head = kv_head * group + g;
      const float* query = q.as<float>() + (t * n_heads + head) * head_dim;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < kv_len; ++j) {
        scores[j] = dot(query, k_base + j * kv_row, head_dim) * scale;
        max_score = std::max(max_score, scores[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < kv_len; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
      float* o = out.as<float>() + (t * n_heads + head) * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      const float inv_sum = 1.0f / sum;
      for (int64_t j = 0; j < kv_len; ++j)
        axpy(scores[j] * inv_sum, v_base + j * kv_row, o, head_dim);
    }
  });
}

}  // namespace hllm::cpu
