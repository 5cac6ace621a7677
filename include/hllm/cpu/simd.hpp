// SIMD building blocks for the CPU backend, with runtime dispatch (cpu/isa.hpp): an AVX2 + FMA +
// F16C path (any x86-64 from 2013 on) and a portable scalar path used elsewhere. The vector paths are compiled
// with per-function target attributes, so the library needs no -march flag and runs on any x86-64
// CPU.
//
// load8_f32(p) widens 8 consecutive weights of any storage dtype to fp32 lanes:
//   bf16 -> zero-extend to 32 bits and shift left 16 (bf16 is the top half of an fp32)
//   f16  -> vcvtph2ps (F16C)
//   f32  -> plain load
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "hllm/core/dtype.hpp"
#include "hllm/cpu/isa.hpp"

// The AVX2 functions carry [[gnu::target("avx2,fma,f16c")]] and sit under `#if defined(__x86_64__)`
// (no macros of our own, so nothing leaks into the including program).
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace hllm::cpu {

inline float to_f32(float x) { return x; }
inline float to_f32(bf16 x) { return bf16_to_f32(x); }
inline float to_f32(f16 x) { return f16_to_f32(x); }

// True when the AVX2 paths may run (cpu/isa.hpp: the CPU supports them and HLLM_CPU_ISA allows).
inline bool cpu_has_avx2() { return cpu_isa() >= CpuIsa::avx2; }
// True when the AVX-512 (F, BW, VNNI) paths may run.
inline bool cpu_has_avx512() { return cpu_isa() >= CpuIsa::avx512; }

#if defined(__x86_64__)
namespace avx2 {

[[gnu::target("avx2,fma,f16c")]] inline __m256 load8_f32(const float* p) {
  return _mm256_loadu_ps(p);
}
[[gnu::target("avx2,fma,f16c")]] inline __m256 load8_f32(const bf16* p) {
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}
[[gnu::target("avx2,fma,f16c")]] inline __m256 load8_f32(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

[[gnu::target("avx2,fma,f16c")]] inline float hsum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

// The 8 horizontal sums of v[0..7] as one vector: lane p = Σ v[p] (two rounds of hadd, then the
// two 128-bit halves added).
[[gnu::target("avx2,fma,f16c")]] inline __m256 hsum8(const __m256 v[8]) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

template <typename T>
[[gnu::target("avx2,fma,f16c")]] inline float dot(const float* a, const T* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8_f32(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), load8_f32(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8_f32(b + i), acc0);
  float sum = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) sum += a[i] * to_f32(b[i]);
  return sum;
}

// y += alpha * x
[[gnu::target("avx2,fma,f16c")]] inline void axpy(float alpha, const float* x, float* y,
                                                  int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

// 2^x for x <= 0 (softmax weights in log2 units), |relative error| < 2e-7 against exp2f: x = n + f
// with n = round(x), f in [-0.5, 0.5]; 2^f = 1 + f·P(f), P the degree-5 minimax polynomial of
// Cephes' exp2f; 2^n added to the exponent bits. Below -126 the result is 0 (no denormals).
[[gnu::target("avx2,fma,f16c")]] inline __m256 exp2_nonpositive(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
  const __m256 result = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), exponent));
  return _mm256_andnot_ps(underflow, result);
}

// s[j] = 2^(s[j] − max_j s) for the n scores; returns their sum and the max in *max_out.
[[gnu::target("avx2,fma,f16c")]] inline float softmax_exp2(float* s, int64_t n, float* max_out) {
  __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mv);
  float m = lanes[0];
  for (int l = 1; l < 8; ++l) m = std::max(m, lanes[l]);
  for (int64_t t = j; t < n; ++t) m = std::max(m, s[t]);
  const __m256 mb = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (j = 0; j + 8 <= n; j += 8) {
    const __m256 e = exp2_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), mb));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = hsum(sum);
  for (; j < n; ++j) {
    alignas(32) float one[8] = {s[j] - m};
    _mm256_store_ps(one, exp2_nonpositive(_mm256_load_ps(one)));
    s[j] = one[0];
    total += one[0];
  }
  *max_out = m;
  return total;
}

// Rounding activations to int8 (the int8 matmuls' quantizers): the same bits as the scalar
// max(|x|), x · inverse, std::nearbyint (round-to-nearest-even under the default MXCSR) and a
// clamp to ±127.

// max |p[k]| over n floats, n a multiple of 8.
[[gnu::target("avx2,fma,f16c")]] inline float abs_max(const float* p, int64_t n) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; k += 8)
    m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(p + k), abs_mask));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
}

// p[0..15] · inverse rounded to int8, in order; sum = Σ of the 16 rounded values.
[[gnu::target("avx2,fma,f16c")]] inline __m128i round16_to_int8(const float* p, __m256 inverse,
                                                                int32_t& sum) {
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  __m256i a[2];
  for (int i = 0; i < 2; ++i) {
    a[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 8 * i), inverse));
    a[i] = _mm256_min_epi32(_mm256_max_epi32(a[i], lo), hi);
  }
  const __m256i pair_sum = _mm256_add_epi32(a[0], a[1]);
  __m128i s4 =
      _mm_add_epi32(_mm256_castsi256_si128(pair_sum), _mm256_extracti128_si256(pair_sum, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  sum = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
  // int32 -> int16 -> int8 in order (packs work per 128-bit lane: undo the interleave).
  const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(a[0], a[1]), 0xD8);
  return _mm_packs_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
}

}  // namespace avx2

namespace avx512 {

// (The masked forms with an all-ones mask below are the plain instructions: GCC 12 warns, falsely,
// that the unmasked intrinsics read an uninitialized pass-through.)

// 16 consecutive values of any storage dtype widened to fp32 (as avx2::load8_f32).
[[gnu::target("avx512f,avx2,fma,f16c")]] inline __m512 load16_f32(const float* p) {
  return _mm512_loadu_ps(p);
}
[[gnu::target("avx512f,avx2,fma,f16c")]] inline __m512 load16_f32(const bf16* p) {
  const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m512i words = _mm512_maskz_cvtepu16_epi32(0xFFFF, halves);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, words, 16));
}
[[gnu::target("avx512f,avx2,fma,f16c")]] inline __m512 load16_f32(const f16* p) {
  return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The 16 horizontal sums of v[0..15] as one vector: lane i = Σ v[i]. Four rounds, each adding
// two shuffles of a pair: 256-bit halves (v[m] with v[m+4], v[m+8] with v[m+12]), then 128-bit
// quarters, then within quarters (as avx2::hsum8), so quarter k of the result holds v[4k .. 4k+3].
[[gnu::target("avx512f,avx2,fma,f16c")]] inline __m512 hsum16(const __m512 v[16]) {
  __m512 halves[8], quarters[4];
  for (int m = 0; m < 4; ++m)
    for (int h = 0; h < 2; ++h) {
      const __m512 a = v[m + 8 * h], b = v[m + 8 * h + 4];
      halves[m + 4 * h] =
          _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0x44),   // a.q0 a.q1 b.q0 b.q1
                        _mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0xEE));  // a.q2 a.q3 b.q2 b.q3
    }
  for (int m = 0; m < 4; ++m) {
    const __m512 a = halves[m], b = halves[m + 4];
    quarters[m] =
        _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0x88),   // a.q0 a.q2 b.q0 b.q2
                      _mm512_maskz_shuffle_f32x4(0xFFFF, a, b, 0xDD));  // a.q1 a.q3 b.q1 b.q3
  }
  // quarters[m], quarter k: 4 partial sums of v[4k + m]. Pairs of lanes, then pairs of pairs.
  const __m512 p01 = _mm512_add_ps(_mm512_maskz_unpacklo_ps(0xFFFF, quarters[0], quarters[1]),
                                   _mm512_maskz_unpackhi_ps(0xFFFF, quarters[0], quarters[1]));
  const __m512 p23 = _mm512_add_ps(_mm512_maskz_unpacklo_ps(0xFFFF, quarters[2], quarters[3]),
                                   _mm512_maskz_unpackhi_ps(0xFFFF, quarters[2], quarters[3]));
  const __m512d d01 = _mm512_castps_pd(p01), d23 = _mm512_castps_pd(p23);
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, d01, d23)),
                       _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, d01, d23)));
}

// Σ of the 16 lanes: the two 256-bit halves added, then avx2::hsum. (Through memory: GCC 12 warns,
// falsely, that the extract intrinsics' undefined pass-through is used uninitialized.)
[[gnu::target("avx512f,avx2,fma,f16c")]] inline float hsum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  return avx2::hsum(_mm256_add_ps(_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8)));
}

}  // namespace avx512
#endif

// s[j] = 2^(s[j] − max_j s) for n >= 1 finite scores; returns Σ s[j] and the max in *max_out.
inline float softmax_exp2(float* s, int64_t n, float* max_out) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return avx2::softmax_exp2(s, n, max_out);
#endif
  float m = s[0], sum = 0.0f;
  for (int64_t j = 1; j < n; ++j) m = std::max(m, s[j]);
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp2(s[j] - m);
    sum += s[j];
  }
  *max_out = m;
  return sum;
}

// sum_i a[i] * b[i], accumulated in fp32.
template <typename T>
inline float dot(const float* a, const T* b, int64_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return avx2::dot(a, b, n);
#endif
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * to_f32(b[i]);
  return sum;
}

#if defined(__x86_64__)
namespace avx2 {
// dst[i] = x[i] rounded to fp16 (vcvtps2ph, round to nearest even: f32_to_f16's bits, nan aside).
[[gnu::target("avx2,fma,f16c")]] inline void store_f16(const float* x, f16* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = f32_to_f16(x[i]);
}
}  // namespace avx2
#endif

// dst[i] = x[i] rounded to fp16 (round to nearest even, overflow to inf).
inline void store_f16(const float* x, f16* dst, int64_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return avx2::store_f16(x, dst, n);
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(x[i]);
}

// y += alpha * x
inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2()) return avx2::axpy(alpha, x, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace hllm::cpu
