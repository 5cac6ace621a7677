// The tokenizer inside a GGUF file (llama.cpp's `tokenizer.ggml.*` metadata) as an hllm::Tokenizer
// that tokenizes exactly as the tokenizer.json path does: the metadata is turned into the
// tokenizer.json it was converted from and read by the same loader (tokenizer_load.hpp), so there
// is one BPE, one pre-tokenizer and one set of checks.
//
//   tokenizer.ggml.model = "gpt2", .pre = "llama-bpe"   Llama-3's byte-level BPE (others refused)
//   tokenizer.ggml.tokens [n]        the byte-level token strings; id = index
//   tokenizer.ggml.token_type [n]    1 normal, 3 control, 4 user-defined (control and user-defined
//                                    are added tokens, control ones special), 2/5/6 refused
//   tokenizer.ggml.merges [m]        "left right", in rank order
//   tokenizer.ggml.{bos,eos,eot}_token_id, tokenizer.chat_template
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "hllm/core/error.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/tokenizer/pretokenize.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace hllm {

namespace detail {

inline std::string gguf_tokenizer_json(const GgufFile& f) {
  const std::string_view model = f.string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail(f.source(), ": tokenizer.ggml.model \"", model,
         "\" is not supported (Llama-3's byte-level BPE, \"gpt2\", is)");
  const std::string_view pre = f.string_or_none("tokenizer.ggml.pre").value_or("default");
  if (pre != "llama-bpe")
    fail(f.source(), ": tokenizer.ggml.pre \"", pre,
         "\" is not supported (Llama-3's pre-tokenizer, \"llama-bpe\", is)");
  const auto tokens = f.string_array("tokenizer.ggml.tokens");
  const auto merges = f.string_array("tokenizer.ggml.merges");
  std::vector<int64_t> types(tokens.size(), 1);
  if (f.find("tokenizer.ggml.token_type")) {
    types = f.integer_array("tokenizer.ggml.token_type");
    if (types.size() != tokens.size())
      fail(f.source(), ": tokenizer.ggml.token_type has ", types.size(), " entries for ",
           tokens.size(), " tokens");
  }
  const auto quoted = [](std::string_view s) { return nlohmann::json(s).dump(); };
  std::string vocab = "{", added = "[";
  for (size_t id = 0; id < tokens.size(); ++id) {
    const int64_t type = types[id];
    if (type == 3 || type == 4) {
      added += detail::str_cat(added.size() > 1 ? "," : "", "{\"id\":", id,
                               ",\"content\":", quoted(tokens[id]),
                               ",\"special\":", type == 3 ? "true" : "false", "}");
    } else if (type == 1) {
      vocab += detail::str_cat(vocab.size() > 1 ? "," : "", quoted(tokens[id]), ":", id);
    } else {
      fail(f.source(), ": token ", id, " has token_type ", type,
           " (only normal, control and user-defined tokens are supported)");
    }
  }
  std::string merge_list = "[";
  for (size_t i = 0; i < merges.size(); ++i) merge_list += (i ? "," : "") + quoted(merges[i]);
  const nlohmann::json split = {{"type", "Split"},
                                {"pattern", {{"Regex", LLAMA3_SPLIT_PATTERN}}},
                                {"behavior", "Isolated"},
                                {"invert", false}};
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const nlohmann::json pre_tokenizer = {{"type", "Sequence"},
                                        {"pretokenizers", {split, byte_level}}};
  return str_cat("{\"model\":{\"type\":\"BPE\",\"ignore_merges\":true,\"vocab\":", vocab,
                 "},\"merges\":", merge_list, "]},\"added_tokens\":", added,
                 "],\"normalizer\":null,\"pre_tokenizer\":", pre_tokenizer.dump(),
                 ",\"decoder\":{\"type\":\"ByteLevel\"}}");
}

}  // namespace detail

inline Tokenizer tokenizer_from_gguf(const GgufFile& f) {
  const std::string source = f.source() + " (tokenizer.ggml.*)";
  const std::string json =
      detail::rethrow_json_errors(source, [&] { return detail::gguf_tokenizer_json(f); });
  Tokenizer tok = tokenizer_from_json(json, source);
  nlohmann::json ids = nlohmann::json::object();
  if (const auto bos = f.integer_or_none("tokenizer.ggml.bos_token_id")) ids["bos_token_id"] = *bos;
  nlohmann::json eos = nlohmann::json::array();
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"})
    if (const auto id = f.integer_or_none(key)) eos.push_back(*id);
  ids["eos_token_id"] = eos;
  set_generation_config(tok, ids.dump(), source);
  if (const auto chat = f.string_or_none("tokenizer.chat_template")) {
    const nlohmann::json config = {{"chat_template", *chat}};
    set_tokenizer_config(tok, detail::rethrow_json_errors(source, [&] { return config.dump(); }),
                         source);
  }
  return tok;
}

// A tokenizer from any file that holds one: a GGUF model file, a tokenizer.json, or a model folder
// with a tokenizer.json (load_tokenizer).
inline Tokenizer load_tokenizer_from(const std::filesystem::path& path) {
  if (is_gguf_file(path)) return tokenizer_from_gguf(GgufFile(path));
  return load_tokenizer(path);
}

}  // namespace hllm
