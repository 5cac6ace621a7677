// What the tests against the Hugging Face goldens (tests/data) share: the token ids a golden file
// stores as int64, and how far a run's logits are from the golden ones.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"

namespace hllm::test {

// An int64 id tensor of a golden file as int32 ids.
inline std::vector<int32_t> golden_ids(const Tensor& t) {
  if (t.dtype != DType::i64) fail("golden ids: expected an I64 tensor, got ", dtype_name(t.dtype));
  std::vector<int32_t> ids(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) ids[i] = static_cast<int32_t>(t.as<int64_t>()[i]);
  return ids;
}

// max |logits - golden| and max |golden| over every element of golden's [n, vocab] (a NaN in
// logits makes max_error NaN, which fails any `<=` check).
struct LogitsError {
  float max_error = 0.0f;
  float max_golden = 0.0f;
  float relative() const { return max_error / max_golden; }
};

inline LogitsError logits_error(const float* logits, const Tensor& golden) {
  const float* g = golden.as<float>();
  LogitsError e;
  for (int64_t i = 0; i < golden.numel(); ++i) {
    e.max_golden = std::max(e.max_golden, std::fabs(g[i]));
    const float d = std::fabs(logits[i] - g[i]);
    e.max_error = std::isnan(d) || std::isnan(e.max_error) ? NAN : std::max(e.max_error, d);
  }
  return e;
}

// Positions t of [n, vocab] whose argmax equals the golden's.
inline int64_t argmax_agreement(const float* logits, const Tensor& golden) {
  const int64_t n = golden.dim(0), vocab = golden.dim(1);
  const float* g = golden.as<float>();
  int64_t agree = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* ours = logits + t * vocab;
    const float* theirs = g + t * vocab;
    agree += std::max_element(ours, ours + vocab) - ours ==
             std::max_element(theirs, theirs + vocab) - theirs;
  }
  return agree;
}

// Median over positions of ‖logits_t − golden_t‖₂ / ‖golden_t‖₂ ([n, vocab] rows).
inline double median_relative_l2(const float* logits, const Tensor& golden) {
  const int64_t n = golden.dim(0), vocab = golden.dim(1);
  const float* g = golden.as<float>();
  std::vector<double> relative;
  for (int64_t t = 0; t < n; ++t) {
    double error = 0, norm = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = double{logits[t * vocab + v]} - g[t * vocab + v];
      error += d * d;
      norm += double{g[t * vocab + v]} * g[t * vocab + v];
    }
    relative.push_back(std::sqrt(error / norm));
  }
  std::sort(relative.begin(), relative.end());
  return relative[relative.size() / 2];
}

}  // namespace hllm::test
