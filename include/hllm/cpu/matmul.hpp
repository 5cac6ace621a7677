// CPU matmul against a row-major matrix: y[n, out] = x[n, in] · W[out, in]ᵀ (nn.Linear), fp32
// activations, W in bf16 / f16 / f32 converted on the fly, fp32 accumulation. For products of
// matrices as they come (GPTQ's Hessians: xᵀx); a model's weights are copied into row panels at
// load and run through cpu/matmul_panels.hpp.
//
// Work split: the output is cut into tiles of ROW_TILE weight rows × TOKEN_TILE tokens, one task
// each. Inside a tile the micro-kernel computes 4 weight rows × 2 tokens at a time: every weight
// vector loaded (and widened to fp32) is used for 2 tokens and every activation vector for 4 rows,
// 8 accumulators + 4 weights + 2 activations = 14 of the 16 AVX2 registers.
//
//            in ───────────►
//   W  out  [r0 ......... ]  ┐ 4 rows share each x load
//      │    [r1 ......... ]  │
//      ▼    [r2 ......... ]  │      x  [t0 ......... ]  ┐ 2 tokens share each W load
//           [r3 ......... ]  ┘         [t1 ......... ]  ┘
//
// Decode (n = 1) is a GEMV and bound by reading W once: bytes = out * in * sizeof(W).
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/simd.hpp"

namespace hllm::cpu {

namespace detail {

inline constexpr int64_t ROW_TILE = 16;    // weight rows per task: 16 * in * 2 B stays in L2
inline constexpr int64_t TOKEN_TILE = 64;  // tokens per task: bounds the activation working set

// Portable micro-kernel: one weight row against one token.
template <typename W>
void matmul_tile_scalar(const float* x, const W* w, float* y, int64_t in, int64_t out,
                        int64_t row_begin, int64_t row_end, int64_t tok_begin, int64_t tok_end) {
  for (int64_t t = tok_begin; t < tok_end; ++t)
    for (int64_t r = row_begin; r < row_end; ++r) y[t * out + r] = dot(x + t * in, w + r * in, in);
}

#if defined(__x86_64__)
// ROWS weight rows × TOKENS tokens; `in` tail (in % 8) done in scalar.
template <int ROWS, int TOKENS, typename W>
[[gnu::target("avx2,fma,f16c")]] inline void matmul_micro_avx2(const float* x, const W* w, float* y,
                                                               int64_t in, int64_t out, int64_t row,
                                                               int64_t tok) {
  __m256 acc[ROWS][TOKENS];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= in; k += 8) {
    __m256 xv[TOKENS];
#pragma GCC unroll 2
    for (int t = 0; t < TOKENS; ++t) xv[t] = _mm256_loadu_ps(x + (tok + t) * in + k);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const __m256 wv = avx2::load8_f32(w + (row + r) * in + k);
#pragma GCC unroll 2
      for (int t = 0; t < TOKENS; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    for (int t = 0; t < TOKENS; ++t) {
      float sum = avx2::hsum(acc[r][t]);
      for (int64_t kk = k; kk < in; ++kk)
        sum += x[(tok + t) * in + kk] * to_f32(w[(row + r) * in + kk]);
      y[(tok + t) * out + row + r] = sum;
    }
  }
}

template <typename W>
[[gnu::target("avx2,fma,f16c")]] void matmul_tile_avx2(const float* x, const W* w, float* y,
                                                       int64_t in, int64_t out, int64_t row_begin,
                                                       int64_t row_end, int64_t tok_begin,
                                                       int64_t tok_end) {
  int64_t t = tok_begin;
  for (; t + 2 <= tok_end; t += 2) {
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) matmul_micro_avx2<4, 2>(x, w, y, in, out, r, t);
    for (; r < row_end; ++r) matmul_micro_avx2<1, 2>(x, w, y, in, out, r, t);
  }
  for (; t < tok_end; ++t) {
    int64_t r = row_begin;
    for (; r + 4 <= row_end; r += 4) matmul_micro_avx2<4, 1>(x, w, y, in, out, r, t);
    for (; r < row_end; ++r) matmul_micro_avx2<1, 1>(x, w, y, in, out, r, t);
  }
}
#endif

template <typename W>
void matmul_typed(const float* x, const W* w, float* y, int64_t n, int64_t in, int64_t out,
                  ThreadPool& pool) {
  const int64_t row_tiles = (out + ROW_TILE - 1) / ROW_TILE;
  const int64_t token_tiles = (n + TOKEN_TILE - 1) / TOKEN_TILE;
  const bool vector_path = cpu_has_avx2();
  pool.parallel_for(row_tiles * token_tiles, [&](int64_t task) {
    const int64_t row_begin = (task % row_tiles) * ROW_TILE;
    const int64_t tok_begin = (task / row_tiles) * TOKEN_TILE;
    const int64_t row_end = std::min(out, row_begin + ROW_TILE);
    const int64_t tok_end = std::min(n, tok_begin + TOKEN_TILE);
#if defined(__x86_64__)
    if (vector_path)
      return matmul_tile_avx2(x, w, y, in, out, row_begin, row_end, tok_begin, tok_end);
#endif
    (void)vector_path;
    matmul_tile_scalar(x, w, y, in, out, row_begin, row_end, tok_begin, tok_end);
  });
}

}  // namespace detail

// y[n, out] = x[n, in] · w[out, in]ᵀ. x and y fp32 contiguous; w contiguous bf16 / f16 / f32.
inline void matmul(const Tensor& x, const Tensor& w, const Tensor& y, ThreadPool& pool) {
  if (w.rank() != 2)
    fail("matmul: shapes x ", x.shape.str(), " · w ", w.shape.str(), "ᵀ -> y ", y.shape.str(),
         " do not match");
  check_matmul_operands("matmul", x, y, w.dim(1), w.dim(0));
  if (!w.is_contiguous()) fail("matmul: tensors must be contiguous");
  const int64_t n = x.dim(0), in = x.dim(1), out = w.dim(0);
  visit_float_dtype(w.dtype, "matmul: weight", [&]<typename T>(std::type_identity<T>) {
    detail::matmul_typed(x.as<float>(), w.as<T>(), y.as<float>(), n, in, out, pool);
  });
}

}  // namespace hllm::cpu
