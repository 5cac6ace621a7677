// The runner's CUDA entry points, defined in tools/cuda_backend.cu (built when CUDA is found).
#pragma once

#include <memory>

#include "hllm/model/backend.hpp"

namespace hllm::tools {

int cuda_device_count();
std::unique_ptr<Backend> make_cuda_backend();
// Device-to-device copy bandwidth (bytes read + written per second, GB/s): the decode roofline.
double cuda_copy_bandwidth_gbps();
// Bytes of GPU memory in use (total - free).
double cuda_bytes_in_use();

}  // namespace hllm::tools
