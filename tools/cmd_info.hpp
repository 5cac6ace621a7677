// `hllm info -m MODEL_DIR [--ctx N]` — what a model is and the memory it needs, read from
// config.json and the safetensors headers only (no weight is read).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "hllm/engine/memory.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/quant/gptq_config.hpp"
#include "hllm/quant/gptq_config_json.hpp"

namespace hllm::tools {

// 4118760 -> "4.12 MB", 16060522496 -> "16.06 GB"
inline std::string human_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000.0 && unit < 4) bytes /= 1000.0, ++unit;
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

inline void add_info_command(CLI::App& app) {
  struct Options {
    std::string model_dir;
    int64_t context = 0;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand("info", "Describe a model folder and the memory it needs");
  command->add_option("-m,--model", options->model_dir, "HF model folder")->required();
  command->add_option("-c,--ctx", options->context,
                      "context to size the KV cache for (default: the model's)");
  command->callback([options] {
    const std::filesystem::path dir = options->model_dir;
    if (!std::filesystem::is_directory(dir))
      fail("model folder ", dir.string(), " does not exist or is not a folder");
    LlamaConfig c = load_llama_config(dir / "config.json");
    const std::filesystem::path quantize_config =
        dir / "quantize_config.json";  // AutoGPTQ's side file
    if (!c.quant.quantized() && std::filesystem::exists(quantize_config))
      c.quant = parse_quant_config(read_json_file(quantize_config), quantize_config.string(), true);
    const Checkpoint checkpoint = Checkpoint::open(dir);
    const int64_t ctx = options->context > 0 ? options->context : c.max_position_embeddings;

    std::map<std::string, double> bytes_by_dtype;
    for (const std::string& name : checkpoint.names()) {
      const TensorInfo& t = checkpoint.info(name);
      bytes_by_dtype[std::string(dtype_name(t.dtype))] += static_cast<double>(t.nbytes());
    }
    std::string storage;
    for (const auto& [dtype, bytes] : bytes_by_dtype)
      storage += (storage.empty() ? "" : ", ") + dtype + " " + human_bytes(bytes);

    const double weights = static_cast<double>(checkpoint.total_bytes());
    const double kv = static_cast<double>(kv_cache_bytes(c, ctx));
    const double activations =
        static_cast<double>(activation_bytes(c, std::min<int64_t>(ctx, 512)));
    std::printf("model          %s\n", dir.string().c_str());
    std::printf(
        "architecture   Llama: %lld layers, hidden %lld, %lld query / %lld KV heads of %lld, FFN "
        "%lld, vocab %lld%s\n",
        static_cast<long long>(c.n_layers), static_cast<long long>(c.hidden_size),
        static_cast<long long>(c.n_heads), static_cast<long long>(c.n_kv_heads),
        static_cast<long long>(c.head_dim), static_cast<long long>(c.intermediate_size),
        static_cast<long long>(c.vocab_size), c.tie_word_embeddings ? ", tied lm_head" : "");
    std::printf("rope           theta %g, scaling %s (factor %g), context %lld\n", c.rope_theta,
                rope_type_name(c.rope_scaling.type), c.rope_scaling.factor,
                static_cast<long long>(c.max_position_embeddings));
    std::printf("parameters     %.3f B\n", static_cast<double>(parameter_count(c)) / 1e9);
    std::printf("weights        %s (config dtype %s)\n", storage.c_str(),
                std::string(dtype_name(c.dtype)).c_str());
    if (c.quant.quantized())
      std::printf(
          "quantization   GPTQ int4, group %lld, %s, %s, %s zeros (repacked to hllm's INT4 tiles "
          "at load)\n",
          static_cast<long long>(c.quant.group_size),
          c.quant.desc_act ? "act-order" : "no act-order", c.quant.sym ? "sym" : "asym",
          c.quant.zeros_minus_one ? "v1" : "v2");
    std::printf(
        "memory (cpu)   at ctx %lld: weights %s (mmap'd) + KV cache %s (fp32) + activations %s "
        "(per 512 prompt tokens) = %s\n",
        static_cast<long long>(ctx), human_bytes(weights).c_str(), human_bytes(kv).c_str(),
        human_bytes(activations).c_str(), human_bytes(weights + kv + activations).c_str());
  });
}

}  // namespace hllm::tools
