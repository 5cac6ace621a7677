// Reading HF's config.json into a LlamaConfig and generation_config.json into a GenerationConfig
// (model/config.hpp).
//
// Accepts both config spellings in the wild: transformers 4.x (`rope_theta` + `rope_scaling` with
// `type` or `rope_type`, `torch_dtype`) and 5.x (`rope_parameters` holding rope_theta and the
// scaling, `dtype`). Anything the engine cannot run exactly is refused with a one-line error saying
// what is supported, never approximated. GPTQ `quantization_config` is parsed by
// quant/gptq_config_json.hpp.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/io/json.hpp"
#include "hllm/model/config.hpp"
#include "hllm/quant/gptq_config_json.hpp"

namespace hllm {

namespace detail {

inline std::vector<int64_t> parse_token_ids(const JsonFields& fields, const char* key) {
  std::vector<int64_t> ids;
  if (!fields.has(key)) return ids;
  // An id above 2^63 - 1 (JSON allows 18446744073709551615) would wrap to a negative int64.
  const auto is_id = [](const json& v) {
    return v.is_number_integer() &&
           !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX});
  };
  const json& value = fields.object.at(key);
  if (is_id(value)) {
    ids.push_back(value.get<int64_t>());
  } else if (value.is_array()) {
    for (const json& id : value) {
      if (!is_id(id)) fields.wrong(key, "an integer or a list of integers");
      ids.push_back(id.get<int64_t>());
    }
  } else {
    fields.wrong(key, "an integer or a list of integers");
  }
  return ids;
}

inline DType parse_torch_dtype(const std::string& name, const std::string& where) {
  if (name == "bfloat16") return DType::bf16;
  if (name == "float16") return DType::f16;
  if (name == "float32") return DType::f32;
  fail(where, ": dtype \"", name, "\" is not supported (supported: bfloat16, float16, float32)");
}

inline RopeScaling parse_rope_scaling(const json& object, const std::string& where) {
  const JsonFields fields{object, where + " rope_scaling"};
  RopeScaling s;
  // HF reads `rope_type` first and falls back to the legacy `type`.
  const std::string type = fields.string_or("rope_type", fields.string_or("type", "default"));
  if (type == "default" || type == "none") return s;
  if (type == "linear")
    s.type = RopeType::linear;
  else if (type == "dynamic")
    s.type = RopeType::dynamic;
  else if (type == "llama3")
    s.type = RopeType::llama3;
  else if (type == "yarn")
    s.type = RopeType::yarn;
  else
    fail(where, ": rope_scaling type \"", type,
         "\" is not supported (supported: default, linear, dynamic, llama3, yarn)");

  s.factor = fields.number("factor");
  if (!(s.factor >= 1.0)) fields.wrong("factor", "a number >= 1");
  if (s.type == RopeType::llama3) {
    s.low_freq_factor = fields.number("low_freq_factor");
    s.high_freq_factor = fields.number("high_freq_factor");
    s.original_max_position_embeddings =
        fields.positive_integer("original_max_position_embeddings");
    if (!(s.high_freq_factor > s.low_freq_factor))
      fail(where, ": rope_scaling high_freq_factor must be greater than low_freq_factor");
  }
  if (s.type == RopeType::yarn) {
    if (fields.has("original_max_position_embeddings"))
      s.original_max_position_embeddings =
          fields.positive_integer("original_max_position_embeddings");
    s.beta_fast = fields.number_or("beta_fast", 32.0);
    s.beta_slow = fields.number_or("beta_slow", 1.0);
    s.attention_factor = fields.optional_number("attention_factor");
    s.mscale = fields.optional_number("mscale");
    s.mscale_all_dim = fields.optional_number("mscale_all_dim");
    s.truncate = fields.boolean_or("truncate", true);
  }
  return s;
}

}  // namespace detail

// Parses a config.json object; `where` names its file in error messages.
inline LlamaConfig parse_llama_config(const json& config, const std::string& where) {
  if (!config.is_object()) fail(where, ": expected a JSON object");
  const JsonFields fields{config, where};

  const std::string model_type = fields.string_or("model_type", "");
  if (model_type != "llama")
    fail(where, ": model_type \"", model_type,
         "\" is not supported (supported: llama — Llama-3, 3.1, 3.2)");
  if (fields.has("architectures")) {
    const json& archs = config.at("architectures");
    if (!archs.is_array() || archs.size() != 1 || archs[0] != "LlamaForCausalLM")
      fail(where, ": architectures ", describe_json(archs),
           " is not supported (supported: [\"LlamaForCausalLM\"])");
  }
  if (fields.string_or("hidden_act", "silu") != "silu")
    fail(where, ": hidden_act \"", fields.string_or("hidden_act", ""),
         "\" is not supported (supported: silu)");
  if (fields.boolean_or("attention_bias", false) || fields.boolean_or("mlp_bias", false))
    fail(where, ": attention_bias / mlp_bias are not supported (Llama has none)");
  if (fields.number_or("pretraining_tp", 1) != 1)
    fail(where, ": pretraining_tp other than 1 is not supported");

  LlamaConfig c;
  c.hidden_size = fields.positive_integer("hidden_size");
  c.n_layers = fields.positive_integer("num_hidden_layers");
  c.n_heads = fields.positive_integer("num_attention_heads");
  c.n_kv_heads = fields.has("num_key_value_heads") ? fields.positive_integer("num_key_value_heads")
                                                   : c.n_heads;
  c.intermediate_size = fields.positive_integer("intermediate_size");
  c.vocab_size = fields.positive_integer("vocab_size");
  c.max_position_embeddings = fields.positive_integer("max_position_embeddings");
  c.rms_norm_eps = fields.number_or("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = fields.boolean_or("tie_word_embeddings", false);
  if (fields.has("head_dim")) {
    c.head_dim = fields.positive_integer("head_dim");
  } else {
    if (c.hidden_size % c.n_heads != 0)
      fail(where, ": hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ",
           c.n_heads);
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (c.n_heads % c.n_kv_heads != 0)
    fail(where, ": num_attention_heads ", c.n_heads, " is not a multiple of num_key_value_heads ",
         c.n_kv_heads);
  if (c.head_dim % 2 != 0) fail(where, ": head_dim ", c.head_dim, " must be even for RoPE");
  if (!(c.rms_norm_eps > 0)) fields.wrong("rms_norm_eps", "a positive number");

  const std::string dtype_key = fields.has("torch_dtype") ? "torch_dtype" : "dtype";
  c.dtype = detail::parse_torch_dtype(fields.string_or(dtype_key.c_str(), "bfloat16"), where);

  c.bos_token_id = fields.has("bos_token_id") ? fields.integer("bos_token_id") : -1;
  c.eos_token_ids = detail::parse_token_ids(fields, "eos_token_id");
  if (fields.has("quantization_config"))
    c.quant = parse_quant_config(config.at("quantization_config"), where);

  // transformers 5.x folds theta and scaling into `rope_parameters`; 4.x has them at the top level.
  if (fields.has("rope_parameters")) {
    const json& params = config.at("rope_parameters");
    if (!params.is_object()) fields.wrong("rope_parameters", "an object");
    c.rope_theta = JsonFields{params, where + " rope_parameters"}.number("rope_theta");
    c.rope_scaling = detail::parse_rope_scaling(params, where);
  } else {
    c.rope_theta = fields.number_or("rope_theta", 10000.0);
    if (fields.has("rope_scaling")) {
      if (!config.at("rope_scaling").is_object()) fields.wrong("rope_scaling", "an object or null");
      c.rope_scaling = detail::parse_rope_scaling(config.at("rope_scaling"), where);
    }
  }
  if (!(c.rope_theta > 0)) fields.wrong("rope_theta", "a positive number");
  return c;
}

inline LlamaConfig load_llama_config(const std::filesystem::path& config_json) {
  return parse_llama_config(read_json_file(config_json), config_json.string());
}

// generation_config.json as transformers writes it; a missing file is all defaults.
inline GenerationConfig load_generation_config(const std::filesystem::path& path) {
  GenerationConfig g;
  if (!std::filesystem::exists(path)) return g;
  const json file = read_json_file(path);
  if (!file.is_object()) fail(path.string(), ": expected a JSON object");
  const JsonFields fields{file, path.string()};
  g.do_sample = fields.boolean_or("do_sample", true);
  g.temperature = fields.optional_number("temperature");
  g.top_p = fields.optional_number("top_p");
  if (fields.has("top_k")) g.top_k = fields.integer("top_k");
  g.eos_token_ids = detail::parse_token_ids(fields, "eos_token_id");
  return g;
}

}  // namespace hllm
