// quant/ggml_quantize.hpp: fp32 rows -> ggml blocks, checked through the layout's own
// dequantizer (ggml_dequant_row, which matches gguf-py: gguf_dequant_test). For every type and
// many kinds of rows, each element comes back within half the step its block dequantizes with
// (Q4_0: a whole step for the clamped +8 end), the steps are no larger than the block needs, and
// values on a type's grid come back exactly.
#include "hllm/quant/ggml_quantize.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "hllm/layout/ggml_blocks.hpp"

namespace {

using hllm::GgmlType;

constexpr GgmlType TYPES[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_K,
                              GgmlType::Q6_K};
constexpr float SUBNORMAL = 5.9604645e-8f;          // the smallest fp16 step (2⁻²⁴)
constexpr float F16_ROUNDING = 1.0f + 1.0f / 1024;  // a covering fp16 is at most this much larger

std::string name(GgmlType t) { return std::string(hllm::ggml_type_info(t).name); }
int64_t block_elems(GgmlType t) { return hllm::ggml_type_info(t).block_elems; }

std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x) {
  const hllm::GgmlView shape{t, nullptr, 1, static_cast<int64_t>(x.size())};
  std::vector<uint8_t> row(static_cast<size_t>(shape.row_bytes()));
  hllm::ggml_quantize_row(t, x.data(), static_cast<int64_t>(x.size()), row.data());
  return row;
}

std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& row, size_t n) {
  std::vector<float> out(n);
  hllm::ggml_dequant_row(t, row.data(), static_cast<int64_t>(n), out.data());
  return out;
}

float f16_at(const uint8_t* p) { return hllm::ggml_detail::load_f16(p); }

// The step element e of a quantized row dequantizes with (the block's own scale, decoded from its
// bytes per the format) and the fp16 super-block units (Q4_K: d and dmin; Q6_K: d; else 0).
struct Step {
  float step, d, dmin;
};
Step step_of(GgmlType t, const uint8_t* row, int64_t e) {
  const int64_t bytes = hllm::ggml_type_info(t).block_bytes;
  const uint8_t* b = row + e / block_elems(t) * bytes;
  const int64_t i = e % block_elems(t);
  switch (t) {
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
      return {std::fabs(f16_at(b)), 0, 0};
    case GgmlType::Q4_K: {
      int sc, m;
      hllm::ggml_detail::k_scale_min(b + 4, static_cast<int>(i / 32), sc, m);
      return {f16_at(b) * static_cast<float>(sc), f16_at(b), f16_at(b + 2)};
    }
    case GgmlType::Q6_K: {
      const auto sc = static_cast<int8_t>(b[192 + i / 16]);
      return {f16_at(b + 208) * static_cast<float>(sc), f16_at(b + 208), 0};
    }
    default:
      return {0, 0, 0};
  }
}

// The largest step each block could need: what a quantizer that rounds every scale up (to fp16,
// and to the sub-block factor) must not exceed. Element e's sub-block is [begin, begin + size).
float needed_step(GgmlType t, const std::vector<float>& x, int64_t e) {
  const auto range = [&](int64_t size) {
    const int64_t begin = e / size * size;
    return std::pair(x.begin() + begin, x.begin() + begin + size);
  };
  const auto abs_max = [](auto span) {
    float m = 0;
    for (auto it = span.first; it != span.second; ++it) m = std::max(m, std::fabs(*it));
    return m;
  };
  switch (t) {
    case GgmlType::Q8_0:
      return abs_max(range(32)) / 127 * F16_ROUNDING + SUBNORMAL;
    case GgmlType::Q4_0:
      return abs_max(range(32)) / 8 * F16_ROUNDING + SUBNORMAL;
    case GgmlType::Q5_0:
      return abs_max(range(32)) / 16 * F16_ROUNDING + SUBNORMAL;
    case GgmlType::Q6_K: {
      const float d = abs_max(range(256)) / 31 / 127 * F16_ROUNDING + SUBNORMAL;
      return abs_max(range(16)) / 31 + d;
    }
    case GgmlType::Q4_K: {
      // spread = max − min(0, min); the offset may be rounded up by one dmin unit.
      const auto spread = [](auto span) {
        const auto [lo, hi] = std::minmax_element(span.first, span.second);
        return *hi - std::min(0.0f, *lo);
      };
      const auto [super_begin, super_end] = range(256);
      float max_offset = 0, max_spread = 0;
      for (auto it = super_begin; it != super_end; it += 32) {
        max_offset = std::max(max_offset, -std::min(0.0f, *std::min_element(it, it + 32)));
        max_spread = std::max(max_spread, spread(std::pair(it, it + 32)));
      }
      const float dmin = max_offset / 63 * F16_ROUNDING + SUBNORMAL;
      const float d = (max_spread + dmin) / 15 / 63 * F16_ROUNDING + SUBNORMAL;
      return (spread(range(32)) + dmin) / 15 + d;
    }
    default:
      return 0;
  }
}

// Quantizes x and checks every element against its block's step; returns the dequantized row.
std::vector<float> check_round_trip(GgmlType t, const std::vector<float>& x,
                                    const std::string& what) {
  const std::vector<uint8_t> row = quantize(t, x);
  const std::vector<float> y = dequantize(t, row, x.size());
  int failures = 0;
  for (size_t e = 0; e < x.size() && failures < 5; ++e) {
    const Step s = step_of(t, row.data(), static_cast<int64_t>(e));
    // fp32 rounding of x + offset, the division and the dequantizer's product and difference.
    const int64_t super = block_elems(t), begin = static_cast<int64_t>(e) / super * super;
    float block_max = 0;
    for (int64_t i = begin; i < begin + super; ++i)
      block_max = std::max(block_max, std::fabs(x[i]));
    const float slack = 4e-6f * block_max;
    // Q4_0's (Q5_0's) positive end: codes reach +7 (+15) while the extreme sits at −8 (−16) steps.
    const float top = t == GgmlType::Q4_0 ? 7.5f : 15.5f;
    const bool clamped_end =
        (t == GgmlType::Q4_0 || t == GgmlType::Q5_0) && s.step > 0 &&
        x[e] / f16_at(row.data() + e / 32 * hllm::ggml_type_info(t).block_bytes) > top;
    const float bound = (clamped_end ? 1.0f : 0.5f) * s.step + slack;
    const float err = std::fabs(y[e] - x[e]);
    const float needed = needed_step(t, x, static_cast<int64_t>(e));
    if (!(err <= bound) || !(s.step <= needed)) {
      ++failures;
      ADD_FAILURE() << name(t) << " " << what << " element " << e << ": x " << x[e] << " -> "
                    << y[e] << " (error " << err << ", bound " << bound << "), step " << s.step
                    << " (needed at most " << needed << "), d " << s.d << " dmin " << s.dmin;
    }
  }
  return y;
}

// Rows of n elements from one generator; blocks get log-uniform magnitudes 1e-3..1e2 so rows
// mix large and small blocks.
std::vector<float> gaussian_row(std::mt19937& rng, size_t n, float shift = 0) {
  std::normal_distribution<float> normal(0, 1);
  std::uniform_real_distribution<float> exponent(-3, 2);
  std::vector<float> x(n);
  float scale = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 32 == 0) scale = std::pow(10.0f, exponent(rng));
    x[i] = scale * (normal(rng) + shift);
  }
  return x;
}

TEST(GgmlQuantize, RandomRowsStayWithinHalfAStep) {
  std::mt19937 rng(1);
  for (const GgmlType t : TYPES) {
    for (int trial = 0; trial < 20; ++trial) {
      check_round_trip(t, gaussian_row(rng, 1024), "gaussian");
      check_round_trip(t, gaussian_row(rng, 512, -4.0f), "mostly negative");
      check_round_trip(t, gaussian_row(rng, 512, 4.0f), "mostly positive");
    }
  }
}

TEST(GgmlQuantize, ErrorIsSmallOnGaussianWeights) {
  // Relative RMS error on N(0, 1) rows, about 25% above what this quantizer reaches (0.0053,
  // 0.086, 0.043, 0.080, 0.0195): a wasteful scale choice would show here, not in the bounds
  // above.
  const std::pair<GgmlType, double> limits[] = {{GgmlType::Q8_0, 0.007},
                                                {GgmlType::Q4_0, 0.11},
                                                {GgmlType::Q5_0, 0.054},
                                                {GgmlType::Q4_K, 0.10},
                                                {GgmlType::Q6_K, 0.025}};
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0, 1);
  std::vector<float> x(256 * 64);
  for (float& v : x) v = normal(rng);
  for (const auto& [t, limit] : limits) {
    const std::vector<float> y = dequantize(t, quantize(t, x), x.size());
    double err = 0, sum = 0;
    for (size_t i = 0; i < x.size(); ++i) err += (y[i] - x[i]) * (y[i] - x[i]), sum += x[i] * x[i];
    EXPECT_LT(std::sqrt(err / sum), limit) << name(t);
  }
}

TEST(GgmlQuantize, AllZeroRowsGiveZeros) {
  for (const GgmlType t : TYPES) {
    const std::vector<float> x(512, 0.0f);
    const std::vector<uint8_t> row = quantize(t, x);
    for (const float v : dequantize(t, row, x.size())) {
      ASSERT_EQ(v, 0.0f) << name(t);
      ASSERT_FALSE(std::signbit(v)) << name(t);
    }
  }
}

// Constants whose scales are normal fp16 numbers (Q6_K's d = max / 31 / 127 is subnormal below
// ~0.24: coarser steps, still within half a step, see TinyAndHugeMagnitudes).
TEST(GgmlQuantize, ConstantRowsComeBackToAnFp16Step) {
  for (const GgmlType t : TYPES)
    for (const float c : {0.37f, -0.37f, 1000.0f, -2.5f, 7.0f}) {
      const std::vector<float> x(512, c);
      const std::vector<float> y = check_round_trip(t, x, "constant " + std::to_string(c));
      for (const float v : y) ASSERT_NEAR(v, c, std::fabs(c) / 256) << name(t) << " " << c;
    }
}

TEST(GgmlQuantize, NegativeOnlyRowsUseQ4KsOffsets) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, -0.9f);
  std::vector<float> x(1024);
  for (float& v : x) v = u(rng);
  const std::vector<float> y = check_round_trip(GgmlType::Q4_K, x, "in [-1, -0.9]");
  // The spread (0.1) is split into 15 steps, not the magnitude: errors stay far below 1/30.
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(y[i], x[i], 0.1 / 15) << i;
  // Sub-blocks of different offsets in one super-block.
  for (size_t i = 0; i < x.size(); ++i) x[i] -= static_cast<float>(i / 32 % 8);
  check_round_trip(GgmlType::Q4_K, x, "offsets 0..-8");
}

TEST(GgmlQuantize, TinyAndHugeMagnitudes) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0, 1);
  for (const GgmlType t : TYPES) {
    for (const float scale : {1e-30f, 1e-7f, 1e-5f, 1e5f}) {  // fp16 subnormal and large scales
      std::vector<float> x(512);
      for (float& v : x) v = scale * normal(rng);
      check_round_trip(t, x, "scale " + std::to_string(scale));
    }
    // Beyond fp16's scales: saturated, finite, sign kept.
    std::vector<float> x(512);
    for (float& v : x) v = 1e30f * normal(rng);
    const std::vector<float> y = dequantize(t, quantize(t, x), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_TRUE(std::isfinite(y[i])) << name(t) << " " << i;
      if (std::fabs(x[i]) > 1e29f) {
        ASSERT_EQ(std::signbit(y[i]), std::signbit(x[i])) << name(t);
      }
    }
  }
}

// Values a block of the type can hold exactly, made from the format definition (weight = step ·
// code), with the extreme codes that fix each scale present: they come back bit for bit, so the
// quantizer writes the layout ggml_dequant_block reads.
std::vector<float> grid_row(GgmlType t, std::mt19937& rng, int64_t n) {
  std::vector<float> x(static_cast<size_t>(n));
  std::uniform_int_distribution<int> code(0, 1 << 30);
  for (int64_t s = 0; s < n / block_elems(t); ++s) {
    float* b = x.data() + s * block_elems(t);
    switch (t) {
      case GgmlType::Q8_0: {  // d·q, q in −127..127, one ±127
        const float d = std::ldexp(1.0f + static_cast<float>(code(rng) % 1024) / 1024, -9);
        for (int i = 0; i < 32; ++i) b[i] = d * static_cast<float>(code(rng) % 255 - 127);
        b[code(rng) % 32] = d * (code(rng) % 2 ? 127.0f : -127.0f);
        break;
      }
      case GgmlType::Q4_0: {  // d·(q − 8), q in 0..15, one 0 (the extreme)
        const float d = (code(rng) % 2 ? 1 : -1) *
                        std::ldexp(1.0f + static_cast<float>(code(rng) % 1024) / 1024, -7);
        for (int i = 0; i < 32; ++i) b[i] = d * static_cast<float>(code(rng) % 16 - 8);
        b[code(rng) % 32] = -8.0f * d;
        break;
      }
      case GgmlType::Q5_0: {  // d·(q − 16), q in 0..31, one 0 (the extreme)
        const float d = (code(rng) % 2 ? 1 : -1) *
                        std::ldexp(1.0f + static_cast<float>(code(rng) % 1024) / 1024, -8);
        for (int i = 0; i < 32; ++i) b[i] = d * static_cast<float>(code(rng) % 32 - 16);
        b[code(rng) % 32] = -16.0f * d;
        break;
      }
      case GgmlType::Q4_K: {  // d·sc·q − dmin·m, codes 0 and 15 in every sub-block, 63s present
        const float d = 1.0f / 256, dmin = 1.0f / 64;
        for (int j = 0; j < 8; ++j) {
          const int sc = j == 0 ? 63 : code(rng) % 64, m = j == 1 ? 63 : code(rng) % 64;
          for (int i = 0; i < 32; ++i) {
            const int q = i == 0 ? 0 : i == 1 ? 15 : code(rng) % 16;
            b[32 * j + i] =
                d * static_cast<float>(sc) * static_cast<float>(q) - dmin * static_cast<float>(m);
          }
        }
        break;
      }
      case GgmlType::Q6_K: {  // d·sc·(q − 32), q − 32 in −31..31, one ±31 per sub-block
        const float d = 1.0f / 1024;
        for (int j = 0; j < 16; ++j) {
          const int sc = j == 0 ? 127 : 1 + code(rng) % 127;
          for (int i = 0; i < 16; ++i) {
            const int q = i == 0 ? (code(rng) % 2 ? 31 : -31) : code(rng) % 63 - 31;
            b[16 * j + i] = d * static_cast<float>(sc) * static_cast<float>(q);
          }
        }
        break;
      }
      default:
        break;
    }
  }
  return x;
}

TEST(GgmlQuantize, ValuesOnTheGridComeBackExactly) {
  std::mt19937 rng(5);
  for (const GgmlType t : TYPES)
    for (int trial = 0; trial < 10; ++trial) {
      const std::vector<float> x = grid_row(t, rng, 1024);
      const std::vector<float> y = dequantize(t, quantize(t, x), x.size());
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << name(t) << " element " << i;
    }
}

TEST(GgmlQuantize, RejectsOtherTypesAndPartialBlocks) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(1024);
  for (const GgmlType t : {GgmlType::Q5_K, GgmlType::Q4_1, GgmlType::F16}) {
    EXPECT_FALSE(hllm::ggml_can_quantize(t));
    EXPECT_THROW(hllm::ggml_quantize_row(t, x.data(), 256, out.data()), hllm::Error) << name(t);
  }
  EXPECT_THROW(hllm::ggml_quantize_row(GgmlType::Q4_K, x.data(), 128, out.data()), hllm::Error);
  EXPECT_THROW(hllm::ggml_quantize_row(GgmlType::Q8_0, x.data(), 48, out.data()), hllm::Error);
}

}  // namespace
