// The runner's one CUDA translation unit: it defines and registers the CUDA backend's entry points
// (model/cuda_entry.hpp), which the plain C++ rest of the runner calls.
#include "hllm/cuda/device.cuh"
