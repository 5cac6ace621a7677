// CPU matmul against the 32-weight ggml blocks Q8_0, Q4_0, Q5_0, Q4_1 and Q5_1
// (layout/ggml_blocks.hpp) with int8 activations: llama.cpp's own arithmetic for these formats
// (vec_dot_q8_0_q8_0, vec_dot_q4_0_q8_0, ..., vec_dot_q5_1_q8_1). The activations are rounded
// per 32 inputs, the block size of all five, in natural order:
//
//   y = Σ_blocks d_w·d_x·Σ_k w_k·a_k + m_w·(d_x·Σ_k a_k)
//
// a_k ∈ [−127, 127]; w_k ∈ [−128, 127] (Q8_0: q; Q4_0: q − 8; Q5_0: q − 16; Q4_1, Q5_1: q) and the
// block minimum m_w of Q4_1 / Q5_1 (0 for the others), which meets the block's d_x·Σa (Q8Blocks::
// sum, llama.cpp's q8_1 s).
//
// Σ w·a is exact in int32 on every path. AVX2: vpmaddubsw multiplies unsigned by signed bytes, so
// each block is multiplied as |w| · (a with w's sign) (vpsignb), two products per int16 lane
// (|.| <= 2·128·127 = 32512 < 32767), widened by vpmaddwd. AVX-512 VNNI (vpdpbusd multiplies
// unsigned by signed bytes): a + 128, less 128·Σw (ggml_q8_row_avx512); a Q4_0 decode token meets
// 4 rows at once with the codes as the unsigned operand, less 8·Σa (ggml_q4_0_rows4_avx512).
// The error against the fp32 path (cpu/ggml_matmul.hpp) is at most Σ_k |w_k|·d_x/2 per block.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/ggml_matmul.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm::cpu {

// Blocks of 32 inputs per group of the AVX-512 batched kernel (detail::ggml_q8_groups_avx512).
inline constexpr int64_t Q8_GROUP_BLOCKS = 16;
inline constexpr int64_t Q8_GROUP_INPUTS = Q8_GROUP_BLOCKS * 32;

// Where input k of a group sits in its grouped form: 8 vectors of 64 bytes, vector s holding
// 4-input chunk s of every block, block j in 32-bit lane j. vpdpbusd adds the 4 products of a
// lane into that lane, so after the 8 vectors lane j holds block j's whole dot product.
inline constexpr int64_t q8_grouped_offset(int64_t k) {
  const int64_t block = k / 32, chunk = k % 32 / 4;
  return chunk * 64 + block * 4 + k % 4;
}

// Activations [n, in] rounded to int8 per 32 inputs, natural order; `grouped` also holds them per
// 512-input group in q8_grouped_offset order, offset to unsigned (q + 128), for the AVX-512
// batched kernel (the inputs after the last whole group only in natural order).
struct Q8Blocks {
  int64_t n = 0, in = 0;
  std::vector<int8_t> q;         // [n][in]
  std::vector<float> scale;      // [n][in / 32]: x ≈ scale · q
  std::vector<float> sum;        // [n][in / 32]: scale · Σ q of each block
  std::vector<uint8_t> grouped;  // [n][in / 512 * 512] when quantized with grouped = true

  const int8_t* row(int64_t t) const { return q.data() + t * in; }
  const float* scales(int64_t t) const { return scale.data() + t * (in / 32); }
  const float* sums(int64_t t) const { return sum.data() + t * (in / 32); }
  const uint8_t* group(int64_t t, int64_t g) const {
    return grouped.data() + (t * (in / Q8_GROUP_INPUTS) + g) * Q8_GROUP_INPUTS;
  }
};

namespace detail {

// One block of 32 inputs of one token: d = max|x| / 127, a = round-to-nearest-even(x / d).
inline void quantize_q8_block_scalar(const float* x, int8_t* q, float& d) {
  float amax = 0.0f;
  for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
  const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int k = 0; k < 32; ++k)
    q[k] = static_cast<int8_t>(
        std::clamp(static_cast<int32_t>(std::nearbyint(x[k] * inverse)), -127, 127));
  d = amax / 127.0f;
}

#if defined(__x86_64__)
// The same bits (avx2::round16_to_int8).
[[gnu::target("avx2,fma,f16c")]] inline void quantize_q8_block_avx2(const float* x, int8_t* q,
                                                                    float& d) {
  const float amax = avx2::abs_max(x, 32);
  const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
  for (int h = 0; h < 2; ++h) {
    int32_t sum = 0;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16 * h),
                     avx2::round16_to_int8(x + 16 * h, inverse, sum));
  }
  d = amax / 127.0f;
}
#endif

}  // namespace detail

// x [n, in] -> `out`, a block of 32 at a time (detail::quantize_q8_block_scalar; every ISA gives
// the same bits); grouped: also the grouped unsigned copy.
inline void quantize_q8_blocks(const float* x, int64_t n, int64_t in, Q8Blocks& out,
                               ThreadPool& pool, bool grouped = false, CpuIsa isa = cpu_isa()) {
  out.n = n;
  out.in = in;
  out.q.resize(static_cast<size_t>(n * in));
  out.scale.resize(static_cast<size_t>(n * (in / 32)));
  out.sum.resize(static_cast<size_t>(n * (in / 32)));
  const int64_t grouped_inputs = grouped ? in / Q8_GROUP_INPUTS * Q8_GROUP_INPUTS : 0;
  out.grouped.resize(static_cast<size_t>(n * grouped_inputs));
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t b = 0; b < in / 32; ++b) {
      const float* xb = x + t * in + b * 32;
      int8_t* q = out.q.data() + t * in + b * 32;
      float& d = out.scale[t * (in / 32) + b];
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2)
        detail::quantize_q8_block_avx2(xb, q, d);
      else
#endif
        detail::quantize_q8_block_scalar(xb, q, d);
      int32_t total = 0;
      for (int k = 0; k < 32; ++k) total += q[k];
      out.sum[t * (in / 32) + b] = d * static_cast<float>(total);
    }
    for (int64_t k = 0; k < grouped_inputs; ++k)
      out.grouped[t * grouped_inputs + k / Q8_GROUP_INPUTS * Q8_GROUP_INPUTS +
                  q8_grouped_offset(k % Q8_GROUP_INPUTS)] =
          static_cast<uint8_t>(out.q[t * in + k] + 128);
  });
}

// The types this path reads (32 integer weights per block, a scale and a fixed offset or a
// minimum).
inline constexpr bool ggml_q8_path_supports(GgmlType type) {
  return type == GgmlType::Q8_0 || type == GgmlType::Q4_0 || type == GgmlType::Q5_0 ||
         type == GgmlType::Q4_1 || type == GgmlType::Q5_1;
}

// Bytes per block (fp16 d, [fp16 m,] then 32 int8 or 16 bytes of nibbles [after 4 of fifth bits]).
template <GgmlType TYPE>
inline constexpr int64_t GGML_Q8_BLOCK_BYTES = ggml_type_info(TYPE).block_bytes;

// Whether blocks of the type carry a minimum m (weight = d·q + m).
inline constexpr bool ggml_has_min(GgmlType type) {
  return type == GgmlType::Q4_1 || type == GgmlType::Q5_1;
}

namespace detail {

// The bits of a block's fp16 scale (its first two bytes, little-endian).
inline uint16_t ggml_scale_bits(const uint8_t* block) {
  return static_cast<uint16_t>(block[0] | block[1] << 8);
}

// The bits of a Q4_1 / Q5_1 block's fp16 minimum (bytes 2-3).
inline uint16_t ggml_min_bits(const uint8_t* block) {
  return static_cast<uint16_t>(block[2] | block[3] << 8);
}

// Block b of a row as 32 integer weights (natural order, the type's offset applied), its fp16
// scale and its minimum (0 without one).
inline void ggml_signed_block(GgmlType type, const uint8_t* block, int8_t w[32], float& d,
                              float& m) {
  d = f16_to_f32(f16{ggml_scale_bits(block)});
  m = ggml_has_min(type) ? f16_to_f32(f16{ggml_min_bits(block)}) : 0.0f;
  const int64_t head = ggml_has_min(type) ? 4 : 2;  // the bytes before qh / qs
  const bool five = type == GgmlType::Q5_0 || type == GgmlType::Q5_1;
  const uint8_t* nibbles = block + head + (five ? 4 : 0);
  const uint32_t fifth_bits = five ? ggml_detail::load_u32(block + head) : 0;
  const int offset = type == GgmlType::Q4_0 ? 8 : type == GgmlType::Q5_0 ? 16 : 0;
  for (int k = 0; k < 32; ++k) {
    const int nibble = (nibbles[k % 16] >> (k < 16 ? 0 : 4)) & 0xF;
    w[k] = type == GgmlType::Q8_0
               ? static_cast<int8_t>(block[2 + k])
               : static_cast<int8_t>((nibble | ((fifth_bits >> k) & 1) << 4) - offset);
  }
}

inline float ggml_q8_row_scalar(GgmlType type, const uint8_t* row, const Q8Blocks& a, int64_t t) {
  const int64_t block_bytes = ggml_type_info(type).block_bytes;
  float sum = 0.0f;
  for (int64_t b = 0; b < a.in / 32; ++b) {
    int8_t w[32];
    float d = 0.0f, m = 0.0f;
    ggml_signed_block(type, row + b * block_bytes, w, d, m);
    int32_t dot = 0;
    for (int k = 0; k < 32; ++k) dot += int32_t{w[k]} * a.row(t)[b * 32 + k];
    sum += d * a.scales(t)[b] * static_cast<float>(dot);
    if (ggml_has_min(type)) sum += m * a.sums(t)[b];
  }
  return sum;
}

#if defined(__x86_64__)
// Blocks are read this far ahead with software prefetches: the Q8_0 lm_head GEMV went from ~85% to
// ~94% of the machine's read bandwidth (2-core Zen 3 VM, cpu_ggml_bench).
inline constexpr int64_t GGML_Q8_PREFETCH_BYTES = 2048;

[[gnu::target("avx2,fma,f16c")]] inline float ggml_block_scale(const uint8_t* block) {
  return _cvtsh_ss(ggml_scale_bits(block));
}
template <GgmlType TYPE>
[[gnu::target("avx2,fma,f16c")]] inline float ggml_block_min(const uint8_t* block) {
  return ggml_has_min(TYPE) ? _cvtsh_ss(ggml_min_bits(block)) : 0.0f;
}

template <GgmlType TYPE>
[[gnu::target("avx2,fma,f16c")]] inline __m256i ggml_signed_block_avx2(const uint8_t* block) {
  if constexpr (TYPE == GgmlType::Q8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
  } else if constexpr (TYPE == GgmlType::Q5_0) {
    const __m256i codes =
        _mm256_or_si256(split_nibbles(block + 6), fifth_bits(ggml_detail::load_u32(block + 2)));
    return _mm256_sub_epi8(codes, _mm256_set1_epi8(16));
  } else if constexpr (TYPE == GgmlType::Q4_1) {
    return split_nibbles(block + 4);
  } else if constexpr (TYPE == GgmlType::Q5_1) {
    return _mm256_or_si256(split_nibbles(block + 8), fifth_bits(ggml_detail::load_u32(block + 4)));
  } else {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m256i codes =
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), _mm_and_si128(bytes, mask));
    return _mm256_sub_epi8(codes, _mm256_set1_epi8(8));
  }
}

// Σ over blocks of d_w·d_x·Σ w·a for one row and TOKENS tokens [t, t + TOKENS): each block's
// weights are loaded, made unsigned (|w|) and their scale converted once for all the tokens. The
// first pass over a row (t = 0) reads it from memory and prefetches ahead; later ones hit the cache.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx2,fma,f16c")]] inline void ggml_q8_row_avx2(const uint8_t* row, const Q8Blocks& a,
                                                              int64_t t, float* y,
                                                              int64_t y_stride) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<TYPE>;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[TOKENS];
  float min_terms[TOKENS] = {};  // Σ_b m_w·(d_x·Σa) (Q4_1, Q5_1)
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.in / 32; ++b) {  // (the unroll pragma keeps acc in registers at -O2)
    const uint8_t* block = row + b * BLOCK_BYTES;
    if constexpr (PREFETCH)
      _mm_prefetch(reinterpret_cast<const char*>(block) + GGML_Q8_PREFETCH_BYTES, _MM_HINT_T0);
    const __m256i w = ggml_signed_block_avx2<TYPE>(block);
    const __m256i w_abs = _mm256_abs_epi8(w);
    const float d_w = ggml_block_scale(block), m_w = ggml_block_min<TYPE>(block);
#pragma GCC unroll 4
    for (int j = 0; j < TOKENS; ++j) {
      const __m256i xv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.row(t + j) + b * 32));
      const __m256i dot =
          _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xv, w)), ones);
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d_w * a.scales(t + j)[b]),
                               acc[j]);
      if constexpr (ggml_has_min(TYPE)) min_terms[j] += m_w * a.sums(t + j)[b];
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx2::hsum(acc[j]) + min_terms[j];
}

// Masked forms with every lane set: GCC 12 warns (falsely) on the unmasked ones' undefined
// pass-through.
inline constexpr __mmask16 GGML_Q8_ALL_LANES = 0xFFFF;

// Blocks b (lanes 0-7) and b + 1 (lanes 8-15; zeros unless `pair`) as 64 integer weights, each
// block in natural order (ggml_signed_block_avx2's). Q5_0 / Q5_1 with AVX-512BW: the pair's 64
// fifth bits are a byte mask (a masked move: bit k -> 0x10 in byte k), one instruction where the
// AVX2 unpack takes five per block: decode 1.15x (Q5_0) and 1.2x (Q5_1) faster (hllm bench, 1B
// GGUFs, 2-core Zen 5).
template <GgmlType TYPE>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m512i ggml_signed_pair_avx512(
    const uint8_t* block, bool pair) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<TYPE>;
  if constexpr (TYPE == GgmlType::Q5_0 || TYPE == GgmlType::Q5_1) {
    constexpr int64_t HEAD = TYPE == GgmlType::Q5_1 ? 4 : 2;  // bytes before qh
    const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + HEAD + 4));
    const __m128i high =
        pair ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + BLOCK_BYTES + HEAD + 4))
             : _mm_setzero_si128();
    const __m256i bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
    const __m512i mask = _mm512_set1_epi8(0x0F);
    // [b lo | b + 1 lo | b hi | b + 1 hi] nibbles, then 128-bit lanes 0, 2, 1, 3: natural order
    const __m512i split = _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(bytes),
                                                   _mm256_srli_epi16(bytes, 4), 1);
    const __m512i nibbles = _mm512_and_si512(
        _mm512_maskz_shuffle_i32x4(0xFFFF, split, split, _MM_SHUFFLE(3, 1, 2, 0)), mask);
    const uint64_t fifth =
        ggml_detail::load_u32(block + HEAD) |
        (pair ? uint64_t{ggml_detail::load_u32(block + BLOCK_BYTES + HEAD)} << 32 : 0);
    const __m512i codes =
        _mm512_or_si512(nibbles, _mm512_maskz_mov_epi8(fifth, _mm512_set1_epi8(0x10)));
    if constexpr (TYPE == GgmlType::Q5_1) return codes;
    const __m512i offset =
        _mm512_maskz_mov_epi8(pair ? ~__mmask64{0} : __mmask64{0xFFFFFFFF}, _mm512_set1_epi8(16));
    return _mm512_sub_epi8(codes, offset);
  } else {
    const __m256i w_hi =
        pair ? ggml_signed_block_avx2<TYPE>(block + BLOCK_BYTES) : _mm256_setzero_si256();
    return _mm512_maskz_inserti64x4(
        0xFF, _mm512_castsi256_si512(ggml_signed_block_avx2<TYPE>(block)), w_hi, 1);
  }
}

// With 512-bit vectors, blocks [first, in / 32) of one row into acc[j] (16 fp32 lanes per
// token): two blocks per register, lanes 0-7 block b and 8-15 block b + 1 (a row with an odd
// block count ends on a half-empty pair: zero weights and weight scale in the upper lanes).
// vpdpbusd multiplies unsigned by signed bytes, so the activations are offset to unsigned (a + 128:
// one xor of the sign bit) and each dot starts from −128·Σw, made once per row pass and reused by
// every token: Σ (a + 128)·w − 128·Σ w = Σ a·w, exact in int32 (per lane |.| <= 4·255·128 +
// 4·128·128). Per token and pair: one load, xor, vpdpbusd, convert, scale, FMA.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q8_pairs_avx512(
    const uint8_t* row, const Q8Blocks& a, int64_t t, int64_t first, __m512* acc) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<TYPE>;
  const __m512i sign_bit = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i pair_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const int64_t blocks = a.in / 32;
  for (int64_t b = first; b < blocks; b += 2) {
    const bool pair = b + 1 < blocks;
    const uint8_t* block = row + b * BLOCK_BYTES;
    if constexpr (PREFETCH)
      _mm_prefetch(reinterpret_cast<const char*>(block) + GGML_Q8_PREFETCH_BYTES, _MM_HINT_T0);
    const __m512i w = ggml_signed_pair_avx512<TYPE>(block, pair);
    const __m512i bias = _mm512_sub_epi32(_mm512_setzero_si512(),
                                          _mm512_dpbusd_epi32(_mm512_setzero_si512(), sign_bit, w));
    const __m512 d_w =
        _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(ggml_block_scale(block)),
                             _mm512_set1_ps(pair ? ggml_block_scale(block + BLOCK_BYTES) : 0.0f));
    // Q4_1 / Q5_1: the pair's minima in lanes 0 and 8 only (each block's term is added once).
    const __m512 m_w = _mm512_maskz_mov_ps(
        0x0101, _mm512_mask_blend_ps(
                    0xFF00, _mm512_set1_ps(ggml_block_min<TYPE>(block)),
                    _mm512_set1_ps(pair ? ggml_block_min<TYPE>(block + BLOCK_BYTES) : 0.0f)));
#pragma GCC unroll 8
    for (int j = 0; j < TOKENS; ++j) {
      const int8_t* q = a.row(t + j) + b * 32;
      const float* d_x = a.scales(t + j) + b;
      const __m512i x = _mm512_xor_si512(
          _mm512_maskz_loadu_epi8(pair ? ~__mmask64{0} : __mmask64{0xFFFFFFFF}, q), sign_bit);
      const __m512 d_x_pair = _mm512_maskz_permutexvar_ps(
          GGML_Q8_ALL_LANES, pair_index,
          _mm512_zextps128_ps512(
              pair ? _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(d_x)))
                   : _mm_set_ss(d_x[0])));
      const __m512i dot = _mm512_dpbusd_epi32(bias, x, w);
      acc[j] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(GGML_Q8_ALL_LANES, dot),
                               _mm512_mul_ps(d_w, d_x_pair), acc[j]);
      if constexpr (ggml_has_min(TYPE)) {
        const float* s_x = a.sums(t + j) + b;
        const __m512 s_x_pair = _mm512_maskz_permutexvar_ps(
            GGML_Q8_ALL_LANES, pair_index,
            _mm512_zextps128_ps512(
                pair ? _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s_x)))
                     : _mm_set_ss(s_x[0])));
        acc[j] = _mm512_fmadd_ps(m_w, s_x_pair, acc[j]);
      }
    }
  }
}

// The vpermt2d indices of ggml_q8_group_avx512's stages (1..3) for the pair's low / high output
// register: entry q is the source of output lane q, 0..15 a lane of the low input register,
// 16..31 of the high one.
inline constexpr auto GGML_Q8_TRANSPOSE = [] {
  std::array<std::array<std::array<int32_t, 16>, 2>, 3> index{};
  for (int high = 0; high < 2; ++high)
    for (int q = 0; q < 16; ++q) {
      // Stages 1 and 2 trade lane bit 0 / 1 for the register bit: the output's lane bit names
      // the input register, the output register (low / high) the input's lane bit.
      for (int bit : {1, 2})
        index[bit - 1][high][q] = (q & bit ? 16 : 0) + (high ? q | bit : q & ~bit);
      // Stage 3: output lane q = block (b3 b2 b1 b0) from register b3, lane (b0 c2 b2 b1).
      index[2][high][q] =
          (q >> 3 & 1) * 16 + ((q & 1) << 3 | high << 2 | (q >> 2 & 1) << 1 | (q >> 1 & 1));
    }
  return index;
}();

// The 16 blocks of group g of a row as 8 registers in q8_grouped_offset order (w[s] lane j =
// block j's weights 4s..4s+3, signed). Loaded two blocks per register (register i: block 2i in
// lanes 0-7, 2i + 1 in lanes 8-15, lane = chunk), then transposed by three vpermt2d stages, each
// trading one bit of the register index for one of the lane index (b: block bits, c: chunk bits):
//   loaded    register (b3 b2 b1)  lane (b0 c2 c1 c0)
//   stage 1   register (b3 b2 c0)  lane (b0 c2 c1 b1)
//   stage 2   register (b3 c1 c0)  lane (b0 c2 b2 b1)
//   stage 3   register (c2 c1 c0)  lane (b3 b2 b1 b0)   (so register s = chunk s, lane j = block j)
template <GgmlType TYPE>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q8_group_avx512(
    const uint8_t* group, __m512i w[8]) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<TYPE>;
  for (int i = 0; i < 8; ++i)
    w[i] = ggml_signed_pair_avx512<TYPE>(group + 2 * i * BLOCK_BYTES, true);
  for (int stage = 1; stage <= 3; ++stage) {
    const int bit = 1 << (stage - 1);  // of the register index: pairs i, i | bit
    const __m512i low_index = _mm512_loadu_si512(GGML_Q8_TRANSPOSE[stage - 1][0].data());
    const __m512i high_index = _mm512_loadu_si512(GGML_Q8_TRANSPOSE[stage - 1][1].data());
    for (int i = 0; i < 8; ++i) {
      if (i & bit) continue;
      const __m512i low = _mm512_permutex2var_epi32(w[i], low_index, w[i | bit]);
      w[i | bit] = _mm512_permutex2var_epi32(w[i], high_index, w[i | bit]);
      w[i] = low;
    }
  }
}

// Whole 512-input groups of one row into acc[j], for TOKENS tokens from activations quantized
// with grouped = true: the group's weights are transposed once per pass (ggml_q8_group_avx512)
// and its 128·Σw made once; then per token a group costs 8 vpdpbusd, one convert, one scale and
// one FMA (the pair kernel: 8 times its 6 instructions), with lane j summing block j alone.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q8_groups_avx512(
    const uint8_t* row, const Q8Blocks& a, int64_t t, __m512* acc) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<TYPE>;
  constexpr int64_t GROUP_BYTES = Q8_GROUP_BLOCKS * BLOCK_BYTES;
  const __m512i sign_bit = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t g = 0; g < a.in / Q8_GROUP_INPUTS; ++g) {
    const uint8_t* group = row + g * GROUP_BYTES;
    if constexpr (PREFETCH)
      for (int64_t line = 0; line < GROUP_BYTES; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(group) + GGML_Q8_PREFETCH_BYTES + line,
                     _MM_HINT_T0);
    __m512i w[8];
    ggml_q8_group_avx512<TYPE>(group, w);
    __m512i bias = _mm512_setzero_si512();
    for (const __m512i& chunk : w) bias = _mm512_dpbusd_epi32(bias, sign_bit, chunk);
    bias = _mm512_sub_epi32(_mm512_setzero_si512(), bias);
    alignas(32) uint16_t scale_bits[Q8_GROUP_BLOCKS];
    for (int64_t j = 0; j < Q8_GROUP_BLOCKS; ++j)
      scale_bits[j] = ggml_scale_bits(group + j * BLOCK_BYTES);
    const __m512 d_w = _mm512_maskz_cvtph_ps(
        GGML_Q8_ALL_LANES, _mm256_load_si256(reinterpret_cast<const __m256i*>(scale_bits)));
    __m512 m_w = _mm512_setzero_ps();  // Q4_1 / Q5_1: lane j = block j's minimum
    if constexpr (ggml_has_min(TYPE)) {
      alignas(32) uint16_t min_bits[Q8_GROUP_BLOCKS];
      for (int64_t j = 0; j < Q8_GROUP_BLOCKS; ++j)
        min_bits[j] = ggml_min_bits(group + j * BLOCK_BYTES);
      m_w = _mm512_maskz_cvtph_ps(GGML_Q8_ALL_LANES,
                                  _mm256_load_si256(reinterpret_cast<const __m256i*>(min_bits)));
    }
#pragma GCC unroll 8
    for (int j = 0; j < TOKENS; ++j) {
      const uint8_t* x = a.group(t + j, g);
      __m512i dot = bias;
      for (int s = 0; s < 8; ++s)
        dot = _mm512_dpbusd_epi32(dot, _mm512_loadu_si512(x + 64 * s), w[s]);
      acc[j] = _mm512_fmadd_ps(
          _mm512_maskz_cvtepi32_ps(GGML_Q8_ALL_LANES, dot),
          _mm512_mul_ps(d_w, _mm512_loadu_ps(a.scales(t + j) + g * Q8_GROUP_BLOCKS)), acc[j]);
      if constexpr (ggml_has_min(TYPE))
        acc[j] = _mm512_fmadd_ps(m_w, _mm512_loadu_ps(a.sums(t + j) + g * Q8_GROUP_BLOCKS), acc[j]);
    }
  }
}

// One row for tokens [t, t + TOKENS) with 512-bit vectors: whole groups by the grouped kernel
// when the activations have their grouped copy and the pass has 4+ tokens, the rest by pairs.
template <GgmlType TYPE, int TOKENS, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q8_row_avx512(
    const uint8_t* row, const Q8Blocks& a, int64_t t, float* y, int64_t y_stride) {
  __m512 acc[TOKENS];
#pragma GCC unroll 8  // (else GCC zeroes the array in memory, a rep stos per row)
  for (__m512& v : acc) v = _mm512_setzero_ps();
  int64_t first = 0;
  if (TOKENS >= 4 && !a.grouped.empty()) {  // (a transpose per group and pass pays from 4 tokens)
    ggml_q8_groups_avx512<TYPE, TOKENS, PREFETCH>(row, a, t, acc);
    first = a.in / Q8_GROUP_INPUTS * Q8_GROUP_BLOCKS;
  }
  ggml_q8_pairs_avx512<TYPE, TOKENS, PREFETCH>(row, a, t, first, acc);
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx512::hsum(acc[j]);
}

// Q4_0, one token against 4 rows at a time (a decode GEMV): the token's activations, their
// offset correction and scales are loaded once for the 4 rows, and vpdpbusd takes the codes
// (0..15) as its unsigned operand, so a row costs per pair of blocks two loads, three ops to
// unpack, one vpdpbusd, a convert, a permute of the pair's scales and an FMA
// (ggml_q8_pairs_avx512: about twice that). Measured 1.1-1.3x the pair kernel for decode shapes;
// the same scheme for Q8_0 (w + 128) was slower than one row at a time: four streams of ~2 KiB
// rows prefetch worse than one, and Q8_0's pair kernel is already near the read bandwidth.
inline constexpr int64_t GGML_Q4_0_ROW_GROUP = 4;

// Blocks b and b + 1 of one row (HALF: b alone, the upper half zero) as 64 codes 0..15 in the
// order [b: inputs 0..15 | b + 1: 0..15 | b: 16..31 | b + 1: 16..31] (a 16-byte load per
// block, the high nibbles shifted down into the upper 256 bits): int32 lanes 0-3 and 8-11
// belong to block b, 4-7 and 12-15 to block b + 1.
template <bool HALF>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m512i ggml_q4_0_pair_codes(
    const uint8_t* block) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<GgmlType::Q4_0>;
  const __m128i low = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  const __m128i high =
      HALF ? _mm_setzero_si128()
           : _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + BLOCK_BYTES + 2));
  const __m256i bytes = _mm256_inserti128_si256(_mm256_castsi128_si256(low), high, 1);
  const __m512i nibbles =
      _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(bytes), _mm256_srli_epi16(bytes, 4), 1);
  return _mm512_and_si512(nibbles, _mm512_set1_epi8(0x0F));
}

// One token's activations of blocks b, b + 1 in ggml_q4_0_pair_codes order (x), and the
// vpdpbusd start that removes the codes' offset 8: −8·Σ of each lane's 4 activations, so
// Σ q·x + start = Σ (q − 8)·x exactly (per lane |.| <= 4·15·127 + 4·8·127).
template <bool HALF>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q4_0_pair_activations(
    const int8_t* q, __m512i& x, __m512i& start) {
  x = _mm512_maskz_loadu_epi8(HALF ? __mmask64{0xFFFFFFFF} : ~__mmask64{0}, q);
  // 8-byte pieces 0,1 | 4,5 | 2,3 | 6,7: inputs 0..15 of b, of b + 1, 16..31 of b, of b + 1
  x = _mm512_maskz_permutexvar_epi64(0xFF, _mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), x);
  start = _mm512_sub_epi32(_mm512_setzero_si512(),
                           _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(8), x));
}

// Which of the 8 pair scales (ggml_q4_0_pair_scales) each lane of row r's dot takes: 2r + the
// lane's block (ggml_q4_0_pair_codes).
inline constexpr auto GGML_Q4_0_SCALE_INDEX = [] {
  std::array<std::array<int32_t, 16>, GGML_Q4_0_ROW_GROUP> index{};
  for (int r = 0; r < GGML_Q4_0_ROW_GROUP; ++r)
    for (int lane = 0; lane < 16; ++lane) index[r][lane] = 2 * r + lane / 4 % 2;
  return index;
}();

// d_w·d_x of blocks b, b + 1 of the 4 rows (blocks[r]: row r's block b) as [r0 b, r0 b + 1,
// r1 b, ...]; HALF: the b + 1 entries 0.
template <bool HALF>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline __m256 ggml_q4_0_pair_scales(
    const uint8_t* const blocks[GGML_Q4_0_ROW_GROUP], const float* d_x) {
  constexpr int64_t BLOCK_BYTES = GGML_Q8_BLOCK_BYTES<GgmlType::Q4_0>;
  int32_t bits[GGML_Q4_0_ROW_GROUP];
  for (int r = 0; r < GGML_Q4_0_ROW_GROUP; ++r)
    bits[r] = ggml_scale_bits(blocks[r]) |
              (HALF ? 0 : int32_t{ggml_scale_bits(blocks[r] + BLOCK_BYTES)} << 16);
  const __m256 d_w = _mm256_cvtph_ps(_mm_setr_epi32(bits[0], bits[1], bits[2], bits[3]));
  const __m256 d_x_pair =
      HALF ? _mm256_set1_ps(d_x[0])
           : _mm256_castpd_ps(_mm256_broadcast_sd(reinterpret_cast<const double*>(d_x)));
  return _mm256_mul_ps(d_w, d_x_pair);
}

// Blocks b, b + 1 (HALF: b alone) of 4 rows (row0 and the next 3, row_bytes apart) for one
// token into acc[r].
template <bool HALF, bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c"), gnu::always_inline]] inline void
ggml_q4_0_rows4_pair(const uint8_t* row0, int64_t row_bytes, const int8_t* q, const float* d_x,
                     int64_t b, __m512 acc[GGML_Q4_0_ROW_GROUP]) {
  __m512i x, start;
  ggml_q4_0_pair_activations<HALF>(q + b * 32, x, start);
  const uint8_t* blocks[GGML_Q4_0_ROW_GROUP];
  const int64_t position = b * GGML_Q8_BLOCK_BYTES<GgmlType::Q4_0>;
#pragma GCC unroll 4
  for (int r = 0; r < GGML_Q4_0_ROW_GROUP; ++r) {
    blocks[r] = row0 + r * row_bytes + position;
    if constexpr (PREFETCH) {
      // Each row's stream GGML_Q8_PREFETCH_BYTES ahead; past its end, the same row of the next
      // 4 (rows lie back to back), so the next rows start in cache.
      const int64_t ahead = position + GGML_Q8_PREFETCH_BYTES;
      const int64_t next = ahead < row_bytes ? ahead : ahead + 3 * row_bytes;
      _mm_prefetch(reinterpret_cast<const char*>(row0 + r * row_bytes + next), _MM_HINT_T0);
    }
  }
  // (the permutes below read lanes 0-7 only)
  const __m512 scales = _mm512_castps256_ps512(ggml_q4_0_pair_scales<HALF>(blocks, d_x + b));
#pragma GCC unroll 4
  for (int r = 0; r < GGML_Q4_0_ROW_GROUP; ++r) {
    const __m512i dot = _mm512_dpbusd_epi32(start, ggml_q4_0_pair_codes<HALF>(blocks[r]), x);
    const __m512i index = _mm512_loadu_si512(GGML_Q4_0_SCALE_INDEX[r].data());
    acc[r] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(GGML_Q8_ALL_LANES, dot),
                             _mm512_maskz_permutexvar_ps(GGML_Q8_ALL_LANES, index, scales), acc[r]);
  }
}

// Token t against Q4_0 rows [row, row + 4): y[t·y_stride + r] for row + r. The first pass over
// the rows (t = 0) streams them from memory.
template <bool PREFETCH>
[[gnu::target("avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]] inline void ggml_q4_0_rows4_avx512(
    const GgmlView& w, int64_t row, const Q8Blocks& a, int64_t t, float* y, int64_t y_stride) {
  __m512 acc[GGML_Q4_0_ROW_GROUP];
#pragma GCC unroll 4
  for (__m512& v : acc) v = _mm512_setzero_ps();
  const uint8_t* row0 = w.row(row);
  const int64_t blocks = a.in / 32, row_bytes = blocks * GGML_Q8_BLOCK_BYTES<GgmlType::Q4_0>;
  const int8_t* q = a.row(t);
  const float* d_x = a.scales(t);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2)
    ggml_q4_0_rows4_pair<false, PREFETCH>(row0, row_bytes, q, d_x, b, acc);
  if (b < blocks) ggml_q4_0_rows4_pair<true, PREFETCH>(row0, row_bytes, q, d_x, b, acc);
#pragma GCC unroll 4
  for (int r = 0; r < GGML_Q4_0_ROW_GROUP; ++r) y[t * y_stride + r] = avx512::hsum(acc[r]);
}

inline void ggml_q4_0_rows4(const GgmlView& w, int64_t row, const Q8Blocks& a, int64_t t, float* y,
                            int64_t y_stride) {
  return t == 0 ? ggml_q4_0_rows4_avx512<true>(w, row, a, t, y, y_stride)
                : ggml_q4_0_rows4_avx512<false>(w, row, a, t, y, y_stride);
}

// Tokens [t, t + TOKENS) of one row on the chosen instruction set (avx2 or avx512; passes of more
// than 4 tokens are AVX-512 only). The first pass over a row (t = 0) streams it from memory.
template <int TOKENS>
inline void ggml_q8_rows(CpuIsa isa, GgmlType type, const uint8_t* row, const Q8Blocks& a,
                         int64_t t, float* y, int64_t y_stride) {
  const auto run = [&]<GgmlType TYPE, bool PREFETCH>() {
    if constexpr (TOKENS <= 4)
      if (isa != CpuIsa::avx512)
        return ggml_q8_row_avx2<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
    return ggml_q8_row_avx512<TYPE, TOKENS, PREFETCH>(row, a, t, y, y_stride);
  };
  dispatch_block_type(type, [&]<GgmlType TYPE>() {
    if constexpr (ggml_q8_path_supports(TYPE))
      t == 0 ? run.template operator()<TYPE, true>() : run.template operator()<TYPE, false>();
  });
}
#endif

}  // namespace detail

// y[n, out] = x[n, in] · Wᵀ for a Q8_0 / Q4_0 / Q5_0 / Q4_1 / Q5_1 weight, with int8 activations (`q8` holds them
// between calls). isa: scalar, avx2 or avx512 (the same integer dots, fp32 sums in another order).
inline void matmul_ggml_q8(const Tensor& x, const GgmlView& w, const Tensor& y, ThreadPool& pool,
                           Q8Blocks& q8, CpuIsa isa = cpu_isa()) {
  check_matmul_operands("matmul_ggml_q8", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.data == nullptr)
    fail("matmul_ggml_q8: the weight is not in host memory");
  if (!ggml_q8_path_supports(w.type) || w.in % 32 != 0)
    fail("matmul_ggml_q8: ", ggml_type_info(w.type).name, " weight [", w.out, ", ", w.in,
         "] (Q8_0, Q4_0, Q5_0, Q4_1 or Q5_1 only)");
  if (isa > cpu_isa_supported())
    fail("matmul_ggml_q8: ", isa_name(isa), " is not supported by this CPU");
  const int64_t n = x.dim(0);
  const bool grouped = isa == CpuIsa::avx512 && n >= 4 && w.in >= Q8_GROUP_INPUTS;
  quantize_q8_blocks(x.as<float>(), n, w.in, q8, pool, grouped, isa);
  constexpr int64_t ROWS_PER_TASK = 16;
  float* out = y.as<float>();
  // Tokens [0, n − n % 4) in passes of several tokens over one row (each block unpacked once for
  // all of them: a batched decode's lm_head); AVX-512 passes of 16 (16 accumulators and a group's
  // 8 transposed vectors fit its 32 registers), then 8, AVX2 passes of 4 (its 16 registers). The
  // last n % 4 tokens one at a time, on AVX-512 over 4 rows at once (a decode GEMV).
  constexpr int64_t WIDEST_PASS = 16, WIDE_PASS = 8, PASS = 4;
  const int64_t single_begin = isa >= CpuIsa::avx2 ? n - n % PASS : 0;
  pool.parallel_for((w.out + ROWS_PER_TASK - 1) / ROWS_PER_TASK, [&](int64_t task) {
    const int64_t row_begin = task * ROWS_PER_TASK;
    const int64_t row_end = std::min(w.out, row_begin + ROWS_PER_TASK);
#if defined(__x86_64__)
    for (int64_t r = row_begin; r < row_end; ++r) {
      int64_t t = 0;
      if (isa == CpuIsa::avx512) {
        for (; t + WIDEST_PASS <= n; t += WIDEST_PASS)
          detail::ggml_q8_rows<WIDEST_PASS>(isa, w.type, w.row(r), q8, t, out + r, w.out);
        for (; t + WIDE_PASS <= n; t += WIDE_PASS)
          detail::ggml_q8_rows<WIDE_PASS>(isa, w.type, w.row(r), q8, t, out + r, w.out);
      }
      for (; t < single_begin; t += PASS)
        detail::ggml_q8_rows<PASS>(isa, w.type, w.row(r), q8, t, out + r, w.out);
    }
#endif
    for (int64_t t = single_begin; t < n; ++t) {
      int64_t r = row_begin;
#if defined(__x86_64__)
      if (isa == CpuIsa::avx512 && w.type == GgmlType::Q4_0)
        for (; r + detail::GGML_Q4_0_ROW_GROUP <= row_end; r += detail::GGML_Q4_0_ROW_GROUP)
          detail::ggml_q4_0_rows4(w, r, q8, t, out + r, w.out);
      if (isa >= CpuIsa::avx2)
        for (; r < row_end; ++r)
          detail::ggml_q8_rows<1>(isa, w.type, w.row(r), q8, t, out + r, w.out);
#endif
      for (; r < row_end; ++r)
        out[t * w.out + r] = detail::ggml_q8_row_scalar(w.type, w.row(r), q8, t);
    }
  });
}

}  // namespace hllm::cpu
