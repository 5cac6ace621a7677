// CPU matmul against a dense weight stored in row panels (layout/dense_panels.hpp):
// y[n, out] = x[n, in] · W[out, in]ᵀ, fp32 activations, bf16 / f16 / f32 weights widened to fp32.
//
// Every output is ONE fused multiply-add chain over k = 0 .. in-1, started from +0:
//
//   y[t, r] = fma(W[r, in-1], x[t, in-1], ... fma(W[r, 1], x[t, 1], fma(W[r, 0], x[t, 0], 0)))
//
// in every kernel below (the 16 rows of a panel sit in two 8-lane vectors, x[t, k] is broadcast;
// the scalar path calls std::fma in the same order). So the result does not depend on the number
// of tokens, the kernel, the thread count, the chunking of a prompt or the ISA: a prompt prefilled
// whole gives the bits of the same prompt run token by token. Inputs are processed in blocks of
// PANEL_K; a block continues the chain from the partial sums the previous one left in y.
//
// Two kernels, picked by the number of tokens n (AVX2; on AVX-512 machines prompts go through the
// twice as wide kernel of cpu/matmul_panels_avx512.hpp):
// - Few tokens (decode, n < PROMPT_MIN_TOKENS): bound by reading W once. P panels × T tokens per
//   micro-kernel (P·T·2 accumulators): 4 × 1 for one token (8 independent chains hide the FMA
//   latency), 2 × 2 for more. Each task owns 4 panels (64 rows) and runs all tokens over each
//   PANEL_K block while it is in L2.
// - Prompts: bound by the FMA units, where widening bf16 in the inner loop (two shuffle/shift uops
//   per 8 weights, on the ports the FMAs need) would cost a third of their rate. Each task widens
//   one panel's PANEL_K block once into fp32 (64 KiB, in L2) and runs up to PROMPT_TOKEN_TILE
//   tokens over it, 6 at a time: 12 accumulators, 2 panel loads and 6 broadcasts per 12 FMAs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/matmul_panels_avx512.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/dense_panels.hpp"

namespace hllm::cpu {

namespace detail {

static_assert(DENSE_PANEL_ROWS == 16, "the panel kernels hold 16 rows in two AVX2 vectors");
inline constexpr int64_t PANEL_K = 1024;  // inputs per block: 16 × 1024 × 4 B = 64 KiB widened
inline constexpr int64_t DECODE_TASK_PANELS = 4;
// From this many tokens on the prompt kernel is faster (cpu_matmul_bench, bf16, 2-core Zen 3).
inline constexpr int64_t PROMPT_MIN_TOKENS = 16;
inline constexpr int64_t PROMPT_TOKEN_TILE = 512;  // at most this many tokens per prompt task
inline constexpr int64_t PROMPT_MIN_TOKENS_PER_TASK = 48;
inline constexpr int64_t PROMPT_AVX2_GROUP_TOKENS = 6;  // tokens per AVX2 prompt micro-kernel

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The rows of panel p that exist (the last panel may be partly padding).
inline int64_t panel_valid_rows(int64_t panel, int64_t out) {
  return std::min<int64_t>(DENSE_PANEL_ROWS, out - panel * DENSE_PANEL_ROWS);
}

// Portable kernel: panels [p0, p1) × tokens [t0, t1) over inputs [k0, k0 + k_len).
template <typename W>
void panels_block_scalar(const float* x, const W* w, float* y, int64_t in, int64_t out, int64_t p0,
                         int64_t p1, int64_t t0, int64_t t1, int64_t k0, int64_t k_len) {
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t p = p0; p < p1; ++p) {
      const W* panel = w + p * DENSE_PANEL_ROWS * in;
      for (int64_t i = 0; i < panel_valid_rows(p, out); ++i) {
        float& yt = y[t * out + p * DENSE_PANEL_ROWS + i];
        float acc = k0 == 0 ? 0.0f : yt;
        for (int64_t k = k0; k < k0 + k_len; ++k)
          acc = std::fma(to_f32(panel[k * DENSE_PANEL_ROWS + i]), x[t * in + k], acc);
        yt = acc;
      }
    }
}

#if defined(__x86_64__)
// The running sums of 16 rows of token t: loaded from y (a block after the first) or zero.
[[gnu::target("avx2,fma,f16c")]] inline void panel_sums_load(const float* yt, int64_t valid,
                                                             bool first_block, __m256 acc[2]) {
  if (first_block) {
    acc[0] = acc[1] = _mm256_setzero_ps();
  } else if (valid == DENSE_PANEL_ROWS) {
    acc[0] = _mm256_loadu_ps(yt);
    acc[1] = _mm256_loadu_ps(yt + 8);
  } else {
    alignas(32) float sums[DENSE_PANEL_ROWS] = {};
    std::copy(yt, yt + valid, sums);
    acc[0] = _mm256_load_ps(sums);
    acc[1] = _mm256_load_ps(sums + 8);
  }
}

[[gnu::target("avx2,fma,f16c")]] inline void panel_sums_store(float* yt, int64_t valid,
                                                              const __m256 acc[2]) {
  if (valid == DENSE_PANEL_ROWS) {
    _mm256_storeu_ps(yt, acc[0]);
    _mm256_storeu_ps(yt + 8, acc[1]);
    return;
  }
  alignas(32) float sums[DENSE_PANEL_ROWS];
  _mm256_store_ps(sums, acc[0]);
  _mm256_store_ps(sums + 8, acc[1]);
  std::copy(sums, sums + valid, yt);
}

// PANELS consecutive panels from `panel` × TOKENS tokens from `tok`, inputs [k0, k0 + k_len),
// widening the weights as they are read (the decode kernel).
template <int PANELS, int TOKENS, typename W>
[[gnu::target("avx2,fma,f16c")]] inline void panels_micro_avx2(const float* x, const W* w, float* y,
                                                               int64_t in, int64_t out,
                                                               int64_t panel, int64_t tok,
                                                               int64_t k0, int64_t k_len) {
  __m256 acc[PANELS][TOKENS][2];
  const W* wp[PANELS];
  const float* xt[TOKENS];
#pragma GCC unroll 4
  for (int p = 0; p < PANELS; ++p) {
    wp[p] = w + (panel + p) * DENSE_PANEL_ROWS * in + k0 * DENSE_PANEL_ROWS;
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t)
      panel_sums_load(y + (tok + t) * out + (panel + p) * DENSE_PANEL_ROWS,
                      panel_valid_rows(panel + p, out), k0 == 0, acc[p][t]);
  }
#pragma GCC unroll 2
  for (int t = 0; t < TOKENS; ++t) xt[t] = x + (tok + t) * in + k0;
  for (int64_t k = 0; k < k_len; ++k) {
    __m256 xb[TOKENS];
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t) xb[t] = _mm256_broadcast_ss(xt[t] + k);
#pragma GCC unroll 4
    for (int p = 0; p < PANELS; ++p) {
      const __m256 w0 = avx2::load8_f32(wp[p] + k * DENSE_PANEL_ROWS);
      const __m256 w1 = avx2::load8_f32(wp[p] + k * DENSE_PANEL_ROWS + 8);
#pragma GCC unroll 2
      for (int t = 0; t < TOKENS; ++t) {
        acc[p][t][0] = _mm256_fmadd_ps(w0, xb[t], acc[p][t][0]);
        acc[p][t][1] = _mm256_fmadd_ps(w1, xb[t], acc[p][t][1]);
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < PANELS; ++p)
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t)
      panel_sums_store(y + (tok + t) * out + (panel + p) * DENSE_PANEL_ROWS,
                       panel_valid_rows(panel + p, out), acc[p][t]);
}

// The decode kernel's task: panels [p0, p1) × every token, block by block along k.
template <typename W>
[[gnu::target("avx2,fma,f16c")]] void panels_decode_task_avx2(const float* x, const W* w, float* y,
                                                              int64_t n, int64_t in, int64_t out,
                                                              int64_t p0, int64_t p1) {
  for (int64_t k0 = 0; k0 < in; k0 += PANEL_K) {
    const int64_t k_len = std::min(PANEL_K, in - k0);
    int64_t t = 0;
    for (; t + 2 <= n; t += 2) {
      int64_t p = p0;
      for (; p + 2 <= p1; p += 2) panels_micro_avx2<2, 2>(x, w, y, in, out, p, t, k0, k_len);
      for (; p < p1; ++p) panels_micro_avx2<1, 2>(x, w, y, in, out, p, t, k0, k_len);
    }
    for (; t < n; ++t) {
      int64_t p = p0;
      for (; p + 4 <= p1; p += 4) panels_micro_avx2<4, 1>(x, w, y, in, out, p, t, k0, k_len);
      for (; p < p1; ++p) panels_micro_avx2<1, 1>(x, w, y, in, out, p, t, k0, k_len);
    }
  }
}

// Widens inputs [k0, k0 + k_len) of one panel to fp32, keeping the [k][16] order.
template <typename W>
[[gnu::target("avx2,fma,f16c")]] void widen_panel_block_avx2(const W* panel, int64_t k0,
                                                             int64_t k_len, float* wide) {
  const W* src = panel + k0 * DENSE_PANEL_ROWS;
  for (int64_t i = 0; i < k_len * DENSE_PANEL_ROWS; i += 8)
    _mm256_store_ps(wide + i, avx2::load8_f32(src + i));
}

// TOKENS tokens from `tok` × one panel over a widened block `wide` [k_len][16] (64-byte aligned).
template <int TOKENS>
[[gnu::target("avx2,fma,f16c")]] inline void panel_prompt_micro_avx2(const float* x,
                                                                     const float* wide, float* y,
                                                                     int64_t in, int64_t out,
                                                                     int64_t panel, int64_t tok,
                                                                     int64_t k0, int64_t k_len) {
  __m256 acc[TOKENS][2];
  const float* xt[TOKENS];
  const int64_t valid = panel_valid_rows(panel, out);
#pragma GCC unroll 6
  for (int t = 0; t < TOKENS; ++t) {
    panel_sums_load(y + (tok + t) * out + panel * DENSE_PANEL_ROWS, valid, k0 == 0, acc[t]);
    xt[t] = x + (tok + t) * in + k0;
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const __m256 w0 = _mm256_load_ps(wide + k * DENSE_PANEL_ROWS);
    const __m256 w1 = _mm256_load_ps(wide + k * DENSE_PANEL_ROWS + 8);
#pragma GCC unroll 6
    for (int t = 0; t < TOKENS; ++t) {
      const __m256 xb = _mm256_broadcast_ss(xt[t] + k);
      acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < TOKENS; ++t)
    panel_sums_store(y + (tok + t) * out + panel * DENSE_PANEL_ROWS, valid, acc[t]);
}

// The last 1-5 tokens of a prompt task (`rest` of them), through the micro-kernel of that width.
template <int TOKENS = 5>
[[gnu::target("avx2,fma,f16c")]] inline void panel_prompt_rest_avx2(int64_t rest, const float* x,
                                                                    const float* wide, float* y,
                                                                    int64_t in, int64_t out,
                                                                    int64_t panel, int64_t tok,
                                                                    int64_t k0, int64_t k_len) {
  if (rest == TOKENS)
    return panel_prompt_micro_avx2<TOKENS>(x, wide, y, in, out, panel, tok, k0, k_len);
  if constexpr (TOKENS > 1)
    panel_prompt_rest_avx2<TOKENS - 1>(rest, x, wide, y, in, out, panel, tok, k0, k_len);
}

// The prompt kernel's task: one panel × tokens [t0, t1), block by block along k.
template <typename W>
[[gnu::target("avx2,fma,f16c")]] void panel_prompt_task_avx2(const float* x, const W* w, float* y,
                                                             int64_t in, int64_t out, int64_t panel,
                                                             int64_t t0, int64_t t1, float* wide) {
  const W* panel_w = w + panel * DENSE_PANEL_ROWS * in;
  for (int64_t k0 = 0; k0 < in; k0 += PANEL_K) {
    const int64_t k_len = std::min(PANEL_K, in - k0);
    widen_panel_block_avx2(panel_w, k0, k_len, wide);
    int64_t t = t0;
    for (; t + PROMPT_AVX2_GROUP_TOKENS <= t1; t += PROMPT_AVX2_GROUP_TOKENS)
      panel_prompt_micro_avx2<PROMPT_AVX2_GROUP_TOKENS>(x, wide, y, in, out, panel, t, k0, k_len);
    if (t < t1) panel_prompt_rest_avx2(t1 - t, x, wide, y, in, out, panel, t, k0, k_len);
  }
}

// Tokens per prompt task for n tokens × `panels` panels: at most PROMPT_TOKEN_TILE (AVX-512:
// prompt_token_tile_avx512, which keeps a tile's x in the last-level cache; each widened block
// serves all of a task's tokens), but enough tiles for ~4 tasks per thread while a tile keeps
// PROMPT_MIN_TOKENS_PER_TASK; then equal tiles, rounded up to whole micro-kernel groups.
inline int64_t prompt_token_tile(int64_t n, int64_t in, int64_t panels, int threads, bool avx512) {
  const int64_t task_panels = avx512 ? ceil_div(panels, PROMPT_TASK_PANELS) : panels;
  const int64_t tiles_for_threads = ceil_div(4 * int64_t{threads}, task_panels);
  const int64_t tiles =
      std::max(ceil_div(n, avx512 ? prompt_token_tile_avx512(in) : PROMPT_TOKEN_TILE),
               std::min(tiles_for_threads, ceil_div(n, PROMPT_MIN_TOKENS_PER_TASK)));
  const int64_t group = avx512 ? PROMPT_GROUP_TOKENS : PROMPT_AVX2_GROUP_TOKENS;
  return ceil_div(ceil_div(n, tiles), group) * group;
}
#endif

template <typename W>
void matmul_panels_typed(const float* x, const W* w, float* y, int64_t n, int64_t in, int64_t out,
                         ThreadPool& pool, std::vector<float>& scratch) {
  const int64_t panels = dense_panel_count(out);
  const bool vector_path = cpu_has_avx2();
  if (n == 0 || out == 0) return;
  if (in == 0) return std::fill(y, y + n * out, 0.0f);  // an empty sum (no chain to run)
  if (n < PROMPT_MIN_TOKENS || !vector_path) {
    pool.parallel_for(ceil_div(panels, DECODE_TASK_PANELS), [&](int64_t task) {
      const int64_t p0 = task * DECODE_TASK_PANELS;
      const int64_t p1 = std::min(panels, p0 + DECODE_TASK_PANELS);
#if defined(__x86_64__)
      if (vector_path) return panels_decode_task_avx2(x, w, y, n, in, out, p0, p1);
#endif
      for (int64_t k0 = 0; k0 < in; k0 += PANEL_K)
        panels_block_scalar(x, w, y, in, out, p0, p1, 0, n, k0, std::min(PANEL_K, in - k0));
    });
    return;
  }
#if defined(__x86_64__)
  const bool avx512 = cpu_has_avx512();
  const int64_t tile = prompt_token_tile(n, in, panels, pool.size(), avx512);
  if (avx512) return matmul_panels_prompt_avx512(x, w, y, n, in, out, tile, pool, scratch);
  pool.parallel_for(panels * ceil_div(n, tile), [&](int64_t task) {
    alignas(64) float wide[PANEL_K * DENSE_PANEL_ROWS];  // 64 KiB on the worker's stack
    const int64_t panel = task % panels, t0 = (task / panels) * tile;
    panel_prompt_task_avx2(x, w, y, in, out, panel, t0, std::min(n, t0 + tile), wide);
  });
#else
  (void)scratch;  // (only the x86 prompt kernel rearranges x)
#endif
}

}  // namespace detail

// y[n, out] = x[n, in] · Wᵀ for W[out, in] stored as panels (layout/dense_panels.hpp) in
// `panels`, whose dtype is bf16 / f16 / f32 and which holds dense_panels_elements(out, in)
// elements. x and y fp32 contiguous. `scratch` holds x rearranged for the AVX-512 prompt kernel
// between calls (grown on demand, up to n × in floats).
inline void matmul_panels(const Tensor& x, const Tensor& panels, int64_t out, const Tensor& y,
                          ThreadPool& pool, std::vector<float>& scratch) {
  const int64_t in = x.rank() == 2 ? x.dim(1) : 0;
  check_matmul_operands("matmul_panels", x, y, in, out);
  if (panels.numel() < dense_panels_elements(out, in))
    fail("matmul_panels: ", panels.numel(), " weights do not hold ", out, " x ", in, " in panels");
  const int64_t n = x.dim(0);
  visit_float_dtype(panels.dtype, "matmul: weight", [&]<typename T>(std::type_identity<T>) {
    detail::matmul_panels_typed(x.as<float>(), panels.as<T>(), y.as<float>(), n, in, out, pool,
                                scratch);
  });
}

}  // namespace hllm::cpu
