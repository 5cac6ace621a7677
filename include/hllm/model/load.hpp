// Opening a model as people download it:
// - a Hugging Face folder: config.json, generation_config.json (optional), model.safetensors or
//   sharded model-*.safetensors, for GPTQ checkpoints the quantization_config in config.json or,
//   when that is absent, AutoGPTQ's quantize_config.json;
// - a GGUF file (llama.cpp, Ollama, LM Studio): one file with the config, the weights and the
//   tokenizer inside (model/gguf_load.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/model/gguf_load.hpp"
#include "hllm/model/weights.hpp"
#include "hllm/model/weights_load.hpp"
#include "hllm/quant/gptq_config_json.hpp"

namespace hllm {

struct ModelFolder {
  std::filesystem::path dir;  // the folder, or the .gguf file
  LlamaConfig config;
  Checkpoint checkpoint;  // a folder's mmap'd weights, which the dense views below point into
  std::shared_ptr<const GgufFile> gguf;  // a GGUF file's mapping and metadata (null for folders)
  LlamaWeights weights;          // host views, validated against config; INT4 projections own
                                 // their repacked tiles (Linear::owner)
  GenerationConfig generation;   // generation_config.json (all defaults when there is none)
  std::vector<int64_t> eos_ids;  // generation_config.json's eos_token_id if present, else
                                 // config.json's
};

inline ModelFolder open_gguf_model(const std::filesystem::path& path) {
  ModelFolder model;
  model.dir = path;
  model.gguf = std::make_shared<const GgufFile>(path);
  model.config = gguf_llama_config(*model.gguf);
  model.weights = gguf_llama_weights(*model.gguf, model.config);
  model.eos_ids = model.config.eos_token_ids;
  return model;
}

// config_override: a config.json to use instead of the folder's (e.g. a RoPE-scaled variant).
inline ModelFolder open_model_folder(
    const std::filesystem::path& dir,
    const std::optional<std::filesystem::path>& config_override = {}) {
  if (is_gguf_file(dir)) {
    if (config_override) fail("--config applies to model folders, not to GGUF files");
    return open_gguf_model(dir);
  }
  if (std::filesystem::is_regular_file(dir))
    fail(dir.string(),
         " is neither a model folder (config.json + *.safetensors, as downloaded from the "
         "Hugging Face hub) nor a GGUF file");
  if (!std::filesystem::is_directory(dir))
    fail("model folder ", dir.string(), " does not exist or is not a folder");
  const std::filesystem::path config_path = config_override.value_or(dir / "config.json");
  if (!std::filesystem::exists(config_path))
    fail(config_path.string(), " not found (a HF model folder has one)");

  ModelFolder model{dir, load_llama_config(config_path), Checkpoint::open(dir), {}, {}, {}, {}};
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

// Reads every page of the mapped weights once (one byte per 4 KiB page faults it in), so the
// first forward pass does not pay for the disk silently; `progress` may report it.
inline void prefetch_weights(const ModelFolder& model, const LoadProgress& progress = {}) {
  struct Region {
    const void* data;
    size_t nbytes;
  };
  std::vector<Region> regions;
  if (model.gguf) {
    // attn_q / attn_k were copied (re-ordered) at load: their mapped pages are never read again.
    for (const GgufTensorInfo& t : model.gguf->tensors())
      if (!gguf_copied_at_load(t.name)) regions.push_back({t.data, t.nbytes});
  } else {
    for (const std::string& name : model.checkpoint.names()) {
      const Tensor t = model.checkpoint.tensor(name);
      regions.push_back({t.data, t.nbytes()});
    }
  }
  double total = 0.0, done = 0.0;
  for (const Region& r : regions) total += static_cast<double>(r.nbytes);
  unsigned checksum = 0;  // keeps the reads from being optimized away
  constexpr size_t PAGE = 4096;
  for (const Region& r : regions) {
    const auto* bytes = static_cast<const volatile unsigned char*>(r.data);
    for (size_t offset = 0; offset < r.nbytes; offset += PAGE) checksum += bytes[offset];
    done += static_cast<double>(r.nbytes);
    if (progress) progress(done, total);
  }
  (void)checksum;
}

}  // namespace hllm
