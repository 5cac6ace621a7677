// LlamaModel: the Llama-3 forward pass, written once against the Backend interface.
//
// For n new tokens of one sequence at positions p0 = cache.length() .. p0 + n - 1:
//
//   x = embed[ids]                                         [n, hidden]
//   per layer:
//     h = rmsnorm(x) ; q,k,v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ          [n, n_heads|n_kv_heads, head_dim]
//     rope(q), rope(k) ; cache[p0..] = k, v
//     x += attention(q, cache) · Woᵀ                        causal, GQA
//     h = rmsnorm(x) ; x += (silu(h·Wgateᵀ) * h·Wupᵀ) · Wdownᵀ
//   logits = rmsnorm(x) · lm_headᵀ                          [n or 1, vocab]
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/kv_cache.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/rope.hpp"
#include "hllm/model/weights.hpp"

namespace hllm {

class LlamaModel {
 public:
  // Makes the weights resident on the backend (a no-op view on the CPU). The host weights' memory
  // (the mmap'd checkpoint) must outlive the model on the CPU backend; repacked INT4 tiles are
  // shared with the host Linear (kept alive by the model's copy).
  LlamaModel(LlamaConfig config, const LlamaWeights& host_weights, Backend& backend)
      : config_(std::move(config)), backend_(backend), rope_(rope_table(config_)) {
    const auto upload = [&](const Tensor& t) { return backend_.upload_weight(t); };
    const auto upload_linear = [&](const Linear& w) { return backend_.upload_linear(w); };
    weights_.embed = upload(host_weights.embed);
    for (const LayerWeights& hw : host_weights.layers)
      weights_.layers.push_back(
          LayerWeights{upload(hw.attn_norm), upload_linear(hw.wq), upload_linear(hw.wk),
                       upload_linear(hw.wv), upload_linear(hw.wo), upload(hw.mlp_norm),
                       upload_linear(hw.w_gate), upload_linear(hw.w_up), upload_linear(hw.w_down)});
    weights_.final_norm = upload(host_weights.final_norm);
    const bool tied = !host_weights.lm_head.is_int4() &&
                      host_weights.lm_head.dense.data == host_weights.embed.data;
    weights_.lm_head = tied ? Linear(weights_.embed) : upload_linear(host_weights.lm_head);
  }

  const LlamaConfig& config() const { return config_; }
  Backend& backend() { return backend_; }

  KvCache new_cache(int64_t capacity) { return KvCache(backend_, config_, capacity); }

  // Runs `ids` as the next tokens of the sequence in `cache` and appends them to it. Writes the
  // logits of every new token ([n, vocab], when all_logits) or of the last one ([vocab]) to
  // `logits`.
  void forward(std::span<const int32_t> ids, KvCache& cache, std::span<float> logits,
               bool all_logits) {
    const int64_t n = static_cast<int64_t>(ids.size());
    const int64_t start = cache.length();
    const LlamaConfig& c = config_;
    if (n == 0) fail("forward: no tokens given");
    if (start + n > cache.capacity())
      fail("forward: ", start + n, " tokens do not fit the KV cache of ", cache.capacity());
    for (int32_t id : ids)
      if (id < 0 || id >= c.vocab_size)
        fail("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")");
    const int64_t n_logits = all_logits ? n : 1;
    if (static_cast<int64_t>(logits.size()) != n_logits * c.vocab_size)
      fail("forward: logits buffer holds ", logits.size(), " floats, need ",
           n_logits * c.vocab_size);

    std::vector<int64_t> positions(n);
    for (int64_t t = 0; t < n; ++t) positions[t] = start + t;
    // Dynamic NTK re-bases theta with the sequence length, as HF does at every forward.
    const RopeTable dynamic_rope =
        c.rope_scaling.type == RopeType::dynamic ? rope_table(c, start + n) : RopeTable{};
    const RopeTable& rope = c.rope_scaling.type == RopeType::dynamic ? dynamic_rope : rope_;
    const float scale = attention_scale(c);

    Workspace& ws = workspace(n);
    const Tensor x = ws.x.tensor.rows(0, n), h = ws.h.tensor.rows(0, n);
    const Tensor q = ws.q.tensor.rows(0, n), k = ws.k.tensor.rows(0, n), v = ws.v.tensor.rows(0, n);
    const Tensor attn = ws.attn.tensor.rows(0, n), gate = ws.gate.tensor.rows(0, n),
                 up = ws.up.tensor.rows(0, n);
    const Tensor q_heads = q.reshape({n, c.n_heads, c.head_dim});
    const Tensor k_heads = k.reshape({n, c.n_kv_heads, c.head_dim});
    const Tensor v_heads = v.reshape({n, c.n_kv_heads, c.head_dim});
    const Tensor attn_heads = attn.reshape({n, c.n_heads, c.head_dim});

    Backend& b = backend_;
    b.embedding(weights_.embed, ids, x);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights_.layers[l];
      const KvLayer kv = cache.layer(l);
      b.rmsnorm(x, w.attn_norm, static_cast<float>(c.rms_norm_eps), h);
      b.matmul(h, w.wq, q);
      b.matmul(h, w.wk, k);
      b.matmul(h, w.wv, v);
      b.rope(q_heads, positions, rope);
      b.rope(k_heads, positions, rope);
      b.store_kv(k_heads, v_heads, kv, start);
      b.attention(q_heads, kv, start, scale, attn_heads);
      b.matmul(attn, w.wo, h);
      b.add(x, h);
      b.rmsnorm(x, w.mlp_norm, static_cast<float>(c.rms_norm_eps), h);
      b.matmul(h, w.w_gate, gate);
      b.matmul(h, w.w_up, up);
      b.swiglu(gate, up, gate);
      b.matmul(gate, w.w_down, h);
      b.add(x, h);
    }
    cache.advance(n);

    const Tensor last = all_logits ? x : x.rows(n - 1, n);
    const Tensor normed = h.rows(0, n_logits);
    const Tensor out = logits_buffer(n_logits);
    b.rmsnorm(last, weights_.final_norm, static_cast<float>(c.rms_norm_eps), normed);
    b.matmul(normed, weights_.lm_head, out);
    b.to_host_f32(out, logits);
  }

 private:
  // Activation buffers for up to `tokens` tokens, reused across calls and grown on demand.
  struct Workspace {
    int64_t tokens = 0;
    Buffer x, h, q, k, v, attn, gate, up;
  };

  Workspace& workspace(int64_t n) {
    if (workspace_.tokens >= n) return workspace_;
    const LlamaConfig& c = config_;
    const DType t = backend_.activation_dtype();
    const auto alloc = [&](int64_t width) { return backend_.allocate(t, {n, width}); };
    workspace_ = Workspace{n,
                           alloc(c.hidden_size),
                           alloc(c.hidden_size),
                           alloc(c.q_dim()),
                           alloc(c.kv_dim()),
                           alloc(c.kv_dim()),
                           alloc(c.q_dim()),
                           alloc(c.intermediate_size),
                           alloc(c.intermediate_size)};
    return workspace_;
  }

  // Logits rows are sized separately: a long prefill usually wants one row, not n × vocab floats.
  Tensor logits_buffer(int64_t rows) {
    if (logits_.tensor.empty() || logits_.tensor.dim(0) < rows)
      logits_ = backend_.allocate(backend_.activation_dtype(), {rows, config_.vocab_size});
    return logits_.tensor.rows(0, rows);
  }

  LlamaConfig config_;
  Backend& backend_;
  LlamaWeights weights_;  // backend-resident views
  RopeTable rope_;        // fixed for every type but dynamic
  Workspace workspace_;
  Buffer logits_;
};

}  // namespace hllm
