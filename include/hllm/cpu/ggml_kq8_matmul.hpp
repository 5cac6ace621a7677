// CPU matmul against GGUF's K-quant blocks Q4_K, Q5_K and Q6_K (layout/ggml_blocks.hpp) with int8
// activations: the bulk of a Q4_K_M / Q5_K_M file, and the Q6_K lm_head (plus half the ffn_down /
// attn_v of those) that llama.cpp's presets write into nearly every quantized file. As llama.cpp's
// Q8_K, the activations are rounded per 256 inputs, one super-block (Q8KBlocks), so a whole
// super-block's sum stays in int32 and meets its fp scales once:
//
//   Q6_K  w = d·sc_g·(q − 32), q ∈ [0, 63], sc_g ∈ [−128, 127], g = 16 inputs:
//         Σ w·x ≈ d·d_x·(Σ_g sc_g·Σ_{k∈g} q·a − 32·Σ_g sc_g·Σ_{k∈g} a)
//   Q4_K  w = d·sc_j·q − dmin·m_j, q ∈ [0, 15] (Q5_K: [0, 31]), sc_j, m_j ∈ [0, 63], j = 32 inputs:
//         Σ w·x ≈ d·d_x·Σ_j sc_j·Σ_{k∈j} q·a − dmin·d_x·Σ_j m_j·Σ_{k∈j} a
//
// Both brackets are exact in int32 on every path: q·a pairs by vpmaddubsw (codes unsigned, a
// signed, |pair| <= 2·63·127 < 32767), times the int16 group scales by vpdpwssd (AVX-512 VNNI)
// or vpmaddwd (AVX2); Σa per 16 inputs is kept with the activations. The error against the fp32
// path (cpu/ggml_matmul.hpp) is at most Σ_k |w_k|·d_x/2, d_x = max|x| / 127 over the 256 inputs.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/ggml_q8_matmul.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm::cpu {

// The types and machines this path serves.
inline bool ggml_kq8_path_supports(GgmlType type, CpuIsa isa = cpu_isa()) {
  return (type == GgmlType::Q4_K || type == GgmlType::Q5_K || type == GgmlType::Q6_K) &&
         isa >= CpuIsa::avx2;
}

inline constexpr int64_t K_SUPER = 256;  // inputs per super-block

// Where input k of a row is stored: every 128 inputs as their 32-input chunks 0, 2, 1, 3 (the
// map is its own inverse). One 64-byte load of Q4_K codes unpacks, low nibbles, into the inputs
// of chunks 0 and 2, high nibbles into 1 and 3: stored this way, each unpacked register meets
// one contiguous 64-byte load of activations.
inline constexpr int64_t q8k_position(int64_t k) {
  const int64_t chunk = k % 128 / 32;
  const int64_t stored_chunk = chunk == 1 ? 2 : chunk == 2 ? 1 : chunk;
  return k - k % 128 + stored_chunk * 32 + k % 32;
}

// Activations [n, in] rounded to int8 per 256 inputs, in q8k_position order, with the exact Σ of
// every 16 (natural order) for Q6_K's −32 and Q4_K's / Q5_K's mins.
struct Q8KBlocks {
  int64_t n = 0, in = 0;
  std::vector<int8_t> q;       // [n][in], q8k_position order
  std::vector<float> scale;    // [n][in / 256]: x ≈ scale · q
  std::vector<int16_t> sum16;  // [n][in / 16]: Σ q over inputs 16i .. 16i + 15

  const int8_t* row(int64_t t) const { return q.data() + t * in; }
  const float* scales(int64_t t) const { return scale.data() + t * (in / K_SUPER); }
  const int16_t* sums(int64_t t) const { return sum16.data() + t * (in / 16); }
};

namespace detail {

// One super-block of one token: d = max|x| / 127, a = round-to-nearest-even(x / d), stored in
// q8k_position order, and Σa per 16.
inline void quantize_q8k_super_scalar(const float* x, int8_t* q, int16_t* sums, float& d) {
  float amax = 0.0f;
  for (int k = 0; k < K_SUPER; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int g = 0; g < K_SUPER / 16; ++g) {
    int32_t sum = 0;
    for (int k = 16 * g; k < 16 * g + 16; ++k) {
      const auto a = static_cast<int32_t>(std::nearbyint(x[k] * inverse));
      q[q8k_position(k)] = static_cast<int8_t>(std::clamp(a, -127, 127));
      sum += q[q8k_position(k)];
    }
    sums[g] = static_cast<int16_t>(sum);
  }
  d = amax / 127.0f;
}

#if defined(__x86_64__)
// The same bits (avx2::round16_to_int8), 16 inputs at a time.
[[gnu::target("avx2,fma,f16c")]] inline void quantize_q8k_super_avx2(const float* x, int8_t* q,
                                                                     int16_t* sums, float& d) {
  const float amax = avx2::abs_max(x, K_SUPER);
  const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
  for (int g = 0; g < K_SUPER / 16; ++g) {
    int32_t sum = 0;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + q8k_position(16 * g)),
                     avx2::round16_to_int8(x + 16 * g, inverse, sum));
    sums[g] = static_cast<int16_t>(sum);
  }
  d = amax / 127.0f;
}
#endif

}  // namespace detail

// x [n, in] -> `out`, a super-block at a time (detail::quantize_q8k_super_scalar); every ISA
// gives the same bits.
inline void quantize_q8k_blocks(const float* x, int64_t n, int64_t in, Q8KBlocks& out,
                                ThreadPool& pool, CpuIsa isa = cpu_isa()) {
  out.n = n;
  out.in = in;
  out.q.resize(static_cast<size_t>(n * in));
  out.scale.resize(static_cast<size_t>(n * (in / K_SUPER)));
  out.sum16.resize(static_cast<size_t>(n * (in / 16)));
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t s = 0; s < in / K_SUPER; ++s) {
      const float* xs = x + t * in + s * K_SUPER;
      int8_t* q = out.q.data() + t * in + s * K_SUPER;
      int16_t* sums = out.sum16.data() + t * (in / 16) + s * (K_SUPER / 16);
      float& d = out.scale[t * (in / K_SUPER) + s];
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        detail::quantize_q8k_super_avx2(xs, q, sums, d);
        continue;
      }
#endif
      detail::quantize_q8k_super_scalar(xs, q, sums, d);
    }
  });
}

template <GgmlType TYPE>
inline constexpr int64_t K_BLOCK_BYTES = ggml_type_info(TYPE).block_bytes;

namespace detail {

// Q6_K's code of input k (0..63) of a block: half h = k / 128 keeps the low 4 bits of its inputs
// 0..63 in the low nibbles of ql[64h ..] and of 64..127 in the high ones; qh[32h + l] the top 2
// bits of inputs l, l + 32, l + 64, l + 96 (bit pairs 0-1 .. 6-7).
inline int q6_k_code(const uint8_t* block, int k) {
  const int h = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
  const uint8_t low_byte = block[64 * h + (quarter % 2) * 32 + l];
  const int low = quarter < 2 ? (low_byte & 0x0F) : (low_byte >> 4);
  return low | ((block[128 + 32 * h + l] >> (2 * quarter)) & 3) << 4;
}

// Portable path: the same integer sums per super-block as the vector ones.
inline float ggml_kq8_row_scalar(GgmlType type, const uint8_t* row, const Q8KBlocks& a, int64_t t) {
  const int64_t block_bytes = ggml_type_info(type).block_bytes;
  float sum = 0.0f;
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * block_bytes;
    const int8_t* x = a.row(t) + s * K_SUPER;
    const int16_t* sums = a.sums(t) + s * (K_SUPER / 16);
    const float d_x = a.scales(t)[s];
    if (type == GgmlType::Q6_K) {
      const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
      int32_t dot = 0;
      for (int g = 0; g < 16; ++g) {
        int32_t group = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k)
          group += q6_k_code(block, k) * x[q8k_position(k)];
        dot += sc[g] * (group - 32 * sums[g]);
      }
      sum += ggml_detail::load_f16(block + 208) * d_x * static_cast<float>(dot);
    } else {
      // Q5_K: the codes' 5th bit of sub-block j is bit j of qh[l], the nibbles after qh
      const bool five = type == GgmlType::Q5_K;
      const uint8_t* qs = block + (five ? 48 : 16);
      int32_t dot = 0, mins = 0;
      for (int j = 0; j < 8; ++j) {
        int sc = 0, m = 0;
        ggml_detail::k_scale_min(block + 4, j, sc, m);
        int32_t sub_block = 0;
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = qs[32 * (j / 2) + l];
          const int high = five ? ((block[16 + l] >> j) & 1) << 4 : 0;
          sub_block +=
              ((j % 2 == 0 ? byte & 0x0F : byte >> 4) | high) * x[q8k_position(32 * j + l)];
        }
        dot += sc * sub_block;
        mins += m * (sums[2 * j] + sums[2 * j + 1]);
      }
      sum += ggml_detail::load_f16(block) * d_x * static_cast<float>(dot) -
             ggml_detail::load_f16(block + 2) * d_x * static_cast<float>(mins);
    }
  }
  return sum;
}

#if defined(__x86_64__)
// Blocks are read this far ahead with software prefetches (as GGML_Q8_PREFETCH_BYTES).
inline constexpr int64_t K_PREFETCH_BYTES = 2048;

template <GgmlType TYPE>
[[gnu::always_inline]] inline void k_prefetch(const uint8_t* block) {
  for (int64_t line = 0; line < K_BLOCK_BYTES<TYPE>; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(block) + K_PREFETCH_BYTES + line, _MM_HINT_T0);
}

// Q4_K's (and Q5_K's) 12 packed bytes of 6-bit scales and mins (ggml_detail::k_scale_min) as bytes sc0..7,
// m0..7. In 32-bit words w0..w2: sc0-3 = w0 & 63, m0-3 = w1 & 63 (bytewise), and sc4-7 / m4-7
// take their low 4 bits from w2's low / high nibbles and their top 2 from w0's / w1's bits 6-7.
[[gnu::target("avx2,fma,f16c")]] inline __m128i q4_k_scales_mins(const uint8_t* block) {
  // bytes 4..19: the 12 packed bytes, then 4 code bytes (unused)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 4));
  const __m128i low6 = _mm_and_si128(v, _mm_set1_epi8(0x3F));
  const __m128i top2 = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(v, 6), _mm_set1_epi8(3)), 4);
  const __m128i w2_nibbles = _mm_and_si128(
      _mm_srlv_epi32(_mm_shuffle_epi32(v, 0xAA), _mm_setr_epi32(0, 4, 0, 0)), _mm_set1_epi8(0x0F));
  // low6 words: [sc0-3, m0-3, ..]; high words: [sc4-7, m4-7, ..]
  return _mm_unpacklo_epi32(low6, _mm_or_si128(w2_nibbles, top2));
}

// Lane i (int16, inputs stored at 64r + 2i, + 1) of code register r: which group of 16 (Q6_K)
// or sub-block of 32 (Q4_K) its inputs belong to.
template <int64_t SPAN>
inline constexpr auto K_LANE_SCALE_INDEX = [] {
  std::array<std::array<int16_t, 32>, 4> index{};
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 32; ++i)
      index[r][i] = static_cast<int16_t>(q8k_position(64 * r + 2 * i) / SPAN);
  return index;
}();

// 32 bytes at p in both 256-bit halves of a register.
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m512i k_both_halves(
    const uint8_t* p) {
  return _mm512_maskz_broadcast_i64x4(0xFF,
                                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// A super-block's 256 codes in q8k_position order, 64 per register: register r holds stored
// inputs 64r .. 64r + 63, i.e. chunks (0, 2) of half r / 2 for even r, (1, 3) for odd r: Q4_K's
// low nibbles of qs[64h ..] for r = 2h, high for 2h + 1. Q5_K adds 16 where bit j of qh[l] is
// set, j the sub-block of the register half's byte l.
template <bool FIVE>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void q4_k_codes(
    const uint8_t* block, __m512i codes[4]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int h = 0; h < 2; ++h) {
    const __m512i qs = _mm512_loadu_si512(block + (FIVE ? 48 : 16) + 64 * h);
    codes[2 * h] = _mm512_and_si512(qs, low4);
    codes[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(qs, 4), low4);
  }
  if constexpr (FIVE) {
    const __m512i qh = k_both_halves(block + 16);
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
      const int low_half = static_cast<int>(q8k_position(64 * r) / 32), high_half = low_half + 2;
      const __m512i bit =
          _mm512_mask_blend_epi64(0xF0, _mm512_set1_epi8(static_cast<char>(1 << low_half)),
                                  _mm512_set1_epi8(static_cast<char>(1 << high_half)));
      codes[r] = _mm512_mask_add_epi8(codes[r], _mm512_test_epi8_mask(qh, bit), codes[r],
                                      _mm512_set1_epi8(16));
    }
  }
}

// Q6_K's likewise. Half h: chunks 0 and 2 take the low 4 bits from ql[64h .. + 31] (low nibble,
// high nibble), chunks 1 and 3 from ql[64h + 32 ..]; their top 2 bits are qh[32h ..]'s bit pairs
// 0-1 and 4-5 (chunks 0, 2), 2-3 and 6-7 (chunks 1, 3). 16-bit shifts move bits across bytes,
// but only into bits the masks clear.
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void q6_k_codes(
    const uint8_t* block, __m512i codes[4]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  // per 256-bit half of a register: nibbles shifted right by 0 | 4, top bits left by 4 | 0
  const __m512i nibble_shift = _mm512_maskz_set1_epi16(0xFFFF0000u, 4);
  const __m512i top_shift = _mm512_maskz_set1_epi16(0x0000FFFFu, 4);
  for (int h = 0; h < 2; ++h) {
    const __m512i low02 =
        _mm512_and_si512(_mm512_srlv_epi16(k_both_halves(block + 64 * h), nibble_shift), low4);
    const __m512i low13 =
        _mm512_and_si512(_mm512_srlv_epi16(k_both_halves(block + 64 * h + 32), nibble_shift), low4);
    // bit pairs 0-1 | 4-5 moved to bits 4-5; >> 2 brings 2-3 | 6-7 there
    const __m512i top = _mm512_sllv_epi16(k_both_halves(block + 128 + 32 * h), top_shift);
    codes[2 * h] = _mm512_or_si512(low02, _mm512_and_si512(top, bits45));
    codes[2 * h + 1] = _mm512_or_si512(low13, _mm512_and_si512(_mm512_srli_epi16(top, 2), bits45));
  }
}

// One row for tokens [t, t + TOKENS), a super-block at a time: its codes unpacked and its
// per-lane int16 scales made once for all the tokens. The first pass over a row (t = 0) streams
// it from memory.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_kq8_row_avx512(
    const uint8_t* row, const Q8KBlocks& a, int64_t t, float* y, int64_t y_stride) {
  constexpr bool Q6 = TYPE == GgmlType::Q6_K;
  const auto& lane_index = K_LANE_SCALE_INDEX<(Q6 ? 16 : 32)>;
  // Q4_K / Q5_K: each m_j twice, against Σa of sub-block j's two 16-input halves
  const __m128i min_pairs =
      _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
  __m512 acc[TOKENS];
#pragma GCC unroll 8
  for (__m512& v : acc) v = _mm512_setzero_ps();
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * K_BLOCK_BYTES<TYPE>;
    if constexpr (PREFETCH) k_prefetch<TYPE>(block);
    __m512i codes[4];
    __m256i scales16, mins16 = _mm256_setzero_si256();  // per group (Q6_K) / sub-block
    float d, dmin = 0.0f;
    if constexpr (Q6) {
      q6_k_codes(block, codes);
      scales16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192)));
      d = ggml_block_scale(block + 208);
    } else {
      q4_k_codes<TYPE == GgmlType::Q5_K>(block, codes);
      const __m128i scales_mins = q4_k_scales_mins(block);
      scales16 = _mm256_cvtepu8_epi16(scales_mins);  // lanes 0-7; 8-15 (the mins) unused
      mins16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scales_mins, min_pairs));
      d = ggml_block_scale(block);
      dmin = ggml_block_scale(block + 2);
    }
    const __m512i scales_both_halves = _mm512_maskz_broadcast_i64x4(0xFF, scales16);
    __m512i lane_scales[4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
      lane_scales[r] =
          _mm512_permutexvar_epi16(_mm512_loadu_si512(lane_index[r].data()), scales_both_halves);
#pragma GCC unroll 8
    for (int j = 0; j < TOKENS; ++j) {
      const int8_t* x = a.row(t + j) + s * K_SUPER;
      __m512i dot = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r)
        dot = _mm512_dpwssd_epi32(
            dot, _mm512_maddubs_epi16(codes[r], _mm512_loadu_si512(x + 64 * r)), lane_scales[r]);
      const __m256i sums =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sums(t + j) + s * 16));
      const float d_x = a.scales(t + j)[s];
      if constexpr (Q6) {  // − 32·Σ_g sc_g·Σa_g
        dot = _mm512_sub_epi32(dot,
                               _mm512_maskz_broadcast_i64x4(  // lanes 8-15 zero
                                   0x0F, _mm256_slli_epi32(_mm256_madd_epi16(sums, scales16), 5)));
      } else {  // − dmin·d_x·Σ_j m_j·Σa_j
        acc[j] = _mm512_fnmadd_ps(
            _mm512_maskz_cvtepi32_ps(  // lanes 8-15 zero
                0x00FF, _mm512_maskz_broadcast_i64x4(0xFF, _mm256_madd_epi16(sums, mins16))),
            _mm512_set1_ps(dmin * d_x), acc[j]);
      }
      acc[j] =
          _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, dot), _mm512_set1_ps(d * d_x), acc[j]);
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx512::hsum(acc[j]);
}

// AVX2: 32 codes per register, one 32-input chunk: vpmaddubsw pairs, then vpmaddwd by the
// chunk's int16 scales, int32 sums per token over the super-block. Q4_K/Q5_K go 64 inputs at a time,
// Q6_K 128, so a pass of TOKENS keeps only that part's codes in registers.

// vpshufb indices: int16 lane `low` of each 128-bit half into the register's first 8 lanes,
// lane `high` into the last 8.
[[gnu::target("avx2,fma,f16c")]] inline __m256i k_pick_avx2(int low, int high) {
  const auto pair = [](int lane) { return static_cast<int16_t>(2 * lane | (2 * lane + 1) << 8); };
  return _mm256_setr_m128i(_mm_set1_epi16(pair(low)), _mm_set1_epi16(pair(high)));
}

// dot[j] += the chunk's codes · token t + j's activations at `offset`, by lane scales.
template <int TOKENS>
[[gnu::target("avx2,fma,f16c"), gnu::always_inline]] inline void k_chunk_avx2(
    __m256i codes, __m256i scales, const Q8KBlocks& a, int64_t t, int64_t offset,
    __m256i dot[TOKENS]) {
#pragma GCC unroll 4
  for (int j = 0; j < TOKENS; ++j) {
    const auto* x = reinterpret_cast<const __m256i*>(a.row(t + j) + offset);
    const __m256i pairs = _mm256_maddubs_epi16(codes, _mm256_loadu_si256(x));
    dot[j] = _mm256_add_epi32(dot[j], _mm256_madd_epi16(pairs, scales));
  }
}

// Q5_K: bit j of each qh byte as 16 (the 5th code bit of sub-block j).
[[gnu::target("avx2,fma,f16c")]] inline __m256i k_fifth_bit_avx2(__m256i qh, int j) {
  return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, j), _mm256_set1_epi8(1)), 4);
}

template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx2,fma,f16c")]] inline void ggml_kq8_row_avx2(const uint8_t* row,
                                                               const Q8KBlocks& a, int64_t t,
                                                               float* y, int64_t y_stride) {
  constexpr bool Q6 = TYPE == GgmlType::Q6_K;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[TOKENS];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * K_BLOCK_BYTES<TYPE>;
    if constexpr (PREFETCH) k_prefetch<TYPE>(block);
    __m256i dot[TOKENS];
    for (__m256i& v : dot) v = _mm256_setzero_si256();
    // Q6_K: the 16 group scales, against Σa per group (− 32·Σ_g sc_g·Σa_g); Q4_K: each min twice,
    // against Σa per 16 (Σ_j m_j·Σa_j)
    __m256i offset_scales;
    if constexpr (Q6) {
      offset_scales =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192)));
      const __m256i bits45 = _mm256_set1_epi8(0x30);
      for (int h = 0; h < 2; ++h) {
        // the half's 8 group scales in both 128-bit halves; chunk c has groups 2c and 2c + 1
        const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 192 + 8 * h))));
        const auto* ql = reinterpret_cast<const __m256i*>(block + 64 * h);
        const __m256i ql0 = _mm256_loadu_si256(ql), ql1 = _mm256_loadu_si256(ql + 1);
        const __m256i qh =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + 32 * h));
        const __m256i codes[4] = {
            _mm256_or_si256(_mm256_and_si256(ql0, low4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
            _mm256_or_si256(_mm256_and_si256(ql1, low4),
                            _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                            _mm256_and_si256(qh, bits45)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45))};
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c)
          k_chunk_avx2<TOKENS>(codes[c], _mm256_shuffle_epi8(scales, k_pick_avx2(2 * c, 2 * c + 1)),
                               a, t, s * K_SUPER + q8k_position(128 * h + 32 * c), dot);
      }
    } else {
      const __m128i scales_mins = q4_k_scales_mins(block);
      offset_scales = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(
          scales_mins, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
      const __m256i scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales_mins));
      constexpr bool FIVE = TYPE == GgmlType::Q5_K;
      const __m256i qh = FIVE ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 16))
                              : _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {  // sub-blocks 2g (low nibbles) and 2g + 1 (high)
        const __m256i qs =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + (FIVE ? 48 : 16) + 32 * g));
        __m256i low = _mm256_and_si256(qs, low4);
        __m256i high = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low4);
        if constexpr (FIVE) {
          low = _mm256_or_si256(low, k_fifth_bit_avx2(qh, 2 * g));
          high = _mm256_or_si256(high, k_fifth_bit_avx2(qh, 2 * g + 1));
        }
        k_chunk_avx2<TOKENS>(low, _mm256_shuffle_epi8(scales, k_pick_avx2(2 * g, 2 * g)), a, t,
                             s * K_SUPER + q8k_position(64 * g), dot);
        k_chunk_avx2<TOKENS>(high, _mm256_shuffle_epi8(scales, k_pick_avx2(2 * g + 1, 2 * g + 1)),
                             a, t, s * K_SUPER + q8k_position(64 * g + 32), dot);
      }
    }
    const float d = ggml_block_scale(block + (Q6 ? 208 : 0));
    const float dmin = Q6 ? 0.0f : ggml_block_scale(block + 2);
    for (int j = 0; j < TOKENS; ++j) {
      const __m256i offsets = _mm256_madd_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sums(t + j) + s * 16)),
          offset_scales);
      const float d_x = a.scales(t + j)[s];
      if constexpr (Q6) {
        dot[j] = _mm256_sub_epi32(dot[j], _mm256_slli_epi32(offsets, 5));
      } else {
        acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(offsets), _mm256_set1_ps(dmin * d_x), acc[j]);
      }
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[j]), _mm256_set1_ps(d * d_x), acc[j]);
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx2::hsum(acc[j]);
}

// Tokens [t, t + TOKENS) of one row on the chosen instruction set (avx2 or avx512).
template <int TOKENS>
inline void ggml_kq8_rows(CpuIsa isa, GgmlType type, const uint8_t* row, const Q8KBlocks& a,
                          int64_t t, float* y, int64_t y_stride) {
  const auto run = [&]<GgmlType TYPE, bool PREFETCH>() {
    if (isa == CpuIsa::avx512)
      return ggml_kq8_row_avx512<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
    return ggml_kq8_row_avx2<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
  };
  dispatch_block_type(type, [&]<GgmlType TYPE>() {
    if constexpr (TYPE == GgmlType::Q4_K || TYPE == GgmlType::Q5_K || TYPE == GgmlType::Q6_K)
      t == 0 ? run.template operator()<TYPE, true>() : run.template operator()<TYPE, false>();
  });
}
#endif

}  // namespace detail

// y[n, out] = x[n, in] · Wᵀ for a Q4_K / Q5_K / Q6_K weight with int8 activations (`q8k` holds them
// between calls). isa: avx512, avx2 or scalar (the same integer sums, fp32 sums in another order).
inline void matmul_ggml_kq8(const Tensor& x, const GgmlView& w, const Tensor& y, ThreadPool& pool,
                            Q8KBlocks& q8k, CpuIsa isa = cpu_isa()) {
  check_matmul_operands("matmul_ggml_kq8", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.data == nullptr)
    fail("matmul_ggml_kq8: the weight is not in host memory");
  if (!ggml_kq8_path_supports(w.type, CpuIsa::avx2) || w.in % K_SUPER != 0)
    fail("matmul_ggml_kq8: ", ggml_type_info(w.type).name, " weight [", w.out, ", ", w.in,
         "] (Q4_K, Q5_K or Q6_K only)");
  if (isa > cpu_isa_supported())
    fail("matmul_ggml_kq8: ", isa_name(isa), " is not supported by this CPU");
  const int64_t n = x.dim(0);
  quantize_q8k_blocks(x.as<float>(), n, w.in, q8k, pool, isa);
  constexpr int64_t ROWS_PER_TASK = 16;
  constexpr int64_t PASS = 4;  // tokens per pass over a row (its codes unpacked once for them)
  const int64_t row_bytes = w.row_bytes();
  float* out = y.as<float>();
  pool.parallel_for((w.out + ROWS_PER_TASK - 1) / ROWS_PER_TASK, [&](int64_t task) {
    const int64_t row_end = std::min(w.out, (task + 1) * ROWS_PER_TASK);
    for (int64_t r = task * ROWS_PER_TASK; r < row_end; ++r) {
      const uint8_t* row = w.data + r * row_bytes;
      int64_t t = 0;
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        for (; t + PASS <= n; t += PASS)
          detail::ggml_kq8_rows<PASS>(isa, w.type, row, q8k, t, out + r, w.out);
        for (; t < n; ++t) detail::ggml_kq8_rows<1>(isa, w.type, row, q8k, t, out + r, w.out);
      }
#endif
      for (; t < n; ++t) out[t * w.out + r] = detail::ggml_kq8_row_scalar(w.type, row, q8k, t);
    }
  });
}

}  // namespace hllm::cpu
