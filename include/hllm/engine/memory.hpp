// How much memory a model needs before anything is loaded: parameter count and the KV cache and
// activation workspace of the CPU backend (fp32) at a given context. `hllm info` prints these.
#pragma once

#include <algorithm>
#include <cstdint>

#include "hllm/model/config.hpp"

namespace hllm {

// Parameters of the architecture (what "8B" counts), independent of how they are stored.
inline int64_t parameter_count(const LlamaConfig& c) {
  const int64_t per_layer = c.hidden_size * c.q_dim() * 2              // q_proj, o_proj
                            + c.hidden_size * c.kv_dim() * 2           // k_proj, v_proj
                            + c.hidden_size * c.intermediate_size * 3  // gate, up, down
                            + c.hidden_size * 2;                       // the two RMSNorm weights
  const int64_t embeddings = c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2);
  return embeddings + c.n_layers * per_layer + c.hidden_size;
}

// K and V of every layer for `tokens` positions, `bytes_per_value` each (Backend::kv_dtype()).
// Rows are allocated in whole blocks of 16 positions (model/kv_cache.hpp).
inline int64_t kv_cache_bytes(const LlamaConfig& c, int64_t tokens, int64_t bytes_per_value = 4) {
  const int64_t rows = (tokens + 15) / 16 * 16;
  return 2 * c.n_layers * rows * c.kv_dim() * bytes_per_value;
}

// The forward pass's activations for a prefill of `tokens` tokens (model/llama.hpp's Workspace:
// x, h, y, q, k, v, attention out, gate, up, for at most one prefill chunk at a time) plus one row
// of fp32 logits, in fp32.
inline int64_t activation_bytes(const LlamaConfig& c, int64_t tokens) {
  const int64_t per_token =
      3 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.intermediate_size;
  return 4 * (std::min<int64_t>(tokens, 4096) * per_token + c.vocab_size);
}

}  // namespace hllm
