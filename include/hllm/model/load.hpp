// Opening a model folder as people download it from the Hugging Face hub:
//   config.json, generation_config.json (optional), model.safetensors or sharded
//   model-*.safetensors; for GPTQ checkpoints the quantization_config in config.json or, when that
//   is absent, AutoGPTQ's quantize_config.json.
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/weights.hpp"

namespace hllm {

struct ModelFolder {
  std::filesystem::path dir;
  LlamaConfig config;
  Checkpoint checkpoint;  // owns the mmap'd weights the dense views below point into
  LlamaWeights weights;   // host views, validated against config; INT4 projections own their
                          // repacked tiles (Linear::owner)
  std::vector<int64_t>
      eos_ids;  // generation_config.json's eos_token_id if present, else config.json's
};

// config_override: a config.json to use instead of the folder's (e.g. a RoPE-scaled variant).
inline ModelFolder open_model_folder(
    const std::filesystem::path& dir,
    const std::optional<std::filesystem::path>& config_override = {}) {
  if (!std::filesystem::is_directory(dir))
    fail("model folder ", dir.string(), " does not exist or is not a folder");
  const std::filesystem::path config_path = config_override.value_or(dir / "config.json");
  if (!std::filesystem::exists(config_path))
    fail(config_path.string(), " not found (a HF model folder has one)");

  ModelFolder model{dir, load_llama_config(config_path), Checkpoint::open(dir), {}, {}};
  const std::filesystem::path quantize_config = dir / "quantize_config.json";
  if (!model.config.quant.quantized() && std::filesystem::exists(quantize_config))
    model.config.quant = parse_quant_config(read_json_file(quantize_config),
                                            quantize_config.string(), /*assume_gptq=*/true);
  model.weights = load_llama_weights(model.checkpoint, model.config);
  model.eos_ids = model.config.eos_token_ids;
  const std::filesystem::path generation_config = dir / "generation_config.json";
  if (std::filesystem::exists(generation_config)) {
    const json g = read_json_file(generation_config);
    if (!g.is_object()) fail(generation_config.string(), ": expected a JSON object");
    const auto ids =
        detail::parse_token_ids(JsonFields{g, generation_config.string()}, "eos_token_id");
    if (!ids.empty()) model.eos_ids = ids;
  }
  return model;
}

}  // namespace hllm
