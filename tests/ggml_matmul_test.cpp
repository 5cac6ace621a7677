// cpu/ggml_matmul.hpp against the layout's reference dequantizer (layout/ggml_blocks.hpp), for
// every block type hllm computes with, on random blocks (random bytes with their fp16 fields set
// to finite values): the fast per-block dequantizer (AVX2 where the CPU has it) is bitwise the
// reference, and matmul_ggml (and its scalar path) equals dequantize-then-dot in double precision
// for token counts around the 16-token tile and row counts that are not multiples of 8.
#include "hllm/cpu/ggml_matmul.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/layout/ggml_blocks.hpp"

namespace {

using hllm::GgmlType;

struct TypeCase {
  GgmlType type;
  std::vector<int> f16_offsets;  // where the block's fp16 scales/mins sit
};

const TypeCase TYPES[] = {
    {GgmlType::Q4_0, {0}},    {GgmlType::Q4_1, {0, 2}}, {GgmlType::Q5_0, {0}},
    {GgmlType::Q5_1, {0, 2}}, {GgmlType::Q8_0, {0}},    {GgmlType::Q4_K, {0, 2}},
    {GgmlType::Q5_K, {0, 2}}, {GgmlType::Q6_K, {208}},
};

std::string name(GgmlType t) { return std::string(hllm::ggml_type_info(t).name); }

// `blocks` random blocks of the type; each fp16 field gets a value from `f16_value`.
template <typename F16Value>
std::vector<uint8_t> random_blocks(const TypeCase& c, int64_t blocks, std::mt19937& rng,
                                   F16Value f16_value) {
  const int64_t bytes = hllm::ggml_type_info(c.type).block_bytes;
  std::vector<uint8_t> data(static_cast<size_t>(blocks * bytes));
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  for (int64_t b = 0; b < blocks; ++b)
    for (const int offset : c.f16_offsets) {
      const uint16_t bits = f16_value(rng);
      std::memcpy(data.data() + b * bytes + offset, &bits, 2);
    }
  return data;
}

// Any finite fp16: zeros, subnormals, both signs, up to 65504.
uint16_t any_finite_f16(std::mt19937& rng) {
  uint16_t bits;
  do bits = static_cast<uint16_t>(rng());
  while ((bits & 0x7c00u) == 0x7c00u);
  return bits;
}

// Scales like real weights': ±[2⁻¹², 2⁻⁴).
uint16_t weight_scale_f16(std::mt19937& rng) {
  std::uniform_real_distribution<float> exponent(-12, -4);
  const float v = std::exp2(exponent(rng)) * (rng() % 2 ? 1.0f : -1.0f);
  return hllm::f32_to_f16(v).bits;
}

TEST(GgmlMatmul, FastDequantIsBitwiseTheReference) {
  if (!hllm::cpu::cpu_has_avx2())
    GTEST_LOG_(INFO) << "no AVX2: the fast path is the reference itself";
  std::mt19937 rng(11);
  for (const TypeCase& c : TYPES) {
    const hllm::GgmlTypeInfo info = hllm::ggml_type_info(c.type);
    const int64_t blocks = 4000;
    const std::vector<uint8_t> data = random_blocks(c, blocks, rng, any_finite_f16);
    std::vector<float> fast(static_cast<size_t>(info.block_elems)), ref(fast.size());
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = data.data() + b * info.block_bytes;
      hllm::cpu::ggml_dequant_block_fast(c.type, block, fast.data());
      hllm::ggml_dequant_block(c.type, block, ref.data());
      for (size_t i = 0; i < fast.size(); ++i) {
        uint32_t a, r;
        std::memcpy(&a, &fast[i], 4);
        std::memcpy(&r, &ref[i], 4);
        ASSERT_EQ(a, r) << name(c.type) << " block " << b << " element " << i << ": " << fast[i]
                        << " vs " << ref[i];
      }
    }
  }
}

struct Problem {
  int64_t out, in, n;
  std::vector<uint8_t> weights;
  std::vector<float> x;
  std::vector<double> ref, magnitude;  // Σ w·x in double, and Σ |w·x| (the tolerance's scale)

  hllm::GgmlView view(GgmlType t) const { return {t, weights.data(), out, in}; }
};

Problem make_problem(const TypeCase& c, int64_t out, int64_t in, int64_t n, std::mt19937& rng) {
  Problem p{out, in, n, {}, {}, {}, {}};
  const hllm::GgmlTypeInfo info = hllm::ggml_type_info(c.type);
  p.weights = random_blocks(c, out * in / info.block_elems, rng, weight_scale_f16);
  std::normal_distribution<float> normal(0, 1);
  p.x.resize(static_cast<size_t>(n * in));
  for (float& v : p.x) v = normal(rng);
  std::vector<float> row(static_cast<size_t>(in));
  p.ref.assign(static_cast<size_t>(n * out), 0.0);
  p.magnitude = p.ref;
  const hllm::GgmlView w = p.view(c.type);
  for (int64_t r = 0; r < out; ++r) {
    hllm::ggml_dequant_row(c.type, w.row(r), in, row.data());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < in; ++k) {
        const double term = static_cast<double>(row[k]) * p.x[t * in + k];
        p.ref[t * out + r] += term;
        p.magnitude[t * out + r] += std::fabs(term);
      }
  }
  return p;
}

void expect_matches(const Problem& p, const std::vector<float>& y, const std::string& what) {
  for (int64_t i = 0; i < p.n * p.out; ++i)
    ASSERT_LE(std::fabs(y[i] - p.ref[i]), 1e-5 * p.magnitude[i] + 1e-30)
        << what << ": token " << i / p.out << " row " << i % p.out << " got " << y[i]
        << ", reference " << p.ref[i];
}

TEST(GgmlMatmul, EqualsDequantizedDoubleDotProducts) {
  std::mt19937 rng(12);
  hllm::ThreadPool one(1), two(2);
  for (const TypeCase& c : TYPES)
    for (const int64_t out : {13, 37})
      for (const int64_t n : {1, 2, 15, 16, 17, 33}) {
        const Problem p = make_problem(c, out, 512, n, rng);
        for (hllm::ThreadPool* pool : {&one, &two}) {
          std::vector<float> x = p.x, y(static_cast<size_t>(n * out), NAN);
          const hllm::Tensor xt(x.data(), hllm::DType::f32, {n, p.in});
          const hllm::Tensor yt(y.data(), hllm::DType::f32, {n, out});
          hllm::cpu::matmul_ggml(xt, p.view(c.type), yt, *pool);
          expect_matches(p, y,
                         name(c.type) + " out " + std::to_string(out) + " n " + std::to_string(n) +
                             ", " + std::to_string(pool->size()) + " threads");
        }
      }
}

// The path CPUs without AVX2 take (matmul_ggml picks the vector one where it can), one token tile
// at a time as matmul_ggml hands them out.
TEST(GgmlMatmul, ScalarPathEqualsDequantizedDoubleDotProducts) {
  std::mt19937 rng(13);
  const int64_t tile = hllm::cpu::detail::GGML_TOKEN_TILE;
  for (const TypeCase& c : TYPES) {
    const Problem p = make_problem(c, 13, 512, 33, rng);
    std::vector<float> y(static_cast<size_t>(p.n * p.out), NAN);
    for (int64_t t = 0; t < p.n; t += tile)
      hllm::cpu::detail::ggml_rows_scalar(p.x.data(), p.view(c.type), y.data(), 0, p.out, t,
                                          std::min(p.n, t + tile));
    expect_matches(p, y, name(c.type) + " scalar");
  }
}

TEST(GgmlMatmul, RejectsMismatchedShapes) {
  std::vector<uint8_t> blocks(18 * 2);
  std::vector<float> x(64), y(4);
  const hllm::GgmlView w{GgmlType::Q4_0, blocks.data(), 1, 64};
  hllm::ThreadPool pool(1);
  const hllm::Tensor xt(x.data(), hllm::DType::f32, {1, 64});
  EXPECT_THROW(
      hllm::cpu::matmul_ggml(xt, w, hllm::Tensor(y.data(), hllm::DType::f32, {1, 2}), pool),
      hllm::Error);
  const hllm::GgmlView partial{GgmlType::Q4_K, blocks.data(), 1, 64};  // 64 is not 256·k
  EXPECT_THROW(
      hllm::cpu::matmul_ggml(xt, partial, hllm::Tensor(y.data(), hllm::DType::f32, {1, 1}), pool),
      hllm::Error);
}

}  // namespace
