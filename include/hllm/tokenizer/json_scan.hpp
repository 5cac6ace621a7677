// A small, strict, pull-style JSON reader for the two big arrays of tokenizer.json (the 128,000
// vocab entries and 280,147 merges). Building a full DOM of the 9 MB file costs far more than the
// 100 ms load budget; this reads strings straight into caller buffers. Small sub-objects are handed
// out as raw text (raw_value) for nlohmann::json. Every malformed input throws hllm::Error naming
// the file and the byte offset; nothing reads past the end of the buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace hllm::detail {

class JsonScanner {
 public:
  JsonScanner(std::string_view text, std::string source)
      : text_(text), source_(std::move(source)) {}

  [[noreturn]] void error(std::string_view what) const {
    fail(source_, ": invalid JSON at byte ", pos_, ": ", what);
  }

  void skip_ws() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
      ++pos_;
    }
  }
  char peek() {
    skip_ws();
    if (pos_ >= text_.size()) error("unexpected end of file");
    return text_[pos_];
  }
  void expect(char c) {
    if (peek() != c) error(str_cat("expected '", c, "'"));
    ++pos_;
  }
  bool at_end() {
    skip_ws();
    return pos_ >= text_.size();
  }

  // Reads a JSON string into `out` (UTF-8, escapes decoded).
  void string(std::string& out) {
    expect('"');
    out.clear();
    while (true) {
      const char* p = text_.data() + pos_;
      const size_t left = text_.size() - pos_;
      const auto* quote = static_cast<const char*>(std::memchr(p, '"', left));
      if (quote == nullptr) error("unterminated string");
      const auto* backslash = static_cast<const char*>(std::memchr(p, '\\', quote - p));
      const char* end = backslash != nullptr ? backslash : quote;
      out.append(p, end);
      pos_ = static_cast<size_t>(end - text_.data()) + 1;
      if (backslash == nullptr) break;
      escape(out);
    }
    for (const char c : out) {
      if (static_cast<unsigned char>(c) < 0x20) error("control character in string");
    }
    if (utf8_error_offset(out) != std::string_view::npos) error("string is not valid UTF-8");
  }

  // Raw access for a caller's own fast path over a common case (falling back to string() and
  // friends otherwise): the text from the next non-blank byte on, and moving past what it read.
  std::string_view rest() {
    skip_ws();
    return text_.substr(pos_);
  }
  void consume(size_t n) { pos_ += n; }

  int64_t integer() {
    skip_ws();
    const size_t start = pos_;
    bool negative = false;
    if (pos_ < text_.size() && text_[pos_] == '-') {
      negative = true;
      ++pos_;
    }
    int64_t value = 0;
    size_t digits = 0;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      if (++digits > 15) error("integer too large");
      value = value * 10 + (text_[pos_++] - '0');
    }
    if (digits == 0 ||
        (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E'))) {
      pos_ = start;
      error("expected an integer");
    }
    return negative ? -value : value;
  }

  // Calls on_member(key) for each member; on_member must consume the value.
  template <typename OnMember>
  void object(OnMember&& on_member) {
    std::string key;
    object([&] { string(key); }, [&] { on_member(key); });
  }

  // For big objects whose keys the caller decodes itself: for each member, read_key() must
  // consume the key string, then on_value() the value.
  template <typename ReadKey, typename OnValue>
  void object(ReadKey&& read_key, OnValue&& on_value) {
    expect('{');
    if (peek() == '}') {
      ++pos_;
      return;
    }
    while (true) {
      read_key();
      expect(':');
      on_value();
      const char c = peek();
      ++pos_;
      if (c == '}') return;
      if (c != ',') error("expected ',' or '}' in object");
    }
  }

  // Calls on_element() for each element; on_element must consume it.
  template <typename OnElement>
  void array(OnElement&& on_element) {
    expect('[');
    if (peek() == ']') {
      ++pos_;
      return;
    }
    while (true) {
      on_element();
      const char c = peek();
      ++pos_;
      if (c == ']') return;
      if (c != ',') error("expected ',' or ']' in array");
    }
  }

  // Skips one value (checking its syntax) and returns its text, for nlohmann::json::parse.
  std::string_view raw_value() {
    skip_ws();
    const size_t start = pos_;
    std::string open;  // closers of the containers still open, innermost last
    std::string scratch;
    while (true) {
      const char c = peek();
      if (c == '{' || c == '[') {
        ++pos_;
        const char closer = c == '{' ? '}' : ']';
        if (peek() != closer) {
          open += closer;
          if (c == '{') member_key(scratch);
          continue;  // read the first value inside
        }
        ++pos_;  // an empty container is a complete value
      } else if (c == '"') {
        string(scratch);
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        while (pos_ < text_.size() &&
               std::string_view("+-.eE0123456789").find(text_[pos_]) != std::string_view::npos) {
          ++pos_;
        }
      } else if (!literal("true") && !literal("false") && !literal("null")) {
        error("unexpected character");
      }
      // A value is complete: close containers until one continues with ','.
      while (true) {
        if (open.empty()) return text_.substr(start, pos_ - start);
        const char next = peek();
        ++pos_;
        if (next == ',') {
          if (open.back() == '}') member_key(scratch);
          break;
        }
        if (next != open.back()) error("mismatched bracket");
        open.pop_back();
      }
    }
  }

 private:
  void member_key(std::string& scratch) {
    string(scratch);
    expect(':');
  }

  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = text_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9') {
        v |= static_cast<unsigned>(h - '0');
      } else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f') {
        v |= static_cast<unsigned>((h | 0x20) - 'a' + 10);
      } else {
        error("bad hex digit in \\u escape");
      }
    }
    return v;
  }

  void escape(std::string& out) {
    if (pos_ >= text_.size()) error("unterminated escape");
    const char e = text_[pos_++];
    switch (e) {
      case '"':
        out += '"';
        return;
      case '\\':
        out += '\\';
        return;
      case '/':
        out += '/';
        return;
      case 'b':
        out += '\b';
        return;
      case 'f':
        out += '\f';
        return;
      case 'n':
        out += '\n';
        return;
      case 'r':
        out += '\r';
        return;
      case 't':
        out += '\t';
        return;
      case 'u':
        break;
      default:
        error("unknown escape");
    }
    char32_t cp = hex4();
    if (cp >= 0xD800 && cp < 0xDC00) {  // a UTF-16 surrogate pair: \uD83D\uDE00
      if (text_.substr(pos_, 2) != "\\u") error("lone high surrogate");
      pos_ += 2;
      const char32_t low = hex4();
      if (low < 0xDC00 || low > 0xDFFF) error("bad low surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    } else if (cp >= 0xDC00 && cp < 0xE000) {
      error("lone low surrogate");
    }
    append_utf8(out, cp);
  }

  std::string_view text_;
  std::string source_;
  size_t pos_ = 0;
};

}  // namespace hllm::detail
