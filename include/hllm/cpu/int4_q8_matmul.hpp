// CPU matmul against an INT4 weight (layout/int4_tiles.hpp) with int8 activations, W4A8: the
// activations of every 32-input chunk are rounded to int8 with one fp32 scale (llama.cpp's q8_0
// numerics for its activations), and each chunk's dot product with a tile row is an integer one:
//
//   y = Σ_tiles s·(Σ_k q_k·x_k − z·Σ_k x_k)      (int4_dequant summed over a tile, s and z per row)
//     ≈ Σ_tiles s·(Σ_chunks d_c·Σ_{k∈c} q_k·a_k) − s·z·(Σ_chunks d_c·Σ_{k∈c} a_k)
//                                                  x_k ≈ d_c·a_k, a_k ∈ [−127, 127]
//
// Σ q·a is exact in int32 (codes 0..15 are unsigned bytes, a signed bytes: vpdpbusd on AVX-512
// VNNI, vpmaddubsw + vpmaddwd on AVX2); the zero-point sum Σ d_c·Σa is computed once per tile and
// token. The error against the fp32 path (cpu/int4_matmul.hpp) is at most Σ_k |w_k|·d_c/2
// (|x_k − d_c·a_k| <= d_c/2). Scales per 32 inputs keep an outlier activation from coarsening more
// than its own chunk.
//
// Quantized activation order. A tile row's 64 code bytes hold input k of chunk c = k/32 at byte
// 16c + k%16, low nibble for k%32 < 16, high nibble otherwise. One 64-byte load split into low and
// high nibbles therefore gives inputs {0..15, 32..47, 64..79, 96..111} and then
// {16..31, 48..63, 80..95, 112..127}; the int8 activations are stored in exactly that order
// (q8_position_input), so the per-row kernels multiply nibbles by activations with no shuffles.
// An int32 lane of vpdpbusd (or vpmaddubsw + vpmaddwd) sums 4 neighbouring positions, all of one
// chunk: lanes 4c..4c+3 of the 16 belong to chunk c, so one vector of per-lane scales
// (lane_scales: d_c repeated 4 times) scales a whole tile row at once. AVX2's 32-byte halves of the
// row: low nibbles of bytes 0..31 and high nibbles of bytes 0..31 are chunks 0 and 1 (lanes 0..7
// of lane_scales), bytes 32..63 chunks 2 and 3 (lanes 8..15).
//
// Work split as in the fp32 path: tasks of row strips × token tiles. A strip's tiles stay in L1/L2
// while the task runs its tokens, several tokens per load of the codes (Q8_AVX2_TOKENS_PER_PASS,
// Q8_AVX512_TOKENS_PER_PASS).
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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cpu {

// The input (0..127) of a tile whose int8 activation sits at position p (see the header comment).
constexpr int q8_position_input(int p) {
  const int high_nibble = p / 64, chunk = (p % 64) / 16;
  return chunk * INT4_CHUNK_K + high_nibble * 16 + p % 16;
}

// Activations [n, packed_in] rounded to int8 per 32-input chunk, in q8_position_input order.
struct Q8Activations {
  static constexpr int CHUNKS = INT4_TILE_K / INT4_CHUNK_K;  // 4 per tile
  int64_t n = 0, k_tiles = 0;
  std::vector<int8_t> q;          // [n][k_tiles][128]
  std::vector<float> lane_scale;  // [n][k_tiles][16]: d_c at lanes 4c..4c+3; x ≈ d_c · a
  std::vector<float> scaled_sum;  // [n][k_tiles]: Σ_c d_c · Σ a over chunk c (zero-point term)

  int64_t at(int64_t t, int64_t kt) const { return t * k_tiles + kt; }
  const int8_t* tile(int64_t t, int64_t kt) const { return q.data() + at(t, kt) * INT4_TILE_K; }
  const float* lane_scales(int64_t t, int64_t kt) const {
    return lane_scale.data() + at(t, kt) * 16;
  }
  float chunk_scale(int64_t t, int64_t kt, int c) const { return lane_scales(t, kt)[4 * c]; }
};

namespace detail {

// Σ_c d_c · Σa, multiply then add in chunk order. Out of line and without a target attribute: a
// caller compiled for FMA would otherwise fuse them, and every ISA must give the same bits.
[[gnu::noinline]] inline float chunk_scaled_sum(const float* lanes, const int32_t* sums) {
  float sum = 0.0f;
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) sum += lanes[4 * c] * static_cast<float>(sums[c]);
  return sum;
}

// One tile of one token: x (128 packed inputs) -> q (int8 in q8_position_input order), the lane
// scales and Σ_c d_c·Σa. d = max|x| / 127 per 32-input chunk, a = round-to-nearest-even(x / d).
inline void quantize_q8_tile_scalar(const float* x, int8_t* q, float* lanes, float& scaled_sum) {
  float inverse[Q8Activations::CHUNKS];
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) {
    float amax = 0.0f;
    for (int k = 0; k < INT4_CHUNK_K; ++k) amax = std::max(amax, std::fabs(x[c * 32 + k]));
    inverse[c] = amax > 0.0f ? 127.0f / amax : 0.0f;
    std::fill(lanes + 4 * c, lanes + 4 * c + 4, amax / 127.0f);
  }
  int32_t sums[Q8Activations::CHUNKS] = {};
  for (int p = 0; p < INT4_TILE_K; ++p) {
    const int k = q8_position_input(p), c = k / INT4_CHUNK_K;
    const auto a = static_cast<int32_t>(std::nearbyint(x[k] * inverse[c]));
    q[p] = static_cast<int8_t>(std::clamp(a, -127, 127));
    sums[c] += q[p];
  }
  scaled_sum = chunk_scaled_sum(lanes, sums);
}

#if defined(__x86_64__)
// The same, bit for bit (avx2::round16_to_int8), 16 inputs at a time. Input half h of chunk c
// (16 inputs 32c + 16h ..) lands at positions 64h + 16c .. + 15.
[[gnu::target("avx2,fma,f16c")]] inline void quantize_q8_tile_avx2(const float* x, int8_t* q,
                                                                   float* lanes,
                                                                   float& scaled_sum) {
  int32_t sums[Q8Activations::CHUNKS];
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) {
    const float* xc = x + c * INT4_CHUNK_K;
    const float amax = avx2::abs_max(xc, INT4_CHUNK_K);
    const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    _mm_storeu_ps(lanes + 4 * c, _mm_set1_ps(amax / 127.0f));
    sums[c] = 0;
    for (int h = 0; h < 2; ++h) {
      int32_t sum = 0;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 64 * h + 16 * c),
                       avx2::round16_to_int8(xc + 16 * h, inverse, sum));
      sums[c] += sum;
    }
  }
  scaled_sum = chunk_scaled_sum(lanes, sums);
}
#endif

}  // namespace detail

// Round x [n, packed] (packed = 128 · k_tiles, already in the weight's packed input order) per
// 32-input chunk (detail::quantize_q8_tile_scalar); every ISA gives the same bits.
inline void quantize_q8_activations(const float* x, int64_t n, int64_t k_tiles, Q8Activations& out,
                                    ThreadPool& pool, CpuIsa isa = cpu_isa()) {
  out.n = n;
  out.k_tiles = k_tiles;
  out.q.resize(static_cast<size_t>(n * k_tiles * INT4_TILE_K));
  out.lane_scale.resize(static_cast<size_t>(n * k_tiles * 16));
  out.scaled_sum.resize(static_cast<size_t>(n * k_tiles));
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int64_t at = out.at(t, kt);
      const float* xt = x + at * INT4_TILE_K;
      int8_t* q = out.q.data() + at * INT4_TILE_K;
      float* lanes = out.lane_scale.data() + at * 16;
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        detail::quantize_q8_tile_avx2(xt, q, lanes, out.scaled_sum[at]);
        continue;
      }
#endif
      detail::quantize_q8_tile_scalar(xt, q, lanes, out.scaled_sum[at]);
    }
  });
}

namespace detail {

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
#endif

// Tokens [t, t + TOKENS) of one strip on the chosen instruction set; stream: the strip is read
// once (prefetch ahead).
template <int TOKENS>
inline void int4_q8_strip(CpuIsa isa, const Q8Activations& a, const Int4View& w, float* y,
                          int64_t strip, int64_t t, bool stream) {
#if defined(__x86_64__)
  if (isa == CpuIsa::avx512) {
    if constexpr (TOKENS == 1)
      return stream ? int4_q8_row_strip_avx512<true>(a, w, y, strip, t)
                    : int4_q8_row_strip_avx512<false>(a, w, y, strip, t);
    return stream ? int4_q8_strip_avx512<TOKENS, true>(a, w, y, strip, t)
                  : int4_q8_strip_avx512<TOKENS, false>(a, w, y, strip, t);
  }
  if (isa == CpuIsa::avx2)
    return stream ? int4_q8_strip_avx2<TOKENS, true>(a, w, y, strip, t)
                  : int4_q8_strip_avx2<TOKENS, false>(a, w, y, strip, t);
#else
  (void)stream;
#endif
  for (int j = 0; j < TOKENS; ++j) int4_q8_strip_scalar(a, w, y, strip, t + j);
}

// Tokens [begin, end) of one strip: passes of PASS tokens, then of 2 and 1. The first pass reads
// the strip from memory (prefetch ahead) unless `in_cache`, later ones from cache.
template <int PASS>
inline void int4_q8_strip_tokens(CpuIsa isa, const Q8Activations& a, const Int4View& w, float* y,
                                 int64_t strip, int64_t begin, int64_t end, bool in_cache = false) {
  int64_t t = begin;
  const auto stream = [&] { return t == begin && !in_cache; };
  for (; t + PASS <= end; t += PASS) int4_q8_strip<PASS>(isa, a, w, y, strip, t, stream());
  if constexpr (PASS > 2)
    if (t + 2 <= end) {
      int4_q8_strip<2>(isa, a, w, y, strip, t, stream());
      t += 2;
    }
  for (; t < end; ++t) int4_q8_strip<1>(isa, a, w, y, strip, t, stream());
}

#if defined(__x86_64__)
// Tokens [begin, end) of the 16 rows of strips strip .. strip + 3 (AVX-512): passes of
// Q8_BLOCK_TOKENS in int4_q8_block_avx512, the rest strip by strip. The first pass reads the
// strips from memory (prefetch ahead), later ones from cache.
inline void int4_q8_block_tokens(const Q8Activations& a, const Int4View& w, float* y, int64_t strip,
                                 int64_t begin, int64_t end) {
  int64_t t = begin;
  for (; t + Q8_BLOCK_TOKENS <= end; t += Q8_BLOCK_TOKENS)
    t == begin ? int4_q8_block_avx512<true>(a, w, y, strip, t)
               : int4_q8_block_avx512<false>(a, w, y, strip, t);
  for (int64_t s = strip; s < strip + Q8_STRIPS_PER_TASK; ++s)
    int4_q8_strip_tokens<Q8_AVX512_TOKENS_PER_PASS>(CpuIsa::avx512, a, w, y, s, t, end, t > begin);
}
#endif

}  // namespace detail

// The most weights one matmul_int4_q8_group takes.
inline constexpr size_t INT4_Q8_GROUP_MAX = 8;

// Whether INT4 weights can share one rounding of their input (matmul_int4_q8_group): the same
// input width and the same packed input order.
inline bool int4_q8_share_input(std::span<const Int4View* const> weights) {
  for (const Int4View* w : weights)
    if (w->in != weights[0]->in || w->k_tiles != weights[0]->k_tiles ||
        w->input_index != weights[0]->input_index)
      return false;
  return true;
}

// y_i[n, out_i] = x[n, in] · W_iᵀ for weights that read the same input (a layer's q/k/v or
// gate/up) with int8 activations (see the header comment): the activations are rounded once and
// one parallel loop runs the row strips of every weight, so a decode step pays one wake-up of the
// pool where it would pay one per weight, and the small ones (k, v) share the threads with the
// large. Each y_i gets the bits matmul_int4_q8 gives it. `scratch` holds the packed fp32
// activations and `q8` the int8 ones between calls (grown on demand). `isa` picks the kernel; at
// most cpu_isa_supported().
inline void matmul_int4_q8_group(const Tensor& x, std::span<const Int4View* const> weights,
                                 std::span<const Tensor> ys, ThreadPool& pool,
                                 std::vector<float>& scratch, Q8Activations& q8,
                                 CpuIsa isa = cpu_isa()) {
  if (weights.empty() || weights.size() != ys.size() || weights.size() > INT4_Q8_GROUP_MAX)
    fail("matmul_int4_q8: ", weights.size(), " weights for ", ys.size(), " outputs (1 to ",
         INT4_Q8_GROUP_MAX, ")");
  for (size_t i = 0; i < weights.size(); ++i) {
    check_matmul_operands("matmul_int4_q8", x, ys[i], weights[i]->in, weights[i]->out);
    if (weights[i]->device != Device::cpu || weights[i]->tiles == nullptr)
      fail("matmul_int4_q8: the weight is not in host memory");
  }
  if (!int4_q8_share_input(weights))
    fail("matmul_int4_q8: weights of different input widths or input orders share an input");
  if (isa > cpu_isa_supported())
    fail("matmul_int4_q8: ", isa_name(isa), " is not supported by this CPU");
  const int64_t n = x.dim(0);
  quantize_q8_activations(int4_packed_activations(x, *weights[0], scratch, pool), n,
                          weights[0]->k_tiles, q8, pool, isa);
  // Tasks: (token tile, strip task), strip tasks numbered through the weights in turn.
  int64_t first_task[INT4_Q8_GROUP_MAX + 1] = {0};
  for (size_t i = 0; i < weights.size(); ++i)
    first_task[i + 1] = first_task[i] + (weights[i]->strips() + detail::Q8_STRIPS_PER_TASK - 1) /
                                            detail::Q8_STRIPS_PER_TASK;
  const int64_t strip_tasks = first_task[weights.size()];
  const int64_t token_tiles = (n + detail::Q8_TOKEN_TILE - 1) / detail::Q8_TOKEN_TILE;
  pool.parallel_for(strip_tasks * token_tiles, [&](int64_t task) {
    const int64_t strip_task = task % strip_tasks;
    size_t i = 0;
    while (strip_task >= first_task[i + 1]) ++i;
    const Int4View& w = *weights[i];
    float* out = ys[i].as<float>();
    const int64_t strip_begin = (strip_task - first_task[i]) * detail::Q8_STRIPS_PER_TASK;
    const int64_t strip_end = std::min(w.strips(), strip_begin + detail::Q8_STRIPS_PER_TASK);
    const int64_t tok_begin = (task / strip_tasks) * detail::Q8_TOKEN_TILE;
    const int64_t tok_end = std::min(n, tok_begin + detail::Q8_TOKEN_TILE);
#if defined(__x86_64__)
    if (isa == CpuIsa::avx512 && strip_end - strip_begin == detail::Q8_STRIPS_PER_TASK &&
        tok_end - tok_begin >= detail::Q8_BLOCK_TOKENS)
      return detail::int4_q8_block_tokens(q8, w, out, strip_begin, tok_begin, tok_end);
#endif
    for (int64_t s = strip_begin; s < strip_end; ++s) {
      if (isa == CpuIsa::avx512)
        detail::int4_q8_strip_tokens<detail::Q8_AVX512_TOKENS_PER_PASS>(isa, q8, w, out, s,
                                                                        tok_begin, tok_end);
      else
        detail::int4_q8_strip_tokens<detail::Q8_AVX2_TOKENS_PER_PASS>(isa, q8, w, out, s, tok_begin,
                                                                      tok_end);
    }
  });
}

// y[n, out] = x[n, in] · Wᵀ with int8 activations (see the header comment and
// matmul_int4_q8_group).
inline void matmul_int4_q8(const Tensor& x, const Int4View& w, const Tensor& y, ThreadPool& pool,
                           std::vector<float>& scratch, Q8Activations& q8, CpuIsa isa = cpu_isa()) {
  const Int4View* weights[] = {&w};
  matmul_int4_q8_group(x, weights, {&y, 1}, pool, scratch, q8, isa);
}

}  // namespace hllm::cpu
