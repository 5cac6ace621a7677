// hllm::grammar front end: Grammar (builder.hpp: the byte-level rules a matcher runs) and
// parse_gbnf — llama.cpp's GBNF grammar syntax -> Grammar. The root rule is `root`.
//
//   # a comment                              rule      name ::= alternatives
//   root  ::= "{" ws pair ("," ws pair)* "}" literal   "..." (UTF-8 text, escapes below)
//   pair  ::= key ":" ws [0-9]+              class     [a-z_] [^"\\] (ranges, negation)
//   key   ::= "\"" [a-z]{1,8} "\""           any char  .
//   ws    ::= [ \t\n]*                       grouping  ( ... ), alternatives a | b
//                                            repeats   x* x+ x? x{m} x{m,} x{m,n} x{,n}
//   escapes: \n \r \t \\ \" \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH
//
// A rule ends at the end of its line, except inside parentheses and after `|` or `::=`, where
// newlines are spaces (as in llama.cpp). Errors name line:column.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/builder.hpp"
#include "hllm/grammar/utf8_ranges.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace hllm::grammar {

namespace detail {

class GbnfParser {
 public:
  explicit GbnfParser(std::string_view text) : text_(text) {}

  // Groups ( ... ) parse recursively: bounded so that no grammar text can exhaust the stack.
  static constexpr int MAX_GROUP_DEPTH = 64;

  Grammar parse() {
    if (const size_t bad = hllm::detail::utf8_error_offset(text_); bad != std::string_view::npos) {
      pos_ = bad;
      error("the grammar is not valid UTF-8");
    }
    skip_space(true);
    while (pos_ < text_.size()) {
      parse_rule();
      skip_space(true);
    }
    size_t undefined_at = text_.size() + 1;  // the first use of an undefined rule, if any
    uint32_t undefined = 0;
    for (const auto& [rule, at] : first_use_) {
      if (!builder_.defined(rule) && at < undefined_at) {
        undefined_at = at;
        undefined = rule;
      }
    }
    if (undefined_at <= text_.size()) {
      pos_ = undefined_at;
      error("rule '", builder_.name(undefined), "' is not defined");
    }
    if (!defined_root_) fail("gbnf: the grammar has no rule 'root'");
    return builder_.build(builder_.rule("root"));
  }

 private:
  template <typename... Parts>
  [[noreturn]] void error(Parts&&... parts) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    fail("gbnf:", line, ":", column, ": ", std::forward<Parts>(parts)...);
  }

  char peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }
  bool at_end() const { return pos_ >= text_.size(); }
  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  }

  // Spaces, tabs and comments; newlines too when `newlines` (inside parentheses, after | or ::=).
  void skip_space(bool newlines) {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && peek() != '\n') ++pos_;
      } else {
        return;
      }
    }
  }

  std::string_view parse_name() {
    const size_t start = pos_;
    while (is_name_char(peek())) ++pos_;
    if (pos_ == start) error("expected a rule name");
    return text_.substr(start, pos_ - start);
  }

  void parse_rule() {
    const size_t start = pos_;
    const std::string_view name = parse_name();
    skip_space(false);
    if (text_.substr(pos_, 3) != "::=") error("expected '::=' after rule name '", name, "'");
    pos_ += 3;
    skip_space(true);
    const uint32_t rule = builder_.rule(name);
    if (builder_.defined(rule)) {
      pos_ = start;
      error("rule '", name, "' is defined twice");
    }
    builder_.define(rule, parse_alternatives(name, false));
    if (name == "root") defined_root_ = true;
    skip_space(false);
    if (peek() == '\r') ++pos_;
    if (!at_end() && peek() != '\n') error("expected the end of the line after rule '", name, "'");
  }

  std::vector<Sequence> parse_alternatives(std::string_view rule_name, bool nested) {
    std::vector<Sequence> alternatives;
    alternatives.push_back(parse_sequence(rule_name, nested));
    while (peek() == '|') {
      ++pos_;
      skip_space(true);
      alternatives.push_back(parse_sequence(rule_name, nested));
    }
    return alternatives;
  }

  Sequence parse_sequence(std::string_view rule_name, bool nested) {
    Sequence seq;
    size_t last_start = 0;  // where the last item (what a postfix operator repeats) begins
    for (;;) {
      const char c = peek();
      const size_t item_start = seq.size();
      if (c == '"') {
        ++pos_;
        std::string bytes;
        while (peek() != '"') {
          if (at_end() || peek() == '\n') error("unterminated string literal");
          hllm::detail::append_utf8(bytes, parse_char());
        }
        ++pos_;
        const Sequence lit = builder_.literal(bytes);
        seq.insert(seq.end(), lit.begin(), lit.end());
      } else if (c == '[') {
        seq.push_back(parse_class());
      } else if (c == '.') {
        ++pos_;
        seq.push_back(builder_.code_points({{0, MAX_CODE_POINT}}));
      } else if (c == '(') {
        if (++group_depth_ > MAX_GROUP_DEPTH)
          error("groups nest deeper than " + std::to_string(MAX_GROUP_DEPTH) + " levels");
        ++pos_;
        skip_space(true);
        std::vector<Sequence> alternatives = parse_alternatives(rule_name, true);
        if (peek() != ')') error("expected ')'");
        ++pos_;
        --group_depth_;
        const uint32_t group = builder_.fresh_rule(rule_name);
        builder_.define(group, std::move(alternatives));
        seq.push_back(GrammarBuilder::ref(group));
      } else if (is_name_char(c)) {
        const size_t at = pos_;
        const uint32_t rule = builder_.rule(parse_name());
        first_use_.try_emplace(rule, at);
        seq.push_back(GrammarBuilder::ref(rule));
      } else if (c == '<') {
        error("token references (<...>) are not supported");
      } else {
        if (c == '*' || c == '+' || c == '?' || c == '{') error("'", c, "' has nothing to repeat");
        return seq;
      }
      last_start = item_start;
      skip_space(nested);
      while (peek() == '*' || peek() == '+' || peek() == '?' || peek() == '{') {
        uint32_t min = 0, max = GrammarBuilder::UNBOUNDED;
        const char op = peek();
        ++pos_;
        if (op == '+') min = 1;
        if (op == '?') max = 1;
        if (op == '{') parse_braces(min, max);
        Sequence item(seq.begin() + static_cast<ptrdiff_t>(last_start), seq.end());
        seq.resize(last_start);
        seq.push_back(builder_.repeat(std::move(item), min, max, rule_name));
        skip_space(nested);
      }
    }
  }

  // {m} {m,} {m,n} {,n}, after the '{'.
  void parse_braces(uint32_t& min, uint32_t& max) {
    skip_space(true);
    const auto number = [&]() -> uint32_t {
      uint64_t n = 0;
      const size_t start = pos_;
      while (peek() >= '0' && peek() <= '9') {
        n = n * 10 + static_cast<uint64_t>(peek() - '0');
        if (n > GrammarBuilder::MAX_REPEAT)
          error("repetition count over ", GrammarBuilder::MAX_REPEAT);
        ++pos_;
      }
      if (pos_ == start) error("expected a number in '{...}'");
      skip_space(true);
      return static_cast<uint32_t>(n);
    };
    min = peek() == ',' ? 0 : number();
    max = min;
    if (peek() == ',') {
      ++pos_;
      skip_space(true);
      max = peek() == '}' ? GrammarBuilder::UNBOUNDED : number();
    }
    if (peek() != '}') error("expected '}'");
    ++pos_;
    if (max < min) error("repetition {", min, ",", max, "} has max < min");
  }

  // One character of a literal or class: an escape or one UTF-8 code point.
  char32_t parse_char() {
    if (peek() != '\\') {
      size_t len = 0;
      const char32_t cp = hllm::detail::decode_utf8(
          reinterpret_cast<const unsigned char*>(text_.data() + pos_), len);
      pos_ += len;
      return cp;
    }
    const size_t start = pos_;
    ++pos_;
    const char e = peek();
    ++pos_;
    const auto hex = [&](int digits) {
      char32_t cp = 0;
      for (int i = 0; i < digits; ++i) {
        const char h = peek();
        int v = -1;
        if (h >= '0' && h <= '9') v = h - '0';
        if (h >= 'a' && h <= 'f') v = h - 'a' + 10;
        if (h >= 'A' && h <= 'F') v = h - 'A' + 10;
        if (v < 0) error("expected ", digits, " hex digits after '\\", e, "'");
        cp = cp * 16 + static_cast<char32_t>(v);
        ++pos_;
      }
      if (cp > MAX_CODE_POINT || (cp >= 0xD800 && cp <= 0xDFFF)) {
        pos_ = start;
        error("escape is not a Unicode scalar value (surrogate or over U+10FFFF)");
      }
      return cp;
    };
    switch (e) {
      case 'n':
        return '\n';
      case 'r':
        return '\r';
      case 't':
        return '\t';
      case '\\':
      case '"':
      case '[':
      case ']':
      case '-':
      case '^':
        return static_cast<char32_t>(e);
      case 'x':
        return hex(2);
      case 'u':
        return hex(4);
      case 'U':
        return hex(8);
      default:
        pos_ = start;
        error("unknown escape '\\", e, "'");
    }
  }

  Element parse_class() {
    ++pos_;  // '['
    const bool negated = peek() == '^';
    if (negated) ++pos_;
    std::vector<CodePointRange> ranges;
    while (peek() != ']') {
      if (at_end() || peek() == '\n') error("unterminated character class");
      const char32_t first = parse_char();
      char32_t last = first;
      if (peek() == '-' && peek(1) != ']' && peek(1) != '\n' && pos_ + 1 < text_.size()) {
        ++pos_;
        last = parse_char();
        if (last < first) error("character range is reversed");
      }
      ranges.push_back({first, last});
    }
    ++pos_;
    if (negated) {
      std::sort(ranges.begin(), ranges.end());
      std::vector<CodePointRange> complement;
      char32_t next = 0;
      for (const CodePointRange r : ranges) {
        if (r.first > next) complement.push_back({next, r.first - 1});
        next = std::max(next, static_cast<char32_t>(r.last + 1));
      }
      if (next <= MAX_CODE_POINT) complement.push_back({next, MAX_CODE_POINT});
      ranges = std::move(complement);
    }
    if (ranges.empty()) error("character class matches nothing");
    return builder_.code_points(std::move(ranges));
  }

  int group_depth_ = 0;
  std::string_view text_;
  size_t pos_ = 0;
  GrammarBuilder builder_;
  std::unordered_map<uint32_t, size_t> first_use_;  // rule -> where it is first referenced
  bool defined_root_ = false;
};

}  // namespace detail

// Errors (hllm::Error) name line:column: syntax, undefined or twice-defined rules, bad escapes,
// left recursion (from GrammarBuilder::build).
inline Grammar parse_gbnf(std::string_view text) { return detail::GbnfParser(text).parse(); }

}  // namespace hllm::grammar
