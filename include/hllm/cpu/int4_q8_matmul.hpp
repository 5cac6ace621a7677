// CPU matmul against an INT4 weight (layout/int4_tiles.hpp) with int8 activations, W4A8: the
// activations are rounded to int8 per 32-input chunk (cpu/q8_activations.hpp: the numerics and the
// activation order) and every chunk's dot product with a tile row is an integer one
// (cpu/int4_q8_kernels.hpp, cpu/int4_q8_kernels_avx512.hpp).
//
// Work split as in the fp32 path: tasks of row strips × token tiles. A strip's tiles stay in L1/L2
// while the task runs its tokens, several tokens per load of the codes (Q8_AVX2_TOKENS_PER_PASS,
// Q8_AVX512_TOKENS_PER_PASS).
//
// AVX-512 passes of 2 or more tokens transpose a tile's rows, and passes of 16 tokens take a
// task's 16 rows at once (cpu/int4_q8_kernels_avx512.hpp); one token keeps the per-row layout.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/int4_matmul.hpp"
#include "hllm/cpu/int4_q8_kernels.hpp"
#include "hllm/cpu/int4_q8_kernels_avx512.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/matmul_operands.hpp"
#include "hllm/cpu/q8_activations.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cpu {

namespace detail {

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
