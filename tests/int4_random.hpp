// Random INT4 matrices for the tests of the INT4 layout and its matmuls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/quant/gptq.hpp"

namespace {

// A random logical quantized matrix: codes, fp16 scales, zeros 0..16, and a grouping.
hllm::QuantizedMatrix random_matrix(int64_t out, int64_t in, int64_t n_groups, bool shuffle,
                                    uint32_t seed) {
  std::mt19937 rng(seed);
  hllm::QuantizedMatrix m;
  m.in = in, m.out = out, m.n_groups = n_groups;
  std::uniform_int_distribution<int> code(0, 15), zero(0, 16);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  for (int64_t i = 0; i < out * in; ++i) m.codes.push_back(static_cast<uint8_t>(code(rng)));
  for (int64_t i = 0; i < n_groups * out; ++i) {
    m.scales.push_back(hllm::f32_to_f16(scale(rng)));
    m.zeros.push_back(static_cast<uint8_t>(zero(rng)));
  }
  const int64_t g_size = (in + n_groups - 1) / n_groups;
  std::vector<int64_t> rank(static_cast<size_t>(in));
  std::iota(rank.begin(), rank.end(), 0);
  if (shuffle) std::shuffle(rank.begin(), rank.end(), rng);
  for (int64_t i = 0; i < in; ++i) m.g_idx.push_back(static_cast<int32_t>(rank[i] / g_size));
  return m;
}

}  // namespace
