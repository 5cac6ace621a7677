// The AVX-512 loops of cpu/attention_paged.hpp over a range of KV rows, for head_dim % 16 == 0:
// the scores of the `group` query heads that share a KV head, and their sums of V rows.
//
// Each K or V row is widened to fp32 once and used by up to 4 query heads while in registers (the
// AVX2 loops widen it again for every head):
// - Scores: 4 rows × up to 4 heads = 16 accumulators over 16 dimensions at a time, then one hsum16
//   turns them into the 16 scores (4 rows of each head).
// - V sums: per row, up to 4 heads × 64 dimensions = 16 accumulators. Every output lane is one FMA
//   chain over the rows in order, as in the AVX2 loop: the same bits.
// Groups of more than 4 heads run in chunks of 4.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "hllm/cpu/simd.hpp"

#if defined(__x86_64__)
#include <immintrin.h>

namespace hllm::cpu::detail {

inline constexpr int64_t ATTN_AVX512_HEADS = 4;  // query heads per pass over the rows

// scores[g·len + j + r] = q[g] · K row (j + r) for r < rows (1-4) and HEADS heads from qf.
template <int HEADS, typename KV>
[[gnu::target("avx512f,avx2,fma,f16c")]] inline void scores_4_rows_avx512(
    const float* qf, int64_t head_dim, const KV* const k[4], int rows, float* scores, int64_t len) {
  __m512 acc[16];  // [head][row]; the heads past HEADS stay zero for hsum16
#pragma GCC unroll 16
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t c = 0; c < head_dim; c += 16) {
    __m512 kc[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) kc[r] = avx512::load16_f32(k[r] + c);
#pragma GCC unroll 4
    for (int g = 0; g < HEADS; ++g) {
      const __m512 q = _mm512_loadu_ps(qf + g * head_dim + c);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) acc[4 * g + r] = _mm512_fmadd_ps(q, kc[r], acc[4 * g + r]);
    }
  }
  alignas(64) float sums[16];
  _mm512_store_ps(sums, avx512::hsum16(acc));
  for (int g = 0; g < HEADS; ++g)
    for (int r = 0; r < rows; ++r) scores[g * len + r] = sums[4 * g + r];
}

// Asks for the cache lines of one K or V row (`bytes` long) ahead of their use.
inline void prefetch_row(const void* row, int64_t bytes) {
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(static_cast<const char*>(row) + b);
}

// Rows ahead of the one in use whose lines are requested (the rows of a KV head are scattered:
// one row per position, in blocks of the block table).
inline constexpr int32_t ATTN_PREFETCH_ROWS = 8;

template <int HEADS, typename KV>
[[gnu::target("avx512f,avx2,fma,f16c")]] void range_scores_heads_avx512(
    const float* qf, int64_t head_dim, const KV* k_pool, const int64_t* offsets, int32_t len,
    float* scores) {
  for (int32_t j = 0; j < len; j += 4) {
    const int rows = std::min(4, len - j);
    const KV* k[4];
    for (int r = 0; r < 4; ++r) k[r] = k_pool + offsets[j + std::min(r, rows - 1)];
    for (int32_t r = j + ATTN_PREFETCH_ROWS; r < std::min(len, j + ATTN_PREFETCH_ROWS + 4); ++r)
      prefetch_row(k_pool + offsets[r], head_dim * static_cast<int64_t>(sizeof(KV)));
    scores_4_rows_avx512<HEADS>(qf, head_dim, k, rows, scores + j, len);
  }
}

// part[g][c0 .. c0 + 16 CHUNKS) += Σ_j weights[g·len + j] · V row j, HEADS heads.
template <int HEADS, int CHUNKS, typename KV>
[[gnu::target("avx512f,avx2,fma,f16c")]] inline void values_columns_avx512(
    const float* weights, int64_t head_dim, const KV* v_pool, const int64_t* offsets, int32_t len,
    int64_t c0, float* part) {
  __m512 acc[HEADS][CHUNKS];
#pragma GCC unroll 4
  for (int g = 0; g < HEADS; ++g)
#pragma GCC unroll 4
    for (int u = 0; u < CHUNKS; ++u) acc[g][u] = _mm512_loadu_ps(part + g * head_dim + c0 + 16 * u);
  for (int32_t j = 0; j < len; ++j) {
    const KV* v = v_pool + offsets[j] + c0;
    if (j + ATTN_PREFETCH_ROWS < len)
      prefetch_row(v_pool + offsets[j + ATTN_PREFETCH_ROWS] + c0, 16 * CHUNKS * sizeof(KV));
    __m512 vc[CHUNKS];
#pragma GCC unroll 4
    for (int u = 0; u < CHUNKS; ++u) vc[u] = avx512::load16_f32(v + 16 * u);
#pragma GCC unroll 4
    for (int g = 0; g < HEADS; ++g) {
      const __m512 w = _mm512_set1_ps(weights[g * len + j]);
#pragma GCC unroll 4
      for (int u = 0; u < CHUNKS; ++u) acc[g][u] = _mm512_fmadd_ps(w, vc[u], acc[g][u]);
    }
  }
#pragma GCC unroll 4
  for (int g = 0; g < HEADS; ++g)
#pragma GCC unroll 4
    for (int u = 0; u < CHUNKS; ++u) _mm512_storeu_ps(part + g * head_dim + c0 + 16 * u, acc[g][u]);
}

template <int HEADS, typename KV>
[[gnu::target("avx512f,avx2,fma,f16c")]] void range_values_heads_avx512(const float* weights,
                                                                        int64_t head_dim,
                                                                        const KV* v_pool,
                                                                        const int64_t* offsets,
                                                                        int32_t len, float* part) {
  int64_t c0 = 0;
  for (; c0 + 64 <= head_dim; c0 += 64)
    values_columns_avx512<HEADS, 4>(weights, head_dim, v_pool, offsets, len, c0, part);
  for (; c0 < head_dim; c0 += 16)
    values_columns_avx512<HEADS, 1>(weights, head_dim, v_pool, offsets, len, c0, part);
}

// Calls fn(std::integral_constant<int, HEADS>{}, g0) for the chunks of at most 4 of `group` heads.
template <typename Fn>
void for_head_chunks(int64_t group, Fn fn) {
  for (int64_t g0 = 0; g0 < group; g0 += ATTN_AVX512_HEADS) {
    switch (std::min(ATTN_AVX512_HEADS, group - g0)) {
      case 4:
        fn(std::integral_constant<int, 4>{}, g0);
        break;
      case 3:
        fn(std::integral_constant<int, 3>{}, g0);
        break;
      case 2:
        fn(std::integral_constant<int, 2>{}, g0);
        break;
      default:
        fn(std::integral_constant<int, 1>{}, g0);
    }
  }
}

// range_scores / range_values (cpu/attention_paged.hpp) for head_dim % 16 == 0.
template <typename KV>
void range_scores_avx512(const float* qf, int64_t group, int64_t head_dim, const KV* k_pool,
                         const int64_t* offsets, int32_t len, float* scores) {
  for_head_chunks(group, [&](auto heads, int64_t g0) {
    range_scores_heads_avx512<heads()>(qf + g0 * head_dim, head_dim, k_pool, offsets, len,
                                       scores + g0 * len);
  });
}
template <typename KV>
void range_values_avx512(const float* weights, int64_t group, int64_t head_dim, const KV* v_pool,
                         const int64_t* offsets, int32_t len, float* part) {
  for_head_chunks(group, [&](auto heads, int64_t g0) {
    range_values_heads_avx512<heads()>(weights + g0 * len, head_dim, v_pool, offsets, len,
                                       part + g0 * head_dim);
  });
}

}  // namespace hllm::cpu::detail
#endif
