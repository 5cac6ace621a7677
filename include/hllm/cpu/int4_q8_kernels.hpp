// The W4A8 kernels of one row strip (4 rows of INT4 tiles, layout/int4_tiles.hpp) against int8
// activations (cpu/q8_activations.hpp, whose header gives the numerics and the activation order):
// the tuning constants, the portable kernel and the AVX2 one (vpmaddubsw + vpmaddwd). The AVX-512
// kernels are cpu/int4_q8_kernels_avx512.hpp; cpu/int4_q8_matmul.hpp splits the work.
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/q8_activations.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cpu::detail {

inline constexpr int64_t Q8_STRIPS_PER_TASK = 4;  // 16 output rows per task
inline constexpr int64_t Q8_TOKEN_TILE = 32;      // tokens per task
// Tokens per load of a tile's codes; AVX-512 transposes a tile once per pass. The portable path
// runs the AVX2 passes one token at a time.
inline constexpr int Q8_AVX512_TOKENS_PER_PASS = 4;
inline constexpr int Q8_AVX2_TOKENS_PER_PASS = 2;
// AVX-512 passes of this many tokens run a task's 16 rows at once (int4_q8_block_avx512): at 16
// tokens 1.0-1.2x the transposed kernel's speed, at 86-98% of the machine's vpdpbusd peak; at 8
// and 4 tokens 0.8x and 0.5x (cpu_int4_bench, 1B shapes, 2-core Zen 4 VM).
inline constexpr int Q8_BLOCK_TOKENS = 16;
static_assert(Q8_STRIPS_PER_TASK * INT4_TILE_ROWS == 16, "a task's strips are one 16-row block");

// A decode GEMV reads each tile once: its tiles are then prefetched this far ahead (a strip's
// tiles, then the next strip's, lie back to back). The hardware prefetcher alone left it at ~73% of
// the machine's read bandwidth, 2 KiB ahead reached 83-90% (AVX2, 2-core Zen 3 VM, cpu_int4_bench;
// 1 and 4 KiB did no better). With more tokens only a task's first pass over a strip prefetches;
// the later passes read it from cache (4 tokens: ~1.25x faster than no prefetch at all, 2-core
// Zen 4 VM).
inline constexpr int64_t Q8_PREFETCH_BYTES = 2048;

// Prefetch the (up to) 5 cache lines of the tile Q8_PREFETCH_BYTES past `tile` (272 bytes).
inline void prefetch_tile_ahead(const int4_tile& tile) {
#if defined(__x86_64__)
  const char* ahead = reinterpret_cast<const char*>(&tile) + Q8_PREFETCH_BYTES;
  for (int line = 0; line < 5; ++line) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
#else
  (void)tile;
#endif
}

// Portable path, the same arithmetic: per chunk an exact integer dot scaled by s·d_c, then the
// zero-point term −s·z·(Σ d_c·Σa) per tile.
inline void int4_q8_strip_scalar(const Q8Activations& a, const Int4View& w, float* y, int64_t strip,
                                 int64_t t) {
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
      const int4_tile& tile = w.tile(strip, kt);
      const int8_t* q = a.tile(t, kt);
      int32_t dots[Q8Activations::CHUNKS] = {};
      for (int p = 0; p < INT4_TILE_K; ++p) {
        const int k = q8_position_input(p);
        dots[k / INT4_CHUNK_K] += static_cast<int32_t>(int4_code(tile, r, k)) * q[p];
      }
      const float s = f16_to_f32(tile.scale[r]), z = f16_to_f32(tile.zero[r]);
      for (int c = 0; c < Q8Activations::CHUNKS; ++c)
        sum += s * a.chunk_scale(t, kt, c) * static_cast<float>(dots[c]);
      sum -= s * z * a.scaled_sum[a.at(t, kt)];
    }
    y[t * w.out + strip * INT4_TILE_ROWS + r] = sum;
  }
}

#if defined(__x86_64__)
// The zero-point terms of one tile for tokens [t, t + TOKENS): zero_term[j] (a row per lane) +=
// −s·z (nzs, per row) · Σ_c d_c·Σa (per token) — one 4-lane FMA per token for the 4 rows.
template <int TOKENS>
[[gnu::target("avx2,fma")]] inline void add_zero_terms(const Q8Activations& a, const float nzs[4],
                                                       int64_t t, int64_t kt,
                                                       __m128 (&zero_term)[TOKENS]) {
  const __m128 row_nzs = _mm_loadu_ps(nzs);
  for (int j = 0; j < TOKENS; ++j)
    zero_term[j] = _mm_fmadd_ps(row_nzs, _mm_set1_ps(a.scaled_sum[a.at(t + j, kt)]), zero_term[j]);
}

// TOKENS tokens [t, t + TOKENS) × one strip (4 rows): AVX2, vpmaddubsw + vpmaddwd.
// Each vpmaddubsw lane sums two code·activation products (|.| <= 2·15·127 = 3810); two of them are
// added in int16 (<= 7620) before vpmaddwd widens to int32: exact.
template <int TOKENS, bool STREAM>
[[gnu::target("avx2,fma,f16c")]] inline void int4_q8_strip_avx2(const Q8Activations& a,
                                                                const Int4View& w, float* y,
                                                                int64_t strip, int64_t t) {
  __m256 acc[INT4_TILE_ROWS][TOKENS];
  __m128 zero_term[TOKENS];  // the 4 rows' zero-point terms of token j, a row per lane
  for (auto& row : acc)
    for (auto& v : row) v = _mm256_setzero_ps();
  for (auto& v : zero_term) v = _mm_setzero_ps();
  const __m256i mask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile& tile = w.tile(strip, kt);
    if constexpr (STREAM) prefetch_tile_ahead(tile);
    float scale[4], nzs[4];
    int4_tile_params(tile, scale, nzs);
    add_zero_terms<TOKENS>(a, nzs, t, kt, zero_term);
#pragma GCC unroll 4
    for (int r = 0; r < INT4_TILE_ROWS; ++r) {
      const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile.q[r]));
      const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile.q[r] + 32));
      const __m256i lo0 = _mm256_and_si256(b0, mask);  // positions 0..31 (chunks 0, 1)
      const __m256i lo1 = _mm256_and_si256(b1, mask);  // 32..63 (chunks 2, 3)
      const __m256i hi0 = _mm256_and_si256(_mm256_srli_epi16(b0, 4), mask);  // 64..95 (0, 1)
      const __m256i hi1 = _mm256_and_si256(_mm256_srli_epi16(b1, 4), mask);  // 96..127 (2, 3)
      const __m256 row_scale = _mm256_set1_ps(scale[r]);
      for (int j = 0; j < TOKENS; ++j) {
        const auto* q = reinterpret_cast<const __m256i*>(a.tile(t + j, kt));
        const float* lanes = a.lane_scales(t + j, kt);
        const __m256i chunks01 = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(lo0, _mm256_loadu_si256(q)),
                             _mm256_maddubs_epi16(hi0, _mm256_loadu_si256(q + 2))),
            ones);
        const __m256i chunks23 = _mm256_madd_epi16(
            _mm256_add_epi16(_mm256_maddubs_epi16(lo1, _mm256_loadu_si256(q + 1)),
                             _mm256_maddubs_epi16(hi1, _mm256_loadu_si256(q + 3))),
            ones);
        acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunks01),
                                    _mm256_mul_ps(row_scale, _mm256_loadu_ps(lanes)), acc[r][j]);
        acc[r][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunks23),
                            _mm256_mul_ps(row_scale, _mm256_loadu_ps(lanes + 8)), acc[r][j]);
      }
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int j = 0; j < TOKENS; ++j) {
    alignas(16) float zero[INT4_TILE_ROWS];
    _mm_store_ps(zero, zero_term[j]);
    for (int r = 0; r < rows; ++r)
      y[(t + j) * w.out + strip * INT4_TILE_ROWS + r] = avx2::hsum(acc[r][j]) + zero[r];
  }
}
#endif

}  // namespace hllm::cpu::detail
