// The CUDA backend's entry points for plain C++ code (model/cuda_entry.hpp): this file defines
// them and registers them when the program starts. Include it in exactly one CUDA translation
// unit of the executable that links hllm::cuda (in a static library the linker would drop the
// unreferenced object, and with it the registration).
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "hllm/cuda/backend.cuh"
#include "hllm/cuda/common.cuh"
#include "hllm/model/cuda_entry.hpp"

namespace hllm::detail::cuda_entry {

inline int device_count() { return cuda::device_count(); }

inline std::unique_ptr<Backend> make_backend() { return std::make_unique<CudaBackend>(); }

inline double bytes_in_use() {
  size_t free_bytes = 0, total_bytes = 0;
  HLLM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<double>(total_bytes - free_bytes);
}

// Median of 9 copies of 1 GiB after two warm-ups, timed with events.
inline double copy_bandwidth_gbps() {
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

inline const CudaEntryPoints ENTRY_POINTS{device_count, make_backend, copy_bandwidth_gbps,
                                          bytes_in_use};

}  // namespace hllm::detail::cuda_entry

namespace {
// Set during the static initialization of the translation unit that includes this file.
[[maybe_unused]] const bool hllm_cuda_entry_points_registered =
    (hllm::cuda_entry_points() = &hllm::detail::cuda_entry::ENTRY_POINTS, true);
}  // namespace
