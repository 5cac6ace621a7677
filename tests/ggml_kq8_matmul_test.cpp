// cpu/ggml_kq8_matmul.hpp: Q4_K / Q6_K weights (made by quant/ggml_quantize.hpp) and Q5_K blocks of
// random bytes times int8 activations rounded per 256 inputs. Against the reference-dequantized
// weights (ggml_dequant_row) the portable path is within the activation rounding bound
// Σ_k |w_k|·d_x/2 of the exact product and is the exact product with the rounded activations up to
// fp32 arithmetic (tests/ggml_int8_check.hpp); the AVX2 and AVX-512 paths (where the CPU has
// them) equal the portable one up to fp32 summation order, for 1..9 tokens (passes of 4 and 1),
// odd row counts and 1, 3 and 8 super-blocks per row; Q6_K's extreme group scales (−128, 127)
// and codes (0, 63) included. The activations' stored order (q8k_position) is a permutation
// within each 128 inputs, and the AVX2 quantizer gives the portable one's bits.
#include "hllm/cpu/ggml_kq8_matmul.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "ggml_int8_check.hpp"
#include "hllm/core/threads.hpp"

namespace {

using hllm::DType;
using hllm::GgmlType;
using hllm::Tensor;
using hllm::cpu::CpuIsa;

// x[5] = 30: an outlier activation, the step of its whole super-block coarse.
void expect_close_to_exact(const GgmlWeight& w, int64_t n, std::mt19937& rng) {
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8KBlocks q8k;
  expect_int8_matmul_close_to_exact(
      w, n, rng, 5, 30.0f,
      [&](const Tensor& x, const Tensor& y, CpuIsa isa) {
        hllm::cpu::matmul_ggml_kq8(x, w.view, y, pool, q8k, isa);
      },
      [&](int64_t t, int64_t k) { return q8k.scales(t)[k / hllm::cpu::K_SUPER]; },
      [&](int64_t t, int64_t k) {
        return q8k.scales(t)[k / hllm::cpu::K_SUPER] * q8k.row(t)[hllm::cpu::q8k_position(k)];
      });
}

// Q5_K blocks of random bytes (ggml_quantize_row does not write Q5_K): every code 0..31, 6-bit
// scale and min, with fp16 d and dmin of the size real files have.
GgmlWeight random_q5_k_weight(int64_t out, int64_t in, std::mt19937& rng) {
  GgmlWeight w;
  w.view = {GgmlType::Q5_K, nullptr, out, in};
  w.bytes.resize(static_cast<size_t>(out * w.view.row_bytes()));
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.0002f, 0.002f);
  for (size_t b = 0; b < w.bytes.size(); b += 176) {
    for (size_t i = 0; i < 176; ++i) w.bytes[b + i] = static_cast<uint8_t>(byte(rng));
    for (size_t i = 0; i < 4; i += 2) {  // d, dmin
      const uint16_t bits = hllm::f32_to_f16(scale(rng)).bits;
      w.bytes[b + i] = static_cast<uint8_t>(bits & 0xFF);
      w.bytes[b + i + 1] = static_cast<uint8_t>(bits >> 8);
    }
  }
  w.view.data = w.bytes.data();
  return w;
}

TEST(GgmlKq8Matmul, Q4_KAndQ6_KWithinTheRoundingBoundOnEveryPath) {
  std::mt19937 rng(5);
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K}) {
    for (const int64_t in : {int64_t{256}, int64_t{768}, int64_t{2048}}) {
      const GgmlWeight w = random_ggml_weight(type, 37, in, rng, /*outlier_weight=*/true);
      for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{9}}) {
        SCOPED_TRACE(testing::Message()
                     << hllm::ggml_type_info(type).name << " in " << in << " n " << n);
        expect_close_to_exact(w, n, rng);
      }
    }
  }
}

TEST(GgmlKq8Matmul, Q5_KWithinTheRoundingBoundOnEveryPath) {
  std::mt19937 rng(6);
  for (const int64_t in : {int64_t{256}, int64_t{768}}) {
    const GgmlWeight w = random_q5_k_weight(37, in, rng);
    for (const int64_t n : {int64_t{1}, int64_t{5}}) {
      SCOPED_TRACE(testing::Message() << "in " << in << " n " << n);
      expect_close_to_exact(w, n, rng);
    }
  }
}

// Every Q6_K code 63 or 0 and group scales at the int8 ends: the int16 pair products and the
// int32 super-block sums at their largest.
TEST(GgmlKq8Matmul, Q6_KExtremeCodesAndScalesStayExact) {
  std::mt19937 rng(9);
  GgmlWeight w = random_ggml_weight(GgmlType::Q6_K, 6, 512, rng);
  const int64_t row_bytes = w.view.row_bytes();
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t s = 0; s < 2; ++s) {
      uint8_t* block = w.bytes.data() + r * row_bytes + s * 210;
      const uint8_t code_bits = r % 2 == 0 ? 0xFF : 0x00;  // codes 63 or 0
      for (int i = 0; i < 192; ++i) block[i] = code_bits;
      for (int g = 0; g < 16; ++g) block[192 + g] = static_cast<uint8_t>(g % 2 == 0 ? 127 : -128);
    }
  expect_close_to_exact(w, 5, rng);
}

TEST(GgmlKq8Matmul, ActivationOrderIsAPermutationWithinEach128) {
  std::set<int64_t> seen;
  for (int64_t k = 0; k < 256; ++k) {
    const int64_t p = hllm::cpu::q8k_position(k);
    EXPECT_EQ(p / 128, k / 128) << k;
    EXPECT_EQ(p % 32, k % 32) << k;
    EXPECT_EQ(hllm::cpu::q8k_position(p), k) << k;
    seen.insert(p);
  }
  EXPECT_EQ(seen.size(), 256u);
  EXPECT_EQ(hllm::cpu::q8k_position(32), 64);  // chunk 1 is stored third
}

// The AVX2 quantizer gives the portable one's bits: codes, scales and sums, on values with ties
// (x.5 steps) and an all-zero super-block.
TEST(GgmlKq8Matmul, QuantizersAgreeOnEveryBit) {
  if (hllm::cpu::cpu_isa_supported() < CpuIsa::avx2) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(4);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  const int64_t n = 3, in = 768;
  std::vector<float> x(static_cast<size_t>(n * in));
  for (float& v : x) v = dist(rng);
  // the first super-block: max 127, so x / d = x, and halves (ties) that round to even
  for (int64_t k = 0; k < 256; ++k)
    x[k] = k == 0 ? 127.0f : static_cast<float>(k % 200 - 100) + 0.5f;
  std::fill(x.begin() + 256, x.begin() + 512, 0.0f);
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8KBlocks portable, avx2;
  hllm::cpu::quantize_q8k_blocks(x.data(), n, in, portable, pool, CpuIsa::scalar);
  hllm::cpu::quantize_q8k_blocks(x.data(), n, in, avx2, pool, CpuIsa::avx2);
  EXPECT_EQ(portable.q, avx2.q);
  EXPECT_EQ(portable.scale, avx2.scale);
  EXPECT_EQ(portable.sum16, avx2.sum16);
  EXPECT_EQ(portable.scale[1], 0.0f);
  EXPECT_EQ(portable.row(0)[hllm::cpu::q8k_position(1)], -98);  // -98.5
  EXPECT_EQ(portable.row(0)[hllm::cpu::q8k_position(2)], -98);  // -97.5
}

TEST(GgmlKq8Matmul, RefusesOtherBlockTypes) {
  std::mt19937 rng(1);
  hllm::ThreadPool pool(1);
  hllm::cpu::Q8KBlocks q8k;
  const GgmlWeight w = random_ggml_weight(GgmlType::Q4_0, 4, 256, rng);
  std::vector<float> x(256), y(4);
  try {
    hllm::cpu::matmul_ggml_kq8(Tensor(x.data(), DType::f32, {1, 256}), w.view,
                               Tensor(y.data(), DType::f32, {1, 4}), pool, q8k);
    FAIL() << "no error";
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K, Q5_K or Q6_K only"), std::string::npos) << e.what();
  }
}

}  // namespace
