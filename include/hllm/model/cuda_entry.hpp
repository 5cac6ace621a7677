// How plain C++ code reaches the CUDA backend: whether a model runs on it, how many GPUs there
// are, and how to make one — without nvcc, so only one file of a program needs it.
//
// The entry points are a table of functions that kernels/hllm/cuda/device.cuh fills in when the
// program starts (include that file in one .cu file of the executable; the runner's is
// tools/cuda_backend.cu). Without it the table is empty: no GPU, and asking for the CUDA backend
// says how to get one. A run-time table rather than #if keeps every definition here the same in
// every translation unit, whether or not that unit was built with CUDA.
#pragma once

#include <memory>
#include <string>

#include "hllm/core/error.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

struct CudaEntryPoints {
  int (*device_count)() = nullptr;
  std::unique_ptr<Backend> (*make_backend)() = nullptr;
  // Device-to-device copy bandwidth (bytes read + written per second, GB/s): the decode roofline.
  double (*copy_bandwidth_gbps)() = nullptr;
  // Bytes of GPU memory in use (total - free, all processes).
  double (*bytes_in_use)() = nullptr;
};

// The program's table: null until device.cuh registers it.
inline const CudaEntryPoints*& cuda_entry_points() {
  static const CudaEntryPoints* entry_points = nullptr;
  return entry_points;
}

inline bool cuda_built_in() { return cuda_entry_points() != nullptr; }

// The one rule for which models the CUDA kernels cover: head_dim 64 or 128 (every Llama-3 size:
// the attention kernels are instantiated for those two) and no GGUF block-quantized weights (no
// CUDA kernels for them yet); others run on the CPU. Returns why not, or "" when they do.
inline std::string cuda_refusal(const LlamaConfig& config) {
  if (config.quant.method == QuantMethod::ggml)
    return "GGUF block-quantized weights (Q4_K, Q6_K, ...) have no CUDA kernels yet";
  if (config.head_dim != 128 && config.head_dim != 64)
    return "head_dim " + std::to_string(config.head_dim) +
           " is not supported by the CUDA kernels (64 or 128)";
  return "";
}

inline bool cuda_supports(const LlamaConfig& config) { return cuda_refusal(config).empty(); }

inline int cuda_device_count() { return cuda_built_in() ? cuda_entry_points()->device_count() : 0; }

inline std::unique_ptr<Backend> make_cuda_backend() {
  if (!cuda_built_in())
    fail(
        "CUDA backend: this program was built without CUDA (link the hllm::cuda target and "
        "include <hllm/cuda/device.cuh> in one .cu file of the executable)");
  return cuda_entry_points()->make_backend();
}

inline double cuda_copy_bandwidth_gbps() {
  return cuda_built_in() ? cuda_entry_points()->copy_bandwidth_gbps() : 0.0;
}

inline double cuda_bytes_in_use() {
  return cuda_built_in() ? cuda_entry_points()->bytes_in_use() : 0.0;
}

}  // namespace hllm
