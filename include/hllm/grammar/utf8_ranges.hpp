// Code point ranges -> UTF-8 byte-range sequences, so a character class becomes a byte-level
// grammar that matches exactly the valid UTF-8 encodings of its code points (never a surrogate,
// an overlong form or a stray continuation byte).
//
//   [U+0000, U+10FFFF] minus surrogates ->   [00-7F]
//                                            [C2-DF][80-BF]
//                                            [E0][A0-BF][80-BF]
//                                            [E1-EC][80-BF][80-BF]
//                                            [ED][80-9F][80-BF]
//                                            [EE-EF][80-BF][80-BF]
//                                            [F0][90-BF][80-BF][80-BF] ...
//
// A range is split until every sequence is a product of byte ranges: first at the encoding-length
// boundaries (U+007F, U+07FF, U+FFFF) and around the surrogates, then wherever the low 6*i bits
// of its ends are not a full [0..2^(6i)) block. The sequences are disjoint, so the grammar stays
// unambiguous.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "hllm/tokenizer/utf8.hpp"

namespace hllm::grammar {

struct CodePointRange {
  char32_t first, last;  // inclusive
  auto operator<=>(const CodePointRange&) const = default;
};

struct ByteRange {
  uint8_t lo, hi;  // inclusive
};

inline constexpr char32_t MAX_CODE_POINT = 0x10FFFF;

// Calls emit(std::span<const ByteRange>) once per byte-range sequence of [first, last].
template <typename Emit>
void utf8_sequences(char32_t first, char32_t last, Emit&& emit) {
  if (first > last) return;
  if (first <= 0xDFFF && last >= 0xD800) {  // surrogates have no UTF-8 encoding
    if (first < 0xD800) utf8_sequences(first, 0xD7FF, emit);
    if (last > 0xDFFF) utf8_sequences(0xE000, last, emit);
    return;
  }
  for (const char32_t bound : {char32_t{0x7F}, char32_t{0x7FF}, char32_t{0xFFFF}}) {
    if (first <= bound && last > bound) {
      utf8_sequences(first, bound, emit);
      utf8_sequences(bound + 1, last, emit);
      return;
    }
  }
  std::string lo, hi;
  detail::append_utf8(lo, first);
  detail::append_utf8(hi, last);
  for (size_t i = 1; i < lo.size(); ++i) {
    const char32_t m = (char32_t{1} << (6 * i)) - 1;
    if ((first & ~m) == (last & ~m)) continue;
    if ((first & m) != 0) {
      utf8_sequences(first, first | m, emit);
      utf8_sequences((first | m) + 1, last, emit);
      return;
    }
    if ((last & m) != m) {
      utf8_sequences(first, (last & ~m) - 1, emit);
      utf8_sequences(last & ~m, last, emit);
      return;
    }
  }
  std::array<ByteRange, 4> seq{};
  for (size_t i = 0; i < lo.size(); ++i) {
    seq[i] = {static_cast<uint8_t>(lo[i]), static_cast<uint8_t>(hi[i])};
  }
  emit(std::span<const ByteRange>(seq.data(), lo.size()));
}

}  // namespace hllm::grammar
