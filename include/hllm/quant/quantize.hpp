// Quantizing one linear weight W[out, in] to 4 bits: round-to-nearest (RTN) and GPTQ
// (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
// Transformers"; the reference implementation is IST-DASLab/gptq `fasterquant`).
//
// Grid per (group, output row), 4 bits, maxq = 15:
//   sym:   scale = max|w| / 7.5 (i.e. 2 max|w| / 15), zero = 8
//   asym:  scale = (max(w, 0) - min(w, 0)) / 15, zero = round(-min / scale), kept in 1..15 so the
//          GPTQ v1 format (zero - 1 in 4 bits) can store it
//   code = clamp(round(w / scale) + zero, 0, 15); the value it stands for is
//   int4_dequant(code, scale, zero) with scale rounded to fp16 first, exactly as loaders compute
//   it.
//
// GPTQ: H = 2/N Σ x xᵀ over the calibration inputs of the layer (x = one token's input row).
// Columns are quantized left to right (act-order: by decreasing diag(H)); after each column the
// rounding error is spread over the not-yet-quantized columns through the upper Cholesky factor U
// of H⁻¹ (H + damp·mean(diag H)·I first): W[:, j:] -= (w - q)/U[i,i] · U[i, j:], in blocks of 128
// columns with a lazy update of the rest. Group parameters are taken from the error-updated weights
// when the group's first column is reached. With act-order, g_idx[i] = (rank of i) / group_size.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/quant/gptq.hpp"

namespace hllm {

struct QuantizeOptions {
  int64_t group_size = 128;    // inputs per group; -1 = per output channel
  bool sym = true;             // symmetric grid (zero 8)
  bool act_order = false;      // GPTQ: quantize columns by decreasing Hessian diagonal
  double damp_percent = 0.01;  // GPTQ: damping, fraction of mean(diag H)
  int64_t block_size = 128;    // GPTQ: columns per lazy-update block
};

namespace detail {

struct GroupGrid {
  float scale = 0;  // fp16-representable
  int zero = 8;
};

inline GroupGrid find_grid(std::span<const float> w, bool sym) {
  float lo = 0.0f, hi = 0.0f;  // the grid always contains 0 (as GPTQ's quantizer does)
  for (float v : w) lo = std::min(lo, v), hi = std::max(hi, v);
  GroupGrid g;
  if (sym) {
    const float m = std::max(-lo, hi);
    g.scale = m > 0 ? 2.0f * m / 15.0f : 1.0f;
    g.zero = 8;
  } else {
    g.scale = hi > lo ? (hi - lo) / 15.0f : 1.0f;
    g.zero = std::clamp(static_cast<int>(std::nearbyint(-lo / g.scale)), 1, 15);
  }
  g.scale = f16_to_f32(f32_to_f16(g.scale));
  if (!(g.scale > 0)) g.scale = 6.1035156e-05f;  // the smallest normal fp16: underflow guard
  return g;
}

inline uint8_t quantize_value(float w, const GroupGrid& g) {
  const float q = std::nearbyint(w / g.scale) + static_cast<float>(g.zero);
  return static_cast<uint8_t>(std::clamp(q, 0.0f, 15.0f));
}

inline QuantizedMatrix empty_quantized(int64_t out, int64_t in, const QuantizeOptions& opt) {
  if (opt.group_size == 0 || opt.group_size < -1)
    fail("quantize: group size ", opt.group_size, " must be positive or -1 (per channel)");
  QuantizedMatrix m;
  m.in = in;
  m.out = out;
  const int64_t g = opt.group_size > 0 ? opt.group_size : in;
  m.n_groups = (in + g - 1) / g;
  m.codes.assign(static_cast<size_t>(out * in), 0);
  m.scales.assign(static_cast<size_t>(m.n_groups * out), f16{0});
  m.zeros.assign(static_cast<size_t>(m.n_groups * out), 8);
  m.g_idx.resize(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) m.g_idx[i] = static_cast<int32_t>(i / g);
  return m;
}

// In-place Cholesky of a symmetric positive definite n×n matrix (lower factor L, A = L Lᵀ).
inline bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return false;
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / d;
    }
    for (int64_t k = j + 1; k < n; ++k) a[j * n + k] = 0.0;
  }
  return true;
}

// U upper with H⁻¹ = Uᵀ U (torch: cholesky(cholesky_inverse(cholesky(H)), upper=True)).
inline std::vector<double> inverse_cholesky_upper(std::vector<double> h, int64_t n) {
  if (!cholesky_lower(h, n))
    fail("gptq: the Hessian is not positive definite (raise --damp or add calibration text)");
  // H⁻¹ = L⁻ᵀ L⁻¹: invert the lower factor row by row (row i of L⁻¹ = (e_i - Σ_k<i L[i,k] row k)
  // / L[i,i]), then form the product as a sum of outer products of rows (contiguous loops).
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);  // L⁻¹, lower
  for (int64_t i = 0; i < n; ++i) {
    double* row = &inv[i * n];
    for (int64_t k = 0; k < i; ++k) {
      const double lik = h[i * n + k];
      const double* rk = &inv[k * n];
      for (int64_t j = 0; j <= k; ++j) row[j] -= lik * rk[j];
    }
    row[i] = 1.0;
    const double d = h[i * n + i];
    for (int64_t j = 0; j <= i; ++j) row[j] /= d;
  }
  std::vector<double> hinv(static_cast<size_t>(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    const double* rk = &inv[k * n];
    for (int64_t i = 0; i <= k; ++i) {
      const double a = rk[i];
      double* hi = &hinv[i * n];
      for (int64_t j = 0; j <= i; ++j) hi[j] += a * rk[j];
    }
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) hinv[j * n + i] = hinv[i * n + j];
  if (!cholesky_lower(hinv, n)) fail("gptq: H^-1 is not positive definite (raise --damp)");
  std::vector<double> upper(static_cast<size_t>(n * n), 0.0);  // U = Lᵀ
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) upper[i * n + j] = hinv[j * n + i];
  return upper;
}

}  // namespace detail

// Round to nearest per group. w: [out, in] fp32.
inline QuantizedMatrix quantize_rtn(std::span<const float> w, int64_t out, int64_t in,
                                    const QuantizeOptions& opt) {
  QuantizedMatrix m = detail::empty_quantized(out, in, opt);
  const int64_t g_size = opt.group_size > 0 ? opt.group_size : in;
  for (int64_t o = 0; o < out; ++o)
    for (int64_t g = 0; g < m.n_groups; ++g) {
      const int64_t begin = g * g_size, end = std::min(in, begin + g_size);
      const detail::GroupGrid grid =
          detail::find_grid(w.subspan(static_cast<size_t>(o * in + begin), end - begin), opt.sym);
      m.scales[g * out + o] = f32_to_f16(grid.scale);
      m.zeros[g * out + o] = static_cast<uint8_t>(grid.zero);
      for (int64_t i = begin; i < end; ++i)
        m.codes[o * in + i] = detail::quantize_value(w[o * in + i], grid);
    }
  return m;
}

// Round to nearest, asymmetric, one group per 128 inputs, straight into hllm's tile layout, strip
// by strip over `pool`: how a dense weight is quantized at load (e.g. --lm-head q4) with no
// full-precision or logical copy of the matrix. w: [out, in] bf16 / f16 / f32, in % 128 == 0.
inline Int4Matrix quantize_rtn_tiles(const Tensor& w, ThreadPool& pool) {
  if (w.rank() != 2 || w.dim(1) % INT4_TILE_K != 0)
    fail("quantize_rtn_tiles: weight ", w.shape.str(), " needs [out, in] with in % 128 == 0");
  if (w.dtype != DType::bf16 && w.dtype != DType::f16 && w.dtype != DType::f32)
    fail("quantize_rtn_tiles: ", dtype_name(w.dtype), " weights cannot be quantized");
  const int64_t out = w.dim(0), in = w.dim(1);
  Int4Matrix m(in, out, in / INT4_TILE_K, {});
  pool.parallel_for(m.view().strips(), [&](int64_t s) {
    float group[INT4_TILE_K];
    for (int64_t kt = 0; kt < m.view().k_tiles; ++kt) {
      int4_tile& tile = m.tile(s, kt);
      for (int r = 0; r < INT4_TILE_ROWS && s * INT4_TILE_ROWS + r < out; ++r) {
        const int64_t first = (s * INT4_TILE_ROWS + r) * in + kt * INT4_TILE_K;
        for (int k = 0; k < INT4_TILE_K; ++k) group[k] = w.f32_at(first + k);
        const detail::GroupGrid grid = detail::find_grid(group, /*sym=*/false);
        tile.scale[r] = f32_to_f16(grid.scale);
        tile.zero[r] = f32_to_f16(static_cast<float>(grid.zero));
        for (int k = 0; k < INT4_TILE_K; ++k)
          tile.q[r][int4_code_byte(k)] |=
              static_cast<uint8_t>(detail::quantize_value(group[k], grid) << int4_code_shift(k));
      }
    }
  });
  return m;
}

// GPTQ with the Hessian h [in, in] (2/N Σ x xᵀ, accumulated by the caller). w: [out, in] fp32.
inline QuantizedMatrix quantize_gptq(std::span<const float> w_in, int64_t out, int64_t in,
                                     std::vector<double> h, const QuantizeOptions& opt) {
  if (static_cast<int64_t>(h.size()) != in * in) fail("gptq: Hessian is not [in, in]");
  QuantizedMatrix m = detail::empty_quantized(out, in, opt);
  const int64_t g_size = opt.group_size > 0 ? opt.group_size : in;

  // Working copy in column order `perm` (identity, or act-order), row-major [out, in].
  std::vector<int64_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), 0);
  if (opt.act_order)
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return h[a * in + a] > h[b * in + b]; });
  std::vector<double> w(static_cast<size_t>(out * in));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t j = 0; j < in; ++j) w[o * in + j] = w_in[o * in + perm[j]];
  std::vector<double> hp(static_cast<size_t>(in * in));
  double mean_diag = 0.0;
  for (int64_t i = 0; i < in; ++i) mean_diag += h[i * in + i] / static_cast<double>(in);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t j = 0; j < in; ++j) hp[i * in + j] = h[perm[i] * in + perm[j]];
  for (int64_t i = 0; i < in; ++i) {
    if (hp[i * in + i] == 0.0) {  // an input that never fires: any value is exact, pin it to 0
      hp[i * in + i] = 1.0;
      for (int64_t o = 0; o < out; ++o) w[o * in + i] = 0.0;
    }
    hp[i * in + i] += opt.damp_percent * (mean_diag > 0 ? mean_diag : 1.0);
  }
  h.clear();
  const std::vector<double> u = detail::inverse_cholesky_upper(std::move(hp), in);

  std::vector<detail::GroupGrid> grid(static_cast<size_t>(out));
  std::vector<float> column(static_cast<size_t>(g_size));
  std::vector<double> err(static_cast<size_t>(out * opt.block_size));
  for (int64_t b0 = 0; b0 < in; b0 += opt.block_size) {
    const int64_t b1 = std::min(in, b0 + opt.block_size);
    for (int64_t j = b0; j < b1; ++j) {
      if (j % g_size == 0) {  // a new group in quantization order: grid from current weights
        const int64_t end = std::min(in, j + g_size);
        for (int64_t o = 0; o < out; ++o) {
          for (int64_t k = j; k < end; ++k) column[k - j] = static_cast<float>(w[o * in + k]);
          grid[o] = detail::find_grid({column.data(), static_cast<size_t>(end - j)}, opt.sym);
          m.scales[(j / g_size) * out + o] = f32_to_f16(grid[o].scale);
          m.zeros[(j / g_size) * out + o] = static_cast<uint8_t>(grid[o].zero);
        }
      }
      const double d = u[j * in + j];
      for (int64_t o = 0; o < out; ++o) {
        const double wj = w[o * in + j];
        const uint8_t code = detail::quantize_value(static_cast<float>(wj), grid[o]);
        m.codes[o * in + perm[j]] = code;
        const double q = int4_dequant(code, grid[o].scale, static_cast<float>(grid[o].zero));
        const double e = (wj - q) / d;
        err[o * opt.block_size + (j - b0)] = e;
        for (int64_t k = j + 1; k < b1; ++k) w[o * in + k] -= e * u[j * in + k];
      }
    }
    // Lazy update of every later block with this block's errors.
    for (int64_t o = 0; o < out; ++o)
      for (int64_t j = b0; j < b1; ++j) {
        const double e = err[o * opt.block_size + (j - b0)];
        if (e == 0.0) continue;
        const double* uj = &u[j * in];
        double* wo = &w[o * in];
        for (int64_t k = b1; k < in; ++k) wo[k] -= e * uj[k];
      }
  }
  for (int64_t j = 0; j < in; ++j) m.g_idx[perm[j]] = static_cast<int32_t>(j / g_size);
  return m;
}

}  // namespace hllm
