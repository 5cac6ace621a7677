// Attention of decode (and naive causal prefill) queries over the paged KV cache, on the CPU — the
// twin of kernels/hllm/cuda/attn_decode_paged.cuh, running the same split / online-softmax math
// (layout/attn_split.hpp).
//
//   q      [n_queries, n_heads, head_dim]             T (float or bf16)
//   kv     PagedKvView (layout/paged_kv.hpp)          pools [n_blocks, block_size, n_kv_heads,
//                                                     head_dim] of KV (T, or f16 with float q:
//                                                     the CPU's fp16 cache), block tables int32
//   query_seq[i]     row of kv.block_tables that query i reads
//   query_kv_len[i]  positions 0 .. query_kv_len[i] - 1 of that sequence are visible (>= 1)
//   out    [n_queries, n_heads, head_dim]             T
//
//   out[i, h, :] = softmax(scale · q[i, h, :] · K[seq, 0 .. kv_len - 1, kvh, :]ᵀ) · V[same rows]
//   with kvh = h / (n_heads / n_kv_heads)                 (grouped-query attention)
//
// Decode has one query per sequence; prefill of t new tokens of one sequence is t queries of the
// same sequence with kv_len start + 1 .. start + t (causal masking by length).
//
// The split / online-softmax math shared with the kernel is layout/attn_split.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/attention_ranges_avx512.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/attn_split.hpp"
#include "hllm/layout/paged_kv.hpp"

namespace hllm {

namespace cpu {

namespace detail {

template <typename T>
T store_f32_as(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    static_assert(std::is_same_v<T, bf16>, "attention_paged: T must be float or hllm::bf16");
    return f32_to_bf16(x);
  }
}

// Element offsets of positions begin .. begin + len - 1 of one KV head in the pools, walking the
// block table one block at a time (one division per block, not per position).
inline void range_offsets(const PagedKvView& kv, const int32_t* table, int32_t kv_head,
                          int32_t begin, int32_t len, int64_t* offsets) {
  for (int32_t j = 0; j < len;) {
    const int32_t pos = begin + j, in_block = pos % kv.block_size;
    const int32_t count = std::min(kv.block_size - in_block, len - j);
    const int64_t first_row = paged_kv_row_in_table(table, kv.block_size, pos);
    for (int32_t u = 0; u < count; ++u)
      offsets[j + u] = paged_kv_offset(kv, first_row + u, kv_head);
    j += count;
  }
}

#if defined(__x86_64__)
// range_scores / range_values for pools with head_dim % 8 == 0: one vectorized function each
// (no call per row). Scores take 8 rows at a time (8 accumulators, one q load per 8 products, one
// hsum8 per 8 scores); the V sums take blocks of V_BLOCK rows (16 KB of V at head_dim 64, 32 KB at
// 128: mostly from L1/L2 while each query head of the group adds them up in registers, 64
// dimensions at a time). The unroll pragmas keep the accumulator arrays in registers at -O2 too.
template <typename KV>
[[gnu::target("avx2,fma,f16c")]] inline void range_scores_avx2(const float* qf, int64_t group,
                                                               int64_t head_dim, const KV* k_pool,
                                                               const int64_t* offsets, int32_t len,
                                                               float* scores) {
  int32_t j = 0;
  for (; j + 8 <= len; j += 8) {
    const KV* k[8];
    for (int p = 0; p < 8; ++p) k[p] = k_pool + offsets[j + p];
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = qf + g * head_dim;
      __m256 acc[8];
      for (__m256& a : acc) a = _mm256_setzero_ps();
      for (int64_t c = 0; c < head_dim; c += 8) {
        const __m256 q = _mm256_loadu_ps(qg + c);
#pragma GCC unroll 8
        for (int p = 0; p < 8; ++p) acc[p] = _mm256_fmadd_ps(q, avx2::load8_f32(k[p] + c), acc[p]);
      }
      _mm256_storeu_ps(scores + g * len + j, avx2::hsum8(acc));
    }
  }
  for (; j < len; ++j) {
    const KV* k = k_pool + offsets[j];
    for (int64_t g = 0; g < group; ++g) {
      const float* qg = qf + g * head_dim;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t c = 0; c < head_dim; c += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg + c), avx2::load8_f32(k + c), acc);
      scores[g * len + j] = avx2::hsum(acc);
    }
  }
}
template <typename KV>
[[gnu::target("avx2,fma,f16c")]] inline void range_values_avx2(const float* weights, int64_t group,
                                                               int64_t head_dim, const KV* v_pool,
                                                               const int64_t* offsets, int32_t len,
                                                               float* part) {
  constexpr int32_t V_BLOCK = 64;
  for (int32_t begin = 0; begin < len; begin += V_BLOCK) {
    const int32_t rows = std::min(V_BLOCK, len - begin);
    for (int64_t g = 0; g < group; ++g) {
      const float* w = weights + g * len + begin;
      float* acc_g = part + g * head_dim;
      int64_t c0 = 0;
      for (; c0 + 64 <= head_dim; c0 += 64) {  // 64 dimensions in 8 registers
        __m256 acc[8];
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_loadu_ps(acc_g + c0 + 8 * u);
        for (int32_t j = 0; j < rows; ++j) {
          const __m256 wj = _mm256_set1_ps(w[j]);
          const KV* v = v_pool + offsets[begin + j] + c0;
#pragma GCC unroll 8
          for (int u = 0; u < 8; ++u)
            acc[u] = _mm256_fmadd_ps(wj, avx2::load8_f32(v + 8 * u), acc[u]);
        }
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) _mm256_storeu_ps(acc_g + c0 + 8 * u, acc[u]);
      }
      for (; c0 < head_dim; c0 += 8) {  // the rest, 8 at a time
        __m256 acc = _mm256_loadu_ps(acc_g + c0);
        for (int32_t j = 0; j < rows; ++j)
          acc = _mm256_fmadd_ps(_mm256_set1_ps(w[j]),
                                avx2::load8_f32(v_pool + offsets[begin + j] + c0), acc);
        _mm256_storeu_ps(acc_g + c0, acc);
      }
    }
  }
}
#endif

// scores[g·len + j] = qf[g] · K row j, and part[g] += Σ_j weights[g·len + j] · V row j: the two
// loops over a range's rows (cpu/attention_ranges_avx512.hpp for head_dim % 16 == 0 on AVX-512,
// the AVX2 functions for head_dim % 8 == 0).
template <typename KV>
void range_scores(const float* qf, int64_t group, int64_t head_dim, const KV* k_pool,
                  const int64_t* offsets, int32_t len, float* scores) {
#if defined(__x86_64__)
  if (head_dim % 16 == 0 && cpu_has_avx512())
    return range_scores_avx512(qf, group, head_dim, k_pool, offsets, len, scores);
  if (head_dim % 8 == 0 && cpu_has_avx2())
    return range_scores_avx2(qf, group, head_dim, k_pool, offsets, len, scores);
#endif
  for (int32_t j = 0; j < len; ++j)
    for (int64_t g = 0; g < group; ++g)
      scores[g * len + j] = dot(qf + g * head_dim, k_pool + offsets[j], head_dim);
}
template <typename KV>
void range_values(const float* weights, int64_t group, int64_t head_dim, const KV* v_pool,
                  const int64_t* offsets, int32_t len, float* part) {
#if defined(__x86_64__)
  if (head_dim % 16 == 0 && cpu_has_avx512())
    return range_values_avx512(weights, group, head_dim, v_pool, offsets, len, part);
  if (head_dim % 8 == 0 && cpu_has_avx2())
    return range_values_avx2(weights, group, head_dim, v_pool, offsets, len, part);
#endif
  std::vector<float> v_row(static_cast<size_t>(head_dim));
  for (int32_t j = 0; j < len; ++j) {
    for (int64_t c = 0; c < head_dim; ++c) v_row[c] = to_f32(v_pool[offsets[j] + c]);
    for (int64_t g = 0; g < group; ++g)
      axpy(weights[g * len + j], v_row.data(), part + g * head_dim, head_dim);
  }
}

}  // namespace detail

// attention_paged with ranges of `split_len` positions merged one after another (see the top of
// the file); attention_paged is this with one range. Other split lengths exist for the tests.
template <typename T, typename KV = T>
void attention_paged_split(const T* q, const PagedKvView& kv, std::span<const int32_t> query_seq,
                           std::span<const int32_t> query_kv_len, int n_heads, float scale,
                           int32_t split_len, T* out, ThreadPool& pool) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16>,
                "attention_paged: T must be float or hllm::bf16");
  static_assert(std::is_same_v<KV, T> || (std::is_same_v<T, float> && std::is_same_v<KV, f16>),
                "attention_paged: the pools hold T, or f16 with float queries");
  const int64_t n_queries = static_cast<int64_t>(query_seq.size());
  const int64_t n_kv_heads = kv.n_kv_heads, head_dim = kv.head_dim;
  if (query_kv_len.size() != query_seq.size())
    fail("attention_paged: ", query_seq.size(), " query sequences but ", query_kv_len.size(),
         " kv lengths");
  if (n_kv_heads < 1 || n_heads < 1 || n_heads % n_kv_heads != 0 || head_dim < 1 ||
      kv.block_size < 1 || kv.max_blocks_per_seq < 1 || split_len < 1)
    fail("attention_paged: n_heads ", n_heads, ", n_kv_heads ", n_kv_heads, ", head_dim ", head_dim,
         ", block_size ", kv.block_size, ", max_blocks_per_seq ", kv.max_blocks_per_seq,
         ", split_len ", split_len, " (need n_heads a multiple of n_kv_heads, all >= 1)");
  if (n_queries == 0) return;
  if (q == nullptr || out == nullptr || kv.k == nullptr || kv.v == nullptr ||
      kv.block_tables == nullptr)
    fail("attention_paged: null q, out, kv pool or block table");
  const int64_t capacity = int64_t{kv.block_size} * kv.max_blocks_per_seq;
  for (int64_t i = 0; i < n_queries; ++i) {
    if (query_kv_len[i] < 1 || query_kv_len[i] > capacity || query_seq[i] < 0)
      fail("attention_paged: query ", i, " has kv_len ", query_kv_len[i], " (need 1 .. ", capacity,
           " = block_size · max_blocks_per_seq) and sequence ", query_seq[i]);
  }
  const int64_t group = n_heads / n_kv_heads;
  const float q_scale = scale * ATTN_LOG2E;  // scores in log2 units, as on the GPU
  const KV* k_pool = static_cast<const KV*>(kv.k);
  const KV* v_pool = static_cast<const KV*>(kv.v);

  // One task per (query, KV head): the `group` query heads of a KV head reuse each K/V row. Tasks
  // are numbered KV head first, so the neighbours a thread claims (the queries of a prompt) read
  // the same K/V rows, from L2.
  pool.parallel_for(n_queries * n_kv_heads, [&](int64_t task) {
    const int64_t i = task % n_queries, kv_head = task / n_queries;
    const int32_t seq = query_seq[i], kv_len = query_kv_len[i];
    const int32_t* table = kv.block_tables + static_cast<int64_t>(seq) * kv.max_blocks_per_seq;
    thread_local std::vector<float> qf, total, part, scores, m_total, d_total, m_part, d_part;
    thread_local std::vector<int64_t> offsets;
    const int32_t range = std::min(split_len, kv_len);
    qf.resize(group * head_dim);     // [group, head_dim] q · scale · log2 e
    total.resize(group * head_dim);  // [group, head_dim] merged acc
    part.resize(group * head_dim);   // [group, head_dim] acc of the current range
    scores.resize(group * static_cast<int64_t>(range));  // [group, range]
    offsets.resize(static_cast<size_t>(range));          // pool offsets of the range's rows
    m_total.assign(group, ATTN_NEG_INF);
    d_total.assign(group, 0.0f);
    std::fill(total.begin(), total.end(), 0.0f);
    for (int64_t g = 0; g < group; ++g) {
      const T* qh = q + (i * n_heads + kv_head * group + g) * head_dim;
      for (int64_t c = 0; c < head_dim; ++c) qf[g * head_dim + c] = to_f32(qh[c]) * q_scale;
    }
    for (int32_t begin = 0; begin < kv_len; begin += split_len) {
      const int32_t len = std::min(split_len, kv_len - begin);
      detail::range_offsets(kv, table, static_cast<int32_t>(kv_head), begin, len, offsets.data());
      // Scores of the range, their softmax weights (m, d per query head), then the V sums.
      detail::range_scores(qf.data(), group, head_dim, k_pool, offsets.data(), len, scores.data());
      m_part.resize(group);
      d_part.resize(group);
      for (int64_t g = 0; g < group; ++g)
        d_part[g] = softmax_exp2(scores.data() + g * len, len, &m_part[g]);
      std::fill(part.begin(), part.end(), 0.0f);
      detail::range_values(scores.data(), group, head_dim, v_pool, offsets.data(), len,
                           part.data());
      // Merge the range into the running total (log-sum-exp).
      for (int64_t g = 0; g < group; ++g) {
        const float m_new = std::max(m_total[g], m_part[g]);
        const float w_total = softmax_rescale(m_total[g], m_new);
        const float w_part = softmax_rescale(m_part[g], m_new);
        d_total[g] = d_total[g] * w_total + d_part[g] * w_part;
        for (int64_t c = 0; c < head_dim; ++c)
          total[g * head_dim + c] =
              total[g * head_dim + c] * w_total + part[g * head_dim + c] * w_part;
        m_total[g] = m_new;
      }
    }
    for (int64_t g = 0; g < group; ++g) {
      T* o = out + (i * n_heads + kv_head * group + g) * head_dim;
      const float inv_d = 1.0f / d_total[g];  // d >= 1: the max position contributes exp2(0)
      for (int64_t c = 0; c < head_dim; ++c)
        o[c] = detail::store_f32_as<T>(total[g * head_dim + c] * inv_d);
    }
  });
}

// out[i, h, :] = softmax(scale · q[i, h, :] · K[query_seq[i], 0 .. query_kv_len[i] - 1, kvh, :]ᵀ)
//                · V[...],
// fp32 math on T = float or bf16 storage, pools of KV = T or f16 (see the top of the file).
template <typename T, typename KV = T>
void attention_paged(const T* q, const PagedKvView& kv, std::span<const int32_t> query_seq,
                     std::span<const int32_t> query_kv_len, int n_heads, float scale, T* out,
                     ThreadPool& pool) {
  attention_paged_split<T, KV>(q, kv, query_seq, query_kv_len, n_heads, scale,
                               std::numeric_limits<int32_t>::max(), out, pool);
}

}  // namespace cpu
}  // namespace hllm
