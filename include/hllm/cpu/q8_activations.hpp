// CPU matmul against an INT4 weight (layout/int4_tiles.hpp) with int8 activations, W4A8: the
// activations of every 32-input chunk are rounded to int8 with one fp32 scale (llama.cpp's q8_0
// numerics for its activations), and each chunk's dot product with a tile row is an integer one:
//
//   y = Σ_tiles s·(Σ_k q_k·x_k − z·Σ_k x_k)      (int4_dequant summed over a tile, s and z per row)
//     ≈ Σ_tiles s·(Σ_chunks d_c·Σ_{k∈c} q_k·a_k) − s·z·(Σ_chunks d_c·Σ_{k∈c} a_k)
//                                                  x_k ≈ d_c·a_k, a_k ∈ [−127, 127]
//
// Σ q·a is exact in int32 (codes 0..15 are unsigned bytes, a signed bytes: vpdpbusd on AVX-512
// VNNI, vpmaddubsw + vpmaddwd on AVX2); the zero-point sum Σ d_c·Σa is computed once per tile and
// token. The error against the fp32 path (cpu/int4_matmul.hpp) is at most Σ_k |w_k|·d_c/2
// (|x_k − d_c·a_k| <= d_c/2). Scales per 32 inputs keep an outlier activation from coarsening more
// than its own chunk.
//
// Quantized activation order. A tile row's 64 code bytes hold input k of chunk c = k/32 at byte
// 16c + k%16, low nibble for k%32 < 16, high nibble otherwise. One 64-byte load split into low and
// high nibbles therefore gives inputs {0..15, 32..47, 64..79, 96..111} and then
// {16..31, 48..63, 80..95, 112..127}; the int8 activations are stored in exactly that order
// (q8_position_input), so the per-row kernels multiply nibbles by activations with no shuffles.
// An int32 lane of vpdpbusd (or vpmaddubsw + vpmaddwd) sums 4 neighbouring positions, all of one
// chunk: lanes 4c..4c+3 of the 16 belong to chunk c, so one vector of per-lane scales
// (lane_scales: d_c repeated 4 times) scales a whole tile row at once. AVX2's 32-byte halves of the
// row: low nibbles of bytes 0..31 and high nibbles of bytes 0..31 are chunks 0 and 1 (lanes 0..7
// of lane_scales), bytes 32..63 chunks 2 and 3 (lanes 8..15).
//
// The kernels that multiply these activations with INT4 tiles: cpu/int4_q8_kernels.hpp (portable,
// AVX2), cpu/int4_q8_kernels_avx512.hpp; the matmul: cpu/int4_q8_matmul.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/cpu/simd.hpp"
#include "hllm/layout/int4_tiles.hpp"

namespace hllm::cpu {

// The input (0..127) of a tile whose int8 activation sits at position p (see the header comment).
constexpr int q8_position_input(int p) {
  const int high_nibble = p / 64, chunk = (p % 64) / 16;
  return chunk * INT4_CHUNK_K + high_nibble * 16 + p % 16;
}

// Activations [n, packed_in] rounded to int8 per 32-input chunk, in q8_position_input order.
struct Q8Activations {
  static constexpr int CHUNKS = INT4_TILE_K / INT4_CHUNK_K;  // 4 per tile
  int64_t n = 0, k_tiles = 0;
  std::vector<int8_t> q;          // [n][k_tiles][128]
  std::vector<float> lane_scale;  // [n][k_tiles][16]: d_c at lanes 4c..4c+3; x ≈ d_c · a
  std::vector<float> scaled_sum;  // [n][k_tiles]: Σ_c d_c · Σ a over chunk c (zero-point term)

  int64_t at(int64_t t, int64_t kt) const { return t * k_tiles + kt; }
  const int8_t* tile(int64_t t, int64_t kt) const { return q.data() + at(t, kt) * INT4_TILE_K; }
  const float* lane_scales(int64_t t, int64_t kt) const {
    return lane_scale.data() + at(t, kt) * 16;
  }
  float chunk_scale(int64_t t, int64_t kt, int c) const { return lane_scales(t, kt)[4 * c]; }
};

namespace detail {

// Σ_c d_c · Σa, multiply then add in chunk order. Out of line and without a target attribute: a
// caller compiled for FMA would otherwise fuse them, and every ISA must give the same bits.
[[gnu::noinline]] inline float chunk_scaled_sum(const float* lanes, const int32_t* sums) {
  float sum = 0.0f;
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) sum += lanes[4 * c] * static_cast<float>(sums[c]);
  return sum;
}

// One tile of one token: x (128 packed inputs) -> q (int8 in q8_position_input order), the lane
// scales and Σ_c d_c·Σa. d = max|x| / 127 per 32-input chunk, a = round-to-nearest-even(x / d).
inline void quantize_q8_tile_scalar(const float* x, int8_t* q, float* lanes, float& scaled_sum) {
  float inverse[Q8Activations::CHUNKS];
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) {
    float amax = 0.0f;
    for (int k = 0; k < INT4_CHUNK_K; ++k) amax = std::max(amax, std::fabs(x[c * 32 + k]));
    inverse[c] = amax > 0.0f ? 127.0f / amax : 0.0f;
    std::fill(lanes + 4 * c, lanes + 4 * c + 4, amax / 127.0f);
  }
  int32_t sums[Q8Activations::CHUNKS] = {};
  for (int p = 0; p < INT4_TILE_K; ++p) {
    const int k = q8_position_input(p), c = k / INT4_CHUNK_K;
    const auto a = static_cast<int32_t>(std::nearbyint(x[k] * inverse[c]));
    q[p] = static_cast<int8_t>(std::clamp(a, -127, 127));
    sums[c] += q[p];
  }
  scaled_sum = chunk_scaled_sum(lanes, sums);
}

#if defined(__x86_64__)
// The same, bit for bit (avx2::round16_to_int8), 16 inputs at a time. Input half h of chunk c
// (16 inputs 32c + 16h ..) lands at positions 64h + 16c .. + 15.
[[gnu::target("avx2,fma,f16c")]] inline void quantize_q8_tile_avx2(const float* x, int8_t* q,
                                                                   float* lanes,
                                                                   float& scaled_sum) {
  int32_t sums[Q8Activations::CHUNKS];
  for (int c = 0; c < Q8Activations::CHUNKS; ++c) {
    const float* xc = x + c * INT4_CHUNK_K;
    const float amax = avx2::abs_max(xc, INT4_CHUNK_K);
    const __m256 inverse = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    _mm_storeu_ps(lanes + 4 * c, _mm_set1_ps(amax / 127.0f));
    sums[c] = 0;
    for (int h = 0; h < 2; ++h) {
      int32_t sum = 0;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 64 * h + 16 * c),
                       avx2::round16_to_int8(xc + 16 * h, inverse, sum));
      sums[c] += sum;
    }
  }
  scaled_sum = chunk_scaled_sum(lanes, sums);
}
#endif

}  // namespace detail

// Round x [n, packed] (packed = 128 · k_tiles, already in the weight's packed input order) per
// 32-input chunk (detail::quantize_q8_tile_scalar); every ISA gives the same bits.
inline void quantize_q8_activations(const float* x, int64_t n, int64_t k_tiles, Q8Activations& out,
                                    ThreadPool& pool, CpuIsa isa = cpu_isa()) {
  out.n = n;
  out.k_tiles = k_tiles;
  out.q.resize(static_cast<size_t>(n * k_tiles * INT4_TILE_K));
  out.lane_scale.resize(static_cast<size_t>(n * k_tiles * 16));
  out.scaled_sum.resize(static_cast<size_t>(n * k_tiles));
  pool.parallel_for(n, [&](int64_t t) {
    for (int64_t kt = 0; kt < k_tiles; ++kt) {
      const int64_t at = out.at(t, kt);
      const float* xt = x + at * INT4_TILE_K;
      int8_t* q = out.q.data() + at * INT4_TILE_K;
      float* lanes = out.lane_scale.data() + at * 16;
#if defined(__x86_64__)
      if (isa >= CpuIsa::avx2) {
        detail::quantize_q8_tile_avx2(xt, q, lanes, out.scaled_sum[at]);
        continue;
      }
#endif
      detail::quantize_q8_tile_scalar(xt, q, lanes, out.scaled_sum[at]);
    }
  });
}

}  // namespace hllm::cpu
