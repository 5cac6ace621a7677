// What the fuzz harnesses that end in a loaded hllm::Tokenizer (tokenizer_json_fuzz, gguf_fuzz)
// check of it the same way: streamed decoding equals decode, and every id below the vocabulary
// size decodes or is an hllm::Error, never a crash.
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::fuzz {

// `decoded` is tok.decode(ids).
inline void check_streamed_decode(const Tokenizer& tok, const std::vector<TokenId>& ids,
                                  const std::string& decoded) {
  StreamDecoder stream(tok);
  std::string streamed;
  for (const TokenId id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  check(streamed == decoded, "streamed decode differs from decode", streamed);
}

// Bounded, so that a file claiming id 16,777,215 costs little.
inline void decode_every_id(const Tokenizer& tok) {
  const size_t limit = std::min<size_t>(tok.vocab_size() + 2, 4096);
  for (size_t id = 0; id < limit; ++id) {
    expect_only_hllm_errors("decode", [&] {
      const TokenId one = static_cast<TokenId>(id);
      (void)tok.decode(std::span(&one, 1), id % 2 == 0);
    });
  }
}

}  // namespace hllm::fuzz
