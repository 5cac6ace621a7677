// UTF-8 and Unicode-class helpers for the tokenizer: code point decode/encode, validation, the
// lossy bytes -> text conversion that Hugging Face decode uses (invalid bytes -> U+FFFD), and the
// \p{L} / \p{N} / \s classification of the pre-tokenizer regex (tables in unicode_tables.hpp).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hllm/tokenizer/unicode_tables.hpp"

namespace hllm::detail {

// The pre-tokenizer's view of a code point. Values match unicode_tables::L / N / S.
enum class CharClass : uint8_t { other = 0, letter = 1, number = 2, space = 3 };

// Two-stage lookup built once from the generated ranges: stage1[cp >> 8] names a 256-entry block
// in stage2; identical blocks (most of the astral planes) are stored once. ~60 KiB in all.
struct CharClassTable {
  std::array<uint16_t, 0x110000 / 256> stage1{};  // (block) -> index of its 256 classes in stage2
  std::vector<uint8_t> stage2;                    // (n_unique_blocks * 256) CharClass values
  std::array<CharClass, 0x80> ascii{};            // the classes of U+0000..U+007F

  CharClassTable() {
    std::vector<uint8_t> flat(0x110000, 0);
    for (const auto& r : unicode_tables::CLASS_RANGES) {
      for (char32_t cp = r.first; cp <= r.last; ++cp) flat[cp] = r.cls;
    }
    std::unordered_map<std::string_view, uint16_t> block_index;  // block contents -> stage2 block
    for (size_t block = 0; block < stage1.size(); ++block) {
      const std::string_view contents(reinterpret_cast<const char*>(flat.data()) + block * 256,
                                      256);
      const auto [it, inserted] =
          block_index.try_emplace(contents, static_cast<uint16_t>(stage2.size() / 256));
      if (inserted) stage2.insert(stage2.end(), contents.begin(), contents.end());
      stage1[block] = it->second;
    }
    for (size_t cp = 0; cp < ascii.size(); ++cp) ascii[cp] = static_cast<CharClass>(flat[cp]);
  }

  CharClass operator()(char32_t cp) const {
    if (cp < 0x80) return ascii[cp];  // one load instead of two for the common case
    return static_cast<CharClass>(stage2[size_t{stage1[cp >> 8]} * 256 + (cp & 255)]);
  }
};

inline const CharClassTable& char_classes() {
  static const CharClassTable table;
  return table;
}

// Decodes the code point at s[0..] of VALID UTF-8 (check with utf8_error_offset first); sets len.
inline char32_t decode_utf8(const unsigned char* s, size_t& len) {
  const unsigned char b0 = s[0];
  if (b0 < 0x80) {
    len = 1;
    return b0;
  }
  if (b0 < 0xE0) {
    len = 2;
    return (char32_t{b0 & 0x1Fu} << 6) | (s[1] & 0x3Fu);
  }
  if (b0 < 0xF0) {
    len = 3;
    return (char32_t{b0 & 0x0Fu} << 12) | (char32_t{s[1] & 0x3Fu} << 6) | (s[2] & 0x3Fu);
  }
  len = 4;
  return (char32_t{b0 & 0x07u} << 18) | (char32_t{s[1] & 0x3Fu} << 12) |
         (char32_t{s[2] & 0x3Fu} << 6) | (s[3] & 0x3Fu);
}

inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The well-formed UTF-8 byte sequences (Unicode Table 3-7). For a lead byte, how many continuation
// bytes follow and the allowed range of the FIRST one (the others are always 80..BF). This range is
// what rules out overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and > U+10FFFF (F4 90..).
struct Utf8Lead {
  uint8_t n_cont;  // 0 for ASCII; 0xFF: never valid as a lead byte (80..C1, F5..FF)
  uint8_t lo, hi;  // allowed first continuation byte
};

inline constexpr Utf8Lead utf8_lead_info(unsigned char b) {
  if (b < 0x80) return {0, 0, 0};
  if (b < 0xC2) return {0xFF, 0, 0};
  if (b < 0xE0) return {1, 0x80, 0xBF};
  if (b == 0xE0) return {2, 0xA0, 0xBF};
  if (b == 0xED) return {2, 0x80, 0x9F};
  if (b < 0xF0) return {2, 0x80, 0xBF};
  if (b == 0xF0) return {3, 0x90, 0xBF};
  if (b < 0xF4) return {3, 0x80, 0xBF};
  if (b == 0xF4) return {3, 0x80, 0x8F};
  return {0xFF, 0, 0};
}

// Length of the maximal prefix of s[i..n) that is a valid start of the sequence led by s[i]
// ("maximal subpart", Unicode 3.9 / WHATWG): 1 for a bad lead byte. Sets `complete` when the whole
// sequence is there and valid.
inline size_t utf8_subpart(const unsigned char* s, size_t i, size_t n, bool& complete) {
  const Utf8Lead lead = utf8_lead_info(s[i]);
  complete = lead.n_cont == 0;
  if (lead.n_cont == 0 || lead.n_cont == 0xFF) return 1;
  size_t len = 1;
  for (uint8_t k = 0; k < lead.n_cont; ++k) {
    if (i + len >= n) return len;
    const unsigned char c = s[i + len];
    const bool ok = k == 0 ? (c >= lead.lo && c <= lead.hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) return len;
    ++len;
  }
  complete = true;
  return len;
}

// Byte offset of the first ill-formed UTF-8 sequence in `text`, or npos when it is all valid.
inline size_t utf8_error_offset(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {  // most text is ASCII: 8 bytes at a time while none has its top bit set
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    bool complete = false;
    const size_t len = utf8_subpart(s, i, n, complete);
    if (!complete) return i;
    i += len;
  }
  return std::string_view::npos;
}

// Appends `bytes` to `out` as text, replacing each maximal ill-formed subpart with U+FFFD, exactly
// as Rust's String::from_utf8_lossy (what HF decode runs). With final_chunk false, a trailing
// sequence that is incomplete but could still become valid is held back: the return value is the
// number of bytes consumed; the caller keeps the rest for the next call.
inline size_t append_utf8_lossy(std::string_view bytes, std::string& out, bool final_chunk) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      out += static_cast<char>(s[i++]);
      continue;
    }
    bool complete = false;
    const size_t len = utf8_subpart(s, i, n, complete);
    if (complete) {
      out.append(bytes.data() + i, len);
    } else if (i + len == n && !final_chunk && utf8_lead_info(s[i]).n_cont != 0xFF) {
      return i;  // a valid prefix cut off by the end of the chunk: wait for more bytes
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
    }
    i += len;
  }
  return n;
}

}  // namespace hllm::detail
