// The AVX-512 (VNNI: vpdpbusd) W4A8 kernels of cpu/int4_q8_matmul.hpp: one token against the
// per-row layout, passes of several tokens against a transposed tile, and passes of 16 tokens
// against a 16-row block.
//
// AVX-512 passes of 2 or more tokens first transpose a tile's 4 rows into (chunk, row) lanes:
// lane 4c + r holds row r's codes of chunk c, 4 at a time, and each token's activations of chunk
// c are spread over those 4 lanes by an in-lane dword shuffle. The whole tile then sums into one
// int32 vector per token (lane 4c + r = row r · chunk c) and takes one convert and one FMA with
// s_r·d_c (lane_scales has d_c at lanes 4c..4c+3 in both layouts), where the per-row layout
// needs one of each per row. On Zen 4, where the vector pipes (two 512-bit operations per cycle),
// not vpdpbusd, bound the batched kernel, this was 1.1-1.3x faster in cache at 4 to 64 tokens
// and 1.2-1.5x at 64 tokens from memory (one thread in cache, 2 in cpu_int4_bench, 2-core VM).
// A single token (the decode GEMV, streaming its weights) keeps the per-row layout: no shuffles.
//
// Passes of 16 tokens (a batched decode, prefill) take a task's 16 rows at once instead
// (int4_q8_block_avx512): the 4 tiles transposed so that each 32-bit lane is one row, every
// activation dword then broadcast to all lanes, one accumulator per token for all 16 rows.
#pragma once

#include <cstdint>
#include <cstring>

#include "hllm/cpu/int4_q8_kernels.hpp"
#include "hllm/cpu/q8_activations.hpp"
#include "hllm/layout/int4_tiles.hpp"

#if defined(__x86_64__)
#include <immintrin.h>

namespace hllm::cpu::detail {

// One token × one strip with 512-bit vectors and vpdpbusd, the per-row layout: one 64-byte load
// per tile row, no shuffles. A decode GEMV streams its weights, and this does less work per byte
// than transposing (cpu_int4_bench, 1 token: 1.0-1.15x the transposed kernel's GB/s, 2-core Zen 4).
template <bool STREAM>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void int4_q8_row_strip_avx512(
    const Q8Activations& a, const Int4View& w, float* y, int64_t strip, int64_t t) {
  __m512 acc[INT4_TILE_ROWS];
  __m128 zero_term[1] = {_mm_setzero_ps()};  // the 4 rows' zero-point terms, a row per lane
  for (auto& v : acc) v = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi8(0x0F);
  // The masked forms: GCC 12 warns (falsely) about the unmasked ones' undefined pass-through.
  constexpr __mmask16 ALL_LANES = 0xFFFF;
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile& tile = w.tile(strip, kt);
    if constexpr (STREAM) prefetch_tile_ahead(tile);
    float scale[4], nzs[4];
    int4_tile_params(tile, scale, nzs);
    add_zero_terms<1>(a, nzs, t, kt, zero_term);
    const int8_t* q = a.tile(t, kt);
    const __m512 lanes = _mm512_loadu_ps(a.lane_scales(t, kt));
#pragma GCC unroll 4
    for (int r = 0; r < INT4_TILE_ROWS; ++r) {
      const __m512i bytes = _mm512_loadu_si512(tile.q[r]);
      const __m512i lo = _mm512_and_si512(bytes, mask);                        // positions 0..63
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), mask);  // 64..127
      __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(q));
      dot = _mm512_dpbusd_epi32(dot, hi, _mm512_loadu_si512(q + 64));  // lanes 4c.. = chunk c
      acc[r] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(ALL_LANES, dot),
                               _mm512_mul_ps(_mm512_set1_ps(scale[r]), lanes), acc[r]);
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  alignas(16) float zero[INT4_TILE_ROWS];
  _mm_store_ps(zero, zero_term[0]);
  for (int r = 0; r < rows; ++r)
    y[t * w.out + strip * INT4_TILE_ROWS + r] = avx512::hsum(acc[r]) + zero[r];
}

// A tile's 4 rows transposed within each 128-bit lane (4×4 dwords: unpack 32, then 64): v[m] lane
// 4c + r = dword m of row r's chunk c, i.e. bytes 16c + 4m .. + 3 (low nibbles: inputs
// 32c + 4m + 0..3, high nibbles: 32c + 16 + 4m + 0..3).
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void transpose_rows_in_lanes(
    const int4_tile& tile, __m512i v[4]) {
  // The masked forms: GCC 12 warns (falsely) about the unmasked ones' undefined pass-through.
  constexpr __mmask16 ALL_DWORDS = 0xFFFF;
  constexpr __mmask8 ALL_QWORDS = 0xFF;
  const __m512i r0 = _mm512_loadu_si512(tile.q[0]), r1 = _mm512_loadu_si512(tile.q[1]);
  const __m512i r2 = _mm512_loadu_si512(tile.q[2]), r3 = _mm512_loadu_si512(tile.q[3]);
  const __m512i m01_r01 = _mm512_maskz_unpacklo_epi32(ALL_DWORDS, r0, r1),
                m23_r01 = _mm512_maskz_unpackhi_epi32(ALL_DWORDS, r0, r1);
  const __m512i m01_r23 = _mm512_maskz_unpacklo_epi32(ALL_DWORDS, r2, r3),
                m23_r23 = _mm512_maskz_unpackhi_epi32(ALL_DWORDS, r2, r3);
  v[0] = _mm512_maskz_unpacklo_epi64(ALL_QWORDS, m01_r01, m01_r23);
  v[1] = _mm512_maskz_unpackhi_epi64(ALL_QWORDS, m01_r01, m01_r23);
  v[2] = _mm512_maskz_unpacklo_epi64(ALL_QWORDS, m23_r01, m23_r23);
  v[3] = _mm512_maskz_unpackhi_epi64(ALL_QWORDS, m23_r01, m23_r23);
}

// AVX-512: the tile's 4 rows transposed into (chunk, row) lanes (see the header comment), split
// into low (lo[m]) and high (hi[m]) nibbles.
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void transpose_tile_codes(
    const int4_tile& tile, __m512i lo[4], __m512i hi[4]) {
  __m512i v[4];
  transpose_rows_in_lanes(tile, v);
  const __m512i mask = _mm512_set1_epi8(0x0F);
  for (int m = 0; m < 4; ++m) {
    lo[m] = _mm512_and_si512(v[m], mask);
    hi[m] = _mm512_and_si512(_mm512_srli_epi16(v[m], 4), mask);
  }
}

// Step m of transposed_tile_dot: the activations' dword m of each chunk (each 128-bit lane of
// q_lo, q_hi) spread over that chunk's 4 row lanes by vpshufd (the immediate m·0x55 repeats the
// 2-bit index m; it must be a constant, hence the template), against row dwords m (lo[m], hi[m]).
template <int M>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void transposed_dot_step(
    const __m512i lo[4], const __m512i hi[4], __m512i q_lo, __m512i q_hi, __m512i& dot_lo,
    __m512i& dot_hi) {
  constexpr __mmask16 ALL_DWORDS = 0xFFFF;  // the masked forms, as in transpose_rows_in_lanes
  constexpr auto SPREAD = static_cast<_MM_PERM_ENUM>(M * 0x55);
  dot_lo = _mm512_dpbusd_epi32(dot_lo, lo[M], _mm512_maskz_shuffle_epi32(ALL_DWORDS, q_lo, SPREAD));
  dot_hi = _mm512_dpbusd_epi32(dot_hi, hi[M], _mm512_maskz_shuffle_epi32(ALL_DWORDS, q_hi, SPREAD));
}

// One token's integer dot products with a transposed tile: lane 4c + r = Σ over chunk c of row r.
// The activations' dword (c, m) (positions 16c + 4m .., q8_position_input) meets row dwords m;
// two dependency chains of 4 vpdpbusd (low, high nibbles).
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m512i transposed_tile_dot(
    const __m512i lo[4], const __m512i hi[4], const int8_t* q) {
  const __m512i q_lo = _mm512_loadu_si512(q), q_hi = _mm512_loadu_si512(q + 64);
  __m512i dot_lo = _mm512_setzero_si512(), dot_hi = _mm512_setzero_si512();
  transposed_dot_step<0>(lo, hi, q_lo, q_hi, dot_lo, dot_hi);
  transposed_dot_step<1>(lo, hi, q_lo, q_hi, dot_lo, dot_hi);
  transposed_dot_step<2>(lo, hi, q_lo, q_hi, dot_lo, dot_hi);
  transposed_dot_step<3>(lo, hi, q_lo, q_hi, dot_lo, dot_hi);
  return _mm512_add_epi32(dot_lo, dot_hi);
}

// TOKENS tokens × one strip with 512-bit vectors and vpdpbusd. Per token and tile: 8 vpdpbusd into
// one accumulator of (chunk, row) lanes, then one convert and one FMA with s_r·d_c per lane — a
// quarter of the fp work of one accumulator per row (whose 4 lanes per chunk would each need it).
template <int TOKENS, bool STREAM>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void int4_q8_strip_avx512(
    const Q8Activations& a, const Int4View& w, float* y, int64_t strip, int64_t t) {
  __m512 acc[TOKENS];        // lane 4c + r: row r's sum over chunk c of every tile so far
  __m128 zero_term[TOKENS];  // the 4 rows' zero-point terms of token j, a row per lane
  for (auto& v : acc) v = _mm512_setzero_ps();
  for (auto& v : zero_term) v = _mm_setzero_ps();
  // The masked forms: GCC 12 warns (falsely) about the unmasked ones' undefined pass-through.
  constexpr __mmask16 ALL_LANES = 0xFFFF;
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile& tile = w.tile(strip, kt);
    if constexpr (STREAM) prefetch_tile_ahead(tile);
    alignas(16) float scale[4], nzs[4];
    int4_tile_params(tile, scale, nzs);
    add_zero_terms<TOKENS>(a, nzs, t, kt, zero_term);
    const __m512 row_scales =
        _mm512_maskz_broadcast_f32x4(ALL_LANES, _mm_load_ps(scale));  // lane 4c + r: s_r
    __m512i lo[4], hi[4];
    transpose_tile_codes(tile, lo, hi);
    for (int j = 0; j < TOKENS; ++j) {
      const __m512i dot = transposed_tile_dot(lo, hi, a.tile(t + j, kt));
      acc[j] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(ALL_LANES, dot),
                               _mm512_mul_ps(row_scales, _mm512_loadu_ps(a.lane_scales(t + j, kt))),
                               acc[j]);
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int j = 0; j < TOKENS; ++j) {
    alignas(64) float lanes[16];  // through memory, as avx512::hsum
    _mm512_store_ps(lanes, acc[j]);
    __m128 sum = zero_term[j];
    for (int c = 0; c < Q8Activations::CHUNKS; ++c)
      sum = _mm_add_ps(sum, _mm_load_ps(lanes + 4 * c));
    alignas(16) float row_sums[INT4_TILE_ROWS];
    _mm_store_ps(row_sums, sum);
    for (int r = 0; r < rows; ++r) y[(t + j) * w.out + strip * INT4_TILE_ROWS + r] = row_sums[r];
  }
}

// 16 rows × 128 inputs (tile kt of strips strip .. strip + 3) transposed to dword columns:
// cols[4c + m] lane 4g + r = dword m of chunk c of row r of strip g's tile (bytes 16c + 4m .. + 3:
// the codes of inputs 32c + 4m + 0..3 in the low nibbles, 32c + 16 + 4m + 0..3 in the high ones).
// Per tile the 4×4 dword transpose within 128-bit lanes (transpose_rows_in_lanes), then per m a
// 4×4 transpose of 128-bit lanes across the 4 tiles (shuffle_i32x4: lanes 0,1 / 2,3 of two
// vectors, then lanes 0,2 / 1,3 of those).
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void transpose_block_codes(
    const int4_tile* const tiles[4], __m512i cols[16]) {
  constexpr __mmask16 ALL_DWORDS = 0xFFFF;  // the masked forms, as in transpose_rows_in_lanes
  __m512i v[4][4];  // v[g][m] 128-bit lane c = rows 0..3 of tile g, dword m of chunk c
  for (int g = 0; g < 4; ++g) transpose_rows_in_lanes(*tiles[g], v[g]);
  for (int m = 0; m < 4; ++m) {
    const __m512i g01_c01 = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, v[0][m], v[1][m], 0x44);
    const __m512i g01_c23 = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, v[0][m], v[1][m], 0xEE);
    const __m512i g23_c01 = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, v[2][m], v[3][m], 0x44);
    const __m512i g23_c23 = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, v[2][m], v[3][m], 0xEE);
    cols[0 + m] = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, g01_c01, g23_c01, 0x88);
    cols[4 + m] = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, g01_c01, g23_c01, 0xDD);
    cols[8 + m] = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, g01_c23, g23_c23, 0x88);
    cols[12 + m] = _mm512_maskz_shuffle_i32x4(ALL_DWORDS, g01_c23, g23_c23, 0xDD);
  }
}

// Q8_BLOCK_TOKENS tokens × 16 rows (4 strips from `strip`) with 512-bit vectors: a lane per row,
// so each activation dword is broadcast to all lanes (no shuffles) and one fp32 accumulator per
// token holds all 16 rows. Per token and chunk: 8 vpdpbusd, one convert, one multiply and one FMA
// (s_r·d_c), where the transposed kernel adds a shuffle per vpdpbusd; the transpose costs 64
// shuffles per 16 rows and tile, shared by the pass's tokens.
// (The accumulators stay in memory, GCC's choice: unrolled into registers, 0.7-0.9x as fast.)
template <bool STREAM>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void int4_q8_block_avx512(
    const Q8Activations& a, const Int4View& w, float* y, int64_t strip, int64_t t) {
  __m512 acc[Q8_BLOCK_TOKENS];  // lane 4g + r: row r of strip strip + g
  for (auto& v : acc) v = _mm512_setzero_ps();
  const __m512i mask = _mm512_set1_epi8(0x0F);
  constexpr __mmask16 ALL_LANES = 0xFFFF;  // the masked forms, as in transpose_rows_in_lanes
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile* tiles[4];
    alignas(64) float scale[16], nzs[16];
    for (int g = 0; g < 4; ++g) {
      tiles[g] = &w.tile(strip + g, kt);
      if constexpr (STREAM) prefetch_tile_ahead(*tiles[g]);
      int4_tile_params(*tiles[g], scale + 4 * g, nzs + 4 * g);
    }
    const __m512 row_scale = _mm512_load_ps(scale), row_nzs = _mm512_load_ps(nzs);
    __m512i cols[16];
    transpose_block_codes(tiles, cols);
    for (int c = 0; c < Q8Activations::CHUNKS; ++c) {
      __m512i lo[4], hi[4];
      for (int m = 0; m < 4; ++m) {
        lo[m] = _mm512_and_si512(cols[4 * c + m], mask);
        hi[m] = _mm512_and_si512(_mm512_srli_epi16(cols[4 * c + m], 4), mask);
      }
      for (int j = 0; j < Q8_BLOCK_TOKENS; ++j) {
        const int8_t* q = a.tile(t + j, kt) + 16 * c;  // chunk c: positions 16c .., 64 + 16c ..
        __m512i dot = _mm512_setzero_si512();
        for (int m = 0; m < 4; ++m) {
          int32_t low, high;
          std::memcpy(&low, q + 4 * m, 4);
          std::memcpy(&high, q + 64 + 4 * m, 4);
          dot = _mm512_dpbusd_epi32(dot, lo[m], _mm512_set1_epi32(low));
          dot = _mm512_dpbusd_epi32(dot, hi[m], _mm512_set1_epi32(high));
        }
        acc[j] = _mm512_fmadd_ps(
            _mm512_maskz_cvtepi32_ps(ALL_LANES, dot),
            _mm512_mul_ps(row_scale, _mm512_set1_ps(a.chunk_scale(t + j, kt, c))), acc[j]);
      }
    }
    for (int j = 0; j < Q8_BLOCK_TOKENS; ++j)
      acc[j] = _mm512_fmadd_ps(row_nzs, _mm512_set1_ps(a.scaled_sum[a.at(t + j, kt)]), acc[j]);
  }
  const int64_t rows = std::min<int64_t>(16, w.out - strip * INT4_TILE_ROWS);
  const auto row_mask = static_cast<__mmask16>((1u << rows) - 1);
  for (int j = 0; j < Q8_BLOCK_TOKENS; ++j)
    _mm512_mask_storeu_ps(y + (t + j) * w.out + strip * INT4_TILE_ROWS, row_mask, acc[j]);
}

}  // namespace hllm::cpu::detail
#endif
