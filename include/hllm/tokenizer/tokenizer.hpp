// hllm::Tokenizer — the Llama-3 tokenizer, loaded from Hugging Face files and exact with HF
// `tokenizers` (PreTrainedTokenizerFast) on encode and decode.
//
//   tokenizer.json          byte-level BPE: model.vocab (byte-level spelled token -> id),
//                           model.merges ("a b" or ["a", "b"], rank = index), model.ignore_merges,
//                           added_tokens (the 256 <|...|> specials), the Llama-3 pre_tokenizer
//   tokenizer_config.json   bos_token, eos_token, chat_template (optional)
//   generation_config.json  eos_token_id: int or list (128001, 128009 [, 128008]) (optional)
//
// encode(text): added tokens written in the text are matched first (leftmost-longest, as HF's
// AddedVocabulary); each stretch between them is split by the Llama-3 regex (pretokenize.hpp) and
// each piece becomes one token if it is in the vocab whole (ignore_merges), else goes through BPE.
// No BOS is added: the chat template writes it (chat.hpp).
// decode(ids): the bytes of each token, then UTF-8 with U+FFFD for invalid sequences (utf8.hpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/core/mmap.hpp"
#include "hllm/tokenizer/bpe.hpp"
#include "hllm/tokenizer/bpe_load.hpp"
#include "hllm/tokenizer/json_scan.hpp"
#include "hllm/tokenizer/pretokenize.hpp"

namespace hllm {

// A token of tokenizer.json's added_tokens (for Llama-3: the <|...|> specials, 128000..128255).
struct AddedToken {
  TokenId id;
  std::string content;  // the text that stands for it, e.g. "<|eot_id|>"
  bool special;         // skipped by decode(..., skip_special = true)
};

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

// The state encode() mutates: the merge cache and scratch buffers, behind one lock per call.
struct EncodeState {
  std::mutex mutex;
  BpeCache cache;
  BpeScratch scratch;
};

}  // namespace detail

class Tokenizer {
 public:
  // Loads `path`: a tokenizer.json, or a model folder holding one. tokenizer_config.json and
  // generation_config.json in the same folder are read when present.
  static Tokenizer load(const std::filesystem::path& path) {
    const bool folder = std::filesystem::is_directory(path);
    const std::filesystem::path json_path = folder ? path / "tokenizer.json" : path;
    if (!std::filesystem::exists(json_path)) {
      fail(json_path.string(),
           ": not found (expected a tokenizer.json or a model folder with one)");
    }
    Tokenizer tok = [&] {
      const MappedFile file(json_path);  // read in place: no 9 MB copy
      return from_json(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()),
                       json_path.string());
    }();
    const std::filesystem::path dir = json_path.parent_path();
    for (const char* name : {"tokenizer_config.json", "generation_config.json"}) {
      const std::filesystem::path p = dir / name;
      if (!std::filesystem::exists(p)) continue;
      const std::string text = detail::read_text_file(p);
      if (name[0] == 't') {
        tok.set_tokenizer_config(text, p.string());
      } else {
        tok.set_generation_config(text, p.string());
      }
    }
    return tok;
  }

  // Parses the text of a tokenizer.json; `source` names it in error messages.
  static Tokenizer from_json(std::string_view json, const std::string& source) {
    Tokenizer tok;
    tok.parse_tokenizer_json(json, source);
    return tok;
  }

  // Reads bos_token, eos_token and chat_template from the text of a tokenizer_config.json.
  void set_tokenizer_config(std::string_view json, const std::string& source) {
    const nlohmann::json config = detail::parse_json(json, source);
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
    const TokenId bos_id = bos ? require_added(*bos, source, "bos_token") : -1;
    const TokenId eos_id = eos ? require_added(*eos, source, "eos_token") : -1;
    const auto it = config.find("chat_template");
    const bool has_template = it != config.end() && !it->is_null();
    if (has_template && !it->is_string()) fail(source, ": chat_template must be a string");
    // All checked: now change the tokenizer (a bad file leaves it as it was).
    if (bos) {
      bos_id_ = bos_id;
      bos_token_ = *bos;
    }
    if (eos) add_stop_id(eos_id);
    if (has_template) chat_template_ = it->get<std::string>();
  }

  // Reads eos_token_id (an id or a list of ids) and bos_token_id from a generation_config.json.
  void set_generation_config(std::string_view json, const std::string& source) {
    const nlohmann::json config = detail::parse_json(json, source);
    if (!config.is_object()) fail(source, ": expected a JSON object");
    const auto check_id = [&](const nlohmann::json& v, const char* key) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
          v.get<int64_t>() >= static_cast<int64_t>(vocab_size())) {
        fail(source, ": ", key, " must be a token id below ", vocab_size(), ", got ", v.dump());
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
    for (const TokenId id : eos_ids) add_stop_id(id);
    if (bos_id >= 0) {
      bos_id_ = bos_id;
      const AddedToken* t = find_added_by_id(bos_id_);
      bos_token_ = t != nullptr ? t->content : std::string();
    }
  }

  // Token ids of `text` (valid UTF-8). With match_special, added tokens written in the text
  // ("<|eot_id|>") become their ids, as HF encode does; without, all text is ordinary text.
  std::vector<TokenId> encode(std::string_view text, bool match_special = true) const {
    if (const size_t bad = detail::utf8_error_offset(text); bad != std::string_view::npos) {
      fail("tokenizer: input text is not valid UTF-8 (byte offset ", bad, ")");
    }
    std::vector<TokenId> out;
    out.reserve(text.size() / 3 + 4);
    std::lock_guard lock(state_->mutex);
    size_t plain_start = 0;
    for (size_t i = 0; match_special && i < text.size(); ++i) {
      if (added_one_first_byte_ >= 0) {  // all added tokens start alike ('<'): memchr to the next
        const void* next = std::memchr(text.data() + i, added_one_first_byte_, text.size() - i);
        if (next == nullptr) break;
        i = static_cast<size_t>(static_cast<const char*>(next) - text.data());
      }
      if (!added_first_byte_[static_cast<unsigned char>(text[i])]) continue;
      for (const size_t len : added_lengths_) {  // longest first
        if (len > text.size() - i) continue;
        const auto it = added_by_content_.find(text.substr(i, len));
        if (it == added_by_content_.end()) continue;
        encode_plain(text.substr(plain_start, i - plain_start), out);
        out.push_back(it->second);
        plain_start = i + len;
        i = plain_start - 1;
        break;
      }
    }
    encode_plain(text.substr(plain_start), out);
    return out;
  }

  // The text of `ids`: their bytes joined, invalid UTF-8 replaced by U+FFFD (HF decode with
  // clean_up_tokenization_spaces=False). Throws for an id outside the vocabulary.
  std::string decode(std::span<const TokenId> ids, bool skip_special = false) const {
    std::string bytes;
    for (const TokenId id : ids) {
      if (skip_special && is_special(id)) continue;
      append_bytes(id, bytes);
    }
    std::string text;
    detail::append_utf8_lossy(bytes, text, true);
    return text;
  }

  // Appends the raw bytes of token `id` (possibly a partial UTF-8 sequence).
  void append_bytes(TokenId id, std::string& out) const {
    if (find_added_by_id(id) != nullptr) {
      out += added_bytes_[static_cast<size_t>(added_index_[static_cast<size_t>(id)])];
    } else if (model_.vocab.contains(id)) {
      out += model_.vocab.bytes(id);
    } else {
      fail("tokenizer: token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    }
  }

  // 1 + the largest token id (128256 for Llama-3).
  size_t vocab_size() const { return std::max(model_.vocab.id_limit(), added_index_.size()); }
  bool is_special(TokenId id) const {
    const AddedToken* t = find_added_by_id(id);
    return t != nullptr && t->special;
  }
  // The id of an added token by its text ("<|eot_id|>"), if there is one.
  std::optional<TokenId> find_added(std::string_view content) const {
    const auto it = added_by_content_.find(content);
    if (it == added_by_content_.end()) return std::nullopt;
    return it->second;
  }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

  // BOS (from the configs; -1 and "" when none was given).
  TokenId bos_id() const { return bos_id_; }
  const std::string& bos_token() const { return bos_token_; }
  // Generation stops on any of these: generation_config eos_token_id(s) and tokenizer_config
  // eos_token. Without config files, the Llama-3 end tokens that the vocabulary has.
  std::vector<TokenId> stop_ids() const {
    if (!stop_ids_.empty()) return stop_ids_;
    std::vector<TokenId> ids;
    for (const char* name : {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"}) {
      if (const auto id = find_added(name)) ids.push_back(*id);
    }
    return ids;
  }
  // tokenizer_config.json's chat_template ("" when absent). chat.hpp renders the Llama-3 format.
  const std::string& chat_template() const { return chat_template_; }
  bool ignore_merges() const { return model_.ignore_merges; }
  size_t n_merges() const { return model_.merges.size(); }

 private:
  Tokenizer() = default;

  const AddedToken* find_added_by_id(TokenId id) const {
    if (id < 0 || static_cast<size_t>(id) >= added_index_.size()) return nullptr;
    const int32_t index = added_index_[static_cast<size_t>(id)];
    return index < 0 ? nullptr : &added_[static_cast<size_t>(index)];
  }

  TokenId require_added(const std::string& content, const std::string& source, const char* key) {
    const auto id = find_added(content);
    if (!id) fail(source, ": ", key, " \"", content, "\" is not an added token of tokenizer.json");
    return *id;
  }
  void add_stop_id(TokenId id) {
    if (std::find(stop_ids_.begin(), stop_ids_.end(), id) == stop_ids_.end())
      stop_ids_.push_back(id);
  }

  // Pre-tokenizes and BPE-encodes text with no added tokens in it. Holds state_->mutex.
  void encode_plain(std::string_view text, std::vector<TokenId>& out) const {
    split_llama3(text, [&](std::string_view piece) {
      const uint64_t hash = detail::hash_bytes(piece);  // for both the vocab and the cache
      if (model_.ignore_merges) {
        if (const TokenId id = model_.vocab.find(piece, hash); id >= 0) {
          out.push_back(id);
          return;
        }
      }
      if (state_->cache.lookup(piece, hash, out)) return;
      const size_t before = out.size();
      detail::bpe_merge(model_, piece, state_->scratch, out);
      state_->cache.store(piece, hash, out.data() + before, out.size() - before);
    });
  }

  void parse_tokenizer_json(std::string_view json, const std::string& source);
  void parse_added_tokens(std::string_view json, const std::string& source);
  static void check_pipeline(const nlohmann::json& sections, const std::string& source);

  detail::BpeModel model_;                // vocab, merges (bpe_load.hpp)
  std::vector<AddedToken> added_;         // added_tokens, in file order
  std::vector<std::string> added_bytes_;  // (added_) what each decodes to
  std::vector<int32_t> added_index_;      // (vocab_size) id -> index in added_, or -1
  std::unordered_map<std::string_view, TokenId> added_by_content_;  // views into added_
  std::array<bool, 256> added_first_byte_{};  // bytes that start some added token
  int added_one_first_byte_ = -1;             // the only such byte, if just one (-1: none/many)
  std::vector<size_t> added_lengths_;         // distinct content lengths, longest first
  TokenId bos_id_ = -1;
  std::string bos_token_;
  std::vector<TokenId> stop_ids_;
  std::string chat_template_;
  std::unique_ptr<detail::EncodeState> state_ = std::make_unique<detail::EncodeState>();
};

// ---- Loading tokenizer.json ---------------------------------------------------------------------

inline void Tokenizer::parse_tokenizer_json(std::string_view json, const std::string& source) {
  detail::JsonScanner scan(json, source);
  nlohmann::json sections = nlohmann::json::object();  // the small pipeline sections, checked below
  bool have_model = false;
  scan.object([&](const std::string& key) {
    if (key == "model") {
      detail::parse_bpe_model(scan, source, model_);
      have_model = true;
    } else if (key == "added_tokens") {
      parse_added_tokens(scan.raw_value(), source);
    } else if (key == "normalizer" || key == "pre_tokenizer" || key == "decoder") {
      sections[key] = detail::parse_json(scan.raw_value(), source);
    } else {
      scan.raw_value();  // version, truncation, padding, post_processor: not used by encode/decode
    }
  });
  if (!scan.at_end()) scan.error("trailing characters after the top-level object");
  if (!have_model) fail(source, ": no \"model\" section");
  check_pipeline(sections, source);
}

// added_tokens: [{"id": 128000, "content": "<|begin_of_text|>", "special": true, ...}, ...]
inline void Tokenizer::parse_added_tokens(std::string_view json, const std::string& source) {
  const nlohmann::json list = detail::parse_json(json, source);
  if (!list.is_array()) fail(source, ": added_tokens must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& t = list[i];
    const auto where = [&] { return detail::str_cat(source, ": added_tokens[", i, "]"); };
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
    if (static_cast<size_t>(id) >= added_index_.size()) added_index_.resize(id + 1, -1);
    if (added_index_[id] >= 0) fail(where(), ": id ", id, " appears twice");
    added_index_[id] = static_cast<int32_t>(added_.size());
    added_.push_back({static_cast<TokenId>(id), content, t.value("special", false)});
    // HF decode passes the content through the ByteLevel decoder: chars of the byte-level
    // alphabet become their bytes; a token with any other char stays as its UTF-8.
    std::string decoded;
    added_bytes_.push_back(detail::byte_level_to_bytes(content, decoded) ? decoded : content);
  }
  for (const AddedToken& t : added_) {
    if (!added_by_content_.emplace(t.content, t.id).second) {
      fail(source, ": added token \"", t.content, "\" appears twice");
    }
    added_first_byte_[static_cast<unsigned char>(t.content[0])] = true;
    if (std::find(added_lengths_.begin(), added_lengths_.end(), t.content.size()) ==
        added_lengths_.end()) {
      added_lengths_.push_back(t.content.size());
    }
  }
  std::sort(added_lengths_.rbegin(), added_lengths_.rend());
  if (std::count(added_first_byte_.begin(), added_first_byte_.end(), true) == 1) {
    added_one_first_byte_ =
        static_cast<int>(std::find(added_first_byte_.begin(), added_first_byte_.end(), true) -
                         added_first_byte_.begin());
  }
}

// normalizer none, the Llama-3 split + ByteLevel pre-tokenizer, a ByteLevel decoder: the pipeline
// this class implements. Anything else is refused rather than tokenized differently from HF.
inline void Tokenizer::check_pipeline(const nlohmann::json& sections, const std::string& source) {
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
         "behavior Isolated, and ByteLevel without prefix space or regex); only that is supported");
  }
  const nlohmann::json dec = get("decoder");
  if (!dec.is_object() || dec.value("type", "") != "ByteLevel") {
    fail(source, ": decoder must be ByteLevel");
  }
}

}  // namespace hllm
