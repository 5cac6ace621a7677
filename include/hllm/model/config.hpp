// LlamaConfig: the architecture of a Llama-3 / 3.1 / 3.2 checkpoint (HF's config.json), and
// GenerationConfig: the sampling defaults it ships with (generation_config.json). Both files are
// read by model/config_json.hpp; this header is the plain structs, free of any JSON parser.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/quant/gptq_config.hpp"

namespace hllm {

enum class RopeType { none, linear, dynamic, llama3, yarn };

inline const char* rope_type_name(RopeType t) {
  switch (t) {
    case RopeType::none:
      return "none";
    case RopeType::linear:
      return "linear";
    case RopeType::dynamic:
      return "dynamic";
    case RopeType::llama3:
      return "llama3";
    case RopeType::yarn:
      return "yarn";
  }
  return "?";
}

// rope_scaling fields; which ones matter depends on `type` (see model/rope.hpp for the math).
struct RopeScaling {
  RopeType type = RopeType::none;
  double factor = 1.0;            // context extension factor (all scaled types)
  double low_freq_factor = 1.0;   // llama3: wavelengths above orig_ctx/low are scaled fully
  double high_freq_factor = 4.0;  // llama3: wavelengths below orig_ctx/high are kept
  // llama3, yarn: the pre-training context (0 = unset)
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;                 // yarn: rotations/period where interpolation starts
  double beta_slow = 1.0;                  // yarn: ... and where it is complete
  std::optional<double> attention_factor;  // yarn: overrides the 0.1 ln(s) + 1 temperature
  std::optional<double> mscale;            // yarn (DeepSeek style): attention factor numerator
  std::optional<double> mscale_all_dim;    // yarn (DeepSeek style): attention factor denominator
  bool truncate = true;                    // yarn: round the ramp bounds to whole dimensions
  // llama3 as a GGUF file stores it (the rope_freqs tensor): inv_freq[i] is divided by
  // freq_divisors[i], which llama.cpp's converter computed from the four llama3 fields above
  // (so those are unknown). Empty: the llama3 formula from the fields.
  std::vector<double> freq_divisors;
};

struct LlamaConfig {
  int64_t hidden_size = 0;              // model width (4096 for 8B)
  int64_t n_layers = 0;                 // decoder blocks
  int64_t n_heads = 0;                  // query heads
  int64_t n_kv_heads = 0;               // key/value heads (GQA: n_heads is a multiple)
  int64_t head_dim = 0;                 // per-head width (hidden_size / n_heads unless given)
  int64_t intermediate_size = 0;        // SwiGLU hidden width
  int64_t vocab_size = 0;               // rows of embed_tokens and lm_head
  double rms_norm_eps = 1e-5;           // RMSNorm epsilon
  double rope_theta = 10000.0;          // RoPE base
  int64_t max_position_embeddings = 0;  // the context the config declares
  bool tie_word_embeddings = false;     // lm_head shares embed_tokens
  int64_t bos_token_id = -1;            // -1 = none given
  std::vector<int64_t> eos_token_ids;   // any of these ends generation
  DType dtype = DType::bf16;            // storage dtype the checkpoint declares
  RopeScaling rope_scaling;
  QuantConfig quant;  // linear weights: dense, or GPTQ int4 (quantization_config)

  int64_t group_size() const { return n_heads / n_kv_heads; }  // query heads per KV head
  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
};

// generation_config.json's sampling defaults; unset fields keep the library's defaults
// (SamplingParams::from_generation_config applies them). Unlike transformers' generate(), where a
// missing do_sample means greedy, a missing do_sample samples: a serving engine samples unless told
// otherwise (vLLM reads temperature / top_p / top_k from this file the same way).
struct GenerationConfig {
  bool do_sample = true;               // false: greedy, whatever the fields below say
  std::optional<double> temperature;   // softmax temperature
  std::optional<double> top_p;         // nucleus mass
  std::optional<int64_t> top_k;        // keep the k most likely tokens (0 = off)
  std::vector<int64_t> eos_token_ids;  // empty: config.json's eos_token_id applies
};

}  // namespace hllm
