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
#include "hllm/tokenizer/bpe.hpp"
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

inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": invalid JSON: ", e.what());
  }
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
    Tokenizer tok = from_json(detail::read_text_file(json_path), json_path.string());
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
    } else if (vocab_.contains(id)) {
      out += vocab_.bytes(id);
    } else {
      fail("tokenizer: token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    }
  }

  // 1 + the largest token id (128256 for Llama-3).
  size_t vocab_size() const { return std::max(vocab_.id_limit(), added_index_.size()); }
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
  bool ignore_merges() const { return ignore_merges_; }
  size_t n_merges() const { return merges_.size(); }

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
      if (ignore_merges_) {
        if (const TokenId id = vocab_.find(piece); id >= 0) {
          out.push_back(id);
          return;
        }
      }
      if (state_->cache.lookup(piece, out)) return;
      const size_t before = out.size();
      detail::bpe_merge(merges_, byte_ids_, piece, state_->scratch, out);
      state_->cache.store(piece, out.data() + before, out.size() - before);
    });
  }

  void parse_tokenizer_json(std::string_view json, const std::string& source);
  void parse_model(detail::JsonScanner& scan, const std::string& source);
  void parse_added_tokens(std::string_view json, const std::string& source);
  static void check_pipeline(const nlohmann::json& sections, const std::string& source);

  detail::VocabBytes vocab_;              // model.vocab as raw bytes
  detail::MergeTable merges_;             // model.merges
  std::array<TokenId, 256> byte_ids_{};   // the single-byte tokens, BPE's starting point
  bool ignore_merges_ = false;            // model.ignore_merges
  std::vector<AddedToken> added_;         // added_tokens, in file order
  std::vector<std::string> added_bytes_;  // (added_) what each decodes to
  std::vector<int32_t> added_index_;      // (vocab_size) id -> index in added_, or -1
  std::unordered_map<std::string_view, TokenId> added_by_content_;  // views into added_
  std::array<bool, 256> added_first_byte_{};  // bytes that start some added token
  std::vector<size_t> added_lengths_;         // distinct content lengths, longest first
  TokenId bos_id_ = -1;
  std::string bos_token_;
  std::vector<TokenId> stop_ids_;
  std::string chat_template_;
  std::unique_ptr<detail::EncodeState> state_ = std::make_unique<detail::EncodeState>();
};

// ---- Loading tokenizer.json
// ----------------------------------------------------------------------

inline void Tokenizer::parse_tokenizer_json(std::string_view json, const std::string& source) {
  detail::JsonScanner scan(json, source);
  nlohmann::json sections = nlohmann::json::object();  // the small pipeline sections, checked below
  bool have_model = false;
  scan.object([&](const std::string& key) {
    if (key == "model") {
      parse_model(scan, source);
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

// model: {"type": "BPE", "ignore_merges": true, "vocab": {...}, "merges": [...], ...}
inline void Tokenizer::parse_model(detail::JsonScanner& scan, const std::string& source) {
  std::string key_text, bytes, left, right;
  // Merges are resolved to ids once the vocab is known (it comes first in HF's files, but JSON
  // objects are unordered): keep them as byte strings until then.
  // The vocab is collected first too, so that its hash table is sized once.
  std::string vocab_bytes;                                  // every token's bytes, back to back
  std::vector<std::pair<TokenId, uint32_t>> vocab_entries;  // (n_tokens) id, end in vocab_bytes
  std::string merge_bytes;           // left and right bytes of every merge, back to back
  std::vector<uint32_t> merge_ends;  // (2 * n_merges) end offsets in merge_bytes
  bool have_vocab = false, have_merges = false;
  const auto to_bytes = [&](const std::string& token, std::string& out, const char* where) {
    if (!detail::byte_level_to_bytes(token, out)) {
      fail(source, ": ", where, " token \"", token, "\" is not in the byte-level alphabet");
    }
  };
  scan.object([&](const std::string& key) {
    if (key == "vocab") {
      have_vocab = true;
      scan.object([&](const std::string& token) {
        const int64_t id = scan.integer();
        if (id < 0 || id >= (int64_t{1} << 24)) {
          fail(source, ": model.vocab[\"", token, "\"] = ", id, " is not a valid id");
        }
        to_bytes(token, bytes, "model.vocab");
        vocab_bytes += bytes;
        vocab_entries.push_back(
            {static_cast<TokenId>(id), static_cast<uint32_t>(vocab_bytes.size())});
      });
    } else if (key == "merges") {
      have_merges = true;
      scan.array([&] {
        const size_t index = merge_ends.size() / 2;
        if (scan.peek() == '[') {  // newer files: ["a", "b"]
          size_t n_parts = 0;
          scan.array([&] { scan.string(n_parts++ == 0 ? left : right); });
          if (n_parts != 2) fail(source, ": model.merges[", index, "] must have 2 tokens");
        } else {  // "a b": exactly one space (byte-level tokens never contain U+0020)
          scan.string(key_text);
          const size_t space = key_text.find(' ');
          if (space == std::string::npos || key_text.find(' ', space + 1) != std::string::npos) {
            fail(source, ": model.merges[", index, "] \"", key_text, "\" is not \"a b\"");
          }
          left = key_text.substr(0, space);
          right = key_text.substr(space + 1);
        }
        to_bytes(left, bytes, "model.merges");
        merge_bytes += bytes;
        merge_ends.push_back(static_cast<uint32_t>(merge_bytes.size()));
        to_bytes(right, bytes, "model.merges");
        merge_bytes += bytes;
        merge_ends.push_back(static_cast<uint32_t>(merge_bytes.size()));
      });
    } else if (key == "type") {
      scan.string(key_text);
      if (key_text != "BPE")
        fail(source, ": model.type is \"", key_text, "\"; only BPE is supported");
    } else if (key == "ignore_merges") {
      const auto v = scan.raw_value();
      if (v != "true" && v != "false") fail(source, ": model.ignore_merges must be true or false");
      ignore_merges_ = v == "true";
    } else {
      const nlohmann::json v = detail::parse_json(scan.raw_value(), source);
      const bool unset = v.is_null() || v == false || v == "";
      if (!unset && (key == "byte_fallback" || key == "dropout" ||
                     key == "continuing_subword_prefix" || key == "end_of_word_suffix")) {
        fail(source, ": model.", key, " = ", v.dump(), " is not supported (byte-level BPE only)");
      }
    }
  });
  if (!have_vocab || !have_merges) fail(source, ": model needs both \"vocab\" and \"merges\"");
  // Lookups go in blocks: hash and prefetch a block's keys, then probe (see VocabBytes).
  constexpr size_t BLOCK = 32;
  std::array<uint64_t, 3 * BLOCK> hashes{};
  vocab_.reserve(vocab_entries.size());
  for (size_t first = 0, start = 0; first < vocab_entries.size(); first += BLOCK) {
    const size_t count = std::min(BLOCK, vocab_entries.size() - first);
    for (size_t k = 0, begin = start; k < count; ++k) {
      const uint32_t end = vocab_entries[first + k].second;
      hashes[k] = detail::hash_bytes(std::string_view(vocab_bytes).substr(begin, end - begin));
      vocab_.prefetch(hashes[k]);
      begin = end;
    }
    for (size_t k = 0; k < count; ++k) {
      const auto [id, end] = vocab_entries[first + k];
      const std::string_view token = std::string_view(vocab_bytes).substr(start, end - start);
      start = end;
      if (!vocab_.add(id, token, hashes[k])) {
        fail(source, ": model.vocab has the token of id ", id, " or the id itself twice");
      }
    }
  }
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = vocab_.find(std::string(1, static_cast<char>(b)));
    if (byte_ids_[b] < 0) fail(source, ": model.vocab lacks the single-byte token for byte ", b);
  }
  const std::string_view all(merge_bytes);
  const size_t n_merges = merge_ends.size() / 2;
  merges_.reserve(n_merges);
  std::array<std::string, BLOCK> merged;  // left + right bytes of each merge in the block
  for (size_t first = 0; first < n_merges; first += BLOCK) {
    const size_t count = std::min(BLOCK, n_merges - first);
    const auto part = [&](size_t m, int side) {  // side 0: left, 1: right
      const size_t i = 2 * m + side;
      const size_t begin = i == 0 ? 0 : merge_ends[i - 1];
      return all.substr(begin, merge_ends[i] - begin);
    };
    for (size_t k = 0; k < count; ++k) {
      const size_t m = first + k;
      merged[k].assign(part(m, 0)).append(part(m, 1));
      hashes[3 * k] = detail::hash_bytes(part(m, 0));
      hashes[3 * k + 1] = detail::hash_bytes(part(m, 1));
      hashes[3 * k + 2] = detail::hash_bytes(merged[k]);
      for (int j = 0; j < 3; ++j) vocab_.prefetch(hashes[3 * k + j]);
    }
    std::array<std::array<TokenId, 3>, BLOCK> ids;  // left, right, merged
    for (size_t k = 0; k < count; ++k) {
      const size_t m = first + k;
      ids[k] = {vocab_.find(part(m, 0), hashes[3 * k]), vocab_.find(part(m, 1), hashes[3 * k + 1]),
                vocab_.find(merged[k], hashes[3 * k + 2])};
      if (ids[k][0] < 0 || ids[k][1] < 0 || ids[k][2] < 0) {
        fail(source, ": model.merges[", m, "]: ",
             ids[k][0] < 0   ? "left"
             : ids[k][1] < 0 ? "right"
                             : "merged",
             " token is not in model.vocab");
      }
      merges_.prefetch(ids[k][0], ids[k][1]);
    }
    for (size_t k = 0; k < count; ++k) {
      merges_.set(ids[k][0], ids[k][1], {static_cast<uint32_t>(first + k), ids[k][2]});
    }
  }
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
