// `hllm info -m MODEL [--ctx N]` — what a model is and the memory it needs, read from config.json
// and the safetensors headers, or from a GGUF file's metadata and tensor infos (no weight is read).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "hllm/engine/memory.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/model/gguf_load.hpp"
#include "hllm/model/load.hpp"
#include "hllm/quant/gptq_config.hpp"
#include "hllm/quant/gptq_config_json.hpp"
#include "hllm/tokenizer/chat.hpp"

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

// What `info` prints, from either kind of model.
struct ModelSummary {
  LlamaConfig config;
  std::string storage;       // "BF16 16.06 GB" or "Q4_K 97 tensors 3.9 GB, Q6_K ..."
  double weight_bytes = 0;   // as stored (what a decode step streams, give or take)
  double copied_bytes = 0;   // of which copied at load (GGUF: attn_q / attn_k re-ordered)
  std::string quantization;  // one line, "" for dense models
  std::string chat_format;   // one line, "" when the model folder says nothing special
};

inline ModelSummary summarize_folder(const std::filesystem::path& dir) {
  ModelSummary m;
  LlamaConfig& c = m.config;
  c = load_llama_config(dir / "config.json");
  const std::filesystem::path quantize_config =
      dir / "quantize_config.json";  // AutoGPTQ's side file
  if (!c.quant.quantized() && std::filesystem::exists(quantize_config))
    c.quant = parse_quant_config(read_json_file(quantize_config), quantize_config.string(), true);
  const Checkpoint checkpoint = Checkpoint::open(dir);
  std::map<std::string, double> bytes_by_dtype;
  for (const std::string& name : checkpoint.names()) {
    const TensorInfo& t = checkpoint.info(name);
    bytes_by_dtype[std::string(dtype_name(t.dtype))] += static_cast<double>(t.nbytes());
  }
  for (const auto& [dtype, bytes] : bytes_by_dtype)
    m.storage += (m.storage.empty() ? "" : ", ") + dtype + " " + human_bytes(bytes);
  m.storage += " (config dtype " + std::string(dtype_name(c.dtype)) + ")";
  m.weight_bytes = static_cast<double>(checkpoint.total_bytes());
  if (c.quant.quantized()) {
    char line[200];
    std::snprintf(line, sizeof line,
                  "GPTQ int4, group %lld, %s, %s, %s zeros (repacked to hllm's INT4 tiles at load)",
                  static_cast<long long>(c.quant.group_size),
                  c.quant.desc_act ? "act-order" : "no act-order", c.quant.sym ? "sym" : "asym",
                  c.quant.zeros_minus_one ? "v1" : "v2");
    m.quantization = line;
  }
  return m;
}

inline ModelSummary summarize_gguf(const std::filesystem::path& path) {
  const GgufFile file(path);
  ModelSummary m;
  m.config = gguf_llama_config(file);
  struct TypeTotal {
    int tensors = 0;
    double bytes = 0;
  };
  std::map<std::string, TypeTotal> by_type;
  for (const GgufTensorInfo& t : file.tensors()) {
    TypeTotal& total = by_type[std::string(ggml_type_info(t.type).name)];
    ++total.tensors;
    total.bytes += static_cast<double>(t.nbytes);
    m.weight_bytes += static_cast<double>(t.nbytes);
    if (gguf_copied_at_load(t.name)) m.copied_bytes += static_cast<double>(t.nbytes);
  }
  for (const auto& [type, total] : by_type)
    m.storage += (m.storage.empty() ? "" : ", ") + type + " " + std::to_string(total.tensors) +
                 (total.tensors == 1 ? " tensor " : " tensors ") + human_bytes(total.bytes);
  m.storage += " (GGUF v" + std::to_string(file.version()) + ")";
  if (m.config.quant.method == QuantMethod::ggml)
    m.quantization = "ggml blocks, read in place by the CPU matmul (no CUDA kernels yet)";
  const auto chat = file.string_or_none("tokenizer.chat_template");
  m.chat_format = !chat ? "no chat template in the file: hllm renders the Llama-3 format"
                  : is_llama3_chat_template(*chat)
                      ? "the file's template is Llama-3's (rendered natively)"
                      : "the file's template is not Llama-3's: hllm renders the Llama-3 format";
  return m;
}

inline void add_info_command(CLI::App& app) {
  struct Options {
    std::string model_dir;
    int64_t context = 0;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command =
      app.add_subcommand("info", "Describe a model (folder or GGUF file) and the memory it needs");
  command->add_option("-m,--model", options->model_dir, "HF model folder or .gguf file")
      ->required();
  command->add_option("-c,--ctx", options->context,
                      "context to size the KV cache for (default: the model's)");
  command->callback([options] {
    const std::filesystem::path dir = options->model_dir;
    const bool gguf = is_gguf_file(dir);
    if (!gguf && !std::filesystem::is_directory(dir))
      fail("model ", dir.string(), " does not exist or is neither a folder nor a GGUF file");
    const ModelSummary m = gguf ? summarize_gguf(dir) : summarize_folder(dir);
    const LlamaConfig& c = m.config;
    const int64_t ctx = options->context > 0 ? options->context : c.max_position_embeddings;
    const double weights = m.weight_bytes;  // GGUF copies replace mapped pages that are not read
    // run, chat, serve and bench cache K/V as fp16 on the CPU by default (CpuKvCache::automatic).
    const double kv = static_cast<double>(kv_cache_bytes(c, ctx, dtype_size(DType::f16)));
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
    std::printf("weights        %s\n", m.storage.c_str());
    if (!m.quantization.empty()) std::printf("quantization   %s\n", m.quantization.c_str());
    if (!m.chat_format.empty()) std::printf("chat format    %s\n", m.chat_format.c_str());
    std::printf(
        "memory (cpu)   at ctx %lld: weights %s (mmap'd%s) + KV cache %s (fp16, as run, chat and "
        "serve keep it; twice that in fp32) + activations %s (per 512 prompt tokens) = %s\n",
        static_cast<long long>(ctx), human_bytes(weights).c_str(),
        m.copied_bytes > 0 ? (", of which " + human_bytes(m.copied_bytes) +
                              " Q/K rows copied and "
                              "re-ordered at load")
                                 .c_str()
                           : "",
        human_bytes(kv).c_str(), human_bytes(activations).c_str(),
        human_bytes(weights + kv + activations).c_str());
  });
}

}  // namespace hllm::tools
