// Reading tokenizer.json's "model" section into a BpeModel: 128,000 vocab entries and 280,147
// merges for Llama-3, under a 100 ms load budget for the whole file. Three things make it fast:
//
//   - tokens are decoded straight from the JSON text (PlainTokenDecoder) when they have no escapes
//     and are all byte-level chars, which is nearly always; any other string takes the general
//     path (JsonScanner::string, byte_level_to_bytes), which also makes the error messages;
//   - the vocab and merge tables are built in bulk, sized once, with their lookups and inserts
//     pipelined (vocab.hpp) so that the cache misses overlap;
//   - a merge's result is found without hashing: in HF files the merged ids run in order (each
//     is the previous merge's, or one more), so that guess is checked first against the arena.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/io/json.hpp"
#include "hllm/tokenizer/bpe.hpp"
#include "hllm/tokenizer/json_scan.hpp"
#include "hllm/tokenizer/vocab.hpp"

namespace hllm::detail {

inline nlohmann::json parse_json(std::string_view text, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": invalid JSON: ", e.what());
  }
}

// Raw bytes -> byte-level spelling (for error messages: the file's own spelling of a token).
inline std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  for (const char b : bytes) append_utf8(out, BYTE_LEVEL.byte_to_cp[static_cast<unsigned char>(b)]);
  return out;
}

// The fast path for token strings: a JSON string of byte-level chars without escapes, decoded
// straight from the JSON text into raw bytes. Alphabet chars are all < U+0144, so one or two
// UTF-8 bytes each:
//   one[b]   the raw byte that the one-byte char b stands for, TWO_BYTE for the lead bytes C2..C5
//            of two-byte chars, OTHER for the rest: '"' (the end), '\\' (an escape), ' ' (the
//            separator of "a b") and whatever is not in the alphabet
//   two[i]   the raw byte of the two-byte char (lead, cont), i = (lead - 0xC2) << 6 | (cont & 0x3F)
struct PlainTokenDecoder {
  static constexpr int16_t OTHER = -1, TWO_BYTE = -2;
  static constexpr size_t MAX_BYTES = 256;  // longer tokens (rare) take the general path

  std::array<int16_t, 256> one{};
  std::array<int16_t, 256> two{};

  constexpr PlainTokenDecoder() {
    for (int b = 0; b < 256; ++b) {
      one[b] = b < 0x80 && b != '"' && b != '\\' ? BYTE_LEVEL.cp_to_byte[b]
               : b >= 0xC2 && b <= 0xC5          ? TWO_BYTE
                                                 : OTHER;
      const int cp = ((0xC2 + (b >> 6)) & 0x1F) << 6 | (b & 0x3F);
      two[b] = cp < 0x144 ? BYTE_LEVEL.cp_to_byte[cp] : OTHER;
    }
  }

  // Decodes `text` up to the first `stop` byte (an OTHER one) into out[0..room). Returns the
  // position of `stop` and sets n_out, or returns npos: not a plain token, or longer than room.
  size_t decode(std::string_view text, char stop, char* out, size_t room, size_t& n_out) const {
    size_t n = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      int16_t b = one[c];
      if (b == TWO_BYTE && i + 1 < text.size() && (text[i + 1] & 0xC0) == 0x80) {
        b = two[(c - 0xC2) << 6 | (text[++i] & 0x3F)];
      }
      if (b < 0) {
        if (c != static_cast<unsigned char>(stop)) break;
        n_out = n;
        return i;
      }
      if (n == room) break;
      out[n++] = static_cast<char>(b);
    }
    return std::string_view::npos;
  }
};

inline constexpr PlainTokenDecoder PLAIN_TOKEN{};

// Reads the parts of model that are kept as raw token bytes until the vocab is known (JSON objects
// are unordered: merges may come first).
class BpeModelReader {
 public:
  BpeModelReader(JsonScanner& scan, const std::string& source) : scan_(scan), source_(source) {}

  // model.vocab: {"token": id, ...}
  void read_vocab() {
    scan_.object([&] { read_token(vocab_arena_, "model.vocab"); },
                 [&] {
                   const int64_t id = scan_.integer();
                   const uint32_t begin = vocab_end();
                   const auto end = static_cast<uint32_t>(vocab_arena_.size());
                   if (id < 0 || id >= (int64_t{1} << 24)) {
                     fail(source_, ": model.vocab[\"",
                          bytes_to_byte_level(std::string_view(vocab_arena_).substr(begin)),
                          "\"] = ", id, " is not a valid id");
                   }
                   vocab_.push_back({static_cast<TokenId>(id), begin, end - begin});
                 });
  }

  // model.merges: ["a b", ...] or [["a", "b"], ...]
  void read_merges() {
    scan_.array([&] {
      const size_t index = merge_ends_.size() / 2;
      if (scan_.peek() == '[') {  // newer files: ["a", "b"]
        size_t n_parts = 0;
        scan_.array([&] {
          if (++n_parts <= 2) {
            read_token(merge_arena_, "model.merges");
            merge_ends_.push_back(static_cast<uint32_t>(merge_arena_.size()));
          } else {
            scan_.string(text_);  // refused below
          }
        });
        if (n_parts != 2) fail(source_, ": model.merges[", index, "] must have 2 tokens");
      } else {  // "a b": exactly one space (byte-level tokens never contain U+0020)
        read_spaced_pair(index);
      }
    });
  }

  // Builds the tables. Call after both read_vocab() and read_merges().
  void build(BpeModel& model) {
    if (const ptrdiff_t bad = model.vocab.build(std::move(vocab_arena_), vocab_); bad >= 0) {
      fail(source_, ": model.vocab has the token of id ", vocab_[bad].id,
           " or the id itself twice");
    }
    for (int b = 0; b < 256; ++b) {
      const char byte = static_cast<char>(b);
      model.byte_ids[b] = model.vocab.find(std::string_view(&byte, 1));
      if (model.byte_ids[b] < 0) {
        fail(source_, ": model.vocab lacks the single-byte token for byte ", b);
      }
    }
    build_merges(model);
  }

 private:
  uint32_t vocab_end() const {
    return vocab_.empty() ? 0 : vocab_.back().offset + vocab_.back().len;
  }

  // Appends the raw bytes of the next token string to `arena`.
  void read_token(std::string& arena, const char* where) {
    const std::string_view rest = scan_.rest();
    char buf[PlainTokenDecoder::MAX_BYTES];
    size_t n = 0;
    if (!rest.empty() && rest[0] == '"') {
      const size_t end = PLAIN_TOKEN.decode(rest.substr(1), '"', buf, sizeof buf, n);
      if (end != std::string_view::npos) {
        arena.append(buf, n);
        scan_.consume(end + 2);  // the quotes too
        return;
      }
    }
    scan_.string(text_);
    to_bytes(text_, arena, where);
  }

  // "a b" -> the bytes of a and of b.
  void read_spaced_pair(size_t index) {
    if (decode_spaced_pair()) return;
    scan_.string(text_);
    const size_t space = text_.find(' ');
    if (space == std::string::npos || text_.find(' ', space + 1) != std::string::npos) {
      fail(source_, ": model.merges[", index, "] \"", text_, "\" is not \"a b\"");
    }
    for (const std::string& part : {text_.substr(0, space), text_.substr(space + 1)}) {
      to_bytes(part, merge_arena_, "model.merges");
      merge_ends_.push_back(static_cast<uint32_t>(merge_arena_.size()));
    }
  }

  // The fast path of read_spaced_pair: two non-empty plain tokens around one space.
  bool decode_spaced_pair() {
    const std::string_view rest = scan_.rest();
    if (rest.empty() || rest[0] != '"') return false;
    char buf[2 * PlainTokenDecoder::MAX_BYTES];
    size_t n_left = 0, n_right = 0;
    const size_t space = PLAIN_TOKEN.decode(rest.substr(1), ' ', buf, sizeof buf / 2, n_left);
    if (space == std::string_view::npos || n_left == 0) return false;
    const size_t end =
        PLAIN_TOKEN.decode(rest.substr(space + 2), '"', buf + n_left, sizeof buf / 2, n_right);
    if (end == std::string_view::npos || n_right == 0) return false;
    merge_arena_.append(buf, n_left);
    merge_ends_.push_back(static_cast<uint32_t>(merge_arena_.size()));
    merge_arena_.append(buf + n_left, n_right);
    merge_ends_.push_back(static_cast<uint32_t>(merge_arena_.size()));
    scan_.consume(space + end + 3);  // the quotes and the space
    return true;
  }

  // The general path: byte-level spelled `token` (valid UTF-8) -> its bytes, appended to `arena`.
  void to_bytes(const std::string& token, std::string& arena, const char* where) {
    if (!byte_level_to_bytes(token, bytes_)) {
      fail(source_, ": ", where, " token \"", token, "\" is not in the byte-level alphabet");
    }
    arena += bytes_;
  }

  std::string_view merge_part(size_t i) const {  // i = 2 * merge + side (0 left, 1 right)
    const uint32_t begin = i == 0 ? 0 : merge_ends_[i - 1];
    return std::string_view(merge_arena_.data() + begin, merge_ends_[i] - begin);
  }

  // Resolves each merge to (left id, right id, merged id), then fills the merge table.
  void build_merges(BpeModel& model) {
    const VocabBytes& vocab = model.vocab;
    const size_t n = merge_ends_.size() / 2;
    std::vector<uint64_t> keys(n);  // pack(left id, right id)
    std::vector<TokenId> merged_ids(n);
    std::array<std::array<uint64_t, 2>, PIPELINE_DISTANCE> hashes{};  // left, right
    TokenId guess = -1;                                               // the previous merge's result
    std::string merged;
    pipelined(
        n,
        [&](size_t m) {
          for (int side = 0; side < 2; ++side) {
            hashes[m % PIPELINE_DISTANCE][side] = hash_bytes(merge_part(2 * m + side));
            vocab.prefetch(hashes[m % PIPELINE_DISTANCE][side]);
          }
        },
        [&](size_t m) {
          const std::string_view left = merge_part(2 * m), right = merge_part(2 * m + 1);
          const TokenId left_id = vocab.find(left, hashes[m % PIPELINE_DISTANCE][0]);
          const TokenId right_id = vocab.find(right, hashes[m % PIPELINE_DISTANCE][1]);
          TokenId id = guess;
          if (!vocab.spells(id, left, right) && !vocab.spells(++id, left, right)) {
            merged.assign(left).append(right);
            id = vocab.find(merged);
          }
          if (left_id < 0 || right_id < 0 || id < 0) {
            fail(source_, ": model.merges[", m, "]: ",
                 left_id < 0    ? "left"
                 : right_id < 0 ? "right"
                                : "merged",
                 " token is not in model.vocab");
          }
          keys[m] = MergeTable::pack(left_id, right_id);
          merged_ids[m] = guess = id;
        });
    model.merges.reserve(n);
    pipelined(
        n, [&](size_t m) { model.merges.prefetch(keys[m]); },
        [&](size_t m) {
          model.merges.set(keys[m], {static_cast<uint32_t>(m), merged_ids[m]});
        });
  }

  JsonScanner& scan_;
  const std::string& source_;
  std::string vocab_arena_;               // every vocab token's bytes, back to back
  std::vector<VocabBytes::Entry> vocab_;  // (n_tokens) id and place in vocab_arena_
  std::string merge_arena_;               // left and right bytes of every merge, back to back
  std::vector<uint32_t> merge_ends_;      // (2 * n_merges) end offsets in merge_arena_
  std::string text_, bytes_;              // scratch for the general path
};

// model: {"type": "BPE", "ignore_merges": true, "vocab": {...}, "merges": [...], ...}
inline void parse_bpe_model(JsonScanner& scan, const std::string& source, BpeModel& model) {
  BpeModelReader reader(scan, source);
  bool have_vocab = false, have_merges = false;
  std::string text;
  scan.object([&](const std::string& key) {
    if (key == "vocab") {
      have_vocab = true;
      reader.read_vocab();
    } else if (key == "merges") {
      have_merges = true;
      reader.read_merges();
    } else if (key == "type") {
      scan.string(text);
      if (text != "BPE") fail(source, ": model.type is \"", text, "\"; only BPE is supported");
    } else if (key == "ignore_merges") {
      const auto v = scan.raw_value();
      if (v != "true" && v != "false") fail(source, ": model.ignore_merges must be true or false");
      model.ignore_merges = v == "true";
    } else {
      const nlohmann::json v = parse_json(scan.raw_value(), source);
      const bool unset = v.is_null() || v == false || v == "";
      if (!unset && (key == "byte_fallback" || key == "dropout" ||
                     key == "continuing_subword_prefix" || key == "end_of_word_suffix")) {
        fail(source, ": model.", key, " = ", describe_json(v),
             " is not supported (byte-level BPE only)");
      }
    }
  });
  if (!have_vocab || !have_merges) fail(source, ": model needs both \"vocab\" and \"merges\"");
  reader.build(model);
}

}  // namespace hllm::detail
