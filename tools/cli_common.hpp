// Pieces the runner's subcommands share: parsing "--ids 1,2,3" and the model-folder options.
#pragma once

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/open_model.hpp"

namespace hllm::tools {

// "1, 2,3" -> {1, 2, 3}; anything else is an error naming the bad item.
inline std::vector<int32_t> parse_id_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    std::string item = text.substr(pos, comma - pos);
    const size_t first = item.find_first_not_of(' '), last = item.find_last_not_of(' ');
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    int32_t id = 0;
    const auto [end, error] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || error != std::errc() || end != item.data() + item.size() || id < 0)
      fail("--ids: \"", item,
           "\" is not a token id (expected comma-separated non-negative integers)");
    ids.push_back(id);
    pos = comma + 1;
  }
  return ids;
}

// --cpu-matmul exact|int8: how the CPU backend multiplies by INT4 weights (CpuMatmul).
inline void add_cpu_matmul_option(CLI::App& command, CpuMatmul& matmul, CpuMatmul default_value) {
  matmul = default_value;
  command
      .add_option_function<std::string>(
          "--cpu-matmul",
          [&matmul](const std::string& name) {
            matmul = name == "int8" ? CpuMatmul::int8 : CpuMatmul::exact;
          },
          "CPU arithmetic for INT4 weights: int8 (activations rounded to int8 per 32 inputs, "
          "integer dot products: fast) or exact (fp32 activations, the reference)")
      ->check(CLI::IsMember({"exact", "int8"}))
      ->default_str(cpu_matmul_name(default_value));
}

// --kv-cache-dtype auto|f32|f16: the CPU backend's KV cache type (CpuKvCache).
inline void add_kv_cache_option(CLI::App& command, CpuKvCache& kv) {
  static const std::map<std::string, CpuKvCache> names = [] {
    std::map<std::string, CpuKvCache> by_name;
    for (const CpuKvCache c : {CpuKvCache::automatic, CpuKvCache::f32, CpuKvCache::f16})
      by_name[cpu_kv_cache_name(c)] = c;
    return by_name;
  }();
  kv = CpuKvCache::automatic;
  command
      .add_option_function<std::string>(
          "--kv-cache-dtype", [&kv](const std::string& name) { kv = names.at(name); },
          "CPU KV cache: f16 (as llama.cpp: half the memory and the K/V bytes a decode step "
          "reads), f32 (the reference), or auto (f16 with --cpu-matmul int8, f32 with exact); "
          "a GPU keeps K/V in bf16")
      ->check(CLI::IsMember(names))
      ->default_str(cpu_kv_cache_name(CpuKvCache::automatic));
}

// --lm-head auto|bf16|q8|q6|q4: the lm_head as stored or rounded at load (LmHead).
inline void add_lm_head_option(CLI::App& command, LmHead& head, LmHead default_value) {
  static const std::map<std::string, LmHead> names = [] {
    std::map<std::string, LmHead> by_name;
    for (const LmHead h : {LmHead::automatic, LmHead::stored, LmHead::q8, LmHead::q6, LmHead::q4})
      by_name[lm_head_name(h)] = h;
    return by_name;
  }();
  head = default_value;
  command
      .add_option_function<std::string>(
          "--lm-head", [&head](const std::string& name) { head = names.at(name); },
          "lm_head weights: bf16 (as stored), q8 (Q8_0 blocks made at load: ~1.9x fewer bytes "
          "per decode step, CPU only), q6 (Q6_K blocks: ~2.4x fewer, CPU only), q4 (INT4 tiles, "
          "groups of 128: ~3.8x fewer, coarser), or auto (q8 on the CPU, as stored on a GPU)")
      ->check(CLI::IsMember(names))
      ->default_str(lm_head_name(default_value));
}

struct ModelOptions {
  std::string model_dir;
  std::string config_override;
  int threads = 0;
  std::string device = "auto";
  CpuMatmul int4_matmul = CpuMatmul::exact;
  CpuKvCache kv_cache = CpuKvCache::automatic;
  LmHead lm_head = LmHead::stored;
};

inline void add_model_options(CLI::App& command, ModelOptions& options) {
  command
      .add_option("-m,--model", options.model_dir,
                  "HF model folder (config.json + *.safetensors) or .gguf file")
      ->required();
  command.add_option("--config", options.config_override,
                     "config.json to use instead of the folder's");
  command.add_option("-t,--threads", options.threads,
                     "CPU threads (default: all hardware threads)");
  add_cpu_matmul_option(command, options.int4_matmul, CpuMatmul::exact);
  add_kv_cache_option(command, options.kv_cache);
  add_lm_head_option(command, options.lm_head, LmHead::stored);
  command
      .add_option("--device", options.device,
                  "where the model runs: cuda, cpu, or auto (cuda when a GPU is present and this "
                  "build has CUDA)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
}

inline OpenOptions open_options(const ModelOptions& options) {
  OpenOptions open;
  open.device = options.device;
  open.threads = options.threads;
  open.int4_matmul = options.int4_matmul;
  open.kv_cache = options.kv_cache;
  open.lm_head = options.lm_head;
  if (!options.config_override.empty()) open.config = options.config_override;
  open.load_tokenizer = false;  // these commands take and print token ids
  return open;
}

inline std::unique_ptr<LoadedModel> load_model(const ModelOptions& options) {
  return open_model(options.model_dir, open_options(options));
}

}  // namespace hllm::tools
