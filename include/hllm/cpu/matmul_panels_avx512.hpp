// The AVX-512 prompt kernel of cpu/matmul_panels.hpp: the same one FMA chain per output over
// k = 0 .. in-1 (so the same bits as every other panel kernel), at twice the AVX2 kernel's width.
//
// A panel's 16 rows fill one zmm. The micro-kernel runs 2 panels × 12 tokens: 24 accumulators,
// and per input k 2 weight loads and 12 broadcasts for 24 FMAs. Twelve token rows of x cannot each
// keep a pointer in the 15 general registers, so x is first regrouped token-interleaved,
//
//   grouped[g][k][j] = x[12g + j, k]     j < 12; zeros for the tokens past n,
//
// and the 12 broadcasts of input k are one pointer plus constant offsets. The regrouping is
// n × in copies against n × in × out multiply-adds: under 1% of a Llama layer's prompt time.
//
// Each task owns a pair of panels and a tile of tokens (a multiple of 12). It widens the pair's
// block of PROMPT_K_AVX512 inputs to fp32 once, interleaved as wide[k][32] (128 KiB, in L2), and
// runs every token group of its tile over it; the next block continues the chains from y.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/dense_panels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>

namespace hllm::cpu::detail {

inline constexpr int64_t PROMPT_GROUP_TOKENS = 12;  // tokens per micro-kernel and per x group
inline constexpr int64_t PROMPT_K_AVX512 = 1024;    // inputs per block: 32 × 1024 × 4 B = 128 KiB
inline constexpr int64_t PROMPT_TASK_PANELS = 2;
// The most tokens per task: their x (tile × in × 4 B) at most PROMPT_TILE_X_BYTES, so that it stays
// in the last-level cache while the threads run the neighbouring panel pairs of the same tile (each
// task reads all of it). 512 tokens × 8,192 inputs (16 MiB) ran at half the speed of 128 tokens.
inline constexpr int64_t PROMPT_TILE_X_BYTES = int64_t{4} << 20;
inline int64_t prompt_token_tile_avx512(int64_t in) {
  const int64_t tokens = PROMPT_TILE_X_BYTES / (std::max<int64_t>(in, 1) * sizeof(float));
  return std::clamp<int64_t>(tokens, 4 * PROMPT_GROUP_TOKENS, 512);
}

// x [n, in] → grouped [ceil(n / 12)][in][12] (see the top of the file), one task per group.
inline void group_prompt_tokens(const float* x, int64_t n, int64_t in, float* grouped,
                                ThreadPool& pool) {
  const int64_t groups = (n + PROMPT_GROUP_TOKENS - 1) / PROMPT_GROUP_TOKENS;
  pool.parallel_for(groups, [&](int64_t g) {
    float* dst = grouped + g * in * PROMPT_GROUP_TOKENS;
    for (int64_t j = 0; j < PROMPT_GROUP_TOKENS; ++j) {
      const int64_t t = g * PROMPT_GROUP_TOKENS + j;
      if (t >= n) {
        for (int64_t k = 0; k < in; ++k) dst[k * PROMPT_GROUP_TOKENS + j] = 0.0f;
        continue;
      }
      const float* src = x + t * in;
      for (int64_t k = 0; k < in; ++k) dst[k * PROMPT_GROUP_TOKENS + j] = src[k];
    }
  });
}

// Widens inputs [k0, k0 + k_len) of PANELS consecutive panels to fp32, interleaved:
// wide[k][16 p + i] = W[16 (panel + p) + i, k0 + k].
template <int PANELS, typename W>
[[gnu::target("avx512f,avx2,fma,f16c")]] void widen_panels_block_avx512(const W* w, int64_t in,
                                                                        int64_t panel, int64_t k0,
                                                                        int64_t k_len,
                                                                        float* wide) {
  for (int p = 0; p < PANELS; ++p) {
    const W* src = w + (panel + p) * DENSE_PANEL_ROWS * in + k0 * DENSE_PANEL_ROWS;
    for (int64_t k = 0; k < k_len; ++k)
      _mm512_store_ps(wide + (k * PANELS + p) * DENSE_PANEL_ROWS,
                      avx512::load16_f32(src + k * DENSE_PANEL_ROWS));
  }
}

// 12 tokens from `tok` (the first `tokens` of them real) × PANELS panels from `panel`, over a
// widened block [k_len][16 PANELS] and the group's x from input k0 on (grouped[k][12]).
template <int PANELS>
[[gnu::target("avx512f,avx2,fma,f16c")]] inline void panels_prompt_micro_avx512(
    const float* group_x, const float* wide, float* y, int64_t out, int64_t panel, int64_t tok,
    int64_t tokens, bool first_block, int64_t k_len) {
  constexpr int T = PROMPT_GROUP_TOKENS;
  __m512 acc[PANELS][T];
  __mmask16 rows[PANELS];
#pragma GCC unroll 2
  for (int p = 0; p < PANELS; ++p) {
    const int64_t valid = std::min<int64_t>(DENSE_PANEL_ROWS, out - (panel + p) * DENSE_PANEL_ROWS);
    rows[p] = static_cast<__mmask16>((1u << valid) - 1u);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const float* yt = y + (tok + t) * out + (panel + p) * DENSE_PANEL_ROWS;
      acc[p][t] =
          first_block || t >= tokens ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(rows[p], yt);
    }
  }
  for (int64_t k = 0; k < k_len; ++k) {
    __m512 w[PANELS];
#pragma GCC unroll 2
    for (int p = 0; p < PANELS; ++p) w[p] = _mm512_load_ps(wide + (k * PANELS + p) * 16);
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t) {
      const __m512 xb = _mm512_set1_ps(group_x[k * T + t]);
#pragma GCC unroll 2
      for (int p = 0; p < PANELS; ++p) acc[p][t] = _mm512_fmadd_ps(w[p], xb, acc[p][t]);
    }
  }
#pragma GCC unroll 2
  for (int p = 0; p < PANELS; ++p)
#pragma GCC unroll 12
    for (int t = 0; t < T; ++t)
      if (t < tokens)
        _mm512_mask_storeu_ps(y + (tok + t) * out + (panel + p) * DENSE_PANEL_ROWS, rows[p],
                              acc[p][t]);
}

// One task: PANELS panels from `panel` × tokens [t0, t1), t0 a multiple of 12, block by block.
template <int PANELS, typename W>
[[gnu::target("avx512f,avx2,fma,f16c")]] void panels_prompt_task_avx512(
    const float* grouped, const W* w, float* y, int64_t n, int64_t in, int64_t out, int64_t panel,
    int64_t t0, int64_t t1, float* wide) {
  for (int64_t k0 = 0; k0 < in; k0 += PROMPT_K_AVX512) {
    const int64_t k_len = std::min(PROMPT_K_AVX512, in - k0);
    widen_panels_block_avx512<PANELS>(w, in, panel, k0, k_len, wide);
    for (int64_t t = t0; t < t1; t += PROMPT_GROUP_TOKENS) {
      const float* group_x = grouped + (t * in + k0 * PROMPT_GROUP_TOKENS);
      panels_prompt_micro_avx512<PANELS>(group_x, wide, y, out, panel, t,
                                         std::min(PROMPT_GROUP_TOKENS, n - t), k0 == 0, k_len);
    }
  }
}

// This thread's buffer for a widened block, 64-byte aligned (too large for the stack of a thread
// that calls into the library).
inline float* widened_block_buffer() {
  constexpr size_t bytes = PROMPT_K_AVX512 * PROMPT_TASK_PANELS * DENSE_PANEL_ROWS * sizeof(float);
  thread_local std::vector<float> buffer((bytes + 64) / sizeof(float));
  void* start = buffer.data();
  size_t space = buffer.size() * sizeof(float);
  return static_cast<float*>(std::align(64, bytes, start, space));
}

// y[n, out] = x · Wᵀ for n prompt tokens: tasks of a panel pair × a tile of `tile` tokens (a
// multiple of the group size). x is regrouped into the caller's `grouped` (grown to n × in floats,
// rounded up to whole groups).
template <typename W>
void matmul_panels_prompt_avx512(const float* x, const W* w, float* y, int64_t n, int64_t in,
                                 int64_t out, int64_t tile, ThreadPool& pool,
                                 std::vector<float>& grouped) {
  const int64_t groups = (n + PROMPT_GROUP_TOKENS - 1) / PROMPT_GROUP_TOKENS;
  grouped.resize(static_cast<size_t>(groups * PROMPT_GROUP_TOKENS * in));
  group_prompt_tokens(x, n, in, grouped.data(), pool);
  const int64_t panels = dense_panel_count(out);
  const int64_t pairs = (panels + PROMPT_TASK_PANELS - 1) / PROMPT_TASK_PANELS;
  const float* xg = grouped.data();
  pool.parallel_for(pairs * ((n + tile - 1) / tile), [&](int64_t task) {
    float* wide = widened_block_buffer();
    const int64_t panel = (task % pairs) * PROMPT_TASK_PANELS, t0 = (task / pairs) * tile;
    const int64_t t1 = std::min(n, t0 + tile);
    if (panel + 2 <= panels)
      panels_prompt_task_avx512<2>(xg, w, y, n, in, out, panel, t0, t1, wide);
    else
      panels_prompt_task_avx512<1>(xg, w, y, n, in, out, panel, t0, t1, wide);
  });
}

}  // namespace hllm::cpu::detail
#endif
