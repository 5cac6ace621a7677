// CPU matmul against a weight in ggml blocks (a GGUF file's Q4_0 ... Q6_K, layout/ggml_blocks.hpp),
// read in place: y[n, out] = x[n, in] · Wᵀ with fp32 activations and accumulation.
//
// Work split: tasks of GGML_ROWS_PER_TASK output rows × GGML_TOKEN_TILE tokens. Each weight block
// is dequantized once per task into a 256-float buffer (1 KiB, stays in L1) and dotted with the
// task's tokens, so the blocks are streamed from memory once per token tile and never expanded
// to a full fp32 copy. Decode (one token) skips the buffer: the dequantized vectors go straight
// into four FMA accumulators. The AVX2 dequantizers below compute exactly what ggml_dequant_block
// computes (same fp32 operations, bitwise equal: tested), so the two paths agree.
//
// Bytes moved per call (what the benchmark counts): GgmlView::nbytes(), the blocks as stored.
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm::cpu {

namespace detail {

inline constexpr int64_t GGML_ROWS_PER_TASK = 8;
inline constexpr int64_t GGML_TOKEN_TILE = 16;
inline constexpr int64_t GGML_MAX_BLOCK = 256;

#if defined(__x86_64__)
// 8 bytes (the low 8 of v) -> 8 floats: unsigned codes minus `offset`.
[[gnu::target("avx2,fma,f16c")]] inline __m256 codes8(__m128i v, int offset) {
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(v), _mm256_set1_epi32(offset)));
}

// Where the dequantized weights go, 32 at a time (four vectors of 8 consecutive weights starting
// at element k of the block): stored into a buffer, or dotted with the activations at once.
struct StoreSink {
  float* out;
  [[gnu::target("avx2,fma,f16c")]] void operator()(int k, __m256 v0, __m256 v1, __m256 v2,
                                                   __m256 v3) {
    _mm256_storeu_ps(out + k, v0);
    _mm256_storeu_ps(out + k + 8, v1);
    _mm256_storeu_ps(out + k + 16, v2);
    _mm256_storeu_ps(out + k + 24, v3);
  }
};
// Decode: acc += w · x, four independent accumulators (FMA latency).
struct DotSink {
  const float* x;  // the block's activations
  __m256 acc[4];
  [[gnu::target("avx2,fma,f16c")]] void operator()(int k, __m256 v0, __m256 v1, __m256 v2,
                                                   __m256 v3) {
    acc[0] = _mm256_fmadd_ps(v0, _mm256_loadu_ps(x + k), acc[0]);
    acc[1] = _mm256_fmadd_ps(v1, _mm256_loadu_ps(x + k + 8), acc[1]);
    acc[2] = _mm256_fmadd_ps(v2, _mm256_loadu_ps(x + k + 16), acc[2]);
    acc[3] = _mm256_fmadd_ps(v3, _mm256_loadu_ps(x + k + 24), acc[3]);
  }
};

// 8 codes (the low 8 bytes) -> scale · (code − offset) − min: mul then sub, as the scalar
// dequantizer evaluates it (min 0: subtracting +0 changes nothing, −0 aside).
[[gnu::target("avx2,fma,f16c")]] inline __m256 scaled8(__m128i bytes, int offset, __m256 scale,
                                                       __m256 min) {
  return _mm256_sub_ps(_mm256_mul_ps(codes8(bytes, offset), scale), min);
}

// 32 codes (bytes of v, each 0..63) -> weights k .. k + 31 into `sink`; the scale and min of the
// first 16 codes are (s0, m0), of the last 16 (s1, m1).
template <typename Sink>
[[gnu::target("avx2,fma,f16c")]] inline void emit32(__m256i v, int offset, float s0, float m0,
                                                    float s1, float m1, int k, Sink& sink) {
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  const __m256 scale0 = _mm256_set1_ps(s0), min0 = _mm256_set1_ps(m0);
  const __m256 scale1 = _mm256_set1_ps(s1), min1 = _mm256_set1_ps(m1);
  sink(k, scaled8(lo, offset, scale0, min0), scaled8(_mm_srli_si128(lo, 8), offset, scale0, min0),
       scaled8(hi, offset, scale1, min1), scaled8(_mm_srli_si128(hi, 8), offset, scale1, min1));
}

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

// One block's weights, 32 at a time, into `sink`. Returns false for the types it has no vector
// path for (the caller uses the scalar one).
template <typename Sink>
[[gnu::target("avx2,fma,f16c")]] inline bool dequant_block_avx2(GgmlType type, const uint8_t* b,
                                                                Sink& sink) {
  using ggml_detail::load_f16;
  switch (type) {
    case GgmlType::Q4_0: {  // d·(q − 8); bytes i hold elements i and i + 16
      const float d = load_f16(b);
      const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
      const __m256i both = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(15)),
                                            _mm_and_si128(qs, _mm_set1_epi8(15)));
      emit32(both, 8, d, 0.0f, d, 0.0f, 0, sink);
      return true;
    }
    case GgmlType::Q8_0: {
      const __m256 d = _mm256_set1_ps(load_f16(b));
      __m256 v[4];
      for (int j = 0; j < 4; ++j) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * j));
        v[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
      }
      sink(0, v[0], v[1], v[2], v[3]);
      return true;
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const bool five = type == GgmlType::Q5_K;
      const float d = load_f16(b), dmin = load_f16(b + 2);
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
        if (five) {
          lo = _mm256_or_si256(lo, byte_bit(qh, 2 * g, 4));
          hi = _mm256_or_si256(hi, byte_bit(qh, 2 * g + 1, 4));
        }
        emit32(lo, 0, d0, min0, d0, min0, 64 * g, sink);
        emit32(hi, 0, d1, min1, d1, min1, 64 * g + 32, sink);
      }
      return true;
    }
    case GgmlType::Q6_K: {  // the layout is spelled out at ggml_dequant_block
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
      const float d = load_f16(b + 208);
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
          emit32(q, 32, s0, 0.0f, s1, 0.0f, e, sink);
        }
      }
      return true;
    }
    default:
      return false;
  }
}

[[gnu::target("avx2,fma,f16c")]] inline __m256 dot_block_avx2(const float* w, const float* x,
                                                              int64_t n, __m256 acc) {
  for (int64_t k = 0; k < n; k += 8)
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), acc);
  return acc;
}

// Decode (one token): each block dequantized in registers straight into the dot product.
[[gnu::target("avx2,fma,f16c")]] inline void ggml_rows_gemv_avx2(const float* x, const GgmlView& w,
                                                                 float* y, int64_t row_begin,
                                                                 int64_t row_end) {
  const GgmlTypeInfo info = ggml_type_info(w.type);
  const int64_t blocks = w.in / info.block_elems;
  alignas(32) float buffer[GGML_MAX_BLOCK];
  for (int64_t r = row_begin; r < row_end; ++r) {
    DotSink sink{
        x, {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}};
    const uint8_t* row = w.row(r);
    for (int64_t b = 0; b < blocks; ++b) {
      sink.x = x + b * info.block_elems;
      const uint8_t* block = row + b * info.block_bytes;
      if (dequant_block_avx2(w.type, block, sink)) continue;
      ggml_dequant_block(w.type, block, buffer);
      for (int k = 0; k < info.block_elems; k += 32)
        sink(k, _mm256_load_ps(buffer + k), _mm256_load_ps(buffer + k + 8),
             _mm256_load_ps(buffer + k + 16), _mm256_load_ps(buffer + k + 24));
    }
    y[r] = avx2::hsum(_mm256_add_ps(_mm256_add_ps(sink.acc[0], sink.acc[1]),
                                    _mm256_add_ps(sink.acc[2], sink.acc[3])));
  }
}

// Rows [row_begin, row_end) × tokens [tok_begin, tok_end).
[[gnu::target("avx2,fma,f16c")]] inline void ggml_rows_avx2(const float* x, const GgmlView& w,
                                                            float* y, int64_t row_begin,
                                                            int64_t row_end, int64_t tok_begin,
                                                            int64_t tok_end) {
  const GgmlTypeInfo info = ggml_type_info(w.type);
  const int64_t blocks = w.in / info.block_elems, n = tok_end - tok_begin;
  alignas(32) float buffer[GGML_MAX_BLOCK];
  __m256 acc[GGML_TOKEN_TILE];
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t = 0; t < n; ++t) acc[t] = _mm256_setzero_ps();
    const uint8_t* row = w.row(r);
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * info.block_bytes;
      StoreSink store{buffer};
      if (!dequant_block_avx2(w.type, block, store)) ggml_dequant_block(w.type, block, buffer);
      const float* xb = x + tok_begin * w.in + b * info.block_elems;
      for (int64_t t = 0; t < n; ++t)
        acc[t] = dot_block_avx2(buffer, xb + t * w.in, info.block_elems, acc[t]);
    }
    for (int64_t t = 0; t < n; ++t) y[(tok_begin + t) * w.out + r] = avx2::hsum(acc[t]);
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
  detail::StoreSink store{out};
  if (cpu_has_avx2() && detail::dequant_block_avx2(type, block, store)) return;
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
  if (x.rank() != 2 || y.rank() != 2 || x.dim(1) != w.in || y.dim(0) != x.dim(0) ||
      y.dim(1) != w.out)
    fail("matmul_ggml: shapes x ", x.shape.str(), " · w [", w.out, ", ", w.in, "]ᵀ -> y ",
         y.shape.str(), " do not match");
  if (x.dtype != DType::f32 || y.dtype != DType::f32) fail("matmul_ggml: activations must be f32");
  if (!x.is_contiguous() || !y.is_contiguous()) fail("matmul_ggml: tensors must be contiguous");
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
  pool.parallel_for(row_tasks * token_tiles, [&](int64_t task) {
    const int64_t row_begin = (task % row_tasks) * detail::GGML_ROWS_PER_TASK;
    const int64_t row_end = std::min(w.out, row_begin + detail::GGML_ROWS_PER_TASK);
    const int64_t tok_begin = (task / row_tasks) * detail::GGML_TOKEN_TILE;
    const int64_t tok_end = std::min(n, tok_begin + detail::GGML_TOKEN_TILE);
#if defined(__x86_64__)
    if (vector_path && n == 1) return detail::ggml_rows_gemv_avx2(xp, w, out, row_begin, row_end);
    if (vector_path)
      return detail::ggml_rows_avx2(xp, w, out, row_begin, row_end, tok_begin, tok_end);
#endif
    (void)vector_path;
    detail::ggml_rows_scalar(xp, w, out, row_begin, row_end, tok_begin, tok_end);
  });
}

}  // namespace hllm::cpu
