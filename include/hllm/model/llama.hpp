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

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/model/backend.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/kv_cache.hpp"
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
    const bool tied = host_weights.lm_head.data() == host_weights.embed.data();
    weights_.embed =
        tied ? upload_linear(host_weights.embed) : backend_.upload_embedding(host_weights.embed);
    for (const LayerWeights& hw : host_weights.layers)
      weights_.layers.push_back(
          LayerWeights{upload(hw.attn_norm), upload_linear(hw.wq), upload_linear(hw.wk),
                       upload_linear(hw.wv), upload_linear(hw.wo), upload(hw.mlp_norm),
                       upload_linear(hw.w_gate), upload_linear(hw.w_up), upload_linear(hw.w_down)});
    weights_.final_norm = upload(host_weights.final_norm);
    weights_.lm_head = tied ? Linear(weights_.embed) : upload_linear(host_weights.lm_head);
  }

  const LlamaConfig& config() const { return config_; }
  // The weights as the backend holds them (on the CPU: host memory, dense ones in row panels; a
  // model made from these on another CPU backend shares them).
  const LlamaWeights& weights() const { return weights_; }
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

    // Long prompts run in chunks (bounded activation memory; each chunk attends to the cached
    // earlier ones). All chunks use the RoPE table of the whole forward, as HF's one pass does.
    const int64_t n_logits = all_logits ? n : 1;
    if (!logits.empty() && static_cast<int64_t>(logits.size()) != n_logits * c.vocab_size)
      fail("forward: logits buffer holds ", logits.size(), " floats, need ",
           n_logits * c.vocab_size);
    for (int64_t begin = 0; begin < n; begin += prefill_chunk_) {
      const int64_t end = std::min(n, begin + prefill_chunk_);
      const bool last_chunk = end == n;
      std::span<float> chunk_logits;
      if (all_logits && !logits.empty())
        chunk_logits = logits.subspan(begin * c.vocab_size, (end - begin) * c.vocab_size);
      else if (last_chunk)
        chunk_logits = logits;
      forward_chunk(ids.subspan(begin, end - begin), cache, chunk_logits, all_logits, start + n);
    }
  }

  // Tokens per forward step of a long prompt (default 4096).
  void set_prefill_chunk(int64_t tokens) {
    if (tokens < 1) fail("prefill chunk must be at least 1 token (got ", tokens, ")");
    prefill_chunk_ = tokens;
  }

  // One step over tokens of any number of sequences sharing `pool`'s blocks through the step's
  // block tables (batched decode): logits of every token ([n, vocab], all_logits) or of the last
  // one; empty `logits`: they stay on the backend (last_logits). The caller checked ids,
  // positions and tables; the pool's length() is not used.
  // rope_length: the sequence length dynamic NTK scales for (0: the step's last position + 1).
  void forward_step(Step step, const KvCache& pool, std::span<float> logits, bool all_logits,
                    int64_t rope_length = 0) {
    const LlamaConfig& c = config_;
    const int64_t n = static_cast<int64_t>(step.ids.size());
    if (n == 0) fail("forward: a step with no tokens");
    const int64_t n_logits = all_logits ? n : 1;
    if (!logits.empty() && static_cast<int64_t>(logits.size()) != n_logits * c.vocab_size)
      fail("forward: logits buffer holds ", logits.size(), " floats, need ",
           n_logits * c.vocab_size);
    // Dynamic NTK re-bases theta with the sequence length, as HF does at every forward.
    if (c.rope_scaling.type == RopeType::dynamic) {
      const int64_t end = rope_length > 0
                              ? rope_length
                              : *std::max_element(step.positions.begin(), step.positions.end()) + 1;
      dynamic_rope_ = rope_table(c, end);
    }
    step.rope = c.rope_scaling.type == RopeType::dynamic ? &dynamic_rope_ : &rope_;

    Workspace& ws = workspace(n);
    const Tensor out = logits_buffer(n_logits);
    Backend& b = backend_;
    b.begin_step(step);
    // Everything the recorded ops depend on besides the step inputs: token count, which logits,
    // this model, the cache and the buffer generations (ids, never reused, unlike addresses).
    const uint64_t key = step_key(
        {static_cast<uint64_t>(n), all_logits ? 1u : 0u, id_, pool.id(), ws.id, logits_id_});
    b.run_step(key, [&] { run_layers(ws, n, pool, all_logits, out); });
    if (!logits.empty()) b.to_host_f32(out, logits);
  }

  // The logits of the last step, still on the backend ([rows, vocab] fp32): for device-side
  // sampling.
  Tensor last_logits(int64_t rows) const { return logits_.tensor.rows(0, rows); }

 private:
  // One step of one sequence: tokens `ids` at positions cache.length() ...
  void forward_chunk(std::span<const int32_t> ids, KvCache& cache, std::span<float> logits,
                     bool all_logits, int64_t rope_length) {
    const int64_t n = static_cast<int64_t>(ids.size()), start = cache.length();
    step_ids_.assign(ids.begin(), ids.end());
    step_seq_.assign(static_cast<size_t>(n), 0);
    step_positions_.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) step_positions_[t] = static_cast<int32_t>(start + t);
    Step step;
    step.ids = step_ids_;
    step.seq = step_seq_;
    step.positions = step_positions_;
    step.block_tables = cache.block_table();
    step.max_blocks_per_seq = static_cast<int32_t>(cache.block_table().size());
    step.block_size = KvCache::KV_BLOCK_SIZE;
    step.max_kv_len = kv_length_bound(start + n, cache.rows());
    forward_step(step, cache, logits, all_logits, rope_length);
    cache.advance(n);
  }

  static uint64_t step_key(std::initializer_list<uint64_t> parts) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the parts' 8-byte words
    for (uint64_t p : parts) h = (h ^ p) * 1099511628211ull;
    return h;
  }

  // Activation buffers for up to `tokens` tokens, reused across calls and grown on demand.
  struct Workspace {
    int64_t tokens = 0;
    uint64_t id = 0;                          // next_object_id() of this allocation
    Buffer x, h, y, q, k, v, attn, gate, up;  // x: the residual stream; h: normed x; y: a
                                              // sublayer's output before it joins x
  };

  // The ops of one step: embedding, the decoder layers, the final norm and the lm_head. Every
  // residual add is fused with the norm that follows it.
  void run_layers(const Workspace& ws, int64_t n, const KvCache& cache, bool all_logits,
                  const Tensor& logits) {
    const LlamaConfig& c = config_;
    const float eps = static_cast<float>(c.rms_norm_eps);
    const Tensor x = ws.x.tensor.rows(0, n), h = ws.h.tensor.rows(0, n), y = ws.y.tensor.rows(0, n);
    const Tensor q = ws.q.tensor.rows(0, n), k = ws.k.tensor.rows(0, n), v = ws.v.tensor.rows(0, n);
    const Tensor attn = ws.attn.tensor.rows(0, n), gate = ws.gate.tensor.rows(0, n),
                 up = ws.up.tensor.rows(0, n);
    const Tensor q_heads = q.reshape({n, c.n_heads, c.head_dim});
    const Tensor k_heads = k.reshape({n, c.n_kv_heads, c.head_dim});
    const Tensor v_heads = v.reshape({n, c.n_kv_heads, c.head_dim});
    const Tensor attn_heads = attn.reshape({n, c.n_heads, c.head_dim});
    const float scale = attention_scale(c);

    Backend& b = backend_;
    b.embedding(weights_.embed, x);
    b.rmsnorm(x, weights_.layers[0].attn_norm, eps, h);
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights_.layers[l];
      const KvLayer kv = cache.layer(l);
      b.matmul_shared_input(h, {{w.wq, q}, {w.wk, k}, {w.wv, v}});
      b.rope_store_kv(q_heads, k_heads, v_heads, kv);
      b.attention(q_heads, kv, scale, attn_heads);
      b.matmul(attn, w.wo, y);
      b.add_rmsnorm(x, y, w.mlp_norm, eps, h);
      b.matmul_shared_input(h, {{w.w_gate, gate}, {w.w_up, up}});
      b.swiglu(gate, up, gate);
      b.matmul(gate, w.w_down, y);
      const bool last = l + 1 == c.n_layers;
      b.add_rmsnorm(x, y, last ? weights_.final_norm : weights_.layers[l + 1].attn_norm, eps, h);
    }
    const Tensor normed = all_logits ? h : h.rows(n - 1, n);
    b.matmul(normed, weights_.lm_head, logits);
  }

  Workspace& workspace(int64_t n) {
    if (workspace_.tokens >= n) return workspace_;
    const LlamaConfig& c = config_;
    const DType t = backend_.activation_dtype();
    const auto alloc = [&](int64_t width) { return backend_.allocate(t, {n, width}); };
    workspace_ = Workspace{n,
                           next_object_id(),
                           alloc(c.hidden_size),
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
  // fp32 on every backend: bf16 logits would round away the gaps that decide the argmax.
  Tensor logits_buffer(int64_t rows) {
    if (logits_.tensor.empty() || logits_.tensor.dim(0) < rows)
      logits_ = backend_.allocate(DType::f32, {rows, config_.vocab_size}),
      logits_id_ = next_object_id();
    return logits_.tensor.rows(0, rows);
  }

  LlamaConfig config_;
  Backend& backend_;
  LlamaWeights weights_;  // backend-resident views
  RopeTable rope_;        // fixed for every type but dynamic
  Workspace workspace_;
  Buffer logits_;
  RopeTable dynamic_rope_;  // dynamic NTK: re-based for every step's length
  uint64_t id_ = next_object_id();
  uint64_t logits_id_ = 0;
  int64_t prefill_chunk_ = 4096;
  std::vector<int32_t> step_ids_, step_seq_, step_positions_;  // the last step's inputs
};

}  // namespace hllm
