// A Llama model from a GGUF file (io/gguf.hpp): the config from its `llama.*` metadata and the
// weights from its tensors, mapped onto the same LlamaConfig / LlamaWeights a Hugging Face folder
// gives (model/config.hpp, model/weights.hpp).
//
//   GGUF metadata                              LlamaConfig
//   general.architecture = "llama"             (anything else is refused)
//   llama.embedding_length                     hidden_size
//   llama.block_count                          n_layers
//   llama.attention.head_count[_kv]            n_heads, n_kv_heads (kv defaults to n_heads)
//   llama.attention.key_length                 head_dim (default hidden / n_heads)
//   llama.feed_forward_length                  intermediate_size
//   llama.attention.layer_norm_rms_epsilon     rms_norm_eps
//   llama.rope.freq_base                       rope_theta (default 10000)
//   llama.context_length                       max_position_embeddings
//   llama.rope.scaling.{type,factor,original_context_length,attn_factor}  linear / yarn
//   tensor rope_freqs.weight [head_dim/2]      llama3 scaling (Llama-3.1: per-frequency divisors)
//   tokenizer.ggml.{bos,eos,eot}_token_id      bos_token_id, eos_token_ids
//
//   GGUF tensor (row-major shape)              LlamaWeights
//   token_embd.weight [vocab, hidden]          embed
//   blk.N.attn_norm / ffn_norm .weight         attn_norm / mlp_norm
//   blk.N.attn_q / attn_k / attn_v / attn_output .weight     wq / wk / wv / wo
//   blk.N.ffn_gate / ffn_up / ffn_down .weight               w_gate / w_up / w_down
//   output_norm.weight, output.weight          final_norm, lm_head (absent: tied to embed)
//
// F32/F16/BF16 tensors become dense views of the mapping; the block-quantized types stay blocks
// (Linear's ggml kind, read in place by the CPU matmul). llama.cpp's converter stores attn_q /
// attn_k rows in Meta's interleaved RoPE order: within each head, row 2i + j holds HF's row
// j·head_dim/2 + i. Those two projections are copied at load with the rows put back in HF's
// rotate-half order (model/rope.hpp), so one RoPE serves both formats.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/layout/ggml_blocks.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/linear.hpp"
#include "hllm/model/weights.hpp"

namespace hllm {

// The tensors gguf_llama_weights copies (re-ordered) instead of viewing in place.
inline bool gguf_copied_at_load(std::string_view name) {
  return name.ends_with(".attn_q.weight") || name.ends_with(".attn_k.weight");
}

inline LlamaConfig gguf_llama_config(const GgufFile& f) {
  const std::string_view arch = f.string("general.architecture");
  if (arch != "llama")
    fail(f.source(), ": architecture \"", arch,
         "\" is not supported (hllm runs Llama models: general.architecture \"llama\")");
  const auto positive = [&](const std::string& key) {
    const int64_t v = f.integer(key);
    if (v <= 0 || v > (int64_t{1} << 24)) fail(f.source(), ": ", key, " = ", v, " is out of range");
    return v;
  };
  LlamaConfig c;
  c.hidden_size = positive("llama.embedding_length");
  c.n_layers = positive("llama.block_count");
  c.n_heads = positive("llama.attention.head_count");
  c.n_kv_heads = f.find("llama.attention.head_count_kv") ? positive("llama.attention.head_count_kv")
                                                         : c.n_heads;
  c.intermediate_size = positive("llama.feed_forward_length");
  c.max_position_embeddings = positive("llama.context_length");
  c.head_dim = f.find("llama.attention.key_length") ? positive("llama.attention.key_length")
                                                    : c.hidden_size / c.n_heads;
  if (f.find("llama.attention.value_length") &&
      positive("llama.attention.value_length") != c.head_dim)
    fail(f.source(), ": llama.attention.value_length differs from key_length (not supported)");
  if (f.find("llama.rope.dimension_count") && positive("llama.rope.dimension_count") != c.head_dim)
    fail(f.source(), ": llama.rope.dimension_count ", f.integer("llama.rope.dimension_count"),
         " differs from the head size ", c.head_dim, " (partial RoPE is not supported)");
  if (c.n_heads % c.n_kv_heads != 0 || c.head_dim <= 0 || c.head_dim % 2 != 0)
    fail(f.source(), ": ", c.n_heads, " query heads, ", c.n_kv_heads, " KV heads and head size ",
         c.head_dim, " do not make a Llama attention");
  c.rms_norm_eps = f.number_or_none("llama.attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope_theta = f.number_or_none("llama.rope.freq_base").value_or(10000.0);
  if (!(c.rope_theta > 1.0) || !(c.rms_norm_eps > 0.0))
    fail(f.source(), ": llama.rope.freq_base or layer_norm_rms_epsilon is out of range");
  const GgufTensorInfo* embed = f.find_tensor("token_embd.weight");
  if (embed == nullptr) fail(f.source(), ": tensor \"token_embd.weight\" is missing");
  c.vocab_size = f.find("llama.vocab_size") ? positive("llama.vocab_size") : embed->shape()[0];
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.dtype = DType::bf16;
  for (const GgufTensorInfo& t : f.tensors())
    if (ggml_is_quantized(t.type)) c.quant.method = QuantMethod::ggml;

  RopeScaling& s = c.rope_scaling;
  const std::string_view scaling = f.string_or_none("llama.rope.scaling.type").value_or("none");
  if (scaling == "linear" || scaling == "yarn") {
    s.type = scaling == "linear" ? RopeType::linear : RopeType::yarn;
    s.factor = f.number("llama.rope.scaling.factor");
    if (!(s.factor >= 1.0)) fail(f.source(), ": llama.rope.scaling.factor ", s.factor, " < 1");
    if (const auto orig = f.integer_or_none("llama.rope.scaling.original_context_length"))
      s.original_max_position_embeddings = *orig;
    if (const auto a = f.number_or_none("llama.rope.scaling.attn_factor"); a && *a != 1.0)
      s.attention_factor = *a;
    if (const auto b = f.number_or_none("llama.rope.scaling.yarn_beta_fast")) s.beta_fast = *b;
    if (const auto b = f.number_or_none("llama.rope.scaling.yarn_beta_slow")) s.beta_slow = *b;
  } else if (scaling != "none") {
    fail(f.source(), ": llama.rope.scaling.type \"", scaling,
         "\" is not supported (none, linear, yarn; llama3 comes as the rope_freqs tensor)");
  }
  if (const GgufTensorInfo* freqs = f.find_tensor("rope_freqs.weight")) {
    if (freqs->type != GgmlType::F32 || freqs->numel() != c.head_dim / 2)
      fail(f.source(), ": tensor \"rope_freqs.weight\" must be F32 [", c.head_dim / 2, "]");
    s.type = RopeType::llama3;
    s.freq_divisors.resize(static_cast<size_t>(c.head_dim / 2));
    for (size_t i = 0; i < s.freq_divisors.size(); ++i) {
      float v;
      std::memcpy(&v, freqs->data + 4 * i, 4);
      if (!(v > 0.0f)) fail(f.source(), ": rope_freqs.weight[", i, "] = ", v, " is not positive");
      s.freq_divisors[i] = v;
    }
  }

  const auto token_id = [&](const char* key) -> int64_t {
    const auto id = f.integer_or_none(key);
    if (!id) return -1;
    if (*id < 0 || *id >= c.vocab_size)
      fail(f.source(), ": ", key, " ", *id, " is outside the vocabulary of ", c.vocab_size);
    return *id;
  };
  c.bos_token_id = token_id("tokenizer.ggml.bos_token_id");
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
    if (const int64_t id = token_id(key);
        id >= 0 &&
        std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end())
      c.eos_token_ids.push_back(id);
  return c;
}

namespace detail {

inline DType gguf_dense_dtype(GgmlType t) {
  return t == GgmlType::F32 ? DType::f32 : t == GgmlType::F16 ? DType::f16 : DType::bf16;
}

// Memory a Linear owns: rows copied out of the mapping (the permuted Q/K projections).
struct OwnedBytes {
  std::vector<uint8_t> bytes;
};

class GgufWeightReader {
 public:
  GgufWeightReader(const GgufFile& file, const LlamaConfig& c) : f_(file), c_(c) {}

  const GgufTensorInfo& tensor(const std::string& name, Shape expected) const {
    const GgufTensorInfo* t = f_.find_tensor(name);
    if (t == nullptr)
      fail(f_.source(), ": tensor \"", name, "\" is missing (expected shape ", expected.str(), ")");
    if (!(t->shape() == expected))
      fail(f_.source(), ": tensor \"", name, "\" has shape ", t->shape().str(), ", expected ",
           expected.str());
    const GgmlTypeInfo info = ggml_type_info(t->type);
    if (!info.supported)
      fail(f_.source(), ": tensor \"", name, "\" has type ", info.name,
           ", which hllm does not support (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
           "Q5_K, Q6_K)");
    return *t;
  }

  // A norm weight: a plain vector.
  Tensor vector(const std::string& name) const {
    const GgufTensorInfo& t = tensor(name, {c_.hidden_size});
    if (ggml_is_quantized(t.type))
      fail(f_.source(), ": tensor \"", name, "\" is ", ggml_type_info(t.type).name,
           " (norm weights must be F32, F16 or BF16)");
    return dense_view(t);
  }

  // A matrix [out, in] as stored.
  Linear linear(const std::string& name, int64_t out, int64_t in) const {
    const GgufTensorInfo& t = tensor(name, {out, in});
    if (!ggml_is_quantized(t.type)) return Linear(dense_view(t));
    return Linear(GgmlView{t.type, reinterpret_cast<const uint8_t*>(t.data), out, in}, nullptr);
  }

  // attn_q / attn_k: rows copied back from Meta's interleaved order to HF's rotate-half order.
  Linear rope_linear(const std::string& name, int64_t heads, int64_t in) const {
    const int64_t d = c_.head_dim, out = heads * d;
    const GgufTensorInfo& t = tensor(name, {out, in});
    const size_t row_bytes = t.nbytes / static_cast<size_t>(out);
    auto owned = std::make_shared<OwnedBytes>();
    owned->bytes.resize(t.nbytes);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t i = 0; i < d / 2; ++i) {
          const int64_t hf_row = h * d + j * (d / 2) + i, file_row = h * d + 2 * i + j;
          std::memcpy(owned->bytes.data() + hf_row * row_bytes,
                      reinterpret_cast<const uint8_t*>(t.data) + file_row * row_bytes, row_bytes);
        }
    Linear result;
    if (ggml_is_quantized(t.type)) {
      result = Linear(GgmlView{t.type, owned->bytes.data(), out, in}, nullptr);
    } else {
      result = Linear(Tensor(owned->bytes.data(), gguf_dense_dtype(t.type), {out, in}));
    }
    result.owner = std::move(owned);
    return result;
  }

 private:
  Tensor dense_view(const GgufTensorInfo& t) const {
    const DType dtype = gguf_dense_dtype(t.type);
    if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(dtype) != 0)
      fail(f_.source(), ": tensor \"", t.name, "\" is not aligned to its ", dtype_name(dtype),
           " elements");
    // The mapping is read-only; Tensor's pointer is not const, and nothing writes weights.
    return Tensor(const_cast<std::byte*>(t.data), dtype, t.shape());
  }

  const GgufFile& f_;
  const LlamaConfig& c_;
};

}  // namespace detail

inline LlamaWeights gguf_llama_weights(const GgufFile& f, const LlamaConfig& c) {
  const detail::GgufWeightReader read(f, c);
  LlamaWeights w;
  w.embed = read.linear("token_embd.weight", c.vocab_size, c.hidden_size);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LayerWeights layer;
    layer.attn_norm = read.vector(p + "attn_norm.weight");
    layer.wq = read.rope_linear(p + "attn_q.weight", c.n_heads, c.hidden_size);
    layer.wk = read.rope_linear(p + "attn_k.weight", c.n_kv_heads, c.hidden_size);
    layer.wv = read.linear(p + "attn_v.weight", c.kv_dim(), c.hidden_size);
    layer.wo = read.linear(p + "attn_output.weight", c.hidden_size, c.q_dim());
    layer.mlp_norm = read.vector(p + "ffn_norm.weight");
    layer.w_gate = read.linear(p + "ffn_gate.weight", c.intermediate_size, c.hidden_size);
    layer.w_up = read.linear(p + "ffn_up.weight", c.intermediate_size, c.hidden_size);
    layer.w_down = read.linear(p + "ffn_down.weight", c.hidden_size, c.intermediate_size);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = read.vector("output_norm.weight");
  w.lm_head =
      c.tie_word_embeddings ? w.embed : read.linear("output.weight", c.vocab_size, c.hidden_size);
  return w;
}

}  // namespace hllm
