// libFuzzer harness: the real Llama-3 tokenizer (the build's demo-model/tokenizer.json, named by
// the environment variable HLLM_FUZZ_TOKENIZER: a tokenizer.json or a model folder) on arbitrary
// bytes. The input is used twice:
//   as text: encode(text, false) and encode(text, true). Invalid UTF-8 must be an hllm::Error (an
//            independent validator decides which inputs are valid); valid text must round-trip,
//            decode(encode(text)) == text, and the streaming detokenizer must give the same text.
//   as ids:  every 3 bytes, little-endian, modulo vocab_size + 4 (so a few are out of range): an
//            out-of-range id must be an hllm::Error; otherwise decode gives valid UTF-8 (invalid
//            byte sequences become U+FFFD) equal to the streamed decode, with and without
//            skip_special.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

using hllm::fuzz::check;

namespace {

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned c = p[i];
    size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

const hllm::Tokenizer* tokenizer = nullptr;

std::string streamed(const std::vector<hllm::TokenId>& ids, bool skip_special) {
  hllm::StreamDecoder stream(*tokenizer, skip_special);
  std::string out;
  for (const hllm::TokenId id : ids) out += stream.push(id);
  return out + stream.finish();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* path = std::getenv("HLLM_FUZZ_TOKENIZER");
  if (path == nullptr || *path == '\0') {
    std::fprintf(stderr,
                 "tokenizer_fuzz: set HLLM_FUZZ_TOKENIZER to the Llama-3 tokenizer.json (or a "
                 "model folder with one), e.g. <build>/demo-model\n");
    std::exit(2);
  }
  try {
    tokenizer = new hllm::Tokenizer(hllm::load_tokenizer(path));
  } catch (const hllm::Error& e) {
    std::fprintf(stderr, "tokenizer_fuzz: %s\n", e.what());
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const hllm::Tokenizer& tok = *tokenizer;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool valid = valid_utf8(text);

  for (const bool special : {false, true}) {
    std::vector<hllm::TokenId> ids;
    try {
      ids = tok.encode(text, special);
    } catch (const hllm::Error& e) {
      check(!valid, "encode refused valid UTF-8", e.what());
      continue;
    }
    check(valid, "encode accepted invalid UTF-8");
    for (const hllm::TokenId id : ids)
      check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "encode gave a bad id");
    const std::string back = tok.decode(ids);
    check(back == text,
          special ? "decode(encode(text, true)) != text" : "decode(encode(text, false)) != text");
    check(streamed(ids, false) == back, "streamed decode differs from decode");
  }
  hllm::fuzz::expect_only_hllm_errors("encode_prompt", [&] {
    (void)hllm::encode_prompt(tok, text);
    const hllm::ChatMessage message{"user", std::string(text)};
    (void)hllm::encode_prompt(tok, std::span(&message, 1));
  });

  std::vector<hllm::TokenId> ids;
  bool in_range = true;
  for (size_t i = 0; i + 3 <= size; i += 3) {
    const uint32_t v = data[i] | data[i + 1] << 8 | static_cast<uint32_t>(data[i + 2]) << 16;
    ids.push_back(static_cast<hllm::TokenId>(v % (tok.vocab_size() + 4)));
    in_range = in_range && static_cast<size_t>(ids.back()) < tok.vocab_size();
  }
  for (const bool skip_special : {false, true}) {
    std::string decoded;
    try {
      decoded = tok.decode(ids, skip_special);
    } catch (const hllm::Error& e) {
      check(!in_range, "decode refused ids in range", e.what());
      continue;
    }
    check(in_range, "decode accepted an id out of range");
    check(valid_utf8(decoded), "decode gave invalid UTF-8");
    check(streamed(ids, skip_special) == decoded, "streamed decode differs from decode");
  }
  return 0;
}
