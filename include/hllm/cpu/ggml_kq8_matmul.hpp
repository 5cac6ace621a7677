// CPU matmul against GGUF's K-quant blocks Q4_K and Q6_K (layout/ggml_blocks.hpp) with int8
// activations: the bulk of a Q4_K_M file, and the Q6_K lm_head (plus half the ffn_down / attn_v
// of Q4_K_M) that llama.cpp's presets write into nearly every quantized file. The activations are
// the Q8Blocks of cpu/ggml_q8_matmul.hpp (rounded per 32 inputs, natural order, with Σa per 16):
// a K-quant's 32-input sub-block (Q4_K) or 16-input scale group (Q6_K) lies inside one of them, so
// each has one activation scale d_x:
//
//   Q6_K  w = d·sc_g·(q − 32), q ∈ [0, 63], g = 16 inputs:
//         Σ w·x ≈ Σ_g d·sc_g·d_x·(Σ_{k∈g} q·a − 32·Σ_{k∈g} a)
//   Q4_K  w = d·sc_j·q − dmin·m_j, q ∈ [0, 15], j = 32 inputs:
//         Σ w·x ≈ Σ_j d_x·(d·sc_j·Σ_{k∈j} q·a − dmin·m_j·Σ_{k∈j} a)
//
// Σ q·a is exact in int32 (vpdpbusd: the codes are its unsigned operand, a its signed one); the
// error against the fp32 path (cpu/ggml_matmul.hpp) is at most Σ_k |w_k|·d_x/2, as for Q4_0.
//
// AVX-512 VNNI: a super-block's 256 codes are unpacked into 4 registers of 64 in natural order
// once per pass and meet TOKENS tokens; int32 lane l of register v sums inputs 64v + 4l .. + 3,
// so one permute of 16 per-group scales gives each lane its scale. AVX2 likewise with 32 codes
// per register (ggml_kq8_row_avx2); machines without AVX2 keep the fp32 path.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

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
  return (type == GgmlType::Q4_K || type == GgmlType::Q6_K) && isa >= CpuIsa::avx2;
}

namespace detail {

inline constexpr int64_t K_SUPER = 256;  // inputs per super-block

// Q4_K's 12 packed bytes -> the 8 sub-blocks' 6-bit scales (sc[j]) and mins (m[j]), as bytes
// (ggml_detail::k_scale_min, four sub-blocks per 32-bit word).
inline void q4_k_scales_mins(const uint8_t* packed, uint8_t sc[8], uint8_t m[8]) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  const uint32_t low6 = 0x3F3F3F3Fu, low4 = 0x0F0F0F0Fu, top2 = 0x03030303u;
  const uint32_t words[4] = {w[0] & low6, (w[2] & low4) | ((w[0] >> 6) & top2) << 4, w[1] & low6,
                             ((w[2] >> 4) & low4) | ((w[1] >> 6) & top2) << 4};
  std::memcpy(sc, words, 8);
  std::memcpy(m, words + 2, 8);
}

// Portable path, the same integer dots; fp32 sums per group in input order.
inline float ggml_kq8_row_scalar(GgmlType type, const uint8_t* row, const Q8Blocks& a, int64_t t) {
  const int64_t block_bytes = ggml_type_info(type).block_bytes;
  const int8_t* q = a.row(t);
  float sum = 0.0f;
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * block_bytes;
    const int8_t* x = q + s * K_SUPER;
    const float* d_x = a.scales(t) + s * (K_SUPER / 32);
    const float* sums = a.sums(t) + s * (K_SUPER / 16);
    if (type == GgmlType::Q6_K) {
      const float d = ggml_detail::load_f16(block + 208);
      const auto* sc = reinterpret_cast<const int8_t*>(block + 192);
      for (int g = 0; g < 16; ++g) {
        int32_t dot = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k) {
          const int h = k / 128, r = k % 128, quarter = r / 32, l = r % 32;
          const uint8_t low_byte = block[64 * h + (quarter % 2) * 32 + l];
          const int low = quarter < 2 ? (low_byte & 0x0F) : (low_byte >> 4);
          const int high = (block[128 + 32 * h + l] >> (2 * quarter)) & 3;
          dot += (low | high << 4) * x[k];
        }
        const float scale = d * static_cast<float>(sc[g]) * d_x[g / 2];
        sum += scale * (static_cast<float>(dot) - 32.0f * sums[g]);
      }
    } else {
      const float d = ggml_detail::load_f16(block), dmin = ggml_detail::load_f16(block + 2);
      uint8_t sc[8], m[8];
      q4_k_scales_mins(block + 4, sc, m);
      for (int j = 0; j < 8; ++j) {
        int32_t dot = 0;
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = block[16 + 32 * (j / 2) + l];
          dot += (j % 2 == 0 ? byte & 0x0F : byte >> 4) * x[32 * j + l];
        }
        sum += d * static_cast<float>(sc[j]) * d_x[j] * static_cast<float>(dot) -
               dmin * static_cast<float>(m[j]) * d_x[j] * (sums[2 * j] + sums[2 * j + 1]);
      }
    }
  }
  return sum;
}

#if defined(__x86_64__)
// Blocks are read this far ahead with software prefetches (as GGML_Q8_PREFETCH_BYTES).
inline constexpr int64_t K_PREFETCH_BYTES = 2048;

// Lane l of code register v (inputs 64v + 4l ..) belongs to 16-input group 4v + l / 4 and
// 32-input sub-block 2v + l / 8.
inline constexpr auto K_GROUP_INDEX = [] {
  std::array<std::array<int32_t, 16>, 4> index{};
  for (int v = 0; v < 4; ++v)
    for (int l = 0; l < 16; ++l) index[v][l] = 4 * v + l / 4;
  return index;
}();
inline constexpr auto K_SUB_BLOCK_INDEX = [] {
  std::array<std::array<int32_t, 16>, 4> index{};
  for (int v = 0; v < 4; ++v)
    for (int l = 0; l < 16; ++l) index[v][l] = 2 * v + l / 8;
  return index;
}();

// Masked forms with every lane set: GCC 12 warns (falsely) on the unmasked ones' undefined
// pass-through.
inline constexpr __mmask16 K_ALL_LANES = 0xFFFF;

// Q6_K's 256 codes (0..63) in natural order, 64 per register. Half h: ql[64h ..] holds the low 4
// bits of inputs 128h + 0..63 (low nibbles) and + 64..127 (high); qh[32h + l] the top 2 bits of
// inputs 128h + l, + 32, + 64, + 96 (bit pairs 0-1 .. 6-7), so [qh, qh >> 2] lines up with inputs
// 0..63 and the same >> 4 with 64..127.
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void q6_k_codes(
    const uint8_t* block, __m512i codes[4]) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), bits45 = _mm512_set1_epi8(0x30);
  for (int h = 0; h < 2; ++h) {
    const __m512i ql = _mm512_loadu_si512(block + 64 * h);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 128 + 32 * h));
    const __m512i high =
        _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
    codes[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, low4),
                                   _mm512_and_si512(_mm512_slli_epi16(high, 4), bits45));
    codes[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                       _mm512_and_si512(high, bits45));
  }
}

// Q4_K's 256 codes (0..15) in natural order: qs[32g + l] holds input 64g + l (low nibble) and
// 64g + 32 + l (high).
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void q4_k_codes(
    const uint8_t* block, __m512i codes[4]) {
  for (int g = 0; g < 4; ++g) {
    const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 16 + 32 * g));
    codes[g] = _mm512_and_si512(
        _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(qs), _mm256_srli_epi16(qs, 4), 1),
        _mm512_set1_epi8(0x0F));
  }
}

// The 8 activation scales of a super-block in both halves of a register (lane l: d_x[l % 8]).
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m512 k_activation_scales(
    const float* d_x) {
  return _mm512_castpd_ps(
      _mm512_maskz_broadcast_f64x4(0xFF, _mm256_loadu_pd(reinterpret_cast<const double*>(d_x))));
}

// Σ_v Σ_lanes dot(codes[v], x[v]) · scale lane of `scales` picked by `index` (K_GROUP_INDEX or
// K_SUB_BLOCK_INDEX), into acc.
template <const std::array<std::array<int32_t, 16>, 4>& INDEX>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c"), gnu::always_inline]] inline __m512
k_scaled_dots(const __m512i codes[4], const int8_t* x, __m512 scales, __m512 acc) {
#pragma GCC unroll 4
  for (int v = 0; v < 4; ++v) {
    const __m512i dot =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), codes[v], _mm512_loadu_si512(x + 64 * v));
    const __m512i index = _mm512_loadu_si512(INDEX[v].data());
    acc = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(K_ALL_LANES, dot),
                          _mm512_maskz_permutexvar_ps(K_ALL_LANES, index, scales), acc);
  }
  return acc;
}

// One row for tokens [t, t + TOKENS), a super-block at a time: its codes unpacked and its scales
// made once for all the tokens. The first pass over a row (t = 0) streams it from memory.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_kq8_row_avx512(
    const uint8_t* row, const Q8Blocks& a, int64_t t, float* y, int64_t y_stride) {
  constexpr int64_t BLOCK_BYTES = TYPE == GgmlType::Q6_K ? 210 : 144;
  // Lane g of a 16-lane register from 8 values: value g / 2 (a 32-input block per 2 groups).
  const __m512i per_group = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512 acc[TOKENS];
#pragma GCC unroll 8
  for (__m512& v : acc) v = _mm512_setzero_ps();
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * BLOCK_BYTES;
    if constexpr (PREFETCH)
      for (int64_t line = 0; line < BLOCK_BYTES; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(block) + K_PREFETCH_BYTES + line, _MM_HINT_T0);
    __m512i codes[4];
    if constexpr (TYPE == GgmlType::Q6_K) {
      q6_k_codes(block, codes);
      // d·sc_g for the 16 groups
      const __m512 group_scales = _mm512_mul_ps(
          _mm512_maskz_cvtepi32_ps(
              K_ALL_LANES,
              _mm512_maskz_cvtepi8_epi32(
                  K_ALL_LANES, _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192)))),
          _mm512_set1_ps(ggml_block_scale(block + 208)));
#pragma GCC unroll 8
      for (int j = 0; j < TOKENS; ++j) {
        const __m512 scales = _mm512_mul_ps(
            group_scales,
            _mm512_maskz_permutexvar_ps(K_ALL_LANES, per_group,
                                        k_activation_scales(a.scales(t + j) + s * (K_SUPER / 32))));
        acc[j] = k_scaled_dots<K_GROUP_INDEX>(codes, a.row(t + j) + s * K_SUPER, scales, acc[j]);
        // − 32 · d·sc_g·d_x · Σa per group
        acc[j] = _mm512_fnmadd_ps(_mm512_mul_ps(scales, _mm512_set1_ps(32.0f)),
                                  _mm512_loadu_ps(a.sums(t + j) + s * (K_SUPER / 16)), acc[j]);
      }
    } else {
      q4_k_codes(block, codes);
      // lanes 0-7: d·sc_j, lanes 8-15: dmin·m_j
      alignas(16) uint8_t scales_mins[16];
      q4_k_scales_mins(block + 4, scales_mins, scales_mins + 8);
      const __m512 d_dmin = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(ggml_block_scale(block)),
                                                 _mm512_set1_ps(ggml_block_scale(block + 2)));
      const __m512 sub_block_scales = _mm512_mul_ps(
          _mm512_maskz_cvtepi32_ps(
              K_ALL_LANES,
              _mm512_maskz_cvtepu8_epi32(
                  K_ALL_LANES, _mm_load_si128(reinterpret_cast<const __m128i*>(scales_mins)))),
          d_dmin);
      // Σa per sub-block j in lane 8 + j: the two 16-input sums of each, lanes 0-7 zero.
      const __m512i even = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 6, 8, 10, 12, 14);
      const __m512i odd = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 7, 9, 11, 13, 15);
#pragma GCC unroll 8
      for (int j = 0; j < TOKENS; ++j) {
        const __m512 scales = _mm512_mul_ps(
            sub_block_scales, k_activation_scales(a.scales(t + j) + s * (K_SUPER / 32)));
        acc[j] =
            k_scaled_dots<K_SUB_BLOCK_INDEX>(codes, a.row(t + j) + s * K_SUPER, scales, acc[j]);
        const __m512 sums = _mm512_loadu_ps(a.sums(t + j) + s * (K_SUPER / 16));
        const __m512 sub_block_sums = _mm512_add_ps(_mm512_maskz_permutexvar_ps(0xFF00, even, sums),
                                                    _mm512_maskz_permutexvar_ps(0xFF00, odd, sums));
        acc[j] = _mm512_fnmadd_ps(scales, sub_block_sums, acc[j]);  // − dmin·m_j·d_x·Σa
      }
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx512::hsum(acc[j]);
}

// AVX2: 32 codes per register, vpmaddubsw (codes unsigned, a signed; |pair| <= 2·63·127 = 16002,
// no saturation) then vpmaddwd by ones, so int32 lane l of code register i (inputs 32i + 4l ..)
// has Q6_K group 2i + l / 4 and Q4_K sub-block i. A super-block goes half by half (Q6_K) or 64
// inputs at a time (Q4_K), so a pass of TOKENS keeps only that part's codes in registers.
[[gnu::target("avx2,fma,f16c")]] inline __m256 k_dot_avx2(__m256i codes, const int8_t* x) {
  const __m256i pairs =
      _mm256_maddubs_epi16(codes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}

template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx2,fma,f16c")]] inline void ggml_kq8_row_avx2(const uint8_t* row,
                                                               const Q8Blocks& a, int64_t t,
                                                               float* y, int64_t y_stride) {
  constexpr int64_t BLOCK_BYTES = TYPE == GgmlType::Q6_K ? 210 : 144;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[TOKENS];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int64_t s = 0; s < a.in / K_SUPER; ++s) {
    const uint8_t* block = row + s * BLOCK_BYTES;
    if constexpr (PREFETCH)
      for (int64_t line = 0; line < BLOCK_BYTES; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(block) + K_PREFETCH_BYTES + line, _MM_HINT_T0);
    if constexpr (TYPE == GgmlType::Q6_K) {
      const __m256i bits45 = _mm256_set1_epi8(0x30);
      const __m256 d = _mm256_set1_ps(ggml_block_scale(block + 208));
      for (int h = 0; h < 2; ++h) {
        // d·sc_g of the half's 8 groups, and its codes: ql0 / ql1 hold inputs 0..31 / 32..63
        // (low nibbles) and 64..95 / 96..127 (high), qh their top 2 bits (pairs 0-1 .. 6-7).
        const __m256 group_scales = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
                _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 192 + 8 * h)))),
            d);
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
        for (int j = 0; j < TOKENS; ++j) {
          // lane g: d·sc_g·d_x of group g (block 4h + g / 2)
          const __m256 d_x =
              _mm256_permutevar8x32_ps(_mm256_loadu_ps(a.scales(t + j) + s * (K_SUPER / 32)),
                                       _mm256_add_epi32(_mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3),
                                                        _mm256_set1_epi32(4 * h)));
          const __m256 scales = _mm256_mul_ps(group_scales, d_x);
          const int8_t* x = a.row(t + j) + s * K_SUPER + 128 * h;
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) {  // register i: groups 2i, 2i + 1 (lanes 0-3, 4-7)
            const __m256 lane_scales = _mm256_permutevar8x32_ps(
                scales, _mm256_add_epi32(_mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
                                         _mm256_set1_epi32(2 * i)));
            acc[j] = _mm256_fmadd_ps(k_dot_avx2(codes[i], x + 32 * i), lane_scales, acc[j]);
          }
          acc[j] =
              _mm256_fnmadd_ps(_mm256_mul_ps(scales, _mm256_set1_ps(32.0f)),
                               _mm256_loadu_ps(a.sums(t + j) + s * (K_SUPER / 16) + 8 * h), acc[j]);
        }
      }
    } else {
      alignas(16) uint8_t scales_mins[16];
      q4_k_scales_mins(block + 4, scales_mins, scales_mins + 8);
      const __m128i packed = _mm_load_si128(reinterpret_cast<const __m128i*>(scales_mins));
      const __m256 sub_block_scales =
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed)),
                        _mm256_set1_ps(ggml_block_scale(block)));
      const __m256 mins =
          _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(packed, 8))),
                        _mm256_set1_ps(ggml_block_scale(block + 2)));
      __m256 scales[TOKENS];
      for (int j = 0; j < TOKENS; ++j) {
        const __m256 d_x = _mm256_loadu_ps(a.scales(t + j) + s * (K_SUPER / 32));
        scales[j] = _mm256_mul_ps(sub_block_scales, d_x);
        // − dmin·m_j·d_x·Σa per sub-block (Σa: the two 16-input sums, pairs added in order)
        const float* sums = a.sums(t + j) + s * (K_SUPER / 16);
        const __m256 pair_sums = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_hadd_ps(_mm256_loadu_ps(sums), _mm256_loadu_ps(sums + 8))),
            0xD8));
        acc[j] = _mm256_fnmadd_ps(_mm256_mul_ps(mins, d_x), pair_sums, acc[j]);
      }
      for (int g = 0; g < 4; ++g) {  // sub-blocks 2g (low nibbles) and 2g + 1 (high)
        const __m256i qs =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 16 + 32 * g));
        const __m256i low = _mm256_and_si256(qs, low4);
        const __m256i high = _mm256_and_si256(_mm256_srli_epi16(qs, 4), low4);
        for (int j = 0; j < TOKENS; ++j) {
          const int8_t* x = a.row(t + j) + s * K_SUPER + 64 * g;
          acc[j] = _mm256_fmadd_ps(k_dot_avx2(low, x),
                                   _mm256_permutevar8x32_ps(scales[j], _mm256_set1_epi32(2 * g)),
                                   acc[j]);
          acc[j] = _mm256_fmadd_ps(
              k_dot_avx2(high, x + 32),
              _mm256_permutevar8x32_ps(scales[j], _mm256_set1_epi32(2 * g + 1)), acc[j]);
        }
      }
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx2::hsum(acc[j]);
}

// Tokens [t, t + TOKENS) of one row on the chosen instruction set (avx2 or avx512).
template <int TOKENS>
inline void ggml_kq8_rows(CpuIsa isa, GgmlType type, const uint8_t* row, const Q8Blocks& a,
                          int64_t t, float* y, int64_t y_stride) {
  const auto run = [&]<GgmlType TYPE, bool PREFETCH>() {
    if (isa == CpuIsa::avx512)
      return ggml_kq8_row_avx512<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
    return ggml_kq8_row_avx2<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
  };
  if (type == GgmlType::Q6_K)
    return t == 0 ? run.template operator()<GgmlType::Q6_K, true>()
                  : run.template operator()<GgmlType::Q6_K, false>();
  return t == 0 ? run.template operator()<GgmlType::Q4_K, true>()
                : run.template operator()<GgmlType::Q4_K, false>();
}
#endif

}  // namespace detail

// y[n, out] = x[n, in] · Wᵀ for a Q4_K / Q6_K weight with int8 activations (`q8` holds them
// between calls). isa: avx512, avx2 or scalar (the same integer dots, fp32 sums in another order).
inline void matmul_ggml_kq8(const Tensor& x, const GgmlView& w, const Tensor& y, ThreadPool& pool,
                            Q8Blocks& q8, CpuIsa isa = cpu_isa()) {
  check_matmul_operands("matmul_ggml_kq8", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.data == nullptr)
    fail("matmul_ggml_kq8: the weight is not in host memory");
  if ((w.type != GgmlType::Q4_K && w.type != GgmlType::Q6_K) || w.in % detail::K_SUPER != 0)
    fail("matmul_ggml_kq8: ", ggml_type_info(w.type).name, " weight [", w.out, ", ", w.in,
         "] (Q4_K or Q6_K only)");
  if (isa > cpu_isa_supported())
    fail("matmul_ggml_kq8: ", isa_name(isa), " is not supported by this CPU");
  const int64_t n = x.dim(0);
  quantize_q8_blocks(x.as<float>(), n, w.in, q8, pool);
  constexpr int64_t ROWS_PER_TASK = 16;
  constexpr int64_t PASS = 4;  // tokens per pass over a row (its codes unpacked once for them)
  float* out = y.as<float>();
  pool.parallel_for((w.out + ROWS_PER_TASK - 1) / ROWS_PER_TASK, [&](int64_t task) {
    const int64_t row_end = std::min(w.out, (task + 1) * ROWS_PER_TASK);
    for (int64_t r = task * ROWS_PER_TASK; r < row_end; ++r) {
      int64_t t = 0;
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        for (; t + PASS <= n; t += PASS)
          detail::ggml_kq8_rows<PASS>(isa, w.type, w.row(r), q8, t, out + r, w.out);
        for (; t < n; ++t) detail::ggml_kq8_rows<1>(isa, w.type, w.row(r), q8, t, out + r, w.out);
      }
#endif
      for (; t < n; ++t) out[t * w.out + r] = detail::ggml_kq8_row_scalar(w.type, w.row(r), q8, t);
    }
  });
}

}  // namespace hllm::cpu
