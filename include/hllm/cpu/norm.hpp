// RMSNorm on the CPU: out[t, :] = weight * x[t, :] / sqrt(mean(x[t, :]²) + eps), fp32 math.
#pragma once

#include <cmath>
#include <cstdint>

#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/simd.hpp"

namespace hllm::cpu {

namespace detail {
template <typename W>
void rmsnorm_row(const float* x, const W* weight, float eps, float* out, int64_t dim) {
  double sum_squares = 0.0;  // double: exact enough for any width, costs nothing next to a matmul
  for (int64_t i = 0; i < dim; ++i) sum_squares += static_cast<double>(x[i]) * x[i];
  const float inv_rms =
      static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(dim) + eps));
  for (int64_t i = 0; i < dim; ++i) out[i] = to_f32(weight[i]) * (x[i] * inv_rms);
}
}  // namespace detail

// x, out: [n, dim] fp32 (may alias); weight: [dim] bf16 / f16 / f32.
inline void rmsnorm(const Tensor& x, const Tensor& weight, float eps, const Tensor& out,
                    ThreadPool& pool) {
  const int64_t n = x.dim(0), dim = x.dim(1);
  if (weight.numel() != dim || out.numel() != x.numel())
    fail("rmsnorm: x ", x.shape.str(), ", weight ", weight.shape.str(), ", out ", out.shape.str(),
         " do not match");
  pool.parallel_for(n, [&](int64_t t) {
    const float* row = x.as<float>() + t * dim;
    float* dst = out.as<float>() + t * dim;
    visit_float_dtype(weight.dtype, "rmsnorm: weight", [&]<typename T>(std::type_identity<T>) {
      detail::rmsnorm_row(row, weight.as<T>(), eps, dst, dim);
    });
  });
}

}  // namespace hllm::cpu
