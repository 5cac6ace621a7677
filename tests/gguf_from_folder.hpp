// Test helper: a bf16 Hugging Face model folder (config.json, model.safetensors, tokenizer.json,
// tokenizer_config.json) written out as the GGUF file llama.cpp's converter would make from it —
// Llama metadata, BF16 matrices with attn_q / attn_k rows permuted into Meta's interleaved RoPE
// order, F32 norms, no `output` tensor when tied, and the tokenizer as tokenizer.ggml.* (tokens,
// token types with added tokens as CONTROL, merges, bos/eos ids, chat template). The full-vocab
// GGUF fixture may not be committed (it embeds Meta's vocabulary), so the tests make their own
// from the demo model and the fetched tokenizer.json with hllm's GGUF writer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hllm/io/gguf_write.hpp"
#include "hllm/model/load.hpp"

namespace hllm::test {

inline nlohmann::json read_json(const std::filesystem::path& path) {
  return nlohmann::json::parse(std::ifstream(path));
}

inline std::span<const std::byte> bytes_of(const Tensor& t) {
  return {static_cast<const std::byte*>(t.data), t.nbytes()};
}

inline void write_gguf_from_folder(const std::filesystem::path& dir,
                                   const std::filesystem::path& out) {
  const ModelFolder folder = open_model_folder(dir);
  const LlamaConfig& c = folder.config;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", dir.filename().string());
  w.add_u32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add_u32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.add_u32("llama.block_count", static_cast<uint32_t>(c.n_layers));
  w.add_u32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add_u32("llama.attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  w.add_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  w.add_f32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add_u32("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));

  // The tokenizer: model vocab entries are normal tokens, added tokens are control tokens.
  const nlohmann::json tok = read_json(dir / "tokenizer.json");
  std::vector<std::string> tokens(static_cast<size_t>(c.vocab_size));
  std::vector<int32_t> types(tokens.size(), 1);
  for (const auto& [text, id] : tok["model"]["vocab"].items()) tokens[id.get<size_t>()] = text;
  for (const auto& added : tok["added_tokens"]) {
    tokens[added["id"].get<size_t>()] = added["content"].get<std::string>();
    types[added["id"].get<size_t>()] = 3;
  }
  std::vector<std::string> merges;
  for (const auto& m : tok["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "llama-bpe");
  w.add_strings("tokenizer.ggml.tokens", tokens);
  w.add_i32s("tokenizer.ggml.token_type", types);
  w.add_strings("tokenizer.ggml.merges", merges);
  w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(c.bos_token_id));
  w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(c.eos_token_ids.at(0)));
  const nlohmann::json tok_config = read_json(dir / "tokenizer_config.json");
  if (tok_config.contains("chat_template"))
    w.add_string("tokenizer.chat_template", tok_config["chat_template"].get<std::string>());

  const auto norm = [&](const std::string& name, const Tensor& t) {
    std::vector<float> f32(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) f32[i] = bf16_to_f32(t.as<bf16>()[i]);
    w.add_tensor(name, GgmlType::F32, {t.numel()},
                 std::as_bytes(std::span<const float>(f32.data(), f32.size())));
  };
  const auto matrix = [&](const std::string& name, const Tensor& t) {
    w.add_tensor(name, GgmlType::BF16, {t.dim(1), t.dim(0)}, bytes_of(t));
  };
  // HF row j·d/2 + i of each head goes to row 2i + j (llama.cpp's convert_hf_to_gguf permute).
  const auto rope_matrix = [&](const std::string& name, const Tensor& t, int64_t heads) {
    const int64_t d = c.head_dim, in = t.dim(1);
    std::vector<bf16> rows(static_cast<size_t>(t.numel()));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t i = 0; i < d / 2; ++i)
          std::memcpy(&rows[(h * d + 2 * i + j) * in], t.as<bf16>() + (h * d + j * d / 2 + i) * in,
                      in * sizeof(bf16));
    w.add_tensor(name, GgmlType::BF16, {in, t.dim(0)},
                 std::as_bytes(std::span<const bf16>(rows.data(), rows.size())));
  };
  const LlamaWeights& wt = folder.weights;
  matrix("token_embd.weight", wt.embed.dense);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const LayerWeights& layer = wt.layers[l];
    norm(p + "attn_norm.weight", layer.attn_norm);
    rope_matrix(p + "attn_q.weight", layer.wq.dense, c.n_heads);
    rope_matrix(p + "attn_k.weight", layer.wk.dense, c.n_kv_heads);
    matrix(p + "attn_v.weight", layer.wv.dense);
    matrix(p + "attn_output.weight", layer.wo.dense);
    norm(p + "ffn_norm.weight", layer.mlp_norm);
    matrix(p + "ffn_gate.weight", layer.w_gate.dense);
    matrix(p + "ffn_up.weight", layer.w_up.dense);
    matrix(p + "ffn_down.weight", layer.w_down.dense);
  }
  norm("output_norm.weight", wt.final_norm);
  if (!c.tie_word_embeddings) matrix("output.weight", wt.lm_head.dense);
  w.write(out);
}

}  // namespace hllm::test
