// The tests of the GGUF-block matmuls with int8 activations (ggml_q8_matmul_test,
// ggml_kq8_matmul_test): a random weight made by quant/ggml_quantize.hpp, and the check that a
// matmul is within its activation rounding bound of the exact product on every instruction set.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "hllm/core/tensor.hpp"
#include "hllm/cpu/isa.hpp"
#include "hllm/layout/ggml_blocks.hpp"
#include "hllm/quant/ggml_quantize.hpp"

namespace {

struct GgmlWeight {
  std::vector<uint8_t> bytes;
  hllm::GgmlView view;
};

// Rows of N(0, 0.02) weights; outlier_weight: row r also has 0.2 at input r % in (a coarse
// sub-block scale).
GgmlWeight random_ggml_weight(hllm::GgmlType type, int64_t out, int64_t in, std::mt19937& rng,
                              bool outlier_weight = false) {
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(in));
  GgmlWeight w;
  w.view.type = type;
  w.view.out = out;
  w.view.in = in;
  w.bytes.resize(static_cast<size_t>(out * w.view.row_bytes()));
  for (int64_t r = 0; r < out; ++r) {
    for (float& v : row) v = dist(rng);
    if (outlier_weight) row[r % in] = 0.2f;
    hllm::ggml_quantize_row(type, row.data(), in, w.bytes.data() + r * w.view.row_bytes());
  }
  w.view.data = w.bytes.data();
  return w;
}

// x: n tokens of N(0, 1) activations with x[outlier_index] = outlier (only its rounding block
// gets a coarse step). matmul(x, y, isa) is the path under test; step(t, k) the activation step
// d_x it last used for input k of token t, rounded(t, k) that input as it rounded it (d_x·a).
// With the reference-dequantized weights w, the portable (scalar) result must be
//   - within Σ_k |w_k|·d_x/2 of the exact product with x (the rounding bound), and
//   - the exact product with the rounded activations up to fp32 arithmetic (integer dots exact);
// the vector ones equal to the portable one up to fp32 summation order.
template <class Matmul, class Step, class Rounded>
void expect_int8_matmul_close_to_exact(const GgmlWeight& w, int64_t n, std::mt19937& rng,
                                       int64_t outlier_index, float outlier, Matmul matmul,
                                       Step step, Rounded rounded) {
  using hllm::cpu::CpuIsa;
  const int64_t in = w.view.in, out = w.view.out;
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n * in));
  for (float& v : x) v = dist(rng);
  x[outlier_index] = outlier;
  std::vector<std::vector<float>> results;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
    if (isa > hllm::cpu::cpu_isa_supported()) continue;
    std::vector<float> y(static_cast<size_t>(n * out), NAN);
    matmul(hllm::Tensor(x.data(), hllm::DType::f32, {n, in}),
           hllm::Tensor(y.data(), hllm::DType::f32, {n, out}), isa);
    results.push_back(std::move(y));
  }
  std::vector<float> dense(static_cast<size_t>(in));
  for (int64_t r = 0; r < out; ++r) {
    hllm::ggml_dequant_row(w.view.type, w.view.row(r), in, dense.data());
    for (int64_t t = 0; t < n; ++t) {
      double exact = 0, exact_rounded = 0, magnitude = 0, bound = 0;
      for (int64_t k = 0; k < in; ++k) {
        exact += double{dense[k]} * x[t * in + k];
        exact_rounded += double{dense[k]} * rounded(t, k);
        magnitude += std::fabs(double{dense[k]} * x[t * in + k]);
        bound += std::fabs(dense[k]) * step(t, k) * 0.5;
      }
      const float portable = results[0][t * out + r];
      ASSERT_NEAR(portable, exact, bound * 1.001 + 1e-5 * magnitude) << "row " << r << " t " << t;
      ASSERT_NEAR(portable, exact_rounded, 1e-5 * magnitude + 1e-30) << "row " << r << " t " << t;
      for (size_t i = 1; i < results.size(); ++i)
        ASSERT_NEAR(results[i][t * out + r], portable, 1e-5 * magnitude + 1e-30)
            << "row " << r << " t " << t << " path " << i;
    }
  }
}

}  // namespace
