// cpu/ggml_q8_matmul.hpp: Q8_0 / Q4_0 / Q5_0 weights (made by quant/ggml_quantize.hpp; Q4_1 / Q5_1
// of random blocks, with their minima) times int8
// activations. The AVX2 and AVX-512 paths equal the portable one (the same integer dots, fp32 sums
// in another order), and the portable path is within the activation rounding bound
// Σ_k |w_k|·d_x/2 of the exact product with the reference-dequantized weights (and that product
// with the rounded activations up to fp32 arithmetic, tests/ggml_int8_check.hpp), for 1..17 tokens
// (every pass width), odd row counts (AVX-512's Q4_0 decode kernel takes 4 rows at a time, the
// rest one by one), an odd block count (AVX-512's half-empty last pair) and
// two 512-input groups with 3 blocks after them (the grouped AVX-512 kernel, then pairs);
// a weight with -128 codes (Q8_0 files may hold them) stays exact through vpsignb and vpdpbusd.
#include "hllm/cpu/ggml_q8_matmul.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "ggml_int8_check.hpp"
#include "hllm/core/threads.hpp"

namespace {

using hllm::DType;
using hllm::GgmlType;
using hllm::Tensor;
using hllm::cpu::CpuIsa;

// x[3] = 40: an outlier activation.
void expect_close_to_exact(const GgmlWeight& w, int64_t n, std::mt19937& rng) {
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Blocks q8;
  expect_int8_matmul_close_to_exact(
      w, n, rng, 3, 40.0f,
      [&](const Tensor& x, const Tensor& y, CpuIsa isa) {
        hllm::cpu::matmul_ggml_q8(x, w.view, y, pool, q8, isa);
      },
      [&](int64_t t, int64_t k) { return q8.scales(t)[k / 32]; },
      [&](int64_t t, int64_t k) { return q8.scales(t)[k / 32] * q8.row(t)[k]; });
}

// Random codes, with fp16 scales and minima of a trained layer's size (d in [0.001, 0.01), m in
// (−0.1, 0]), for the types quant/ggml_quantize.hpp does not write.
GgmlWeight random_min_blocks(GgmlType type, int64_t out, int64_t in, std::mt19937& rng) {
  GgmlWeight w;
  w.view = {type, nullptr, out, in};
  w.bytes.resize(static_cast<size_t>(out * w.view.row_bytes()));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.001f, 0.01f), minimum(-0.1f, 0.0f);
  for (uint8_t& b : w.bytes) b = static_cast<uint8_t>(byte(rng));
  const int64_t block_bytes = hllm::ggml_type_info(type).block_bytes;
  for (size_t at = 0; at < w.bytes.size(); at += static_cast<size_t>(block_bytes)) {
    const uint16_t d = hllm::f32_to_f16(scale(rng)).bits, m = hllm::f32_to_f16(minimum(rng)).bits;
    std::memcpy(&w.bytes[at], &d, 2);
    std::memcpy(&w.bytes[at + 2], &m, 2);
  }
  w.view.data = w.bytes.data();
  return w;
}

TEST(GgmlQ8Matmul, EveryTypeWithinTheRoundingBoundOnEveryPath) {
  std::mt19937 rng(3);
  for (GgmlType type :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q4_1, GgmlType::Q5_1}) {
    for (const int64_t in : {int64_t{256}, int64_t{96}, int64_t{1120}}) {
      const bool has_min = type == GgmlType::Q4_1 || type == GgmlType::Q5_1;
      const GgmlWeight w =
          has_min ? random_min_blocks(type, 37, in, rng) : random_ggml_weight(type, 37, in, rng);
      for (const int64_t n : {int64_t{1}, int64_t{2}, int64_t{13}, int64_t{17}}) {
        SCOPED_TRACE(testing::Message()
                     << hllm::ggml_type_info(type).name << " in " << in << " n " << n);
        expect_close_to_exact(w, n, rng);
      }
    }
  }
}

TEST(GgmlQ8Matmul, MinusOneTwentyEightCodesStayExact) {
  std::mt19937 rng(8);
  GgmlWeight w = random_ggml_weight(GgmlType::Q8_0, 5, 64, rng);
  for (int64_t r = 0; r < 5; ++r) w.bytes[r * w.view.row_bytes() + 2 + r] = 0x80;  // q = -128
  expect_close_to_exact(w, 29, rng);  // passes of 16, 8, 4 and 1 tokens
}

// The AVX2 quantizer gives the portable one's bits, ties (x.5) and an all-zero block included.
TEST(GgmlQ8Matmul, QuantizersAgreeOnEveryBit) {
  if (hllm::cpu::cpu_isa_supported() < CpuIsa::avx2) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(4);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  const int64_t n = 3, in = 1024;
  std::vector<float> x(static_cast<size_t>(n * in));
  for (float& v : x) v = dist(rng);
  // the first block: max 127, so x / d = x, and halves that round to even
  for (int64_t k = 0; k < 32; ++k) x[k] = k == 0 ? 127.0f : static_cast<float>(k) - 20.5f;
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Blocks portable, avx2;
  hllm::cpu::quantize_q8_blocks(x.data(), n, in, portable, pool, true, CpuIsa::scalar);
  hllm::cpu::quantize_q8_blocks(x.data(), n, in, avx2, pool, true, CpuIsa::avx2);
  EXPECT_EQ(portable.q, avx2.q);
  EXPECT_EQ(portable.scale, avx2.scale);
  EXPECT_EQ(portable.grouped, avx2.grouped);
  EXPECT_EQ(portable.scale[1], 0.0f);
  EXPECT_EQ(portable.row(0)[1], -20);  // -19.5
  EXPECT_EQ(portable.row(0)[2], -18);  // -18.5
}

TEST(GgmlQ8Matmul, RefusesOtherBlockTypes) {
  std::mt19937 rng(1);
  const GgmlWeight w = random_ggml_weight(GgmlType::Q4_K, 4, 256, rng);
  std::vector<float> x(256), y(4);
  hllm::ThreadPool pool(1);
  hllm::cpu::Q8Blocks q8;
  try {
    hllm::cpu::matmul_ggml_q8(Tensor(x.data(), DType::f32, {1, 256}), w.view,
                              Tensor(y.data(), DType::f32, {1, 4}), pool, q8);
    FAIL() << "no error";
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q8_0, Q4_0, Q5_0, Q4_1 or Q5_1 only"), std::string::npos)
        << e.what();
  }
}

}  // namespace
