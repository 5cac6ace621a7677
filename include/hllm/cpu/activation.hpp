// SwiGLU on the CPU: out = silu(gate) * up, silu(g) = g / (1 + e^-g). fp32, elementwise.
#pragma once

#include <cmath>
#include <cstdint>

#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"

namespace hllm::cpu {

// gate, up, out: same shape, fp32 (out may alias gate).
inline void swiglu(const Tensor& gate, const Tensor& up, const Tensor& out, ThreadPool& pool) {
  if (!(gate.shape == up.shape) || out.numel() != gate.numel())
    fail("swiglu: gate ", gate.shape.str(), ", up ", up.shape.str(), ", out ", out.shape.str(),
         " do not match");
  const int64_t n = gate.dim(0), width = gate.numel() / n;
  pool.parallel_for(n, [&](int64_t t) {
    const float* g = gate.as<float>() + t * width;
    const float* u = up.as<float>() + t * width;
    float* o = out.as<float>() + t * width;
    for (int64_t i = 0; i < width; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  });
}

}  // namespace hllm::cpu
