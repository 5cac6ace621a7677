// The runner's `tokenize` / `detokenize` commands against the HF goldens, and their errors.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Result {
  int status;
  std::string out;  // stdout and stderr
};

Result run(const std::string& args) {
  const std::string command = std::string(HLLM_RUNNER) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  Result r{0, ""};
  std::array<char, 4096> buffer;
  for (size_t n; (n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0;)
    r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines.push_back(text.substr(start, nl - start));
  }
  return lines;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> out;
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

const std::string DATA = HLLM_TEST_DATA "/tokenizer/";
const std::string TOK = std::string("--tokenizer ") + HLLM_TOKENIZER_JSON;

// A model folder: the fetched tokenizer.json beside the test data's tokenizer_config.json (BOS,
// chat template) and generation_config.json.
std::string model_folder() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::TempDir()) / "hllm_tokenizer_folder";
  fs::create_directories(dir);
  fs::copy_file(HLLM_TOKENIZER_JSON, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  for (const char* name : {"tokenizer_config.json", "generation_config.json"}) {
    fs::copy_file(DATA + name, dir / name, fs::copy_options::overwrite_existing);
  }
  return dir.string();
}

TEST(TokenizerCli, TokenizeJsonlTextAndChat) {
  for (const char* file : {"encode.jsonl", "chat.jsonl"}) {
    const auto r = run("tokenize --tokenizer " + model_folder() + " --jsonl " + DATA + file);
    ASSERT_EQ(r.status, 0) << r.out.substr(0, 500);
    const auto expected = read_jsonl(DATA + file);
    const auto lines = lines_of(r.out);
    ASSERT_EQ(lines.size(), expected.size()) << file;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(nlohmann::json::parse(lines[i]), expected[i]["ids"]) << file << " line " << i + 1;
    }
  }
}

TEST(TokenizerCli, DetokenizeJsonlAndIds) {
  const auto r = run("detokenize " + TOK + " --jsonl " + DATA + "decode.jsonl");
  ASSERT_EQ(r.status, 0) << r.out.substr(0, 500);
  const auto expected = read_jsonl(DATA + "decode.jsonl");
  const auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), expected.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(nlohmann::json::parse(lines[i]), expected[i]["text"])
        << "decode.jsonl line " << i + 1;
  }
  EXPECT_EQ(run("detokenize " + TOK + " --ids 9906,1917,128009").out, "Hello world<|eot_id|>\n");
  EXPECT_EQ(run("tokenize " + TOK + " --text 'Hello world<|eot_id|>'").out, "[9906,1917,128009]\n");
}

TEST(TokenizerCli, Errors) {
  auto r = run("detokenize " + TOK + " --ids 1,999999");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("token id 999999 is not in the vocabulary"), std::string::npos) << r.out;
  r = run("tokenize --tokenizer /nonexistent --text hi");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("/nonexistent"), std::string::npos) << r.out;
  r = run("tokenize " + TOK);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("give --text or --jsonl"), std::string::npos) << r.out;
  r = run("detokenize " + TOK + " --ids 1,x");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("\"x\" is not a token id"), std::string::npos) << r.out;
  const std::string bad = testing::TempDir() + "/bad.jsonl";
  std::ofstream(bad) << "{\"text\": \"ok\"}\n{\"nothing\": 1}\n";
  r = run("tokenize " + TOK + " --jsonl " + bad);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("bad.jsonl:2: expected \"text\" or \"messages\""), std::string::npos)
      << r.out;
}

}  // namespace
