// load_llama_weights: a checkpoint's tensors -> LlamaWeights (model/weights.hpp, which lists the
// names and shapes), each checked against the config; GPTQ projections are repacked to INT4 tiles.
#pragma once

#include <cstdint>
#include <string>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/core/tensor.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/linear.hpp"
#include "hllm/model/weights.hpp"
#include "hllm/quant/gptq.hpp"

namespace hllm {

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

// One projection `prefix` ("model.layers.0.self_attn.q_proj") of nn.Linear(in, out): dense
// `prefix.weight`, or GPTQ tensors repacked to INT4 when the config says the model is quantized.
inline Linear checked_linear(const Checkpoint& checkpoint, const LlamaConfig& c,
                             const std::string& prefix, int64_t out, int64_t in) {
  if (c.quant.quantized() &&
      (has_gptq_tensors(checkpoint, prefix) || !checkpoint.contains(prefix + ".weight")))
    return make_int4_linear(repack_gptq(find_gptq_tensors(checkpoint, prefix), in, out, c.quant,
                                        checkpoint.dir().string() + ": " + prefix));
  if (!c.quant.quantized() && !checkpoint.contains(prefix + ".weight") &&
      has_gptq_tensors(checkpoint, prefix))
    fail(checkpoint.dir().string(), ": \"", prefix,
         "\" is stored as GPTQ (qweight/qzeros/scales) but config.json has no ",
         "quantization_config (nor is there a quantize_config.json)");
  return checked_weight(checkpoint, prefix + ".weight", {out, in});
}

}  // namespace detail

inline LlamaWeights load_llama_weights(const Checkpoint& checkpoint, const LlamaConfig& c) {
  constexpr int64_t MAX_HEAD_DIM = 1024;  // cpu/rope.hpp keeps head_dim / 2 angles on the stack
  if (c.head_dim > MAX_HEAD_DIM)
    fail("head_dim ", c.head_dim, " is larger than supported (", MAX_HEAD_DIM, ")");
  const auto get = [&](const std::string& name, Shape shape) {
    return detail::checked_weight(checkpoint, name, shape);
  };
  const auto linear = [&](const std::string& prefix, int64_t out, int64_t in) {
    return detail::checked_linear(checkpoint, c, prefix, out, in);
  };
  LlamaWeights w;
  w.embed = get("model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights layer;
    layer.attn_norm = get(p + "input_layernorm.weight", {c.hidden_size});
    layer.wq = linear(p + "self_attn.q_proj", c.q_dim(), c.hidden_size);
    layer.wk = linear(p + "self_attn.k_proj", c.kv_dim(), c.hidden_size);
    layer.wv = linear(p + "self_attn.v_proj", c.kv_dim(), c.hidden_size);
    layer.wo = linear(p + "self_attn.o_proj", c.hidden_size, c.q_dim());
    layer.mlp_norm = get(p + "post_attention_layernorm.weight", {c.hidden_size});
    layer.w_gate = linear(p + "mlp.gate_proj", c.intermediate_size, c.hidden_size);
    layer.w_up = linear(p + "mlp.up_proj", c.intermediate_size, c.hidden_size);
    layer.w_down = linear(p + "mlp.down_proj", c.hidden_size, c.intermediate_size);
    w.layers.push_back(layer);
  }
  w.final_norm = get("model.norm.weight", {c.hidden_size});
  // Tied checkpoints usually omit lm_head.weight; some carry a copy, which is then used.
  w.lm_head = c.tie_word_embeddings && !checkpoint.contains("lm_head.weight")
                  ? Linear(w.embed)
                  : Linear(get("lm_head.weight", {c.vocab_size, c.hidden_size}));
  return w;
}

}  // namespace hllm
