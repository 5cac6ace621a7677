// libFuzzer harness: the small JSON files of a model folder, each read by its real entry point
// from a file holding the input:
//   config.json               load_llama_config (with quantization_config: parse_quant_config)
//   generation_config.json    load_generation_config, and the tokenizer's set_generation_config
//   quantize_config.json      parse_quant_config(..., assume_gptq = true), as AutoGPTQ's side file
//   tokenizer_config.json     set_tokenizer_config (bos/eos token, chat_template)
// The tokenizer ones run against the tiny tokenizer of corpus/tokenizer_json/tiny.json. A bad file
// must be an hllm::Error (and leave the tokenizer as it was); an accepted one must keep what the
// parsers promise: sizes positive and consistent, integers kept exactly (none wrapped or
// truncated), token ids in the vocabulary.
#include <cstdint>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/quant/gptq_config_json.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

#ifndef HLLM_FUZZ_TINY_TOKENIZER
#error "HLLM_FUZZ_TINY_TOKENIZER must name tests/fuzz/corpus/tokenizer_json/tiny.json"
#endif

using hllm::fuzz::check;

namespace {

// The file's own value of `key` equals what the parser kept (no integer wrapped or truncated).
// Compared as text: nlohmann's == casts an unsigned value to signed (2^64 - 1 == -1).
template <typename T>
void check_kept(const nlohmann::json& object, const char* key, T kept) {
  if (object.is_object() && object.contains(key) && !object.at(key).is_null())
    check(object.at(key).dump() == nlohmann::json(kept).dump(),
          "a field's value changed on parsing",
          std::string(key) + " = " + object.at(key).dump() + " kept as " + std::to_string(kept));
}

// The tiny tokenizer, loaded again after a config file changed it (`changed`).
hllm::Tokenizer& tiny_tokenizer(bool changed) {
  static std::optional<hllm::Tokenizer> tok;
  static bool stale = true;
  if (changed) {
    stale = true;
  } else if (stale) {
    std::ifstream in(HLLM_FUZZ_TINY_TOKENIZER, std::ios::binary);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    tok.emplace(hllm::tokenizer_from_json(text, HLLM_FUZZ_TINY_TOKENIZER));
    stale = false;
  }
  return *tok;
}

// What the config files may change in a tokenizer.
struct Snapshot {
  hllm::TokenId bos_id;
  std::string bos_token, chat_template;
  std::vector<hllm::TokenId> stop_ids;
  explicit Snapshot(const hllm::Tokenizer& tok)
      : bos_id(tok.bos_id()),
        bos_token(tok.bos_token()),
        chat_template(tok.chat_template()),
        stop_ids(tok.stop_ids()) {}
  bool operator==(const Snapshot&) const = default;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path path = hllm::fuzz::scratch_dir() / "config.json";
  hllm::fuzz::write_file(path, data, size);
  const std::string text(reinterpret_cast<const char*>(data), size);

  hllm::fuzz::expect_only_hllm_errors("load_llama_config", [&] {
    const hllm::LlamaConfig c = hllm::load_llama_config(path);
    check(c.hidden_size > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
              c.intermediate_size > 0 && c.vocab_size > 0 && c.max_position_embeddings > 0,
          "accepted a non-positive size");
    check(c.head_dim > 0 && c.head_dim % 2 == 0, "accepted an odd or non-positive head_dim");
    check(c.n_heads % c.n_kv_heads == 0, "accepted n_heads not a multiple of n_kv_heads");
    check(c.rms_norm_eps > 0 && c.rope_theta > 0, "accepted a non-positive eps or rope_theta");
    check(c.rope_scaling.factor >= 1.0, "accepted a rope scaling factor below 1");
    const nlohmann::json j = hllm::read_json_file(path);
    check_kept(j, "hidden_size", c.hidden_size);
    check_kept(j, "num_hidden_layers", c.n_layers);
    check_kept(j, "num_attention_heads", c.n_heads);
    check_kept(j, "num_key_value_heads", c.n_kv_heads);
    check_kept(j, "intermediate_size", c.intermediate_size);
    check_kept(j, "vocab_size", c.vocab_size);
    check_kept(j, "head_dim", c.head_dim);
    check_kept(j, "max_position_embeddings", c.max_position_embeddings);
    check_kept(j, "bos_token_id", c.bos_token_id);
  });
  hllm::fuzz::expect_only_hllm_errors("load_generation_config",
                                      [&] { (void)hllm::load_generation_config(path); });
  hllm::fuzz::expect_only_hllm_errors("parse_quant_config", [&] {
    const hllm::QuantConfig q =
        hllm::parse_quant_config(hllm::read_json_file(path), "quantize_config.json", true);
    check(q.bits == 4, "accepted GPTQ bits other than 4");
    check(q.group_size == -1 || q.group_size > 0, "accepted a bad group_size");
    const nlohmann::json j = hllm::read_json_file(path);
    check_kept(j, "bits", q.bits);
    check_kept(j, "group_size", q.group_size);
  });

  // The tokenizer config files, against the tiny tokenizer: a file that fails must leave it as
  // it was; one that succeeds changes it, so the next input gets a fresh one.
  hllm::fuzz::expect_only_hllm_errors("set_tokenizer_config", [&] {
    hllm::Tokenizer& tok = tiny_tokenizer(false);
    const Snapshot before(tok);
    try {
      hllm::set_tokenizer_config(tok, text, "tokenizer_config.json");
    } catch (...) {
      check(Snapshot(tok) == before, "a failed set_tokenizer_config changed the tokenizer");
      throw;
    }
    tiny_tokenizer(true);
    check(tok.bos_id() < 0 || tok.find_added(tok.bos_token()) == tok.bos_id(),
          "bos_token is not the added token of bos_id");
  });
  hllm::fuzz::expect_only_hllm_errors("set_generation_config", [&] {
    hllm::Tokenizer& tok = tiny_tokenizer(false);
    const Snapshot before(tok);
    try {
      hllm::set_generation_config(tok, text, "generation_config.json");
    } catch (...) {
      check(Snapshot(tok) == before, "a failed set_generation_config changed the tokenizer");
      throw;
    }
    tiny_tokenizer(true);
    for (const hllm::TokenId id : tok.stop_ids())
      check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "stop id out of range");
  });
  return 0;
}
