// What every GPU test shares: a main that skips the whole binary on a machine without a GPU, fresh
// random inputs, and the atol + rtol·|ref| check over every element.
//
// A GPU test defines HLLM_GPU_TEST_MAIN in exactly one translation unit before including this file
// (each test is one .cu file, so: always) and gets `main` from here.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/cuda/common.cuh"

namespace hllm::test {

// Uniform values in [lo, hi), never all zero; rounded to T (bf16 inputs are what kernels see).
template <typename T>
std::vector<T> random_values(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> values(n);
  for (T& v : values) v = cuda::from_f32<T>(dist(rng));
  return values;
}

template <typename T>
std::vector<float> to_float(const std::vector<T>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = cuda::to_f32(values[i]);
  return out;
}

// Every element: |got - ref| <= atol + rtol·|ref|, NaN never passes. Reports the first few misses
// and the worst one; returns true when all pass.
inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<double>& ref, double atol,
                                            double rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << ref.size();
  size_t misses = 0, worst = 0;
  double worst_excess = -1.0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double bound = atol + rtol * std::fabs(ref[i]);
    if (!(err <= bound)) {  // NaN fails here
      if (misses < 5)
        first += " [" + std::to_string(i) + "] got " + std::to_string(got[i]) + " ref " +
                 std::to_string(ref[i]) + ";";
      ++misses;
    }
    const double excess = std::isnan(err) ? INFINITY : err - bound;
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  if (misses == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << misses << " of " << got.size() << " elements off (atol " << atol << ", rtol " << rtol
         << "):" << first << " worst [" << worst << "] got " << got[worst] << " ref " << ref[worst];
}

}  // namespace hllm::test

#ifdef HLLM_GPU_TEST_MAIN
// A machine without a GPU gets exactly one line for the whole binary instead of one skip per test.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  cudaError_t why = cudaSuccess;
  if (hllm::cuda::device_count(&why) == 0) {
    std::printf("skipped: no GPU (%s: %s)\n", cudaGetErrorName(why), cudaGetErrorString(why));
    return 0;
  }
  return RUN_ALL_TESTS();
}
#endif
