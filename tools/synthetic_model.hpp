// Random-weight models of the real Llama-3 shapes, made in memory (no checkpoint file), for
// `hllm bench --synthetic`: speed depends on the shapes and the weight format, not on the values.
//
// The configs equal the checkpoints' config.json (vocab 128256, rms_norm_eps 1e-5, rope_theta
// 500000, bos 128000):
//
//   llama3-8b    hidden 4096, 32 layers, 32/8 heads, FFN 14336; no rope_scaling, context 8192,
//                eos 128009 (Meta-Llama-3-8B-Instruct)
//   llama3.2-1b  hidden 2048, 16 layers, 32/8 heads (head_dim 64), FFN 8192, tied (Llama-3.2-1B)
//   llama3.2-3b  hidden 3072, 28 layers, 24/8 heads, FFN 8192, tied (Llama-3.2-3B)
//                both 3.2: rope_scaling llama3 (factor 32, low 1, high 4, original context 8192),
//                context 131072, eos 128001
//   tiny         hidden 512, 2 layers, 4/1 heads, FFN 768, vocab 512 (the test fixtures' shape)
//
// Weights (--quant): norms 1, embeddings/dense matrices N(0, 0.02)-ish bf16, and
//   q4    linears random codes with fp16 scales 0.002 and zero point 8 in the engine's INT4 tile
//         layout (layout/int4_tiles.hpp); embedding and lm_head bf16
//   q4_0, q8_0, q4_k, q6_k   ggml blocks as a GGUF file holds them (layout/ggml_blocks.hpp),
//         quantized from uniform fp32 weights of std 0.02 (quant/ggml_quantize.hpp): every
//         projection and an untied embedding in that type, lm_head (the embedding when tied) in
//         Q6_K as llama.cpp's presets do (Q8_0 for q8_0). llama.cpp's Q4_K_M also gives some
//         layers' attn_v / ffn_down Q6_K; here every projection has the one type.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hllm/core/dtype.hpp"
#include "hllm/core/error.hpp"
#include "hllm/layout/dense_panels.hpp"
#include "hllm/model/config.hpp"
#include "hllm/model/linear.hpp"
#include "hllm/model/weights.hpp"
#include "hllm/quant/ggml_quantize.hpp"
#include "hllm/quant/int4.hpp"

namespace hllm::tools {

// What Llama-3.2-1B and -3B share beyond the shape: llama3 RoPE scaling to 128K, tied embeddings.
inline void set_llama3_2_context(LlamaConfig& c) {
  c.max_position_embeddings = 131072;
  c.rope_scaling.type = RopeType::llama3;
  c.rope_scaling.factor = 32.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  c.tie_word_embeddings = true;
  c.eos_token_ids = {128001};
}

inline LlamaConfig synthetic_config(const std::string& name) {
  LlamaConfig c;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 500000.0;
  if (name != "tiny") c.bos_token_id = 128000;
  if (name == "llama3-8b") {
    c.hidden_size = 4096, c.n_layers = 32, c.intermediate_size = 14336;
    c.max_position_embeddings = 8192;
    c.eos_token_ids = {128009};
  } else if (name == "llama3.2-1b") {
    c.hidden_size = 2048, c.n_layers = 16, c.intermediate_size = 8192, c.head_dim = 64;
    set_llama3_2_context(c);
  } else if (name == "llama3.2-3b") {
    c.hidden_size = 3072, c.n_layers = 28, c.n_heads = 24, c.intermediate_size = 8192;
    set_llama3_2_context(c);
  } else if (name == "tiny") {
    c.hidden_size = 512, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 1, c.intermediate_size = 768,
    c.vocab_size = 512;
    c.max_position_embeddings = 131072;
    c.rope_scaling.type = RopeType::llama3;
    c.rope_scaling.factor = 8.0;
    c.rope_scaling.original_max_position_embeddings = 8192;
  } else {
    fail("--synthetic: unknown model \"", name, "\" (llama3-8b, llama3.2-3b, llama3.2-1b, tiny)");
  }
  return c;
}

// The host memory behind a synthetic model's weights.
struct SyntheticModel {
  LlamaConfig config;
  LlamaWeights weights;
  std::vector<std::shared_ptr<void>> memory;
};

namespace synthetic_detail {

// fn(t, begin, end) on up to 16 threads t, each with its contiguous share of [0, n).
template <typename Fn>
void parallel_shares(size_t n, Fn fn) {
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  const size_t per = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([=] { fn(t, std::min(n, t * per), std::min(n, (t + 1) * per)); });
  for (auto& th : pool) th.join();
}

// Fills `bytes` with pseudo-random bytes (xorshift64*, one stream per thread).
inline void fill_random(void* data, size_t bytes, uint64_t seed) {
  const size_t words = bytes / 8;
  parallel_shares(words, [=](unsigned t, size_t begin, size_t end) {
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + t + 1;
    auto* w = static_cast<uint64_t*>(data);
    for (size_t i = begin; i < end; ++i) {
      x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
      w[i] = x * 0x2545f4914f6cdd1dull;
    }
  });
  std::memset(static_cast<uint8_t*>(data) + words * 8, 0x5a, bytes - words * 8);
}

// n fp32 values uniform in [−0.0346, 0.0346) (std 0.02).
inline std::vector<float> uniform_weights(size_t n, uint64_t seed) {
  std::vector<float> values(n);
  fill_random(values.data(), n * sizeof(float), seed);
  parallel_shares(n, [&](unsigned, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      int32_t bits;
      std::memcpy(&bits, &values[i], 4);
      values[i] = static_cast<float>(bits) * (0.0346f / 2147483648.0f);
    }
  });
  return values;
}

}  // namespace synthetic_detail

// bf16 values N-ish(0, std): random bytes with the exponent field forced into a narrow range.
// `elements` (at least shape.numel()) is what is allocated and filled.
inline Tensor synthetic_dense(SyntheticModel& m, Shape shape, float value_scale, uint64_t seed,
                              int64_t elements = -1) {
  const size_t n = static_cast<size_t>(elements < 0 ? shape.numel() : elements);
  auto memory = std::shared_ptr<bf16[]>(new bf16[n]);
  synthetic_detail::fill_random(memory.get(), n * sizeof(bf16), seed);
  for (size_t i = 0; i < n; ++i) {
    // Keep the sign and 7 mantissa bits; exponent of value_scale: |v| in [scale, 2·scale).
    const uint16_t bits = memory[i].bits;
    memory[i] = f32_to_bf16((bits & 0x8000 ? -1.0f : 1.0f) * value_scale *
                            (1.0f + static_cast<float>(bits & 0x7f) / 128.0f));
  }
  m.memory.push_back(memory);
  return Tensor(memory.get(), DType::bf16, shape);
}

inline Tensor synthetic_ones(SyntheticModel& m, int64_t n) {
  auto memory = std::shared_ptr<bf16[]>(new bf16[static_cast<size_t>(n)]);
  for (int64_t i = 0; i < n; ++i) memory[i] = f32_to_bf16(1.0f);
  m.memory.push_back(memory);
  return Tensor(memory.get(), DType::bf16, {n});
}

// The weight formats --quant names; ggml_type_of gives the block type of the ggml ones.
inline const std::vector<std::string>& synthetic_quant_names() {
  static const std::vector<std::string> names{"q4", "bf16", "q4_0", "q8_0", "q4_k", "q6_k"};
  return names;
}

inline std::optional<GgmlType> ggml_type_of(const std::string& quant) {
  if (quant == "q4_0") return GgmlType::Q4_0;
  if (quant == "q8_0") return GgmlType::Q8_0;
  if (quant == "q4_k") return GgmlType::Q4_K;
  if (quant == "q6_k") return GgmlType::Q6_K;
  return std::nullopt;
}

// A host-owned ggml Linear from a dense fp32 matrix [out, in] (rows back to back; in a multiple
// of the type's block size), its rows quantized in parallel.
inline Linear make_ggml_linear(GgmlType type, const float* weights, int64_t out, int64_t in) {
  GgmlView view{type, nullptr, out, in};
  const int64_t row_bytes = view.row_bytes();
  auto memory = std::shared_ptr<uint8_t[]>(new uint8_t[view.nbytes()]);
  synthetic_detail::parallel_shares(static_cast<size_t>(out), [&](unsigned, size_t r0, size_t r1) {
    for (auto r = static_cast<int64_t>(r0); r < static_cast<int64_t>(r1); ++r)
      ggml_quantize_row(type, weights + r * in, in, memory.get() + r * row_bytes);
  });
  view.data = memory.get();
  return Linear(view, std::move(memory));
}

inline Linear synthetic_ggml_linear(int64_t out, int64_t in, GgmlType type, uint64_t seed) {
  const std::vector<float> dense =
      synthetic_detail::uniform_weights(static_cast<size_t>(out * in), seed);
  return make_ggml_linear(type, dense.data(), out, in);
}

inline Linear synthetic_int4_linear(int64_t out, int64_t in, uint64_t seed) {
  if (in % INT4_TILE_K != 0) fail("synthetic q4: in_features ", in, " is not a multiple of 128");
  Int4Matrix matrix(in, out, in / INT4_TILE_K, {});
  const Int4View& v = matrix.view();
  synthetic_detail::fill_random(matrix.tiles(), v.nbytes(), seed);
  for (int64_t t = 0; t < v.n_tiles(); ++t) {
    int4_tile& tile = matrix.tiles()[t];
    for (int r = 0; r < INT4_TILE_ROWS; ++r) {
      tile.scale[r] = f32_to_f16(0.002f);
      tile.zero[r] = f32_to_f16(8.0f);
    }
  }
  return make_int4_linear(std::move(matrix));
}

// One projection [out, in] in the format `quant` names. A dense one is made in the CPU backend's
// row panels (layout/dense_panels.hpp) when `cpu_panels`: random values in either order are the
// same random matrix, and the backend keeps it instead of copying it (an 8B bf16 model would
// otherwise take twice its 16 GB).
inline Linear synthetic_linear(SyntheticModel& m, int64_t out, int64_t in, const std::string& quant,
                               uint64_t seed, bool cpu_panels = false) {
  if (const std::optional<GgmlType> type = ggml_type_of(quant))
    return synthetic_ggml_linear(out, in, *type, seed);
  if (quant == "q4") return synthetic_int4_linear(out, in, seed);
  if (!cpu_panels) return Linear(synthetic_dense(m, {out, in}, 0.02f, seed));
  Linear panels(synthetic_dense(m, {out, in}, 0.02f, seed, dense_panels_elements(out, in)));
  panels.dense_panels = true;
  return panels;
}

// The config of make_synthetic_model(name, quant): the real model's, with the quantization method
// `quant` implies.
inline LlamaConfig synthetic_model_config(const std::string& name, const std::string& quant) {
  const std::vector<std::string>& known = synthetic_quant_names();
  if (std::find(known.begin(), known.end(), quant) == known.end())
    fail("--quant: unknown weight format \"", quant, "\"");
  LlamaConfig config = synthetic_config(name);
  if (ggml_type_of(quant)) config.quant.method = QuantMethod::ggml;  // as a GGUF file's says
  return config;
}

// quant: one of synthetic_quant_names(); cpu_panels: for the CPU backend (synthetic_linear). The
// [vocab, hidden] tables stay in rows (a quantized --lm-head is made from them).
inline std::unique_ptr<SyntheticModel> make_synthetic_model(const std::string& name,
                                                            const std::string& quant,
                                                            bool cpu_panels = false) {
  auto m = std::make_unique<SyntheticModel>();
  m->config = synthetic_model_config(name, quant);
  const std::optional<GgmlType> ggml = ggml_type_of(quant);
  const LlamaConfig& c = m->config;
  uint64_t seed = 1;
  // The [vocab, hidden] tables: bf16, or ggml with lm_head in the preset's output type.
  const std::string head_quant = !ggml ? "bf16" : quant == "q8_0" ? "q8_0" : "q6_k";
  const std::string embed_quant = !ggml ? "bf16" : c.tie_word_embeddings ? head_quant : quant;
  m->weights.embed = synthetic_linear(*m, c.vocab_size, c.hidden_size, embed_quant, seed++);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights w;
    w.attn_norm = synthetic_ones(*m, c.hidden_size);
    w.wq = synthetic_linear(*m, c.q_dim(), c.hidden_size, quant, seed++, cpu_panels);
    w.wk = synthetic_linear(*m, c.kv_dim(), c.hidden_size, quant, seed++, cpu_panels);
    w.wv = synthetic_linear(*m, c.kv_dim(), c.hidden_size, quant, seed++, cpu_panels);
    w.wo = synthetic_linear(*m, c.hidden_size, c.q_dim(), quant, seed++, cpu_panels);
    w.mlp_norm = synthetic_ones(*m, c.hidden_size);
    w.w_gate = synthetic_linear(*m, c.intermediate_size, c.hidden_size, quant, seed++, cpu_panels);
    w.w_up = synthetic_linear(*m, c.intermediate_size, c.hidden_size, quant, seed++, cpu_panels);
    w.w_down = synthetic_linear(*m, c.hidden_size, c.intermediate_size, quant, seed++, cpu_panels);
    m->weights.layers.push_back(std::move(w));
  }
  m->weights.final_norm = synthetic_ones(*m, c.hidden_size);
  m->weights.lm_head = c.tie_word_embeddings
                           ? m->weights.embed
                           : synthetic_linear(*m, c.vocab_size, c.hidden_size, head_quant, seed++);
  return m;
}

}  // namespace hllm::tools
