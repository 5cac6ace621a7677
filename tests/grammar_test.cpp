// The grammar engine on a tiny byte vocabulary (one token per byte, a few multi-byte tokens, an
// end token): GBNF parsing and its errors, UTF-8 character classes at the byte level, strings
// accepted and refused, left recursion refused, the ambiguity cap, and masks against brute force.
#include "hllm/grammar/grammar.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/compiled.hpp"
#include "hllm/grammar/matcher.hpp"
#include "hllm/grammar/token_vocabulary.hpp"
#include "hllm/tokenizer/pretokenize.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

using hllm::grammar::GrammarMatcher;
using hllm::grammar::parse_gbnf;

constexpr int32_t END = 300;    // <|end|>, the end id
constexpr int32_t OTHER = 301;  // <|other|>, a special token that is never allowed

std::string spell(std::string_view bytes) {
  std::string out;
  for (const unsigned char b : bytes) {
    hllm::detail::append_utf8(out, hllm::detail::BYTE_LEVEL.byte_to_cp[b]);
  }
  return out;
}

// Ids 0..255: the bytes; 256..: a few multi-byte tokens; 300, 301: specials.
const std::vector<std::string> MULTI = {"ab", "abc", "\"a", "{\"", "é", "\xa9x", "12"};

const hllm::Tokenizer& tiny_tokenizer() {
  static const hllm::Tokenizer tok = [] {
    nlohmann::json tokens = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) tokens[spell(std::string(1, static_cast<char>(b)))] = b;
    for (size_t i = 0; i < MULTI.size(); ++i) tokens[spell(MULTI[i])] = 256 + i;
    const nlohmann::json json = {
        {"version", "1.0"},
        {"added_tokens",
         {{{"id", END}, {"content", "<|end|>"}, {"special", true}},
          {{"id", OTHER}, {"content", "<|other|>"}, {"special", true}}}},
        {"normalizer", nullptr},
        {"pre_tokenizer",
         {{"type", "Sequence"},
          {"pretokenizers",
           {{{"type", "Split"},
             {"pattern", {{"Regex", std::string(hllm::LLAMA3_SPLIT_PATTERN)}}},
             {"behavior", "Isolated"},
             {"invert", false}},
            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
        {"decoder", {{"type", "ByteLevel"}}},
        {"model",
         {{"type", "BPE"},
          {"ignore_merges", true},
          {"vocab", tokens},
          {"merges", nlohmann::json::array()}}}};
    return hllm::tokenizer_from_json(json.dump(), "tiny.json");
  }();
  return tok;
}

std::shared_ptr<const hllm::grammar::TokenVocabulary> vocab() {
  static const auto v = std::make_shared<const hllm::grammar::TokenVocabulary>(
      tiny_tokenizer(), std::vector<int32_t>{END});
  return v;
}

GrammarMatcher matcher(std::string_view gbnf) {
  return GrammarMatcher(hllm::grammar::compile(parse_gbnf(gbnf), vocab()));
}

// Whether the whole of `text`, fed byte by byte, is a sentence of the grammar.
bool matches(const GrammarMatcher& start, std::string_view text) {
  GrammarMatcher m = start;
  for (const unsigned char b : text) {
    if (!m.accept_token(b)) return false;
  }
  return m.accept_token(END);
}

std::string gbnf_error(std::string_view text) {
  try {
    parse_gbnf(text);
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Gbnf, LiteralsClassesGroupsAndRepetition) {
  const GrammarMatcher m = matcher(R"(
# a comment
root ::= "x" ( [a-c]+ | "-" [0-9]{2,3} )? tail   # trailing comment
tail ::= "!"*
)");
  for (const char* ok : {"x", "xa", "xabcab", "x-12", "x-123", "x!!", "xb!"}) {
    EXPECT_TRUE(matches(m, ok)) << ok;
  }
  for (const char* bad : {"", "y", "xd", "x-1", "x-1234", "x!a", "x-"}) {
    EXPECT_FALSE(matches(m, bad)) << bad;
  }
}

TEST(Gbnf, BoundedRepeats) {
  const GrammarMatcher m = matcher("root ::= \"a\"{2} \"b\"{,2} \"c\"{1,} \"d\"{0,1}\n");
  for (const char* ok : {"aac", "aabbc", "aabcccd", "aacd"}) EXPECT_TRUE(matches(m, ok)) << ok;
  for (const char* bad : {"ac", "aaac", "aabbbc", "aab", "aacdd"}) {
    EXPECT_FALSE(matches(m, bad)) << bad;
  }
}

TEST(Gbnf, EscapesAndNegatedClasses) {
  const GrammarMatcher m = matcher(R"(root ::= "\"" [^"\\\x00-\x1F]* "\"" "\t\u00e9\x41"
)");
  EXPECT_TRUE(matches(m,
                      "\"hi there\"\t\xc3\xa9"
                      "A"));
  EXPECT_TRUE(matches(m,
                      "\"\xe2\x82\xac\xf0\x9f\x98\x80\"\t\xc3\xa9"
                      "A"));  // € 😀
  EXPECT_FALSE(matches(m,
                       "\"a\"b\"\t\xc3\xa9"
                       "A"));
  EXPECT_FALSE(matches(m,
                       "\"a\nb\"\t\xc3\xa9"
                       "A"));
}

TEST(Gbnf, ClassesAreValidUtf8Only) {
  const GrammarMatcher any = matcher("root ::= .*\n");
  EXPECT_TRUE(matches(any, "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"));
  for (const char* bad : {"\x80", "\xc0\xaf", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                          "\xe0\x80\x80", "\xff", "\xc3\xa9\xa9"}) {
    EXPECT_FALSE(matches(any, bad)) << "overlong, surrogate, truncated or stray: " << bad;
  }
  const GrammarMatcher range = matcher("root ::= [\\u00e0-\\u00ff\\U0001F600-\\U0001F64F]\n");
  EXPECT_TRUE(matches(range, "\xc3\xa0"));
  EXPECT_TRUE(matches(range, "\xc3\xbf"));
  EXPECT_TRUE(matches(range, "\xf0\x9f\x98\x80"));
  EXPECT_FALSE(matches(range, "\xc3\x9f"));
  EXPECT_FALSE(matches(range, "\xf0\x9f\x99\x90"));  // U+1F650
  const GrammarMatcher not_e = matcher("root ::= [^\\u00e9]\n");
  EXPECT_TRUE(matches(not_e, "\xc3\xa8"));
  EXPECT_FALSE(matches(not_e, "\xc3\xa9"));
}

TEST(Gbnf, JsonStyleGrammar) {
  const GrammarMatcher m = matcher(R"(
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws
string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
  )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
ws ::= | " " | "\n" [ \t]{0,20}
)");
  EXPECT_TRUE(matches(m, R"({"a": [1, 2.5e3, "x\n\u00e9"], "b": {"c": null}} )"));
  EXPECT_TRUE(matches(m, "{}"));
  EXPECT_FALSE(matches(m, R"({"a" 1})"));
  EXPECT_FALSE(matches(m, R"([1])"));
}

TEST(Gbnf, ErrorsNameLineAndColumn) {
  EXPECT_EQ(gbnf_error("root ::= \"a\"\nfoo ::= bar\n"), "gbnf:2:9: rule 'bar' is not defined");
  EXPECT_EQ(gbnf_error("root ::= \"a\"\nroot ::= \"b\"\n"),
            "gbnf:2:1: rule 'root' is defined twice");
  EXPECT_EQ(gbnf_error("root = \"a\"\n"), "gbnf:1:6: expected '::=' after rule name 'root'");
  EXPECT_EQ(gbnf_error("root ::= \"a\n"), "gbnf:1:12: unterminated string literal");
  EXPECT_EQ(gbnf_error("root ::= [a-\n"), "gbnf:1:13: unterminated character class");
  EXPECT_EQ(gbnf_error("root ::= \"\\q\"\n"), "gbnf:1:11: unknown escape '\\q'");
  EXPECT_EQ(gbnf_error("root ::= ( \"a\" \n"), "gbnf:2:1: expected ')'");
  EXPECT_EQ(gbnf_error("root ::= *\n"), "gbnf:1:10: '*' has nothing to repeat");
  EXPECT_EQ(gbnf_error("root ::= \"a\"{3,1}\n"), "gbnf:1:18: repetition {3,1} has max < min");
  EXPECT_EQ(gbnf_error("root ::= \"a\" ) \n"),
            "gbnf:1:14: expected the end of the line after rule 'root'");
  EXPECT_EQ(gbnf_error("start ::= \"a\"\n"), "gbnf: the grammar has no rule 'root'");
  EXPECT_EQ(gbnf_error("root ::= [z-a]\n"), "gbnf:1:14: character range is reversed");
  EXPECT_EQ(gbnf_error("root ::= \"\\uD800\"\n"),
            "gbnf:1:11: escape is not a Unicode scalar value (surrogate or over U+10FFFF)");
}

TEST(Gbnf, NestingAndSizeAreBoundedNotAStackOverflow) {
  const std::string deep =
      "root ::= " + std::string(100000, '(') + "\"a\"" + std::string(100000, ')');
  EXPECT_NE(gbnf_error(deep).find("groups nest deeper than 64 levels"), std::string::npos);
  std::string chain = "root ::= r0\n";  // 10,000 rules, each referring to the next
  for (int i = 0; i < 10000; ++i)
    chain += "r" + std::to_string(i) + " ::= r" + std::to_string(i + 1) + " \"x\"\n";
  chain += "r10000 ::= \"y\"\n";
  EXPECT_NE(gbnf_error(chain).find("more than 8192 rules"), std::string::npos);
}

TEST(Gbnf, LeftRecursionIsRefused) {
  const std::string direct = gbnf_error("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"\n");
  EXPECT_NE(direct.find("rule 'expr' is left-recursive (expr -> expr)"), std::string::npos)
      << direct;
  const std::string hidden = gbnf_error("root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"z\"\n");
  EXPECT_NE(hidden.find("left-recursive"), std::string::npos) << hidden;
  const std::string mutual = gbnf_error("root ::= a\na ::= b \"x\"\nb ::= a \"y\" | \"z\"\n");
  EXPECT_NE(mutual.find("a -> b -> a"), std::string::npos) << mutual;
  EXPECT_NO_THROW(parse_gbnf("root ::= \"(\" root \")\" | \"x\"\n"));  // recursion after a byte
}

TEST(Matcher, AmbiguityCapIsAnError) {
  // After n a's, each of 2^n ways to close ("b" or "c" per level) is a distinct stack.
  const GrammarMatcher start = matcher("root ::= s\ns ::= \"a\" s \"b\" | \"a\" s \"c\" | \"\"\n");
  GrammarMatcher m = start;
  EXPECT_THROW(
      {
        for (int i = 0; i < 20; ++i) m.accept_token('a');
      },
      hllm::Error);
  EXPECT_TRUE(matches(start, "aabc"));
}

TEST(Matcher, TokensEndIdsAndSpecials) {
  const GrammarMatcher start = matcher("root ::= \"ab\" \"c\"?\n");
  GrammarMatcher m = start;
  EXPECT_FALSE(m.accept_token(END));
  EXPECT_FALSE(m.accept_token(OTHER));
  EXPECT_FALSE(m.accept_token(-1));
  EXPECT_FALSE(m.accept_token(100000));
  EXPECT_FALSE(m.can_end());
  EXPECT_TRUE(m.accept_token(256));  // "ab"
  EXPECT_TRUE(m.can_end());
  GrammarMatcher copy = m;
  EXPECT_TRUE(copy.accept_token('c'));
  EXPECT_FALSE(copy.accept_token('c'));
  EXPECT_TRUE(m.accept_token(END));
  EXPECT_TRUE(m.is_finished());
  EXPECT_FALSE(m.accept_token('c'));
  EXPECT_FALSE(copy.is_finished());
  std::vector<float> logits(vocab()->size() + 5, 1.0f);
  m.mask_logits(logits);
  for (const float x : logits) EXPECT_EQ(x, -INFINITY);
}

// fill_bitmask equals trying every token on a copy, and mask_logits agrees with it.
void expect_mask_is_brute_force(const GrammarMatcher& m) {
  const size_t n = vocab()->size();
  std::vector<uint32_t> words((n + 31) / 32 + 1, 0xdeadbeef);
  m.fill_bitmask(words);
  std::vector<float> logits(n + 7, 0.5f);
  m.mask_logits(logits);
  for (size_t id = 0; id < n + 32; ++id) {
    GrammarMatcher copy = m;
    const bool allowed = id < n && copy.accept_token(static_cast<int32_t>(id));
    EXPECT_EQ(((words[id / 32] >> (id % 32)) & 1) != 0, allowed) << "token " << id;
    if (id < logits.size()) {
      EXPECT_EQ(logits[id] == 0.5f, allowed) << "token " << id;
    }
  }
  EXPECT_EQ(((words[END / 32] >> (END % 32)) & 1) != 0, m.can_end());
}

TEST(Matcher, MaskEqualsBruteForce) {
  GrammarMatcher m =
      matcher("root ::= \"{\\\"\" [a-c]* \"\\\"\" | \"12\" [0-9]* | [\\u00e9] \"x\"\n");
  expect_mask_is_brute_force(m);
  for (const int32_t id : std::vector<int32_t>{256 + 3, 'a', 256 + 0, 'c'}) {  // {" a ab c
    ASSERT_TRUE(m.accept_token(id));
    expect_mask_is_brute_force(m);
  }
  GrammarMatcher e = matcher("root ::= [\\u00e9] \"x\"\n");
  ASSERT_TRUE(e.accept_token(0xc3));  // the first byte of é alone
  expect_mask_is_brute_force(e);
  ASSERT_TRUE(e.accept_token(256 + 5));  // its second byte and "x"
  EXPECT_TRUE(e.can_end());
  expect_mask_is_brute_force(e);
}

TEST(Matcher, SizeChecks) {
  const GrammarMatcher m = matcher("root ::= \"a\"\n");
  std::vector<float> few(10);
  EXPECT_THROW(m.mask_logits(few), hllm::Error);
  std::vector<uint32_t> words(2);
  EXPECT_THROW(m.fill_bitmask(words), hllm::Error);
  EXPECT_THROW(hllm::grammar::TokenVocabulary(tiny_tokenizer(), {302}), hllm::Error);
}

}  // namespace
