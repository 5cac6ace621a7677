// cpu/ggml_kq8_matmul.hpp: Q4_K / Q6_K weights (made by quant/ggml_quantize.hpp) times int8
// activations. The portable path is within the activation rounding bound Σ_k |w_k|·d_x/2 of the
// exact product with the reference-dequantized weights (ggml_dequant_row), and the AVX2 and AVX-512
// paths (where the CPU has them) equal the portable one up to fp32 summation order, for 1..9 tokens
// (passes of 4 and 1), odd row counts and 1, 3 and 8 super-blocks per row.
#include "hllm/cpu/ggml_kq8_matmul.hpp"

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
    row[r % in] = 0.2f;  // an outlier weight: a coarse sub-block scale
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
  x[5] = 30.0f;  // an outlier activation: only its block of 32 gets a coarse step
  hllm::ThreadPool pool(2);
  hllm::cpu::Q8Blocks q8;
  std::vector<std::vector<float>> results;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
    if (isa > hllm::cpu::cpu_isa_supported()) continue;
    std::vector<float> y(static_cast<size_t>(n * out), NAN);
    hllm::cpu::matmul_ggml_kq8(Tensor(x.data(), DType::f32, {n, in}), w.view,
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

TEST(GgmlKq8Matmul, Q4_KAndQ6_KWithinTheRoundingBoundOnEveryPath) {
  std::mt19937 rng(5);
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K}) {
    for (const int64_t in : {int64_t{256}, int64_t{768}, int64_t{2048}}) {
      const Weight w = random_weight(type, 37, in, rng);
      for (const int64_t n : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{9}}) {
        SCOPED_TRACE(testing::Message()
                     << hllm::ggml_type_info(type).name << " in " << in << " n " << n);
        expect_close_to_exact(w, n, rng);
      }
    }
  }
}

TEST(GgmlKq8Matmul, RefusesOtherBlockTypes) {
  std::mt19937 rng(1);
  hllm::ThreadPool pool(1);
  hllm::cpu::Q8Blocks q8;
  const Weight w = random_weight(GgmlType::Q4_0, 4, 256, rng);
  std::vector<float> x(256), y(4);
  try {
    hllm::cpu::matmul_ggml_kq8(Tensor(x.data(), DType::f32, {1, 256}), w.view,
                               Tensor(y.data(), DType::f32, {1, 4}), pool, q8);
    FAIL() << "no error";
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q4_K or Q6_K only"), std::string::npos) << e.what();
  }
}

}  // namespace
