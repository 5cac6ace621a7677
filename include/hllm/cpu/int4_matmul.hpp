// CPU matmul against an INT4 weight in hllm's tile layout (layout/int4_tiles.hpp), W4A32:
// y[n, out] = x[n, in] · Wᵀ with W dequantized on the fly by int4_dequant, fp32 accumulation.
//
// 1. Packed activations: when the weight's input order is not the identity (GPTQ act-order, or
//    padding), x is gathered once per call into `scratch` [n, packed_in] (zeros at padding), so the
//    hot loop reads activations contiguously and never looks up a group per element.
// 2. Work split: tasks of STRIPS_PER_TASK row strips (4 output rows each) × TOKEN_TILE tokens.
//    - decode (1 token): int4_dequant summed over a tile (one group) is factored,
//      s·(Σ q·x − z·Σ x): codes -> fp32 -> fma with x, the scale applied once per tile and row;
//      the 32 activations of a 16-byte chunk of codes are loaded once for the strip's 4 rows.
//    - small batches / prefill: each tile is dequantized once (int4_dequant, evaluated exactly as
//      fma(code, s, −z·s)) into a 4 × 128 fp32 buffer (2 KiB, stays in L1) and reused for every
//      token of the task by a 4 rows × 2 tokens micro-kernel.
//
// Bytes moved per call (what the benchmark counts): n_tiles × 272 (codes + scales + zeros).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cpu {

namespace detail {

inline constexpr int64_t INT4_STRIPS_PER_TASK = 4;  // 16 output rows per task
inline constexpr int64_t INT4_TOKEN_TILE = 32;      // tokens per task: 4 × 32 accumulators fit L1

// Portable path: every weight through int4_weight (the shared helper).
inline void int4_strip_scalar(const float* x, const Int4View& w, float* y, int64_t strip,
                              int64_t tok_begin, int64_t tok_end) {
  const int64_t packed = w.packed_in();
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int64_t t = tok_begin; t < tok_end; ++t)
    for (int r = 0; r < rows; ++r) {
      float sum = 0.0f;
      for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
        const int4_tile& tile = w.tile(strip, kt);
        const float* xt = x + t * packed + kt * INT4_TILE_K;
        for (int k = 0; k < INT4_TILE_K; ++k) sum += int4_weight(tile, r, k) * xt[k];
      }
      y[t * w.out + strip * INT4_TILE_ROWS + r] = sum;
    }
}

#if defined(__x86_64__)
// Scale and -zero*scale of the tile's 4 rows, from its 16-byte header.
[[gnu::target("avx2,fma,f16c")]] inline void int4_tile_params(const int4_tile& tile, float scale[4],
                                                              float neg_zero_scale[4]) {
  alignas(32) float params[8];
  _mm256_store_ps(params,
                  _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(&tile))));
  for (int r = 0; r < INT4_TILE_ROWS; ++r) {
    scale[r] = params[r];
    neg_zero_scale[r] = -params[4 + r] * params[r];  // exact: fp16 scale × integer zero
  }
}

// 8 codes (the low 8 bytes) -> 8 dequantized weights.
[[gnu::target("avx2,fma,f16c")]] inline __m256 int4_dequant8(__m128i eight_codes, __m256 scale,
                                                             __m256 neg_zero_scale) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight_codes)), scale,
                         neg_zero_scale);
}

// The 32 weights of one 16-byte chunk, dequantized: out[j] holds inputs 8j .. 8j + 7.
[[gnu::target("avx2,fma,f16c")]] inline void int4_dequant_chunk(const uint8_t* codes, __m256 scale,
                                                                __m256 neg_zero_scale,
                                                                __m256 out[4]) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);                     // inputs 0 .. 15
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);  // inputs 16 .. 31
  out[0] = int4_dequant8(lo, scale, neg_zero_scale);
  out[1] = int4_dequant8(_mm_srli_si128(lo, 8), scale, neg_zero_scale);
  out[2] = int4_dequant8(hi, scale, neg_zero_scale);
  out[3] = int4_dequant8(_mm_srli_si128(hi, 8), scale, neg_zero_scale);
}

// 8 codes (the low 8 bytes) -> 8 floats, not yet scaled.
[[gnu::target("avx2,fma,f16c")]] inline __m256 int4_codes8(__m128i eight_codes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight_codes));
}

// Decode: one strip (4 rows) × one token. The scale is factored out of each tile (one group):
//   Σ_k x_k · s(q_k − z) = s · (Σ_k q_k x_k − z · Σ_k x_k)        (int4_dequant summed over a tile)
// so the inner loop is code -> fp32 -> fma with x, and each row adds s·acc_tile once per tile;
// x_sum[kt] = Σ x over tile kt is computed once per call by the caller.
[[gnu::target("avx2,fma,f16c")]] inline void int4_strip_gemv_avx2(const float* x,
                                                                  const float* x_sum,
                                                                  const Int4View& w, float* y,
                                                                  int64_t strip) {
  __m256 acc[INT4_TILE_ROWS];
  float zero_term[INT4_TILE_ROWS] = {};
  for (auto& a : acc) a = _mm256_setzero_ps();
  const __m128i mask = _mm_set1_epi8(0x0F);
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile& tile = w.tile(strip, kt);
    float scale[4], nzs[4];
    int4_tile_params(tile, scale, nzs);
    const float* xt = x + kt * INT4_TILE_K;
    __m256 tile_acc[INT4_TILE_ROWS];
    for (auto& a : tile_acc) a = _mm256_setzero_ps();
    for (int c = 0; c < INT4_TILE_K / INT4_CHUNK_K; ++c) {
      const float* xc = xt + c * INT4_CHUNK_K;
      const __m256 x0 = _mm256_loadu_ps(xc), x1 = _mm256_loadu_ps(xc + 8),
                   x2 = _mm256_loadu_ps(xc + 16), x3 = _mm256_loadu_ps(xc + 24);
#pragma GCC unroll 4
      for (int r = 0; r < INT4_TILE_ROWS; ++r) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(tile.q[r] + c * 16));
        const __m128i lo = _mm_and_si128(bytes, mask);
        const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
        tile_acc[r] = _mm256_fmadd_ps(int4_codes8(lo), x0, tile_acc[r]);
        tile_acc[r] = _mm256_fmadd_ps(int4_codes8(_mm_srli_si128(lo, 8)), x1, tile_acc[r]);
        tile_acc[r] = _mm256_fmadd_ps(int4_codes8(hi), x2, tile_acc[r]);
        tile_acc[r] = _mm256_fmadd_ps(int4_codes8(_mm_srli_si128(hi, 8)), x3, tile_acc[r]);
      }
    }
    for (int r = 0; r < INT4_TILE_ROWS; ++r) {
      acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale[r]), tile_acc[r], acc[r]);
      zero_term[r] += nzs[r] * x_sum[kt];  // nzs = −z·s
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int r = 0; r < rows; ++r) y[strip * INT4_TILE_ROWS + r] = avx2::hsum(acc[r]) + zero_term[r];
}

// Batches: one strip × tokens [tok_begin, tok_end) (at most INT4_TOKEN_TILE).
[[gnu::target("avx2,fma,f16c")]] inline void int4_strip_gemm_avx2(const float* x, const Int4View& w,
                                                                  float* y, int64_t strip,
                                                                  int64_t tok_begin,
                                                                  int64_t tok_end) {
  const int64_t packed = w.packed_in();
  const int64_t n = tok_end - tok_begin;
  alignas(32) float weights[INT4_TILE_ROWS][INT4_TILE_K];  // the tile, dequantized
  __m256 acc[INT4_TILE_ROWS][INT4_TOKEN_TILE];
  for (int r = 0; r < INT4_TILE_ROWS; ++r)
    for (int64_t t = 0; t < n; ++t) acc[r][t] = _mm256_setzero_ps();
  for (int64_t kt = 0; kt < w.k_tiles; ++kt) {
    const int4_tile& tile = w.tile(strip, kt);
    float scale[4], nzs[4];
    int4_tile_params(tile, scale, nzs);
    for (int r = 0; r < INT4_TILE_ROWS; ++r)
      for (int c = 0; c < INT4_TILE_K / INT4_CHUNK_K; ++c) {
        __m256 wv[4];
        int4_dequant_chunk(tile.q[r] + c * 16, _mm256_set1_ps(scale[r]), _mm256_set1_ps(nzs[r]),
                           wv);
        for (int j = 0; j < 4; ++j) _mm256_store_ps(&weights[r][c * 32 + j * 8], wv[j]);
      }
    const float* xt = x + tok_begin * packed + kt * INT4_TILE_K;
    int64_t t = 0;
    for (; t + 2 <= n; t += 2) {
      __m256 a[4][2];
      for (int r = 0; r < 4; ++r) a[r][0] = acc[r][t], a[r][1] = acc[r][t + 1];
      const float* x0 = xt + t * packed;
      const float* x1 = x0 + packed;
      for (int k = 0; k < INT4_TILE_K; k += 8) {
        const __m256 xv0 = _mm256_loadu_ps(x0 + k), xv1 = _mm256_loadu_ps(x1 + k);
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const __m256 wv = _mm256_load_ps(&weights[r][k]);
          a[r][0] = _mm256_fmadd_ps(wv, xv0, a[r][0]);
          a[r][1] = _mm256_fmadd_ps(wv, xv1, a[r][1]);
        }
      }
      for (int r = 0; r < 4; ++r) acc[r][t] = a[r][0], acc[r][t + 1] = a[r][1];
    }
    for (; t < n; ++t) {
      const float* x0 = xt + t * packed;
      for (int r = 0; r < 4; ++r) {
        __m256 a = acc[r][t];
        for (int k = 0; k < INT4_TILE_K; k += 8)
          a = _mm256_fmadd_ps(_mm256_load_ps(&weights[r][k]), _mm256_loadu_ps(x0 + k), a);
        acc[r][t] = a;
      }
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(INT4_TILE_ROWS, w.out - strip * 4));
  for (int64_t t = 0; t < n; ++t)
    for (int r = 0; r < rows; ++r)
      y[(tok_begin + t) * w.out + strip * INT4_TILE_ROWS + r] = avx2::hsum(acc[r][t]);
}
#endif

}  // namespace detail

// x [n, in] in packed input order: gathered into `scratch` when the weight needs it, else x.
inline const float* int4_packed_activations(const Tensor& x, const Int4View& w,
                                            std::vector<float>& scratch, ThreadPool& pool) {
  const int64_t n = x.dim(0), in = w.in, packed = w.packed_in();
  if (w.input_index == nullptr) return x.as<float>();
  scratch.resize(static_cast<size_t>(n * packed));
  const float* src = x.as<float>();
  float* dst = scratch.data();
  const int32_t* index = w.input_index;
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t p = 0; p < packed; ++p)
      dst[t * packed + p] = index[p] >= 0 ? src[t * in + index[p]] : 0.0f;
  });
  return dst;
}

// y[n, out] = x[n, in] · Wᵀ. x and y fp32 contiguous; w a host INT4 matrix. `scratch` holds the
// packed activations between calls (grown on demand).
inline void matmul_int4(const Tensor& x, const Int4View& w, const Tensor& y, ThreadPool& pool,
                        std::vector<float>& scratch) {
  check_matmul_operands("matmul_int4", x, y, w.in, w.out);
  if (w.device != Device::cpu || w.tiles == nullptr)
    fail("matmul_int4: the weight is not in host memory");
  const int64_t n = x.dim(0);
  const float* xp = int4_packed_activations(x, w, scratch, pool);
  float* out = y.as<float>();
  const int64_t strips = w.strips();
  const int64_t strip_tasks =
      (strips + detail::INT4_STRIPS_PER_TASK - 1) / detail::INT4_STRIPS_PER_TASK;
  const int64_t token_tiles = (n + detail::INT4_TOKEN_TILE - 1) / detail::INT4_TOKEN_TILE;
  const bool vector_path = cpu_has_avx2();
  std::vector<float> x_sum;  // decode: Σ x over each tile of packed inputs
  if (n == 1) {
    x_sum.assign(static_cast<size_t>(w.k_tiles), 0.0f);
    for (int64_t kt = 0; kt < w.k_tiles; ++kt)
      for (int k = 0; k < INT4_TILE_K; ++k) x_sum[kt] += xp[kt * INT4_TILE_K + k];
  }
  pool.parallel_for(strip_tasks * token_tiles, [&](int64_t task) {
    const int64_t strip_begin = (task % strip_tasks) * detail::INT4_STRIPS_PER_TASK;
    const int64_t strip_end = std::min(strips, strip_begin + detail::INT4_STRIPS_PER_TASK);
    const int64_t tok_begin = (task / strip_tasks) * detail::INT4_TOKEN_TILE;
    const int64_t tok_end = std::min(n, tok_begin + detail::INT4_TOKEN_TILE);
    for (int64_t s = strip_begin; s < strip_end; ++s) {
#if defined(__x86_64__)
      if (vector_path) {
        if (n == 1)
          detail::int4_strip_gemv_avx2(xp, x_sum.data(), w, out, s);
        else
          detail::int4_strip_gemm_avx2(xp, w, out, s, tok_begin, tok_end);
        continue;
      }
#endif
      (void)vector_path;
      detail::int4_strip_scalar(xp, w, out, s, tok_begin, tok_end);
    }
  });
}

}  // namespace hllm::cpu
