// Definitions of the CUDA entry points declared in hllm/cuda/device.hpp. Include this file in
// exactly one CUDA translation unit of a program that links hllm::cuda (the functions are not
// inline: one definition each, so plain C++ files can call them).
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "hllm/cuda/backend.cuh"
#include "hllm/cuda/common.cuh"
#include "hllm/cuda/device.hpp"

namespace hllm {

int cuda_device_count() { return cuda::device_count(); }

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

double cuda_bytes_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  HLLM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<double>(total_bytes - free_bytes);
}

// Median of 9 copies of 1 GiB after two warm-ups, timed with events.
double cuda_copy_bandwidth_gbps() {
  constexpr size_t BYTES = size_t{1} << 30;
  cuda::DeviceBuffer<uint8_t> src(BYTES), dst(BYTES);
  HLLM_CUDA_CHECK(cudaMemset(src.data(), 1, BYTES));
  cudaEvent_t start = nullptr, stop = nullptr;
  HLLM_CUDA_CHECK(cudaEventCreate(&start));
  HLLM_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < 11; ++i) {
    HLLM_CUDA_CHECK(cudaEventRecord(start));
    HLLM_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), BYTES, cudaMemcpyDeviceToDevice));
    HLLM_CUDA_CHECK(cudaEventRecord(stop));
    HLLM_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    HLLM_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (i >= 2) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(BYTES) / (ms[ms.size() / 2] * 1e-3) * 1e-9;
}

}  // namespace hllm
