// The runner's one CUDA translation unit: the definitions of the CUDA entry points
// (hllm/cuda/device.hpp) that the plain C++ rest of the runner calls.
#include "hllm/cuda/device.cuh"
