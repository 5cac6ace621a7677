// hllm — umbrella include: everything a host program needs to load and run a Llama-3 model on the
// CPU. CUDA parts live under kernels/hllm/cuda/ and are included separately by CUDA translation
// units.
#pragma once

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/mmap.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/core/threads.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/engine/kv_cache.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"
#include "hllm/model/rope.hpp"
#include "hllm/model/weights.hpp"
