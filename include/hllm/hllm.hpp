// hllm — umbrella include: everything a host program needs to open a Llama-3 model and generate
// with it (engine/open_model.hpp, engine/generate_text.hpp; examples/consumer/main.cpp shows the
// whole of it). The CUDA backend is chosen by open_model() when the program links hllm::cuda;
// kernels live under kernels/hllm/cuda/ and are included by CUDA translation units only.
#pragma once

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/engine/engine.hpp"
#include "hllm/engine/generate.hpp"
#include "hllm/engine/generate_text.hpp"
#include "hllm/engine/memory.hpp"
#include "hllm/engine/open_model.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/grammar/compiled.hpp"
#include "hllm/grammar/grammar.hpp"
#include "hllm/grammar/json_schema.hpp"
#include "hllm/grammar/matcher.hpp"
#include "hllm/grammar/token_vocabulary.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/gguf_tokenizer.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"
#include "hllm/version.hpp"
