// RoPE: the inverse frequencies for every scaling type and the attention scale — the ONE place
// these formulas live. CPU ops and CUDA kernels both rotate with rope_rotate_pair()
// (layout/rope_rotate.hpp).
//
// Layout (HF "rotate half", what HF checkpoints store in q_proj/k_proj rows): within a head of
// width d, element i pairs with element i + d/2 and rotates by angle position * inv_freq[i],
// i < d/2:
//
//   head:  [ x0 x1 ... x(d/2-1) | x(d/2) ... x(d-1) ]
//            \____ pair (i, i+d/2) rotated by theta_i = pos * inv_freq[i] ____/
//
//   y[i]       = x[i] cos - x[i+d/2] sin          (cos and sin multiplied by attention_factor)
//   y[i+d/2]   = x[i+d/2] cos + x[i] sin
//
// inv_freq[i] = theta^(-2i/d), then per scaling type (as transformers' modeling_rope_utils
// computes):
//   linear  : inv_freq / factor                                  (position interpolation)
//   dynamic : theta' = theta * (factor * L / max_pos - (factor - 1))^(d / (d - 2)),
//             L = max(seq_len, max_pos)
//   llama3  : wavelengths 2π/inv_freq above orig/low_freq_factor are divided by factor, below
//             orig/high_freq_factor kept, and blended linearly in between (or, from a GGUF file,
//             each inv_freq divided by the divisor the file stores for it)
//   yarn    : per-dimension blend of interpolated (inv_freq / factor) and original frequencies
//             with a linear ramp between the dims that make beta_fast and beta_slow rotations
//             over orig ctx; cos and sin are scaled by attention_factor
//             (default 0.1 ln(factor) + 1).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/layout/rope_rotate.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

struct RopeTable {
  std::vector<float> inv_freq;    // [head_dim / 2] radians per position
  float attention_factor = 1.0f;  // multiplies cos and sin (yarn's temperature; 1 otherwise)
};

// 1 / sqrt(head_dim): the softmax scale of q·k (yarn's temperature acts through cos/sin instead).
inline float attention_scale(const LlamaConfig& config) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.head_dim)));
}

namespace detail {

inline std::vector<double> default_inv_freq(double theta, int64_t head_dim) {
  std::vector<double> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq[i] = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(head_dim));
  return inv_freq;
}

inline void apply_llama3_scaling(std::vector<double>& inv_freq, const RopeScaling& s) {
  const double orig_ctx = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = orig_ctx / s.low_freq_factor;
  const double high_freq_wavelen = orig_ctx / s.high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f /= s.factor;
    } else if (wavelen >= high_freq_wavelen) {
      const double smooth =
          (orig_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
  }
}

inline double yarn_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// Returns the attention factor; rewrites inv_freq in place.
inline double apply_yarn_scaling(std::vector<double>& inv_freq, const RopeScaling& s,
                                 const LlamaConfig& c) {
  const double dim = static_cast<double>(c.head_dim);
  double factor = s.factor;
  int64_t orig_ctx = c.max_position_embeddings;
  if (s.original_max_position_embeddings > 0) {
    // HF: with an explicit original context, the factor is the ratio of the two contexts.
    orig_ctx = s.original_max_position_embeddings;
    factor = static_cast<double>(c.max_position_embeddings) / static_cast<double>(orig_ctx);
  }
  double attention_factor;
  if (s.attention_factor)
    attention_factor = *s.attention_factor;
  else if (s.mscale && s.mscale_all_dim && *s.mscale != 0 && *s.mscale_all_dim != 0)
    attention_factor = yarn_mscale(factor, *s.mscale) / yarn_mscale(factor, *s.mscale_all_dim);
  else
    attention_factor = yarn_mscale(factor, 1.0);

  // Dimension index at which a frequency makes `rotations` full turns over the original context.
  const auto correction_dim = [&](double rotations) {
    return dim * std::log(static_cast<double>(orig_ctx) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(c.rope_theta));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;  // HF: avoid a zero-width ramp

  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
    const double keep_original = 1.0 - ramp;  // 1 for fast-rotating dims: extrapolate as trained
    inv_freq[i] = inv_freq[i] / factor * (1.0 - keep_original) + inv_freq[i] * keep_original;
  }
  return attention_factor;
}

}  // namespace detail

// The table for a sequence whose longest position is seq_len - 1. seq_len only matters for dynamic
// NTK, which re-bases theta once the sequence outgrows max_position_embeddings (as HF does per
// forward).
inline RopeTable rope_table(const LlamaConfig& c, int64_t seq_len = 0) {
  const RopeScaling& s = c.rope_scaling;
  double theta = c.rope_theta;
  if (s.type == RopeType::dynamic) {
    const double max_pos = static_cast<double>(c.max_position_embeddings);
    const double length = std::max(static_cast<double>(seq_len), max_pos);
    const double dim = static_cast<double>(c.head_dim);
    theta *= std::pow(s.factor * length / max_pos - (s.factor - 1.0), dim / (dim - 2.0));
  }
  std::vector<double> inv_freq = detail::default_inv_freq(theta, c.head_dim);
  double attention_factor = 1.0;
  switch (s.type) {
    case RopeType::none:
    case RopeType::dynamic:
      break;
    case RopeType::linear:
      for (double& f : inv_freq) f /= s.factor;
      break;
    case RopeType::llama3:
      if (s.freq_divisors.size() == inv_freq.size())
        for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] /= s.freq_divisors[i];
      else
        detail::apply_llama3_scaling(inv_freq, s);
      break;
    case RopeType::yarn:
      attention_factor = detail::apply_yarn_scaling(inv_freq, s, c);
      break;
  }
  RopeTable table;
  table.inv_freq.assign(inv_freq.begin(), inv_freq.end());
  table.attention_factor = static_cast<float>(attention_factor);
  return table;
}

}  // namespace hllm
