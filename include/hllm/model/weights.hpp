// LlamaWeights: views of every tensor of a Llama checkpoint, validated against the config.
//
// Names and layouts are HF's (LlamaForCausalLM): linear weights are [out_features, in_features];
// q_proj/k_proj rows are in HF's rotate-half order (see model/rope.hpp), so no permutation is
// needed.
//
//   model.embed_tokens.weight                  [vocab, hidden]
//   model.layers.N.input_layernorm.weight      [hidden]
//   model.layers.N.self_attn.q_proj.weight     [n_heads * head_dim, hidden]
//   model.layers.N.self_attn.k_proj.weight     [n_kv_heads * head_dim, hidden]   (v_proj the same)
//   model.layers.N.self_attn.o_proj.weight     [hidden, n_heads * head_dim]
//   model.layers.N.post_attention_layernorm.weight [hidden]
//   model.layers.N.mlp.gate_proj.weight        [intermediate, hidden]            (up_proj the same)
//   model.layers.N.mlp.down_proj.weight        [hidden, intermediate]
//   model.norm.weight                          [hidden]
//   lm_head.weight                             [vocab, hidden]   (absent when tie_word_embeddings)
#pragma once

#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"

namespace hllm {

struct LayerWeights {
  Tensor attn_norm;  // [hidden]
  Tensor wq;         // [n_heads * head_dim, hidden]
  Tensor wk;         // [n_kv_heads * head_dim, hidden]
  Tensor wv;         // [n_kv_heads * head_dim, hidden]
  Tensor wo;         // [hidden, n_heads * head_dim]
  Tensor mlp_norm;   // [hidden]
  Tensor w_gate;     // [intermediate, hidden]
  Tensor w_up;       // [intermediate, hidden]
  Tensor w_down;     // [hidden, intermediate]
};

struct LlamaWeights {
  Tensor embed;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Tensor lm_head;     // [vocab, hidden]; the same view as embed when tied
};

namespace detail {

inline Tensor checked_weight(const Checkpoint& checkpoint, const std::string& name,
                             Shape expected) {
  if (!checkpoint.contains(name))
    fail(checkpoint.dir().string(), ": tensor \"", name, "\" is missing (expected shape ",
         expected.str(), ")");
  Tensor t = checkpoint.tensor(name);
  if (!(t.shape == expected))
    fail(checkpoint.dir().string(), ": tensor \"", name, "\" has shape ", t.shape.str(),
         ", expected ", expected.str());
  if (t.dtype != DType::bf16 && t.dtype != DType::f16 && t.dtype != DType::f32)
    fail(checkpoint.dir().string(), ": tensor \"", name, "\" has dtype ", dtype_name(t.dtype),
         " (weights must be BF16, F16 or F32)");
  return t;
}

}  // namespace detail

inline LlamaWeights load_llama_weights(const Checkpoint& checkpoint, const LlamaConfig& c) {
  constexpr int64_t MAX_HEAD_DIM = 1024;  // cpu/rope.hpp keeps head_dim / 2 angles on the stack
  if (c.head_dim > MAX_HEAD_DIM)
    fail("head_dim ", c.head_dim, " is larger than supported (", MAX_HEAD_DIM, ")");
  const auto get = [&](const std::string& name, Shape shape) {
    return detail::checked_weight(checkpoint, name, shape);
  };
  LlamaWeights w;
  w.embed = get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights layer;
    layer.attn_norm = get(p + "input_layernorm.weight", {c.hidden_size});
    layer.wq = get(p + "self_attn.q_proj.weight", {c.q_dim(), c.hidden_size});
    layer.wk = get(p + "self_attn.k_proj.weight", {c.kv_dim(), c.hidden_size});
    layer.wv = get(p + "self_attn.v_proj.weight", {c.kv_dim(), c.hidden_size});
    layer.wo = get(p + "self_attn.o_proj.weight", {c.hidden_size, c.q_dim()});
    layer.mlp_norm = get(p + "post_attention_layernorm.weight", {c.hidden_size});
    layer.w_gate = get(p + "mlp.gate_proj.weight", {c.intermediate_size, c.hidden_size});
    layer.w_up = get(p + "mlp.up_proj.weight", {c.intermediate_size, c.hidden_size});
    layer.w_down = get(p + "mlp.down_proj.weight", {c.hidden_size, c.intermediate_size});
    w.layers.push_back(layer);
  }
  w.final_norm = get("model.norm.weight", {c.hidden_size});
  // Tied checkpoints usually omit lm_head.weight; some carry a copy, which is then used.
  w.lm_head = c.tie_word_embeddings && !checkpoint.contains("lm_head.weight")
                  ? w.embed
                  : get("lm_head.weight", {c.vocab_size, c.hidden_size});
  return w;
}

}  // namespace hllm
