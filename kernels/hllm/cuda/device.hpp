// The CUDA backend as plain C++ code sees it: whether a model runs on it, how many GPUs there are,
// and how to make one — callable from translation units that g++ compiles (engine/open_model.hpp,
// the runner), so only one file of a program needs nvcc.
//
// With HLLM_HAVE_CUDA (set by the hllm::cuda CMake target) these are declared here and defined in
// hllm/cuda/device.cuh, which exactly one CUDA translation unit of the program includes (the
// runner's is tools/cuda_backend.cu). Without it they say "no GPU" and make_cuda_backend() explains
// how to get one.
#pragma once

#include <memory>

#include "hllm/core/error.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

// The one rule for which models the CUDA kernels cover: head_dim 64 or 128 (every Llama-3 size:
// the attention kernels are instantiated for those two); others run on the CPU.
inline bool cuda_supports(const LlamaConfig& config) {
  return config.head_dim == 128 || config.head_dim == 64;
}

#if HLLM_HAVE_CUDA
int cuda_device_count();
std::unique_ptr<Backend> make_cuda_backend();
// Device-to-device copy bandwidth (bytes read + written per second, GB/s): the decode roofline.
double cuda_copy_bandwidth_gbps();
// Bytes of GPU memory in use (total - free, all processes).
double cuda_bytes_in_use();
#else
inline int cuda_device_count() { return 0; }
[[noreturn]] inline std::unique_ptr<Backend> make_cuda_backend() {
  fail(
      "CUDA backend: this program was built without CUDA (link the hllm::cuda target and include "
      "<hllm/cuda/device.cuh> in one .cu file)");
}
inline double cuda_copy_bandwidth_gbps() { return 0.0; }
inline double cuda_bytes_in_use() { return 0.0; }
#endif

}  // namespace hllm
