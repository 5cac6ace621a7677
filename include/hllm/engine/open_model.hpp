// A model ready to run, in one call: a Hugging Face model folder -> weights (mmap'd, validated,
// GPTQ repacked), its tokenizer and chat format, a backend (cpu | cuda | auto), the Llama forward
// pass, and the sampling defaults and stop tokens the checkpoint ships with.
//
//   std::unique_ptr<hllm::LoadedModel> m = hllm::open_model("Meta-Llama-3-8B-Instruct");
//   std::vector<int32_t> prompt = hllm::encode_prompt(*m->tokenizer, messages);
//   hllm::generate(m->model, cache, prompt, ...)              (engine/generate.hpp)
//
// The runner's commands and the server open models only through here, so they agree on what a
// model folder means.
#pragma once

#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/cuda/device.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace hllm {

// The backend for `device`: "cpu"; "cuda" (an error when this program has no CUDA, there is no
// GPU, or cuda_supports() refuses the model); "auto" = cuda when all of that holds, else cpu.
// threads: CPU threads (0 = one per hardware thread).
inline std::unique_ptr<Backend> make_backend(std::string_view device, int threads,
                                             const LlamaConfig& config) {
  if (device == "cuda") {
    if (!cuda_supports(config))
      fail("device cuda: head_dim ", config.head_dim,
           " is not supported by the CUDA kernels (64 or 128); use device cpu");
    if (cuda_device_count() == 0) fail("device cuda: no GPU found");
    return make_cuda_backend();
  }
  if (device == "auto" && cuda_supports(config) && cuda_device_count() > 0)
    return make_cuda_backend();
  if (device != "cpu" && device != "auto")
    fail("device must be cpu, cuda or auto (got \"", device, "\")");
  return std::make_unique<CpuBackend>(threads);
}

// "cpu, 8 threads" or "cuda (NVIDIA H200)".
inline std::string describe_backend(const Backend& backend) {
  if (const auto* cpu = dynamic_cast<const CpuBackend*>(&backend))
    return "cpu, " + std::to_string(cpu->n_threads()) + " threads";
  return backend.name();
}

// Device memory in use on the GPU (all processes, as cudaMemGetInfo sees it); 0 on the CPU.
inline double device_bytes_in_use(const Backend& backend) {
  return backend.device() == Device::cuda ? cuda_bytes_in_use() : 0.0;
}

struct OpenOptions {
  std::string device = "auto";                  // cpu | cuda | auto (make_backend)
  int threads = 0;                              // CPU threads, 0 = one per hardware thread
  std::optional<std::filesystem::path> config;  // a config.json to use instead of the folder's
  std::filesystem::path tokenizer;  // tokenizer.json (or its folder); empty = the model folder's
  bool load_tokenizer = true;       // false: token ids only (no tokenizer.json needed)
  LoadProgress progress;            // set: the weights are read in up front, reporting progress
};

// Everything open_model() assembles. Held by pointer: the model refers to the backend and to the
// folder's mapped weights.
struct LoadedModel {
  ModelFolder folder;  // config, mapped checkpoint, weights, generation_config
  std::unique_ptr<Backend> backend;
  LlamaModel model;
  std::optional<Tokenizer> tokenizer;  // absent when opened with load_tokenizer = false
  // Generation ends at any of these: the checkpoint's eos ids, the tokenizer's stop tokens and
  // <|eot_id|> (the chat format ends every turn with it, base models included).
  std::vector<int64_t> stop_ids;
  SamplingParams sampling;  // generation_config.json's defaults (seed 0)

  LoadedModel(const std::filesystem::path& dir, const OpenOptions& options)
      : folder(open_model_folder(dir, options.config)),
        backend(make_backend(options.device, options.threads, folder.config)),
        model(folder.config, folder.weights, *backend),
        sampling(SamplingParams::from_generation_config(folder.generation)) {
    if (options.progress) prefetch_weights(folder.checkpoint, options.progress);
    stop_ids = folder.eos_ids;
    if (!options.load_tokenizer) return;
    tokenizer.emplace(load_tokenizer(options.tokenizer.empty() ? dir : options.tokenizer));
    if (static_cast<int64_t>(tokenizer->vocab_size()) > folder.config.vocab_size)
      fail("the tokenizer has ", tokenizer->vocab_size(), " tokens but the model only ",
           folder.config.vocab_size, " (wrong tokenizer?)");
    const std::vector<TokenId> tokenizer_stops = tokenizer->stop_ids();
    std::vector<int64_t> more(tokenizer_stops.begin(), tokenizer_stops.end());
    if (const auto eot = tokenizer->find_added("<|eot_id|>")) more.push_back(*eot);
    for (const int64_t id : more)
      if (std::find(stop_ids.begin(), stop_ids.end(), id) == stop_ids.end()) stop_ids.push_back(id);
  }

  const LlamaConfig& config() const { return folder.config; }
  std::string backend_description() const { return describe_backend(*backend); }
};

// Opens the Hugging Face model folder `dir` (config.json, *.safetensors, tokenizer.json,
// generation_config.json; bf16/fp16/fp32 or GPTQ int4) on the backend the options ask for.
inline std::unique_ptr<LoadedModel> open_model(const std::filesystem::path& dir,
                                               const OpenOptions& options = {}) {
  return std::make_unique<LoadedModel>(dir, options);
}

}  // namespace hllm
