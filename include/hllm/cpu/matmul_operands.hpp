// The activation side of every CPU matmul (dense, INT4, ggml blocks), checked one way:
// x [n, in] and y [n, out], both fp32 and contiguous, for a weight of [out, in].
#pragma once

#include <cstdint>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"

namespace hllm::cpu {

// `op` names the matmul in the message ("matmul_int4").
inline void check_matmul_operands(const char* op, const Tensor& x, const Tensor& y, int64_t in,
                                  int64_t out) {
  if (x.rank() != 2 || y.rank() != 2 || x.dim(1) != in || y.dim(0) != x.dim(0) || y.dim(1) != out)
    fail(op, ": shapes x ", x.shape.str(), " · w [", out, ", ", in, "]ᵀ -> y ", y.shape.str(),
         " do not match");
  if (x.dtype != DType::f32 || y.dtype != DType::f32) fail(op, ": activations must be f32");
  if (!x.is_contiguous() || !y.is_contiguous()) fail(op, ": tensors must be contiguous");
}

}  // namespace hllm::cpu
