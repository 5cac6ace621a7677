// Opening a model folder as people download it from the Hugging Face hub:
//   config.json, generation_config.json (optional),
//   model.safetensors or sharded model-*.safetensors,
//   for GPTQ checkpoints the quantization_config in config.json or, when that is absent,
//   AutoGPTQ's quantize_config.json.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/model/weights.hpp"
#include "hllm/model/weights_load.hpp"
#include "hllm/quant/gptq_config_json.hpp"

namespace hllm {

struct ModelFolder {
  std::filesystem::path dir;
  LlamaConfig config;
  Checkpoint checkpoint;         // owns the mmap'd weights the dense views below point into
  LlamaWeights weights;          // host views, validated against config; INT4 projections own
                                 // their repacked tiles (Linear::owner)
  GenerationConfig generation;   // generation_config.json (all defaults when there is none)
  std::vector<int64_t> eos_ids;  // generation_config.json's eos_token_id if present, else
                                 // config.json's
};

// config_override: a config.json to use instead of the folder's (e.g. a RoPE-scaled variant).
inline ModelFolder open_model_folder(
    const std::filesystem::path& dir,
    const std::optional<std::filesystem::path>& config_override = {}) {
  if (std::filesystem::is_regular_file(dir))
    fail(dir.string(),
         " is a file: hllm opens Hugging Face model folders (config.json + "
         "*.safetensors, as downloaded from the hub); GGUF files are not supported yet");
  if (!std::filesystem::is_directory(dir))
    fail("model folder ", dir.string(), " does not exist or is not a folder");
  const std::filesystem::path config_path = config_override.value_or(dir / "config.json");
  if (!std::filesystem::exists(config_path))
    fail(config_path.string(), " not found (a HF model folder has one)");

  ModelFolder model{dir, load_llama_config(config_path), Checkpoint::open(dir), {}, {}, {}};
  const std::filesystem::path quantize_config = dir / "quantize_config.json";
  if (!model.config.quant.quantized() && std::filesystem::exists(quantize_config))
    model.config.quant = parse_quant_config(read_json_file(quantize_config),
                                            quantize_config.string(), /*assume_gptq=*/true);
  model.weights = load_llama_weights(model.checkpoint, model.config);
  model.generation = load_generation_config(dir / "generation_config.json");
  model.eos_ids = model.generation.eos_token_ids.empty() ? model.config.eos_token_ids
                                                         : model.generation.eos_token_ids;
  return model;
}

// Called now and then while weights are read: bytes read so far, bytes in all.
using LoadProgress = std::function<void(double done_bytes, double total_bytes)>;

// Reads every page of the mapped checkpoint once (one byte per 4 KiB page faults it in), so the
// first forward pass does not pay for the disk silently; `progress` may report it.
inline void prefetch_weights(const Checkpoint& checkpoint, const LoadProgress& progress = {}) {
  const double total = static_cast<double>(checkpoint.total_bytes());
  double done = 0.0;
  unsigned checksum = 0;  // keeps the reads from being optimized away
  constexpr size_t PAGE = 4096;
  for (const std::string& name : checkpoint.names()) {
    const Tensor t = checkpoint.tensor(name);
    const auto* bytes = static_cast<const volatile unsigned char*>(t.data);
    for (size_t offset = 0; offset < t.nbytes(); offset += PAGE) checksum += bytes[offset];
    done += static_cast<double>(t.nbytes());
    if (progress) progress(done, total);
  }
  (void)checksum;
}

}  // namespace hllm
