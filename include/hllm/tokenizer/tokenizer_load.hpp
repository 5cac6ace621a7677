// Making an hllm::Tokenizer (tokenizer/tokenizer.hpp) from Hugging Face's files. `source` names
// the file in error messages; a bad config file leaves the tokenizer as it was.
//
//   load_tokenizer(path)                       a tokenizer.json, or a model folder holding one, with
//                                              the tokenizer_config.json and generation_config.json
//                                              beside it when present
//   tokenizer_from_json(text, source)          the text of a tokenizer.json
//   set_tokenizer_config(tok, text, source)    bos_token, eos_token, chat_template
//   set_generation_config(tok, text, source)   eos_token_id (an id or a list), bos_token_id
//
// tokenizer.json's large "model" section is read by the scanner of bpe_load.hpp; the small
// sections and the config files go through nlohmann::json, which of the tokenizer headers only
// this one and bpe_load.hpp include.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/mmap.hpp"
#include "hllm/io/json.hpp"
#include "hllm/tokenizer/bpe_load.hpp"
#include "hllm/tokenizer/json_scan.hpp"
#include "hllm/tokenizer/pretokenize.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/vocab.hpp"

namespace hllm {

namespace detail {

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail(path.string(), ": cannot open file");
  std::string data(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(data.data(), static_cast<std::streamsize>(data.size()))) {
    fail(path.string(), ": read error");
  }
  return data;
}

// Fills in a Tokenizer's private parts (it is the Tokenizer's friend).
struct TokenizerLoader {
  static Tokenizer from_json(std::string_view json, const std::string& source) {
    Tokenizer tok;
    JsonScanner scan(json, source);
    nlohmann::json sections =
        nlohmann::json::object();  // the small pipeline sections, checked below
    bool have_model = false;
    std::vector<std::string> seen;  // a key given twice would be read twice (added_tokens: twice)
    scan.object([&](const std::string& key) {
      if (std::find(seen.begin(), seen.end(), key) != seen.end())
        fail(source, ": key \"", key, "\" appears twice at the top level");
      seen.push_back(key);
      if (key == "model") {
        parse_bpe_model(scan, source, tok.model_);
        have_model = true;
      } else if (key == "added_tokens") {
        read_added_tokens(tok, scan.raw_value(), source);
      } else if (key == "normalizer" || key == "pre_tokenizer" || key == "decoder") {
        sections[key] = parse_json(scan.raw_value(), source);
      } else {
        scan.raw_value();  // version, truncation, padding, post_processor: not used by encode/decode
      }
    });
    if (!scan.at_end()) scan.error("trailing characters after the top-level object");
    if (!have_model) fail(source, ": no \"model\" section");
    check_pipeline(sections, source);
    return tok;
  }

  static void tokenizer_config(Tokenizer& tok, std::string_view json, const std::string& source) {
    const nlohmann::json config = parse_json(json, source);
    if (!config.is_object()) fail(source, ": expected a JSON object");
    const auto token_text = [&](const char* key) -> std::optional<std::string> {
      const auto it = config.find(key);
      if (it == config.end() || it->is_null()) return std::nullopt;
      // Older files spell it {"content": "...", ...} (an AddedToken).
      const nlohmann::json& v = it->is_object() && it->contains("content") ? (*it)["content"] : *it;
      if (!v.is_string()) fail(source, ": ", key, " must be a string");
      return v.get<std::string>();
    };
    const auto bos = token_text("bos_token");
    const auto eos = token_text("eos_token");
    const TokenId bos_id = bos ? require_added(tok, *bos, source, "bos_token") : -1;
    const TokenId eos_id = eos ? require_added(tok, *eos, source, "eos_token") : -1;
    const auto it = config.find("chat_template");
    const bool has_template = it != config.end() && !it->is_null();
    if (has_template && !it->is_string()) fail(source, ": chat_template must be a string");
    // All checked: now change the tokenizer (a bad file leaves it as it was).
    if (bos) {
      tok.bos_id_ = bos_id;
      tok.bos_token_ = *bos;
    }
    if (eos) tok.add_stop_id(eos_id);
    if (has_template) tok.chat_template_ = it->get<std::string>();
  }

  static void generation_config(Tokenizer& tok, std::string_view json, const std::string& source) {
    const nlohmann::json config = parse_json(json, source);
    if (!config.is_object()) fail(source, ": expected a JSON object");
    const auto check_id = [&](const nlohmann::json& v, const char* key) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
          v.get<int64_t>() >= static_cast<int64_t>(tok.vocab_size())) {
        fail(source, ": ", key, " must be a token id below ", tok.vocab_size(), ", got ",
             describe_json(v));
      }
      return static_cast<TokenId>(v.get<int64_t>());
    };
    std::vector<TokenId> eos_ids;
    if (const auto it = config.find("eos_token_id"); it != config.end() && !it->is_null()) {
      if (it->is_array()) {
        for (const auto& v : *it) eos_ids.push_back(check_id(v, "eos_token_id"));
      } else {
        eos_ids.push_back(check_id(*it, "eos_token_id"));
      }
    }
    TokenId bos_id = -1;
    if (const auto it = config.find("bos_token_id"); it != config.end() && !it->is_null()) {
      bos_id = check_id(*it, "bos_token_id");
    }
    // All checked: now change the tokenizer (a bad file leaves it as it was).
    for (const TokenId id : eos_ids) tok.add_stop_id(id);
    if (bos_id >= 0) {
      tok.bos_id_ = bos_id;
      const AddedToken* t = tok.find_added_by_id(bos_id);
      tok.bos_token_ = t != nullptr ? t->content : std::string();
    }
  }

 private:
  static TokenId require_added(const Tokenizer& tok, const std::string& content,
                               const std::string& source, const char* key) {
    const auto id = tok.find_added(content);
    if (!id) fail(source, ": ", key, " \"", content, "\" is not an added token of tokenizer.json");
    return *id;
  }

  // added_tokens: [{"id": 128000, "content": "<|begin_of_text|>", "special": true, ...}, ...]
  static void read_added_tokens(Tokenizer& tok, std::string_view json, const std::string& source) {
    const nlohmann::json list = parse_json(json, source);
    if (!list.is_array()) fail(source, ": added_tokens must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      const nlohmann::json& t = list[i];
      const auto where = [&] { return str_cat(source, ": added_tokens[", i, "]"); };
      if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
          !t.contains("content") || !t["content"].is_string()) {
        fail(where(), " needs an integer \"id\" and a string \"content\"");
      }
      const int64_t id = t["id"].get<int64_t>();
      const std::string content = t["content"].get<std::string>();
      if (id < 0 || id >= (int64_t{1} << 24)) fail(where(), ": id ", id, " is out of range");
      if (content.empty()) fail(where(), ": empty content");
      for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
        if (t.value(flag, false)) fail(where(), ": \"", flag, "\": true is not supported");
      }
      if (static_cast<size_t>(id) >= tok.added_index_.size()) tok.added_index_.resize(id + 1, -1);
      if (tok.added_index_[id] >= 0) fail(where(), ": id ", id, " appears twice");
      tok.added_index_[id] = static_cast<int32_t>(tok.added_.size());
      tok.added_.push_back({static_cast<TokenId>(id), content, t.value("special", false)});
      // HF decode passes the content through the ByteLevel decoder: chars of the byte-level
      // alphabet become their bytes; a token with any other char stays as its UTF-8.
      std::string decoded;
      tok.added_bytes_.push_back(byte_level_to_bytes(content, decoded) ? decoded : content);
    }
    for (const AddedToken& t : tok.added_) {
      if (!tok.added_by_content_.emplace(t.content, t.id).second) {
        fail(source, ": added token \"", t.content, "\" appears twice");
      }
      tok.added_first_byte_[static_cast<unsigned char>(t.content[0])] = true;
      std::vector<size_t>& lengths = tok.added_lengths_;
      if (std::find(lengths.begin(), lengths.end(), t.content.size()) == lengths.end()) {
        lengths.push_back(t.content.size());
      }
    }
    std::sort(tok.added_lengths_.rbegin(), tok.added_lengths_.rend());
    const auto& first = tok.added_first_byte_;
    if (std::count(first.begin(), first.end(), true) == 1) {
      tok.added_one_first_byte_ =
          static_cast<int>(std::find(first.begin(), first.end(), true) - first.begin());
    }
  }

  // normalizer none, the Llama-3 split + ByteLevel pre-tokenizer, a ByteLevel decoder: the
  // pipeline Tokenizer implements. Anything else is refused rather than tokenized differently
  // from HF.
  static void check_pipeline(const nlohmann::json& sections, const std::string& source) {
    const auto get = [&](const char* key) {
      return sections.contains(key) ? sections[key] : nlohmann::json();
    };
    if (!get("normalizer").is_null())
      fail(source, ": a normalizer is not supported (Llama-3 has none)");
    const nlohmann::json pre = get("pre_tokenizer");
    const auto is_llama3_split = [](const nlohmann::json& p) {
      return p.is_object() && p.value("type", "") == "Split" && p.contains("pattern") &&
             p["pattern"].is_object() && p["pattern"].value("Regex", "") == LLAMA3_SPLIT_PATTERN &&
             p.value("behavior", "") == "Isolated" && !p.value("invert", false);
    };
    const auto is_plain_byte_level = [](const nlohmann::json& p) {
      return p.is_object() && p.value("type", "") == "ByteLevel" &&
             !p.value("add_prefix_space", false) && !p.value("use_regex", true);
    };
    const bool ok = pre.is_object() && pre.value("type", "") == "Sequence" &&
                    pre.contains("pretokenizers") && pre["pretokenizers"].is_array() &&
                    pre["pretokenizers"].size() == 2 && is_llama3_split(pre["pretokenizers"][0]) &&
                    is_plain_byte_level(pre["pretokenizers"][1]);
    if (!ok) {
      fail(source,
           ": pre_tokenizer is not the Llama-3 one (Sequence of Split with the Llama-3 regex, "
           "behavior Isolated, and ByteLevel without prefix space or regex); only that is "
           "supported");
    }
    const nlohmann::json dec = get("decoder");
    if (!dec.is_object() || dec.value("type", "") != "ByteLevel") {
      fail(source, ": decoder must be ByteLevel");
    }
  }
};

}  // namespace detail

// Parses the text of a tokenizer.json; `source` names it in error messages.
namespace detail {

// The loaders read fields with nlohmann's typed accessors; a field of the wrong type is the file's
// fault, so it becomes an hllm::Error naming the file like every other problem.
template <typename Load>
auto rethrow_json_errors(const std::string& source, Load load) -> decltype(load()) {
  try {
    return load();
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": unexpected JSON (", e.what(), ")");
  }
}

}  // namespace detail

inline Tokenizer tokenizer_from_json(std::string_view json, const std::string& source) {
  return detail::rethrow_json_errors(
      source, [&] { return detail::TokenizerLoader::from_json(json, source); });
}

// Reads bos_token, eos_token and chat_template from the text of a tokenizer_config.json.
inline void set_tokenizer_config(Tokenizer& tok, std::string_view json, const std::string& source) {
  detail::rethrow_json_errors(
      source, [&] { detail::TokenizerLoader::tokenizer_config(tok, json, source); });
}

// Reads eos_token_id (an id or a list of ids) and bos_token_id from a generation_config.json.
inline void set_generation_config(Tokenizer& tok, std::string_view json,
                                  const std::string& source) {
  detail::rethrow_json_errors(
      source, [&] { detail::TokenizerLoader::generation_config(tok, json, source); });
}

// Loads `path`: a tokenizer.json, or a model folder holding one. tokenizer_config.json and
// generation_config.json in the same folder are read when present.
inline Tokenizer load_tokenizer(const std::filesystem::path& path) {
  const bool folder = std::filesystem::is_directory(path);
  const std::filesystem::path json_path = folder ? path / "tokenizer.json" : path;
  if (!std::filesystem::exists(json_path)) {
    fail(json_path.string(), ": not found (expected a tokenizer.json or a model folder with one)");
  }
  Tokenizer tok = [&] {
    const MappedFile file(json_path);  // read in place: no 9 MB copy
    return tokenizer_from_json(
        std::string_view(reinterpret_cast<const char*>(file.data()), file.size()),
        json_path.string());
  }();
  const std::filesystem::path dir = json_path.parent_path();
  for (const char* name : {"tokenizer_config.json", "generation_config.json"}) {
    const std::filesystem::path p = dir / name;
    if (!std::filesystem::exists(p)) continue;
    const std::string text = detail::read_text_file(p);
    if (name[0] == 't') {
      set_tokenizer_config(tok, text, p.string());
    } else {
      set_generation_config(tok, text, p.string());
    }
  }
  return tok;
}

}  // namespace hllm
