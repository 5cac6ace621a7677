// LlamaWeights: views of every tensor of a Llama checkpoint, validated against the config.
//
// Names and layouts are HF's (LlamaForCausalLM): linear weights are [out_features, in_features];
// q_proj/k_proj rows are in HF's rotate-half order (see model/rope.hpp), so no permutation is
// needed. In a GPTQ checkpoint (config.quant) each projection `X.weight` is instead stored as
// X.qweight / X.qzeros / X.scales / X.g_idx (quant/gptq.hpp) and repacked at load
// (model/weights_load.hpp), once, into hllm's INT4 tile layout (layout/int4_tiles.hpp); the Linear
// owns the repacked memory. Embeddings, norms and lm_head stay dense.
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

#include <vector>

#include "hllm/core/tensor.hpp"
#include "hllm/model/linear.hpp"

namespace hllm {

// Linear weights are [out, in] (dense or INT4, model/linear.hpp).
struct LayerWeights {
  Tensor attn_norm;  // [hidden]
  Linear wq;         // [n_heads * head_dim, hidden]
  Linear wk;         // [n_kv_heads * head_dim, hidden]
  Linear wv;         // [n_kv_heads * head_dim, hidden]
  Linear wo;         // [hidden, n_heads * head_dim]
  Tensor mlp_norm;   // [hidden]
  Linear w_gate;     // [intermediate, hidden]
  Linear w_up;       // [intermediate, hidden]
  Linear w_down;     // [hidden, intermediate]
};

struct LlamaWeights {
  Linear embed;  // [vocab, hidden]: dense, or ggml blocks (GGUF); never INT4
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // [hidden]
  Linear lm_head;     // [vocab, hidden]; the same view as embed when tied
};

}  // namespace hllm
