// The Llama-3 pre-tokenizer: a hand-written matcher for the Split regex of tokenizer.json
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3} | ?[^\s\p{L}\p{N}]+[\r\n]*
//   | \s*[\r\n]+ | \s+(?!\S) | \s+
//
// with the semantics of Hugging Face `tokenizers` (Oniguruma: leftmost match, alternatives tried in
// order, greedy quantifiers with backtracking; behavior "Isolated"). Every code point is matched
// by some alternative, so the pre-tokens tile the text with no gaps. Classes come from the
// generated Unicode tables (utf8.hpp); \s is White_Space, which contains \r and \n.
#pragma once

#include <cstddef>
#include <string_view>

#include "hllm/tokenizer/utf8.hpp"

namespace hllm {

// The exact pattern this matcher implements; a tokenizer.json with another split is refused.
inline constexpr std::string_view LLAMA3_SPLIT_PATTERN =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

namespace detail {

// A cursor over valid UTF-8 that decodes one code point at a time.
struct Utf8Cursor {
  const unsigned char* s;
  size_t n;
  const CharClassTable& classes;

  struct CpInfo {
    char32_t cp;
    size_t len;
    CharClass cls;
  };

  CpInfo at(size_t i) const {
    CpInfo c{};
    c.cp = decode_utf8(s + i, c.len);
    c.cls = classes(c.cp);
    return c;
  }
  // End of the run of code points of class `cls` starting at i.
  size_t skip_class(size_t i, CharClass cls) const {
    while (i < n) {
      const CpInfo c = at(i);
      if (c.cls != cls) break;
      i += c.len;
    }
    return i;
  }
};

// (?i:...) case-folds with Unicode CaseFolding in Oniguruma: besides s/S, U+017F LATIN SMALL
// LETTER LONG S folds to 's'. No other code point folds to t, r, e, v, m, l or d.
inline bool fold_is(char32_t cp, char lower) {
  if (cp < 0x80) return (cp | 0x20) == static_cast<char32_t>(lower);
  return lower == 's' && cp == 0x17F;
}

// Length in bytes of the contraction alternative at i (which holds '\''), 0 when it does not match.
inline size_t match_contraction(const Utf8Cursor& t, size_t i) {
  size_t j = i + 1;
  if (j >= t.n) return 0;
  const auto c1 = t.at(j);
  if (fold_is(c1.cp, 's') || fold_is(c1.cp, 't') || fold_is(c1.cp, 'm') || fold_is(c1.cp, 'd')) {
    return 1 + c1.len;
  }
  j += c1.len;
  if (j >= t.n) return 0;
  const auto c2 = t.at(j);
  const bool two = (fold_is(c1.cp, 'r') && fold_is(c2.cp, 'e')) ||
                   (fold_is(c1.cp, 'v') && fold_is(c2.cp, 'e')) ||
                   (fold_is(c1.cp, 'l') && fold_is(c2.cp, 'l'));
  return two ? 1 + c1.len + c2.len : 0;
}

// End (byte offset) of the regex match that starts at i < t.n.
inline size_t match_pretoken(const Utf8Cursor& t, size_t i) {
  using cc = CharClass;
  const auto c0 = t.at(i);
  const size_t after0 = i + c0.len;
  // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c0.cp == '\'') {
    if (const size_t len = match_contraction(t, i)) return i + len;
  }
  // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : letters, optionally led by one non-newline space/other.
  if (c0.cls == cc::letter) return t.skip_class(after0, cc::letter);
  if (c0.cls != cc::number && c0.cp != '\r' && c0.cp != '\n' && after0 < t.n) {
    const auto c1 = t.at(after0);
    if (c1.cls == cc::letter) return t.skip_class(after0 + c1.len, cc::letter);
  }
  // 3. \p{N}{1,3}
  if (c0.cls == cc::number) {
    size_t j = after0;
    for (int k = 1; k < 3 && j < t.n; ++k) {
      const auto c = t.at(j);
      if (c.cls != cc::number) break;
      j += c.len;
    }
    return j;
  }
  // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*' : a run of "other", optionally led by one U+0020.
  size_t start = c0.cls == cc::other ? i : (c0.cp == ' ' && after0 < t.n ? after0 : t.n);
  if (start < t.n && t.at(start).cls == cc::other) {
    size_t j = t.skip_class(start, cc::other);
    while (j < t.n && (t.s[j] == '\r' || t.s[j] == '\n')) ++j;
    return j;
  }
  // Here c0 is whitespace. Scan its run [i, end), noting the last \r or \n and the last code point.
  size_t end = i, last_start = i, after_newline = 0;
  while (end < t.n) {
    const auto c = t.at(end);
    if (c.cls != cc::space) break;
    last_start = end;
    end += c.len;
    if (c.cp == '\r' || c.cp == '\n') after_newline = end;
  }
  // 5. \s*[\r\n]+ : \s* backtracks until [\r\n]+ can end the match after the run's last newline.
  if (after_newline != 0) return after_newline;
  // 6. \s+(?!\S) : the whole run at the end of text; else all but its last code point (which
  //    then leads the next pre-token, e.g. " word"), if that leaves at least one.
  if (end == t.n) return end;
  if (last_start > i) return last_start;
  // 7. \s+
  return end;
}

}  // namespace detail

// Calls emit(std::string_view piece) for each pre-token of `text`, which must be valid UTF-8.
template <typename Emit>
void split_llama3(std::string_view text, Emit&& emit) {
  const detail::Utf8Cursor cursor{reinterpret_cast<const unsigned char*>(text.data()), text.size(),
                                  detail::char_classes()};
  size_t i = 0;
  while (i < text.size()) {
    const size_t end = detail::match_pretoken(cursor, i);
    emit(text.substr(i, end - i));
    i = end;
  }
}

}  // namespace hllm
