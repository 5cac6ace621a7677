// cpu/ggml_q8_matmul.hpp: Q8_0 / Q4_0 weights (made by quant/ggml_quantize.hpp) times int8
// activations. The AVX2 and AVX-512 paths equal the portable one (the same integer dots, fp32 sums
// in another order), and the portable path is within the activation rounding bound
// Σ_k |w_k|·d_x/2 of the exact product with the reference-dequantized weights, for 1..17 tokens
// (every pass width), odd row counts (AVX-512's Q4_0 decode kernel takes 4 rows at a time, the
// rest one by one), an odd block count (AVX-512's half-empty last pair) and
// two 512-input groups with 3 blocks after them (the grouped AVX-512 kernel, then pairs);
// a weight with -128 codes (Q8_0 files may hold them) stays exact through vpsignb and vpdpbusd.
#include "hllm/cpu/ggml_q8_matmul.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "hllm/core/threads.hpp"
#include "hllm/quant/ggml_quantize.hpp"

namespace {

using hllm::DType;
using hllm::GgmlType;
using hllm::Tensor;
using hllm::cpu::CpuIsa;

struct Weight {
  std::vector<uint8_t> bytes;
  hllm::GgmlView view;
};

Weight random_weight(GgmlType type, int64_t out, int64_t in, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(in));
  Weight w;
  w.view.type = type;
  w.view.out = out;
  w.view.in = in;
  w.bytes.resize(static_cast<size_t>(out * w.view.row_bytes()));
  for (int64_t r = 0; r < out; ++r) {
    for (float& v : row) v = dist(rng);
    hllm::ggml_quantize_row(type, row.data(), in, w.bytes.data() + r * w.view.row_bytes());
  }
  w.view.data = w.bytes.data();
  return w;
}

void expect_close_to_exact(const Weight& w, int64_t n, std::mt19937& rng) {
  const int64_t in = w.view.in, out = w.view.out;
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in));
  for (float& v : x) v = dist(rng);
  x[3] = 40.0f;  // an outlier: only its block of 32 gets a coarse step
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Blocks q8;
  std::vector<std::vector<float>> results;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
    if (isa > hllm::cpu::cpu_isa_supported()) continue;
    std::vector<float> y(static_cast<size_t>(n * out), NAN);
    hllm::cpu::matmul_ggml_q8(Tensor(x.data(), DType::f32, {n, in}), w.view,
                              Tensor(y.data(), DType::f32, {n, out}), pool, q8, isa);
    results.push_back(std::move(y));
  }
  std::vector<float> dense(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    hllm::ggml_dequant_row(w.view.type, w.view.row(r), in, dense.data());
    for (int64_t t = 0; t < n; ++t) {
      double exact = 0, magnitude = 0, bound = 0;
      for (int64_t k = 0; k < in; ++k) {
        exact += double{dense[k]} * x[t * in + k];
        magnitude += std::fabs(double{dense[k]} * x[t * in + k]);
        bound += std::fabs(dense[k]) * q8.scales(t)[k / 32] * 0.5;
      }
      const float portable = results[0][t * out + r];
      ASSERT_NEAR(portable, exact, bound * 1.001 + 1e-5 * magnitude) << "row " << r << " t " << t;
      for (size_t i = 1; i < results.size(); ++i)
        ASSERT_NEAR(results[i][t * out + r], portable, 1e-5 * magnitude + 1e-30)
            << "row " << r << " t " << t;
    }
  }
}

TEST(GgmlQ8Matmul, Q8_0AndQ4_0WithinTheRoundingBoundOnEveryPath) {
  std::mt19937 rng(3);
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0}) {
    for (const int64_t in : {int64_t{256}, int64_t{96}, int64_t{1120}}) {
      const Weight w = random_weight(type, 37, in, rng);
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
  Weight w = random_weight(GgmlType::Q8_0, 5, 64, rng);
  for (int64_t r = 0; r < 5; ++r) w.bytes[r * w.view.row_bytes() + 2 + r] = 0x80;  // q = -128
  expect_close_to_exact(w, 13, rng);  // passes of 8, 4 and 1 tokens
}

TEST(GgmlQ8Matmul, RefusesOtherBlockTypes) {
  std::mt19937 rng(1);
  const Weight w = random_weight(GgmlType::Q4_K, 4, 256, rng);
  std::vector<float> x(256), y(4);
  hllm::ThreadPool pool(1);
  hllm::cpu::Q8Blocks q8;
  try {
    hllm::cpu::matmul_ggml_q8(Tensor(x.data(), DType::f32, {1, 256}), w.view,
                              Tensor(y.data(), DType::f32, {1, 4}), pool, q8);
    FAIL() << "no error";
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q8_0 or Q4_0 only"), std::string::npos) << e.what();
  }
}

}  // namespace
