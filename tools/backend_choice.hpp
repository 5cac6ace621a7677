// Which backend the runner uses: `--device cpu | cuda | auto`. The CUDA backend lives in its own
// translation unit (tools/cuda_backend.cu, compiled by nvcc when the build has CUDA), so the rest
// of the runner stays plain C++.
#pragma once

#include <memory>
#include <string>

#include "hllm/core/error.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/model/config.hpp"
#ifdef HLLM_RUNNER_CUDA
#include "cuda_backend.hpp"
#endif

namespace hllm::tools {

#ifndef HLLM_RUNNER_CUDA
inline int cuda_device_count() { return 0; }
inline std::unique_ptr<Backend> make_cuda_backend() {
  fail("--device cuda: this hllm was built without CUDA (no nvcc found at configure time)");
}
inline double cuda_copy_bandwidth_gbps() { return 0.0; }
inline double cuda_bytes_in_use() { return 0.0; }
#endif

// The CUDA kernels cover head_dim 64 and 128 (every Llama-3 size); other models run on the CPU.
inline bool cuda_supports(const LlamaConfig& config) {
  return config.head_dim == 128 || config.head_dim == 64;
}

inline std::unique_ptr<Backend> make_backend(const std::string& device, int threads,
                                             const LlamaConfig& config) {
  if (device == "cuda") {
    if (!cuda_supports(config))
      fail("--device cuda: head_dim ", config.head_dim,
           " is not supported by the CUDA kernels (64 or 128); use --device cpu");
    if (cuda_device_count() == 0) fail("--device cuda: no GPU found");
    return make_cuda_backend();
  }
  if (device == "auto" && cuda_supports(config) && cuda_device_count() > 0)
    return make_cuda_backend();
  if (device != "cpu" && device != "auto")
    fail("--device must be cpu, cuda or auto (got \"", device, "\")");
  return std::make_unique<CpuBackend>(threads);
}

// Device memory in use on the GPU (all processes, as cudaMemGetInfo sees it); 0 on the CPU.
inline double device_bytes_in_use(Backend& backend) {
  return backend.device() == Device::cuda ? cuda_bytes_in_use() : 0.0;
}

inline std::string describe_backend(Backend& backend) {
  if (auto* cpu = dynamic_cast<CpuBackend*>(&backend))
    return "cpu, " + std::to_string(cpu->n_threads()) + " threads";
  return backend.name();
}

}  // namespace hllm::tools
