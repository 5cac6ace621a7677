// CPU matmul against a weight in ggml blocks (a GGUF file's Q4_0 ... Q6_K, layout/ggml_blocks.hpp),
// read in place: y[n, out] = x[n, in] · Wᵀ with fp32 activations and accumulation.
//
// Every block type is read 32 weights at a time as a Chunk (32 unsigned codes, an offset, and a
// scale and min per 16), by one AVX2 dequantizer per type (a template: no type switch in the
// loops) that hands each chunk to a sink:
// - batches / prefill (StoreSink): tasks of GGML_ROWS_PER_TASK output rows × GGML_TOKEN_TILE
//   tokens; 256 weights of 4 rows at a time are dequantized into a 4 × 256 buffer (4 KiB, stays
//   in L1) and reused by a 4 rows × 2 tokens micro-kernel for the task's tokens, so the blocks
//   stream from memory once per token tile and are never expanded to a full fp32 copy. StoreSink computes exactly what ggml_dequant_block
//   computes (same fp32 operations, bitwise equal: tested).
// - decode (DotSink): no buffer; the scales are factored out of each 16-group,
//   Σ w·x = Σ_g s_g·Σ c·x − (s_g·offset + m_g)·Σ_g x, so the inner loop is code -> fp32 -> FMA,
//   with software prefetch GGML_PREFETCH_AHEAD bytes ahead (the hardware prefetcher alone left
//   the loop waiting on memory).
//
// Bytes moved per call (what the benchmark counts): GgmlView::nbytes(), the blocks as stored.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm::cpu {

namespace detail {

inline constexpr int64_t GGML_ROWS_PER_TASK = 8;
inline constexpr int64_t GGML_TOKEN_TILE = 16;
inline constexpr int64_t GGML_MAX_BLOCK = 256;
inline constexpr int64_t GGML_PREFETCH_AHEAD = 2048;  // bytes ahead of the decode loop

#if defined(__x86_64__)
// Every block type, 32 weights at a time: 32 unsigned codes c (one byte each, element k + j in
// byte j) with w = scale · (c − offset) − min, where the scale and min of the first 16 codes are
// (s0, m0) and of the last 16 (s1, m1). (Q8_0's signed codes are biased to c = q + 128, offset
// 128; a format's "+ m" is − (−m).) The dequantizer hands each chunk to a sink.
struct Chunk {
  __m256i codes;
  int offset;
  float s0, m0, s1, m1;
};

// 8 codes (the low 8 bytes) -> 8 floats: unsigned codes minus `offset`.
[[gnu::target("avx2,fma,f16c")]] inline __m256 codes8(__m128i v, int offset) {
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(v), _mm256_set1_epi32(offset)));
}

// Stores the chunk's 32 weights, computed as the scalar dequantizer does (scale · (c − offset),
// then − min: bitwise the same floats).
struct StoreSink {
  float* out;
  [[gnu::target("avx2,fma,f16c")]] void operator()(int k, const Chunk& c) const {
    const __m128i lo = _mm256_castsi256_si128(c.codes), hi = _mm256_extracti128_si256(c.codes, 1);
    const __m128i eights[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (int j = 0; j < 4; ++j) {
      const __m256 scale = _mm256_set1_ps(j < 2 ? c.s0 : c.s1);
      const __m256 min = _mm256_set1_ps(j < 2 ? c.m0 : c.m1);
      _mm256_storeu_ps(out + k + 8 * j,
                       _mm256_sub_ps(_mm256_mul_ps(codes8(eights[j], c.offset), scale), min));
    }
  }
};

// Decode: Σ w·x over the chunk with the scales factored out of each 16-group g,
//   Σ_g [ s_g · Σ_{k∈g} c_k x_k  −  (s_g · offset + m_g) · X_g ],   X_g = Σ_{k∈g} x_k
// so the inner loop is code -> fp32 -> fma with x (X_g precomputed once per call, x_sum16).
struct DotSink {
  [[gnu::target("avx2,fma,f16c")]] static __m256 widen(__m128i v) {  // 8 codes -> 8 floats
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
  }
  const float* x;        // the block's activations
  const float* x_sum16;  // Σ x over each 16 activations of the block
  __m256 acc0, acc1;     // two independent chains
  float bias = 0.0f;     // Σ (s_g · offset + m_g) · X_g, subtracted at the end
  [[gnu::target("avx2,fma,f16c")]] void operator()(int k, const Chunk& c) {
    const __m128i lo = _mm256_castsi256_si128(c.codes), hi = _mm256_extracti128_si256(c.codes, 1);
    __m256 g0 = _mm256_mul_ps(widen(lo), _mm256_loadu_ps(x + k));
    g0 = _mm256_fmadd_ps(widen(_mm_srli_si128(lo, 8)), _mm256_loadu_ps(x + k + 8), g0);
    __m256 g1 = _mm256_mul_ps(widen(hi), _mm256_loadu_ps(x + k + 16));
    g1 = _mm256_fmadd_ps(widen(_mm_srli_si128(hi, 8)), _mm256_loadu_ps(x + k + 24), g1);
    acc0 = _mm256_fmadd_ps(g0, _mm256_set1_ps(c.s0), acc0);
    acc1 = _mm256_fmadd_ps(g1, _mm256_set1_ps(c.s1), acc1);
    const float off = static_cast<float>(c.offset);
    bias += (c.s0 * off + c.m0) * x_sum16[k / 16] + (c.s1 * off + c.m1) * x_sum16[k / 16 + 1];
  }
};

[[gnu::target("avx2,fma,f16c")]] inline __m256i nibbles_lo(__m256i v) {
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}
[[gnu::target("avx2,fma,f16c")]] inline __m256i nibbles_hi(__m256i v) {
  return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}
// Bit `bit` of every byte of v, moved to bit `to`.
[[gnu::target("avx2,fma,f16c")]] inline __m256i byte_bit(__m256i v, int bit, int to) {
  const __m256i one = _mm256_and_si256(_mm256_srli_epi16(v, bit), _mm256_set1_epi8(1));
  return _mm256_slli_epi16(one, to);  // a 0/1 byte shifted by < 8 stays in its byte
}
[[gnu::target("avx2,fma,f16c")]] inline __m256i load32(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
// The 16 bytes of a 32-element block's codes: element j (< 16) low nibble of byte j, element
// j + 16 the high nibble -> byte j of the result holds element j's nibble.
[[gnu::target("avx2,fma,f16c")]] inline __m256i split_nibbles(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), mask), _mm_and_si128(v, mask));
}
// Q5_0 / Q5_1's 32 fifth bits (bit j of qh = element j) as 0x10 in byte j.
[[gnu::target("avx2,fma,f16c")]] inline __m256i fifth_bits(uint32_t qh) {
  const __m256i spread = _mm256_shuffle_epi8(  // byte j <- byte j / 8 of qh
      _mm256_set1_epi32(static_cast<int>(qh)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201));
  const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
  return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// An fp16 scale by F16C: the same exact conversion as f16_to_f32, one instruction.
[[gnu::target("avx2,fma,f16c")]] inline float load_f16_f16c(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// One block of type T into `sink`, chunk by chunk (T is a template argument, so the row loop has
// no type switch).
template <GgmlType T, typename Sink>
[[gnu::target("avx2,fma,f16c")]] inline void dequant_block_avx2(const uint8_t* b, Sink& sink) {
  using ggml_detail::load_u32;
  if constexpr (T == GgmlType::Q4_0) {
    const float d = load_f16_f16c(b);
    sink(0, Chunk{split_nibbles(b + 2), 8, d, 0.0f, d, 0.0f});
  } else if constexpr (T == GgmlType::Q4_1) {
    const float d = load_f16_f16c(b), m = -load_f16_f16c(b + 2);
    sink(0, Chunk{split_nibbles(b + 4), 0, d, m, d, m});
  } else if constexpr (T == GgmlType::Q5_0) {
    const float d = load_f16_f16c(b);
    const __m256i q = _mm256_or_si256(split_nibbles(b + 6), fifth_bits(load_u32(b + 2)));
    sink(0, Chunk{q, 16, d, 0.0f, d, 0.0f});
  } else if constexpr (T == GgmlType::Q5_1) {
    const float d = load_f16_f16c(b), m = -load_f16_f16c(b + 2);
    const __m256i q = _mm256_or_si256(split_nibbles(b + 8), fifth_bits(load_u32(b + 4)));
    sink(0, Chunk{q, 0, d, m, d, m});
  } else if constexpr (T == GgmlType::Q8_0) {
    const float d = load_f16_f16c(b);
    const __m256i biased =
        _mm256_xor_si256(load32(b + 2), _mm256_set1_epi8(static_cast<char>(0x80)));
    sink(0, Chunk{biased, 128, d, 0.0f, d, 0.0f});
  } else if constexpr (T == GgmlType::Q4_K || T == GgmlType::Q5_K) {
    constexpr bool five = T == GgmlType::Q5_K;
    const float d = load_f16_f16c(b), dmin = load_f16_f16c(b + 2);
    const uint8_t* scales = b + 4;
    const __m256i qh = five ? load32(b + 16) : _mm256_setzero_si256();
    const uint8_t* qs = b + (five ? 48 : 16);
    for (int g = 0; g < 4; ++g) {
      int sc0, m0, sc1, m1;
      ggml_detail::k_scale_min(scales, 2 * g, sc0, m0);
      ggml_detail::k_scale_min(scales, 2 * g + 1, sc1, m1);
      const float d0 = d * static_cast<float>(sc0), min0 = dmin * static_cast<float>(m0);
      const float d1 = d * static_cast<float>(sc1), min1 = dmin * static_cast<float>(m1);
      const __m256i bytes = load32(qs + 32 * g);
      __m256i lo = nibbles_lo(bytes), hi = nibbles_hi(bytes);
      if constexpr (five) {
        lo = _mm256_or_si256(lo, byte_bit(qh, 2 * g, 4));
        hi = _mm256_or_si256(hi, byte_bit(qh, 2 * g + 1, 4));
      }
      sink(64 * g, Chunk{lo, 0, d0, min0, d0, min0});
      sink(64 * g + 32, Chunk{hi, 0, d1, min1, d1, min1});
    }
  } else if constexpr (T == GgmlType::Q6_K) {  // the layout is spelled out at ggml_dequant_block
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
    const float d = load_f16_f16c(b + 208);
    for (int h = 0; h < 2; ++h) {
      const __m256i high_bits = load32(qh + 32 * h);
      for (int quarter = 0; quarter < 4; ++quarter) {
        const __m256i low_bytes = load32(ql + 64 * h + (quarter % 2) * 32);
        const __m256i low = quarter < 2 ? nibbles_lo(low_bytes) : nibbles_hi(low_bytes);
        const __m256i high =
            _mm256_and_si256(_mm256_srli_epi16(high_bits, 2 * quarter), _mm256_set1_epi8(3));
        const __m256i q = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
        const int e = 128 * h + 32 * quarter;
        const float s0 = d * static_cast<float>(scales[e / 16]);
        const float s1 = d * static_cast<float>(scales[e / 16 + 1]);
        sink(e, Chunk{q, 32, s0, 0.0f, s1, 0.0f});
      }
    }
  }
}

// Calls fn.template operator()<T>() for the block type `type` (one of the eight).
template <typename Fn>
inline void dispatch_block_type(GgmlType type, Fn&& fn) {
  switch (type) {
    case GgmlType::Q4_0:
      return fn.template operator()<GgmlType::Q4_0>();
    case GgmlType::Q4_1:
      return fn.template operator()<GgmlType::Q4_1>();
    case GgmlType::Q5_0:
      return fn.template operator()<GgmlType::Q5_0>();
    case GgmlType::Q5_1:
      return fn.template operator()<GgmlType::Q5_1>();
    case GgmlType::Q8_0:
      return fn.template operator()<GgmlType::Q8_0>();
    case GgmlType::Q4_K:
      return fn.template operator()<GgmlType::Q4_K>();
    case GgmlType::Q5_K:
      return fn.template operator()<GgmlType::Q5_K>();
    case GgmlType::Q6_K:
      return fn.template operator()<GgmlType::Q6_K>();
    default:
      fail("ggml matmul: ", ggml_type_info(type).name, " is not a block type");
  }
}

// Decode (one token), rows [row_begin, row_end): every block straight into a DotSink.
template <GgmlType T>
[[gnu::target("avx2,fma,f16c")]] inline void ggml_rows_gemv_avx2(const float* x,
                                                                 const float* x_sum16,
                                                                 const GgmlView& w, float* y,
                                                                 int64_t row_begin,
                                                                 int64_t row_end) {
  constexpr GgmlTypeInfo info = ggml_type_info(static_cast<uint32_t>(T));
  const int64_t blocks = w.in / info.block_elems;
  for (int64_t r = row_begin; r < row_end; ++r) {
    DotSink sink{x, x_sum16, _mm256_setzero_ps(), _mm256_setzero_ps()};
    const uint8_t* row = w.row(r);
    for (int64_t b = 0; b < blocks; ++b) {
      sink.x = x + b * info.block_elems;
      sink.x_sum16 = x_sum16 + b * (info.block_elems / 16);
      const uint8_t* block = row + b * info.block_bytes;
      // The hardware prefetcher alone leaves this loop waiting on memory: ask for the bytes
      // PREFETCH_AHEAD ahead (every cache line of that far block).
      for (int64_t line = 0; line < info.block_bytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(block + GGML_PREFETCH_AHEAD + line),
                     _MM_HINT_T0);
      dequant_block_avx2<T>(block, sink);
    }
    y[r] = avx2::hsum(_mm256_add_ps(sink.acc0, sink.acc1)) - sink.bias;
  }
}

[[gnu::target("avx2,fma,f16c")]] inline __m256 dot_block_avx2(const float* w, const float* x,
                                                              int64_t n, __m256 acc) {
  for (int64_t k = 0; k < n; k += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), acc);
  return acc;
}

// Rows [row_begin, row_end) × tokens [tok_begin, tok_end), 4 rows at a time: each 256-weight
// stretch of the 4 rows is dequantized once into a 4 × 256 buffer (4 KiB, L1) and reused for
// every token of the tile by a 4 rows × 2 tokens micro-kernel (8 independent FMA chains, each
// activation load feeding 4 rows). Rows past row_end are zeros, their outputs dropped.
template <GgmlType T>
[[gnu::target("avx2,fma,f16c")]] inline void ggml_rows_avx2(const float* x, const GgmlView& w,
                                                            float* y, int64_t row_begin,
                                                            int64_t row_end, int64_t tok_begin,
                                                            int64_t tok_end) {
  constexpr GgmlTypeInfo info = ggml_type_info(static_cast<uint32_t>(T));
  constexpr int ROWS = 4, STRETCH = 256;
  const int64_t n = tok_end - tok_begin;
  alignas(32) float weights[ROWS][STRETCH];
  __m256 acc[ROWS][GGML_TOKEN_TILE];
  for (int64_t r0 = row_begin; r0 < row_end; r0 += ROWS) {
    const int rows = static_cast<int>(std::min<int64_t>(ROWS, row_end - r0));
    for (int r = 0; r < ROWS; ++r)
      for (int64_t t = 0; t < n; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < w.in; k0 += STRETCH) {
      const int64_t len = std::min<int64_t>(STRETCH, w.in - k0);
      for (int r = 0; r < ROWS; ++r) {
        if (r >= rows) {
          std::fill(weights[r], weights[r] + len, 0.0f);
          continue;
        }
        const uint8_t* blocks = w.row(r0 + r) + k0 / info.block_elems * info.block_bytes;
        for (int64_t e = 0; e < len; e += info.block_elems) {
          StoreSink store{weights[r] + e};
          dequant_block_avx2<T>(blocks + e / info.block_elems * info.block_bytes, store);
        }
      }
      const float* xs = x + tok_begin * w.in + k0;
      int64_t t = 0;
      for (; t + 2 <= n; t += 2) {
        __m256 a[ROWS][2];
        for (int r = 0; r < ROWS; ++r) a[r][0] = acc[r][t], a[r][1] = acc[r][t + 1];
        const float* x0 = xs + t * w.in;
        const float* x1 = x0 + w.in;
        for (int64_t k = 0; k < len; k += 8) {
          const __m256 xv0 = _mm256_loadu_ps(x0 + k), xv1 = _mm256_loadu_ps(x1 + k);
#pragma GCC unroll 4
          for (int r = 0; r < ROWS; ++r) {
            const __m256 wv = _mm256_load_ps(&weights[r][k]);
            a[r][0] = _mm256_fmadd_ps(wv, xv0, a[r][0]);
            a[r][1] = _mm256_fmadd_ps(wv, xv1, a[r][1]);
          }
        }
        for (int r = 0; r < ROWS; ++r) acc[r][t] = a[r][0], acc[r][t + 1] = a[r][1];
      }
      for (; t < n; ++t)
        for (int r = 0; r < ROWS; ++r)
          acc[r][t] = dot_block_avx2(weights[r], xs + t * w.in, len, acc[r][t]);
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t t = 0; t < n; ++t) y[(tok_begin + t) * w.out + r0 + r] = avx2::hsum(acc[r][t]);
  }
}
#endif

inline void ggml_rows_scalar(const float* x, const GgmlView& w, float* y, int64_t row_begin,
                             int64_t row_end, int64_t tok_begin, int64_t tok_end) {
  const GgmlTypeInfo info = ggml_type_info(w.type);
  const int64_t blocks = w.in / info.block_elems;
  float buffer[GGML_MAX_BLOCK];
  float acc[GGML_TOKEN_TILE];
  for (int64_t r = row_begin; r < row_end; ++r) {
    std::fill(acc, acc + (tok_end - tok_begin), 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      ggml_dequant_block(w.type, w.row(r) + b * info.block_bytes, buffer);
      for (int64_t t = tok_begin; t < tok_end; ++t) {
        const float* xb = x + t * w.in + b * info.block_elems;
        for (int64_t k = 0; k < info.block_elems; ++k) acc[t - tok_begin] += buffer[k] * xb[k];
      }
    }
    for (int64_t t = tok_begin; t < tok_end; ++t) y[t * w.out + r] = acc[t - tok_begin];
  }
}

}  // namespace detail

// One block dequantized by the fastest path this CPU has (bitwise what ggml_dequant_block gives).
inline void ggml_dequant_block_fast(GgmlType type, const uint8_t* block, float* out) {
#if defined(__x86_64__)
  if (cpu_has_avx2() && ggml_is_quantized(type) && ggml_type_info(type).supported) {
    detail::StoreSink store{out};
    return detail::dispatch_block_type(
        type, [&]<GgmlType T>() { detail::dequant_block_avx2<T>(block, store); });
  }
#endif
  ggml_dequant_block(type, block, out);
}

// Row r of w -> w.in floats (the embedding lookup of a quantized table).
inline void ggml_dequant_row_fast(const GgmlView& w, int64_t r, float* out) {
  const GgmlTypeInfo info = ggml_type_info(w.type);
  for (int64_t b = 0; b < w.in / info.block_elems; ++b)
    ggml_dequant_block_fast(w.type, w.row(r) + b * info.block_bytes, out + b * info.block_elems);
}

// y[n, out] = x[n, in] · Wᵀ. x and y fp32 contiguous; w in host memory.
inline void matmul_ggml(const Tensor& x, const GgmlView& w, const Tensor& y, ThreadPool& pool) {
  check_matmul_operands("matmul_ggml", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.data == nullptr)
    fail("matmul_ggml: the weight is not in host memory");
  const GgmlTypeInfo info = ggml_type_info(w.type);
  if (!info.supported || !ggml_is_quantized(w.type) || info.block_elems > detail::GGML_MAX_BLOCK ||
      w.in % info.block_elems != 0)
    fail("matmul_ggml: unsupported ", info.name, " weight [", w.out, ", ", w.in, "]");
  const int64_t n = x.dim(0);
  const int64_t row_tasks = (w.out + detail::GGML_ROWS_PER_TASK - 1) / detail::GGML_ROWS_PER_TASK;
  const int64_t token_tiles = (n + detail::GGML_TOKEN_TILE - 1) / detail::GGML_TOKEN_TILE;
  const bool vector_path = cpu_has_avx2();
  const float* xp = x.as<float>();
  float* out = y.as<float>();
  std::vector<float> x_sum16;  // decode: Σ x over every 16 inputs (DotSink's X_g)
  if (n == 1) {
    x_sum16.assign(static_cast<size_t>(w.in / 16), 0.0f);
    for (int64_t i = 0; i < w.in; ++i) x_sum16[i / 16] += xp[i];
  }
  pool.parallel_for(row_tasks * token_tiles, [&](int64_t task) {
    const int64_t row_begin = (task % row_tasks) * detail::GGML_ROWS_PER_TASK;
    const int64_t row_end = std::min(w.out, row_begin + detail::GGML_ROWS_PER_TASK);
    const int64_t tok_begin = (task / row_tasks) * detail::GGML_TOKEN_TILE;
    const int64_t tok_end = std::min(n, tok_begin + detail::GGML_TOKEN_TILE);
#if defined(__x86_64__)
    if (vector_path)
      return detail::dispatch_block_type(w.type, [&]<GgmlType T>() {
        if (n == 1)
          detail::ggml_rows_gemv_avx2<T>(xp, x_sum16.data(), w, out, row_begin, row_end);
        else
          detail::ggml_rows_avx2<T>(xp, w, out, row_begin, row_end, tok_begin, tok_end);
      });
#endif
    (void)vector_path;
    detail::ggml_rows_scalar(xp, w, out, row_begin, row_end, tok_begin, tok_end);
  });
}

}  // namespace hllm::cpu
