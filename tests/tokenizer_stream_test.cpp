// The streaming detokenizer: for random id sequences (many of them split multi-byte characters,
// some never valid), the concatenated chunks equal the full decode and every chunk is valid UTF-8.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace {

const hllm::Tokenizer& real() {
  static const hllm::Tokenizer tok = hllm::load_tokenizer(HLLM_TOKENIZER_JSON);
  return tok;
}

bool valid_utf8(const std::string& s) {
  return hllm::detail::utf8_error_offset(s) == std::string_view::npos;
}

void check_stream(const std::vector<hllm::TokenId>& ids, bool skip_special) {
  hllm::StreamDecoder stream(real(), skip_special);
  std::string all;
  for (const hllm::TokenId id : ids) {
    const std::string chunk = stream.push(id);
    ASSERT_TRUE(valid_utf8(chunk));
    ASSERT_LE(stream.pending().size(), 3u);
    all += chunk;
  }
  const std::string tail = stream.finish();
  ASSERT_TRUE(valid_utf8(tail));
  all += tail;
  ASSERT_EQ(all, real().decode(ids, skip_special));
}

TEST(StreamDecoder, RandomIdsMatchFullDecode) {
  std::mt19937 rng(1234);
  // Tokens whose bytes are not valid UTF-8 on their own (pieces of characters): the hard cases.
  std::vector<hllm::TokenId> byte_tokens;
  for (hllm::TokenId id = 0; id < 128000 && byte_tokens.size() < 2000; ++id) {
    std::string bytes;
    real().append_bytes(id, bytes);
    if (!valid_utf8(bytes)) byte_tokens.push_back(id);  // partial characters
  }
  ASSERT_GT(byte_tokens.size(), 200u);
  std::uniform_int_distribution<int> any(0, 128255), len(1, 40), coin(0, 2);
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<hllm::TokenId> ids;
    for (int k = len(rng); k > 0; --k) {
      ids.push_back(coin(rng) == 0 ? any(rng) : byte_tokens[rng() % byte_tokens.size()]);
    }
    check_stream(ids, false);
    check_stream(ids, true);
  }
}

TEST(StreamDecoder, RealTextRoundTrips) {
  const std::string text =
      "Llama 3 ✓ 中文字符测试 🦙👍🏽 naïve café — \U0001F468\u200D\U0001F469 ok";
  const auto ids = real().encode(text);
  hllm::StreamDecoder stream(real());
  std::string out;
  for (const hllm::TokenId id : ids) out += stream.push(id);
  EXPECT_TRUE(stream.pending().empty());
  out += stream.finish();
  EXPECT_EQ(out, text);
}

TEST(StreamDecoder, HoldsBackThenCompletes) {
  // U+1F999 LLAMA is 4 bytes; feed its bytes as single-byte tokens.
  const std::string llama = "\U0001F999";
  hllm::StreamDecoder stream(real());
  std::string out;
  for (const unsigned char b : llama) {
    const std::string one(1, static_cast<char>(b));
    // The single-byte token of b (a lone invalid byte cannot come from encoding text).
    hllm::TokenId id = -1;
    for (hllm::TokenId t = 0; t < 128000 && id < 0; ++t) {
      std::string bytes;
      real().append_bytes(t, bytes);
      if (bytes == one) id = t;
    }
    ASSERT_GE(id, 0);
    out += stream.push(id);
    if (b != static_cast<unsigned char>(llama.back())) {
      EXPECT_TRUE(out.empty());
    }
  }
  EXPECT_EQ(out, llama);
  EXPECT_EQ(stream.finish(), "");
  EXPECT_TRUE(stream.pending().empty());
  // An unfinished character at the end becomes one U+FFFD, as in decode.
  const hllm::TokenId first = real().encode("\U0001F999")[0];
  hllm::StreamDecoder cut(real());
  std::string text = cut.push(first);
  text += cut.finish();
  EXPECT_EQ(text, "\uFFFD");
  EXPECT_EQ(text, real().decode(std::vector<hllm::TokenId>{first}));
}

}  // namespace
