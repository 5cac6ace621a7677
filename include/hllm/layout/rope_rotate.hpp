// The rotation of one RoPE pair, shared by the CPU op (cpu/rope.hpp) and the CUDA kernel
// (kernels/hllm/cuda/rope.cuh); which pairs and which frequencies is model/rope.hpp's business.
//
//   angle = float(position) · inv_freq
//   (x_low, x_high) -> (x_low · cos − x_high · sin, x_high · cos + x_low · sin)
#pragma once

#include <cstdint>

#include "hllm/core/dtype.hpp"

namespace hllm {

// HF multiplies fp32 positions by fp32 inv_freq; doing the same keeps long-context angles
// identical.
HLLM_HOST_DEVICE float rope_angle(int64_t position, float inv_freq) {
  return static_cast<float>(position) * inv_freq;
}

HLLM_HOST_DEVICE void rope_rotate_pair(float& x_low, float& x_high, float cos_a, float sin_a) {
  const float low = x_low, high = x_high;
  x_low = low * cos_a - high * sin_a;
  x_high = high * cos_a + low * sin_a;
}

}  // namespace hllm
