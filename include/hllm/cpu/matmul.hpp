// CPU matmul against a weight matrix: y[n, out] = x[n, in] · W[out, in]ᵀ (nn.Linear), fp32
// activations, weights in bf16 / f16 / f32 widened to fp32, fp32 accumulation.
//
// Two AVX2 kernels:
//
// - Few tokens (decode, n < PANEL_MIN_TOKENS): bound by reading W once. Dot-product shaped (8 fp32
//   lanes along `in`, summed across lanes last), 4 weight rows × 2 tokens at a time: every weight
//   vector loaded (and widened) is used for 2 tokens and every activation vector for 4 rows.
//
//            in ───────────►
//   W  out  [r0 ......... ]  ┐ 4 rows share each x load
//      │    [r1 ......... ]  │
//      ▼    [r2 ......... ]  │      x  [t0 ......... ]  ┐ 2 tokens share each W load
//           [r3 ......... ]  ┘         [t1 ......... ]  ┘
//
// - Prompts (n >= PANEL_MIN_TOKENS): bound by the FMA units, where widening bf16 in the inner loop
//   (two shuffle/shift uops per 8 weights, on the ports the FMAs need) cost a third of their rate.
//   Each task widens its 16 weight rows once per PANEL_K inputs into a panel stored input-major,
//   panel[k][0..15] = W[row .. row + 16, k] as fp32, and every token of the task runs over it with
//   an outer product per input: 6 tokens × 16 rows = 12 accumulators, 2 panel loads and 6
//   broadcasts per 12 FMAs, and no horizontal sums.
//
//            panel (16 rows, one 64 B line per input k)      x  t0 .. t5: x[t, k] broadcast
//     k ──► [w0..w7 | w8..w15] [w0..w7 | w8..w15] ...         acc[t][0..1] += panel[k] * x[t, k]
//
// Decode (n = 1) is a GEMV and bound by reading W once: bytes = out * in * sizeof(W).
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"

namespace hllm::cpu {

namespace detail {

inline constexpr int64_t ROW_TILE = 16;  // weight rows per task: 16 * in * 2 B stays in L2
// Tokens per task: each task widens its weight panel once for all of them, so tiles are as long as
// the thread count allows, up to TOKEN_TILE (rounded up to a multiple of 6) and down to
// MIN_TOKENS_PER_TASK.
inline constexpr int64_t TOKEN_TILE = 512;
inline constexpr int64_t MIN_TOKENS_PER_TASK = 48;

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
// From 24 tokens on the panel kernel wins (cpu_matmul_bench, 4096x4096 bf16, 2-core Zen 3: at
// 16 tokens the dot-product kernel is ~10% faster, at 32 the panel kernel is).
inline constexpr int64_t PANEL_MIN_TOKENS = 24;
inline constexpr int64_t PANEL_ROWS = ROW_TILE;  // weight rows per widened panel: two vectors
static_assert(PANEL_ROWS == 16, "the panel micro-kernel holds 16 rows in two AVX2 vectors");
inline constexpr int64_t PANEL_K = 1024;  // inputs per panel: 16 * 1024 * 4 B = 64 KiB, in L2

// Portable micro-kernel: one weight row against one token.
template <typename W>
void matmul_tile_scalar(const float* x, const W* w, float* y, int64_t in, int64_t out,
                        int64_t row_begin, int64_t row_end, int64_t tok_begin, int64_t tok_end) {
  for (int64_t t = tok_begin; t < tok_end; ++t)
    for (int64_t r = row_begin; r < row_end; ++r) y[t * out + r] = dot(x + t * in, w + r * in, in);
}

#if defined(__x86_64__)
// ROWS weight rows × TOKENS tokens; `in` tail (in % 8) done in scalar.
template <int ROWS, int TOKENS, typename W>
[[gnu::target("avx2,fma,f16c")]] inline void matmul_micro_avx2(const float* x, const W* w, float* y,
                                                               int64_t in, int64_t out, int64_t row,
                                                               int64_t tok) {
  __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 xv[TOKENS];
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t) xv[t] = _mm256_loadu_ps(x + (tok + t) * in + k);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const __m256 wv = avx2::load8_f32(w + (row + r) * in + k);
#pragma GCC unroll 2
      for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int t = 0; t < TOKENS; ++t) {
      float sum = avx2::hsum(acc[r][t]);
      for (int64_t kk = k; kk < in; ++kk)
        sum += x[(tok + t) * in + kk] * to_f32(w[(row + r) * in + kk]);
      y[(tok + t) * out + row + r] = sum;
    }
  }
}

template <typename W>
[[gnu::target("avx2,fma,f16c")]] void matmul_tile_avx2(const float* x, const W* w, float* y,
                                                       int64_t in, int64_t out, int64_t row_begin,
                                                       int64_t row_end, int64_t tok_begin,
                                                       int64_t tok_end) {
  int64_t t = tok_begin;
  for (; t + 2 <= tok_end; t += 2) {
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) matmul_micro_avx2<4, 2>(x, w, y, in, out, r, t);
    for (; r < row_end; ++r) matmul_micro_avx2<1, 2>(x, w, y, in, out, r, t);
  }
  for (; t < tok_end; ++t) {
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) matmul_micro_avx2<4, 1>(x, w, y, in, out, r, t);
    for (; r < row_end; ++r) matmul_micro_avx2<1, 1>(x, w, y, in, out, r, t);
  }
}

// Transposes the 8×8 block v (v[i] = row i) in place: afterwards v[j] holds column j.
[[gnu::target("avx2,fma,f16c")]] inline void transpose8x8(__m256 v[8]) {
  __m256 pairs[8], quads[8];
  for (int i = 0; i < 8; i += 2) {
    pairs[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);      // a0 b0 a1 b1 | a4 b4 a5 b5
    pairs[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);  // a2 b2 a3 b3 | a6 b6 a7 b7
  }
  for (int i = 0; i < 8; i += 4) {
    quads[i] = _mm256_shuffle_ps(pairs[i], pairs[i + 2], 0x44);      // a0 b0 c0 d0 | a4 ..
    quads[i + 1] = _mm256_shuffle_ps(pairs[i], pairs[i + 2], 0xEE);  // a1 b1 c1 d1 | a5 ..
    quads[i + 2] = _mm256_shuffle_ps(pairs[i + 1], pairs[i + 3], 0x44);
    quads[i + 3] = _mm256_shuffle_ps(pairs[i + 1], pairs[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    v[j] = _mm256_permute2f128_ps(quads[j], quads[j + 4], 0x20);
    v[j + 4] = _mm256_permute2f128_ps(quads[j], quads[j + 4], 0x31);
  }
}

// Widens W[row .. row + 16, k0 .. k0 + k_len) into panel[k][16] (fp32, input-major: one 64-byte
// line per input). Rows at or past row_end are zeros.
template <typename W>
[[gnu::target("avx2,fma,f16c")]] void pack_panel_avx2(const W* w, int64_t in, int64_t row,
                                                      int64_t row_end, int64_t k0, int64_t k_len,
                                                      float* panel) {
  int64_t k = 0;
  for (; k + 8 <= k_len; k += 8)
    for (int half = 0; half < 2; ++half) {
      __m256 v[8];
      for (int i = 0; i < 8; ++i) {
        const int64_t r = row + half * 8 + i;
        v[i] = r < row_end ? avx2::load8_f32(w + r * in + k0 + k) : _mm256_setzero_ps();
      }
      transpose8x8(v);
      for (int j = 0; j < 8; ++j) _mm256_store_ps(panel + (k + j) * PANEL_ROWS + half * 8, v[j]);
    }
  for (; k < k_len; ++k)
    for (int64_t i = 0; i < PANEL_ROWS; ++i)
      panel[k * PANEL_ROWS + i] = row + i < row_end ? to_f32(w[(row + i) * in + k0 + k]) : 0.0f;
}

// TOKENS tokens × 16 weight rows over inputs [k0, k0 + k_len): an outer product per input (2 panel
// loads, TOKENS broadcasts, 2·TOKENS FMAs). The sums are stored into (first block) or added to
// y[tok + t, row .. row + 16); only `valid` rows are written at the bottom edge of W.
template <int TOKENS>
[[gnu::target("avx2,fma,f16c")]] inline void matmul_panel_micro_avx2(
    const float* x, const float* panel, float* y, int64_t in, int64_t out, int64_t k0,
    int64_t k_len, int64_t row, int64_t valid, int64_t tok, bool first_block) {
  __m256 acc[TOKENS][2];
  const float* xt[TOKENS];
#pragma GCC unroll 6
  for (int t = 0; t < TOKENS; ++t) {
    acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    xt[t] = x + (tok + t) * in + k0;
  }
  for (int64_t k = 0; k < k_len; ++k) {
    const __m256 w0 = _mm256_load_ps(panel + k * PANEL_ROWS);
    const __m256 w1 = _mm256_load_ps(panel + k * PANEL_ROWS + 8);
#pragma GCC unroll 6
    for (int t = 0; t < TOKENS; ++t) {
      const __m256 xb = _mm256_broadcast_ss(xt[t] + k);
      acc[t][0] = _mm256_fmadd_ps(w0, xb, acc[t][0]);
      acc[t][1] = _mm256_fmadd_ps(w1, xb, acc[t][1]);
    }
  }
#pragma GCC unroll 6
  for (int t = 0; t < TOKENS; ++t) {
    float* yt = y + (tok + t) * out + row;
    if (valid == PANEL_ROWS) {
      if (!first_block) {
        acc[t][0] = _mm256_add_ps(acc[t][0], _mm256_loadu_ps(yt));
        acc[t][1] = _mm256_add_ps(acc[t][1], _mm256_loadu_ps(yt + 8));
      }
      _mm256_storeu_ps(yt, acc[t][0]);
      _mm256_storeu_ps(yt + 8, acc[t][1]);
    } else {
      alignas(32) float sums[PANEL_ROWS];
      _mm256_store_ps(sums, acc[t][0]);
      _mm256_store_ps(sums + 8, acc[t][1]);
      for (int64_t r = 0; r < valid; ++r) yt[r] = first_block ? sums[r] : yt[r] + sums[r];
    }
  }
}

// The last 1-5 tokens of a task (`rest` of them), through the micro-kernel of that width.
template <int TOKENS = 5>
[[gnu::target("avx2,fma,f16c")]] inline void matmul_panel_rest_avx2(
    int64_t rest, const float* x, const float* panel, float* y, int64_t in, int64_t out, int64_t k0,
    int64_t k_len, int64_t row, int64_t valid, int64_t tok, bool first_block) {
  if (rest == TOKENS)
    return matmul_panel_micro_avx2<TOKENS>(x, panel, y, in, out, k0, k_len, row, valid, tok,
                                           first_block);
  if constexpr (TOKENS > 1)
    matmul_panel_rest_avx2<TOKENS - 1>(rest, x, panel, y, in, out, k0, k_len, row, valid, tok,
                                       first_block);
}

// One prompt task: rows [row_begin, row_end) (at most one panel of 16) × tokens
// [tok_begin, tok_end). Per block of PANEL_K inputs the rows are widened once into the panel (on
// the stack: 64 KiB), and every token of the task runs over it, 6 at a time.
template <typename W>
[[gnu::target("avx2,fma,f16c")]] void matmul_tile_panel_avx2(const float* x, const W* w, float* y,
                                                             int64_t in, int64_t out,
                                                             int64_t row_begin, int64_t row_end,
                                                             int64_t tok_begin, int64_t tok_end) {
  alignas(64) float panel[PANEL_ROWS * PANEL_K];
  const int64_t valid = row_end - row_begin;
  for (int64_t k0 = 0; k0 < in; k0 += PANEL_K) {
    const int64_t k_len = std::min(PANEL_K, in - k0);
    pack_panel_avx2(w, in, row_begin, row_end, k0, k_len, panel);
    const bool first = k0 == 0;
    int64_t t = tok_begin;
    for (; t + 6 <= tok_end; t += 6)
      matmul_panel_micro_avx2<6>(x, panel, y, in, out, k0, k_len, row_begin, valid, t, first);
    if (t < tok_end)
      matmul_panel_rest_avx2(tok_end - t, x, panel, y, in, out, k0, k_len, row_begin, valid, t,
                             first);
  }
}
#endif

template <typename W>
void matmul_typed(const float* x, const W* w, float* y, int64_t n, int64_t in, int64_t out,
                  ThreadPool& pool) {
  if (n == 0) return;
  if (in == 0) return std::fill(y, y + n * out, 0.0f);
  const int64_t row_tiles = (out + ROW_TILE - 1) / ROW_TILE;
  // Token tiles: at most TOKEN_TILE tokens each, but enough tiles for ~4 tasks per thread while a
  // tile keeps MIN_TOKENS_PER_TASK; then equal tiles, each a multiple of the panel kernel's 6.
  const int64_t tiles_for_threads = (4 * int64_t{pool.size()} + row_tiles - 1) / row_tiles;
  const int64_t wanted_tiles = std::max(
      ceil_div(n, TOKEN_TILE), std::min(tiles_for_threads, ceil_div(n, MIN_TOKENS_PER_TASK)));
  const int64_t token_tile = ceil_div(ceil_div(n, wanted_tiles), 6) * 6;
  const int64_t token_tiles = ceil_div(n, token_tile);
  const bool vector_path = cpu_has_avx2();
  pool.parallel_for(row_tiles * token_tiles, [&](int64_t task) {
    const int64_t row_begin = (task % row_tiles) * ROW_TILE;
    const int64_t tok_begin = (task / row_tiles) * token_tile;
    const int64_t row_end = std::min(out, row_begin + ROW_TILE);
    const int64_t tok_end = std::min(n, tok_begin + token_tile);
#if defined(__x86_64__)
    if (vector_path && n >= PANEL_MIN_TOKENS)
      return matmul_tile_panel_avx2(x, w, y, in, out, row_begin, row_end, tok_begin, tok_end);
    if (vector_path)
      return matmul_tile_avx2(x, w, y, in, out, row_begin, row_end, tok_begin, tok_end);
#endif
    (void)vector_path;
    matmul_tile_scalar(x, w, y, in, out, row_begin, row_end, tok_begin, tok_end);
  });
}

}  // namespace detail

// y[n, out] = x[n, in] · w[out, in]ᵀ. x and y fp32 contiguous; w contiguous bf16 / f16 / f32.
inline void matmul(const Tensor& x, const Tensor& w, const Tensor& y, ThreadPool& pool) {
  if (w.rank() != 2)
    fail("matmul: shapes x ", x.shape.str(), " · w ", w.shape.str(), "ᵀ -> y ", y.shape.str(),
         " do not match");
  check_matmul_operands("matmul", x, y, w.dim(1), w.dim(0));
  if (!w.is_contiguous()) fail("matmul: tensors must be contiguous");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  switch (w.dtype) {
    case DType::bf16:
      return detail::matmul_typed(x.as<float>(), w.as<bf16>(), y.as<float>(), n, in, out, pool);
    case DType::f16:
      return detail::matmul_typed(x.as<float>(), w.as<f16>(), y.as<float>(), n, in, out, pool);
    case DType::f32:
      return detail::matmul_typed(x.as<float>(), w.as<float>(), y.as<float>(), n, in, out, pool);
    default:
      fail("matmul: weight dtype ", dtype_name(w.dtype), " is not supported (BF16, F16, F32)");
  }
}

}  // namespace hllm::cpu
