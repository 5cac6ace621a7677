// CPU matmul against Q8_0 or Q4_0 ggml blocks (layout/ggml_blocks.hpp) with int8 activations:
// llama.cpp's own arithmetic for these formats (vec_dot_q8_0_q8_0 / vec_dot_q4_0_q8_0). The
// activations are rounded per 32 inputs, the block size of both formats, in natural order:
//
//   y = Σ_blocks d_w·d_x·Σ_k w_k·a_k       w_k ∈ [−128, 127] (Q8_0: q; Q4_0: q − 8), a_k ∈ [−127, 127]
//
// Σ w·a is exact in int32: vpmaddubsw multiplies unsigned by signed bytes, so each block is
// multiplied as |w| · (a with w's sign) (vpsignb), two products per int16 lane (|.| <= 2·128·127 =
// 32512 < 32767), widened by vpmaddwd. The error against the fp32 path (cpu/ggml_matmul.hpp) is
// at most Σ_k |w_k|·d_x/2 per block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace hllm::cpu {

// Activations [n, in] rounded to int8 per 32 inputs, natural order.
struct Q8Blocks {
  int64_t n = 0, in = 0;
  std::vector<int8_t> q;     // [n][in]
  std::vector<float> scale;  // [n][in / 32]: x ≈ scale · q

  const int8_t* row(int64_t t) const { return q.data() + t * in; }
  const float* scales(int64_t t) const { return scale.data() + t * (in / 32); }
};

// d = max|x| / 127 per block of 32, a = round-to-nearest-even(x / d).
inline void quantize_q8_blocks(const float* x, int64_t n, int64_t in, Q8Blocks& out,
                               ThreadPool& pool) {
  out.n = n;
  out.in = in;
  out.q.resize(static_cast<size_t>(n * in));
  out.scale.resize(static_cast<size_t>(n * (in / 32)));
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t b = 0; b < in / 32; ++b) {
      const float* xb = x + t * in + b * 32;
      float amax = 0.0f;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(xb[k]));
      const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      for (int k = 0; k < 32; ++k)
        out.q[t * in + b * 32 + k] = static_cast<int8_t>(
            std::clamp(static_cast<int32_t>(std::nearbyint(xb[k] * inverse)), -127, 127));
      out.scale[t * (in / 32) + b] = amax / 127.0f;
    }
  });
}

// The types this path reads (32-weight blocks of signed integers after a fixed offset).
inline bool ggml_q8_path_supports(GgmlType type) {
  return type == GgmlType::Q8_0 || type == GgmlType::Q4_0;
}

namespace detail {

// Block b of a row as 32 signed weights (natural order) and its fp16 scale.
inline void ggml_signed_block(GgmlType type, const uint8_t* block, int8_t w[32], float& d) {
  d = f16_to_f32(f16{static_cast<uint16_t>(block[0] | block[1] << 8)});
  for (int k = 0; k < 32; ++k)
    w[k] = type == GgmlType::Q8_0
               ? static_cast<int8_t>(block[2 + k])
               : static_cast<int8_t>(((block[2 + k % 16] >> (k < 16 ? 0 : 4)) & 0xF) - 8);
}

inline float ggml_q8_row_scalar(GgmlType type, const uint8_t* row, const Q8Blocks& a, int64_t t) {
  const int64_t block_bytes = ggml_type_info(type).block_bytes;
  float sum = 0.0f;
  for (int64_t b = 0; b < a.in / 32; ++b) {
    int8_t w[32];
    float d = 0.0f;
    ggml_signed_block(type, row + b * block_bytes, w, d);
    int32_t dot = 0;
    for (int k = 0; k < 32; ++k) dot += int32_t{w[k]} * a.row(t)[b * 32 + k];
    sum += d * a.scales(t)[b] * static_cast<float>(dot);
  }
  return sum;
}

#if defined(__x86_64__)
// Blocks are read this far ahead with software prefetches: the Q8_0 lm_head GEMV went from ~85% to
// ~94% of the machine's read bandwidth (2-core Zen 3 VM, cpu_ggml_bench).
inline constexpr int64_t GGML_Q8_PREFETCH_BYTES = 2048;

template <GgmlType TYPE>
[[gnu::target("avx2,fma,f16c")]] inline __m256i ggml_signed_block_avx2(const uint8_t* block) {
  if constexpr (TYPE == GgmlType::Q8_0) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
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
  constexpr int64_t BLOCK_BYTES = TYPE == GgmlType::Q8_0 ? 34 : 18;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[TOKENS];
  for (__m256& v : acc) v = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.in / 32; ++b) {  // (the unroll pragma keeps acc in registers at -O2)
    const uint8_t* block = row + b * BLOCK_BYTES;
    if constexpr (PREFETCH)
      _mm_prefetch(reinterpret_cast<const char*>(block) + GGML_Q8_PREFETCH_BYTES, _MM_HINT_T0);
    const __m256i w = ggml_signed_block_avx2<TYPE>(block);
    const __m256i w_abs = _mm256_abs_epi8(w);
    const float d_w = _cvtsh_ss(static_cast<uint16_t>(block[0] | block[1] << 8));
#pragma GCC unroll 4
    for (int j = 0; j < TOKENS; ++j) {
      const __m256i xv =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.row(t + j) + b * 32));
      const __m256i dot =
          _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xv, w)), ones);
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d_w * a.scales(t + j)[b]),
                               acc[j]);
    }
  }
  for (int j = 0; j < TOKENS; ++j) y[(t + j) * y_stride] = avx2::hsum(acc[j]);
}

// Tokens [t, t + TOKENS) of one row.
template <int TOKENS>
inline void ggml_q8_rows_avx2(GgmlType type, const uint8_t* row, const Q8Blocks& a, int64_t t,
                              float* y, int64_t y_stride) {
  if (type == GgmlType::Q8_0)
    return t == 0 ? ggml_q8_row_avx2<GgmlType::Q8_0, TOKENS, true>(row, a, t, y, y_stride)
                  : ggml_q8_row_avx2<GgmlType::Q8_0, TOKENS, false>(row, a, t, y, y_stride);
  return t == 0 ? ggml_q8_row_avx2<GgmlType::Q4_0, TOKENS, true>(row, a, t, y, y_stride)
                : ggml_q8_row_avx2<GgmlType::Q4_0, TOKENS, false>(row, a, t, y, y_stride);
}
#endif

}  // namespace detail

// y[n, out] = x[n, in] · Wᵀ for a Q8_0 / Q4_0 weight, with int8 activations (`q8` holds them
// between calls). isa: scalar or avx2 (the AVX2 kernel also serves AVX-512 machines).
inline void matmul_ggml_q8(const Tensor& x, const GgmlView& w, const Tensor& y, ThreadPool& pool,
                           Q8Blocks& q8, CpuIsa isa = cpu_isa()) {
  check_matmul_operands("matmul_ggml_q8", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.data == nullptr)
    fail("matmul_ggml_q8: the weight is not in host memory");
  if (!ggml_q8_path_supports(w.type) || w.in % 32 != 0)
    fail("matmul_ggml_q8: ", ggml_type_info(w.type).name, " weight [", w.out, ", ", w.in,
         "] (Q8_0 or Q4_0 only)");
  if (isa > cpu_isa_supported())
    fail("matmul_ggml_q8: ", isa_name(isa), " is not supported by this CPU");
  const int64_t n = x.dim(0);
  quantize_q8_blocks(x.as<float>(), n, w.in, q8, pool);
  constexpr int64_t ROWS_PER_TASK = 16;
  // Tokens per pass over a row's blocks (a batched decode's lm_head: each block is unpacked once
  // for all of them; 4 accumulators + the block's registers fit AVX2's 16).
  constexpr int GGML_Q8_TOKENS_PER_PASS = 4;
  float* out = y.as<float>();
  pool.parallel_for((w.out + ROWS_PER_TASK - 1) / ROWS_PER_TASK, [&](int64_t task) {
    const int64_t row_end = std::min(w.out, (task + 1) * ROWS_PER_TASK);
    for (int64_t r = task * ROWS_PER_TASK; r < row_end; ++r) {
      int64_t t = 0;
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        for (; t + GGML_Q8_TOKENS_PER_PASS <= n; t += GGML_Q8_TOKENS_PER_PASS)
          detail::ggml_q8_rows_avx2<GGML_Q8_TOKENS_PER_PASS>(w.type, w.row(r), q8, t, out + r,
                                                             w.out);
        for (; t < n; ++t) detail::ggml_q8_rows_avx2<1>(w.type, w.row(r), q8, t, out + r, w.out);
      }
#endif
      for (; t < n; ++t) out[t * w.out + r] = detail::ggml_q8_row_scalar(w.type, w.row(r), q8, t);
    }
  });
}

}  // namespace hllm::cpu
