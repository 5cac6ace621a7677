// The tokenizer inside a GGUF file equals the tokenizer.json path: the demo model folder (with the
// fetched Llama-3 tokenizer.json) is written as a GGUF the way llama.cpp's converter does
// (gguf_from_folder.hpp), and hllm::tokenizer_from_gguf must encode every tokenizer golden
// (tests/data/tokenizer, computed by HF) to the golden ids, decode every golden, render the chat
// goldens, and carry the same BOS / stop tokens and chat template as load_tokenizer(folder).
#include "hllm/tokenizer/gguf_tokenizer.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gguf_from_folder.hpp"
#include "hllm/io/gguf.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path DEMO = HLLM_DEMO_MODEL_DIR;
const fs::path GOLDENS = fs::path(HLLM_TEST_DATA) / "tokenizer";

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

class GgufTokenizer : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(fs::exists(DEMO / "tokenizer.json"))
        << "the demo model needs the fetched tokenizer";
    path_ = fs::temp_directory_path() / ("hllm_gguf_tok_" + std::to_string(getpid()) + ".gguf");
    hllm::test::write_gguf_from_folder(DEMO, path_);
    const hllm::GgufFile file(path_);
    from_gguf_ = new hllm::Tokenizer(hllm::tokenizer_from_gguf(file));
    from_json_ = new hllm::Tokenizer(hllm::load_tokenizer(DEMO));
  }
  static void TearDownTestSuite() {
    delete from_gguf_;
    delete from_json_;
    fs::remove(path_);
  }
  static inline fs::path path_;
  static inline hllm::Tokenizer* from_gguf_ = nullptr;
  static inline hllm::Tokenizer* from_json_ = nullptr;
};

TEST_F(GgufTokenizer, EncodesEveryGoldenLikeHf) {
  const auto goldens = read_jsonl(GOLDENS / "encode.jsonl");
  ASSERT_GT(goldens.size(), 400u);
  for (const auto& g : goldens) {
    const std::string text = g["text"];
    EXPECT_EQ(from_gguf_->encode(text), g["ids"].get<std::vector<hllm::TokenId>>()) << text;
  }
}

TEST_F(GgufTokenizer, DecodesEveryGoldenLikeHf) {
  for (const auto& g : read_jsonl(GOLDENS / "decode.jsonl")) {
    const auto ids = g["ids"].get<std::vector<hllm::TokenId>>();
    EXPECT_EQ(from_gguf_->decode(ids), g["text"].get<std::string>());
    EXPECT_EQ(from_gguf_->decode(ids, true), g["text_skip_special"].get<std::string>());
  }
}

TEST_F(GgufTokenizer, RendersTheChatGoldens) {
  for (const auto& g : read_jsonl(GOLDENS / "chat.jsonl")) {
    std::vector<hllm::ChatMessage> messages;
    for (const auto& m : g["messages"]) messages.push_back({m["role"], m["content"]});
    EXPECT_EQ(hllm::encode_chat(*from_gguf_, messages, g["add_generation_prompt"]),
              g["ids"].get<std::vector<hllm::TokenId>>());
  }
}

TEST_F(GgufTokenizer, SameSpecialsAndTemplateAsTheJsonPath) {
  EXPECT_EQ(from_gguf_->vocab_size(), from_json_->vocab_size());
  EXPECT_EQ(from_gguf_->bos_id(), from_json_->bos_id());
  EXPECT_EQ(from_gguf_->bos_token(), from_json_->bos_token());
  EXPECT_EQ(from_gguf_->chat_template(), from_json_->chat_template());
  EXPECT_EQ(from_gguf_->n_merges(), from_json_->n_merges());
  EXPECT_TRUE(from_gguf_->ignore_merges());
  for (hllm::TokenId id : {128000, 128009, 128255, 0, 127999})
    EXPECT_EQ(from_gguf_->is_special(id), from_json_->is_special(id)) << id;
  const auto stops = from_gguf_->stop_ids();
  EXPECT_NE(std::find(stops.begin(), stops.end(), 128009), stops.end());
}

}  // namespace
