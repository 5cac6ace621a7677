// Tokenizer pieces on their own: the pre-tokenizer regex (each Llama-3 pitfall of
// ../shared/reading/ecosystem-anchors.md section 3 pinned), BPE on a tiny synthetic tokenizer.json
// (merge spellings, ignore_merges, tie order), UTF-8 handling, and hostile input -> hllm::Error.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/pretokenize.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"
#include "hllm/tokenizer/utf8.hpp"

namespace {

using hllm::TokenId;
using Pieces = std::vector<std::string>;

Pieces split(std::string_view text) {
  Pieces pieces;
  hllm::split_llama3(text, [&](std::string_view p) { pieces.emplace_back(p); });
  return pieces;
}

const hllm::Tokenizer& real() {
  static const hllm::Tokenizer tok = hllm::load_tokenizer(HLLM_TOKENIZER_JSON);
  return tok;
}

// ---- Pre-tokenizer ------------------------------------------------------------------------------

TEST(Pretokenize, LetterRunsTakeOneLeadingSpaceOrSymbol) {
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("  hello"), (Pieces{" ", " hello"}));  // \s+(?!\S) leaves the last space
  EXPECT_EQ(split("\thello"), (Pieces{"\thello"}));
  EXPECT_EQ(split("$hello"), (Pieces{"$hello"}));
  EXPECT_EQ(split("\nhello"), (Pieces{"\n", "hello"}));  // not \r or \n
}

TEST(Pretokenize, DigitsGroupInThrees) {
  EXPECT_EQ(split("1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(split("x٣٤٥٦"), (Pieces{"x", "٣٤٥", "٦"}));  // \p{N} is all of Unicode's numbers
  EXPECT_EQ(split(" 12"), (Pieces{" ", "12"}));
}

TEST(Pretokenize, ContractionsInBothCases) {
  EXPECT_EQ(split("don't"), (Pieces{"don", "'t"}));
  EXPECT_EQ(split("I'M WE'LL they'Re"), (Pieces{"I", "'M", " WE", "'LL", " they", "'Re"}));
  EXPECT_EQ(split("'x"), (Pieces{"'x"}));  // not a contraction: symbol + letters
  // Oniguruma folds U+017F LATIN SMALL LETTER LONG S to 's' under (?i:...).
  EXPECT_EQ(split("don'\u017Ft"), (Pieces{"don", "'\u017F", "t"}));
}

TEST(Pretokenize, NewlinesAndWhitespaceRuns) {
  EXPECT_EQ(split("a\r\n\r\nb"), (Pieces{"a", "\r\n\r\n", "b"}));
  EXPECT_EQ(split("x  \n  y"), (Pieces{"x", "  \n", " ", " y"}));
  EXPECT_EQ(split("x   "), (Pieces{"x", "   "}));        // trailing run stays whole
  EXPECT_EQ(split("?!\n\nx"), (Pieces{"?!\n\n", "x"}));  // symbols take the newlines after them
  EXPECT_EQ(split(" ..."), (Pieces{" ..."}));
}

TEST(Pretokenize, WhitespaceIsOnigurumasNotJavaScripts) {
  // U+0085 NEL is \s for Oniguruma (HF); U+FEFF is not.
  EXPECT_EQ(split("a\u0085\u0085b"), (Pieces{"a", "\u0085", "\u0085b"}));
  EXPECT_EQ(split("a\uFEFFb"), (Pieces{"a", "\uFEFFb"}));
}

TEST(UnicodeTables, Classes) {
  using hllm::detail::CharClass;
  const auto& cls = hllm::detail::char_classes();
  EXPECT_EQ(cls(U'A'), CharClass::letter);
  EXPECT_EQ(cls(U'\u00AA'), CharClass::letter);
  EXPECT_EQ(cls(U'\u0663'), CharClass::number);
  EXPECT_EQ(cls(U'\u2167'), CharClass::number);  // ROMAN NUMERAL EIGHT, Nl
  EXPECT_EQ(cls(U'\u3000'), CharClass::space);
  EXPECT_EQ(cls(U'\u0085'), CharClass::space);
  EXPECT_EQ(cls(U'\uFEFF'), CharClass::other);
  EXPECT_EQ(cls(U'\u0301'), CharClass::other);       // combining marks are not \p{L}
  EXPECT_EQ(cls(U'\U0002EBF0'), CharClass::letter);  // CJK Extension I, new in Unicode 15.1
  EXPECT_EQ(cls(U'\U0001F600'), CharClass::other);
  EXPECT_EQ(cls(U'\U0010FFFF'), CharClass::other);
  EXPECT_STREQ(hllm::detail::unicode_tables::UNICODE_VERSION_STRING, "15.1.0");
}

// ---- The real tokenizer: the pitfalls by id -----------------------------------------------------

TEST(TokenizerPitfalls, IgnoreMergesKeepsWholeVocabWords) {
  EXPECT_EQ(real().encode(" Việt"), (std::vector<TokenId>{101798}));  // not 3 BPE pieces
}

TEST(TokenizerPitfalls, SpecialsInTextAreMatchedOnlyWhenAsked) {
  EXPECT_EQ(real().encode("<|eot_id|>"), (std::vector<TokenId>{128009}));
  EXPECT_NE(real().encode("<|eot_id|>", /*match_special=*/false), (std::vector<TokenId>{128009}));
  EXPECT_EQ(real().encode("a<|begin_of_text|><|eot_id|>b").size(), 4u);
  EXPECT_EQ(real().decode(real().encode("x<|reserved_special_token_10|>y")),
            "x<|reserved_special_token_10|>y");
}

TEST(TokenizerPitfalls, StopTokensWithoutConfigFiles) {
  EXPECT_EQ(real().stop_ids(), (std::vector<TokenId>{128001, 128009}));  // Llama-3.0: no <|eom_id|>
  EXPECT_EQ(real().bos_id(), -1);  // tokenizer.json alone does not say which token is BOS
}

TEST(TokenizerPitfalls, DecodeSkipsSpecialsOnRequest) {
  const std::vector<TokenId> ids = {128000, 9906, 128009};
  EXPECT_EQ(real().decode(ids), "<|begin_of_text|>Hello<|eot_id|>");
  EXPECT_EQ(real().decode(ids, /*skip_special=*/true), "Hello");
}

// ---- BPE on a synthetic tokenizer.json ----------------------------------------------------------

// Byte-level spelling of raw bytes.
std::string spell(std::string_view bytes) {
  std::string out;
  for (const unsigned char b : bytes)
    hllm::detail::append_utf8(out, hllm::detail::BYTE_LEVEL.byte_to_cp[b]);
  return out;
}

// 256 byte tokens (id = byte), then `extra` tokens, and `merges` (pairs of raw byte strings).
nlohmann::json tiny_tokenizer(const std::vector<std::string>& extra,
                              const std::vector<std::pair<std::string, std::string>>& merges,
                              bool ignore_merges, bool pair_form) {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[spell(std::string(1, static_cast<char>(b)))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[spell(extra[i])] = 256 + i;
  nlohmann::json merge_list = nlohmann::json::array();
  for (const auto& [a, b] : merges) {
    if (pair_form) {
      merge_list.push_back({spell(a), spell(b)});
    } else {
      merge_list.push_back(spell(a) + " " + spell(b));
    }
  }
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 300}, {"content", "<|end|>"}, {"special", true}},
            {{"id", 301}, {"content", "<|end|>x"}, {"special", false}}}},
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
            {"ignore_merges", ignore_merges},
            {"vocab", vocab},
            {"merges", merge_list}}}};
}

hllm::Tokenizer tiny(bool ignore_merges = true, bool pair_form = false) {
  // 256 "ab", 257 "abc" (whole word, no merge makes it), 258 "aa", 259 " a"
  const auto json = tiny_tokenizer({"ab", "abc", "aa", " a"}, {{"a", "b"}, {"a", "a"}, {" ", "a"}},
                                   ignore_merges, pair_form);
  return hllm::tokenizer_from_json(json.dump(), "tiny.json");
}

TEST(Bpe, IgnoreMergesTakesWholeVocabWords) {
  EXPECT_EQ(tiny(true).encode("abc"), (std::vector<TokenId>{257}));
  EXPECT_EQ(tiny(false).encode("abc"), (std::vector<TokenId>{256, 'c'}));
}

TEST(Bpe, BothMergeSpellingsAgree) {
  for (const char* text : {"abc", "aaab", "x aab", "ba a"}) {
    EXPECT_EQ(tiny(false, false).encode(text), tiny(false, true).encode(text)) << text;
  }
}

TEST(Bpe, LowestRankFirstThenLeftmost) {
  EXPECT_EQ(tiny(false).encode("aaa"), (std::vector<TokenId>{258, 'a'}));
  EXPECT_EQ(tiny(false).encode("aab"), (std::vector<TokenId>{'a', 256}));  // "a b" ranks first
}

TEST(Bpe, AddedTokensLeftmostLongest) {
  EXPECT_EQ(tiny().encode("<|end|>x"), (std::vector<TokenId>{301}));
  EXPECT_EQ(tiny().encode("b<|end|>"), (std::vector<TokenId>{'b', 300}));
  EXPECT_EQ(tiny().decode(std::vector<TokenId>{'b', 300, 301}, true), "b<|end|>x");
}

// ---- UTF-8 --------------------------------------------------------------------------------------

std::string lossy(std::string_view bytes) {
  std::string out;
  hllm::detail::append_utf8_lossy(bytes, out, true);
  return out;
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  const std::string R = "\uFFFD";
  EXPECT_EQ(lossy("\xF0\x9F\x98\x80"), "\U0001F600");
  EXPECT_EQ(lossy("\xF0\x9F\x98"), R);  // truncated at the end: one
  EXPECT_EQ(lossy("\xF0\x9F\x98"
                  "A"),
            R + "A");
  EXPECT_EQ(lossy("\xE0\x80\x80"), R + R + R);          // overlong: E0 needs A0..BF next
  EXPECT_EQ(lossy("\xED\xA0\x80"), R + R + R);          // a surrogate
  EXPECT_EQ(lossy("\xF4\x90\x80\x80"), R + R + R + R);  // above U+10FFFF
  EXPECT_EQ(lossy("\xC0\xAF"), R + R);
  EXPECT_EQ(lossy("\x80\xBF"), R + R);
  EXPECT_EQ(lossy("\xFF"
                  "a\xC3\xA9"),
            R + "a\u00E9");
}

TEST(Utf8, ChatTrimIsPythonStrip) {
  EXPECT_EQ(hllm::python_strip("  \t x y \u3000\n"), "x y");
  EXPECT_EQ(hllm::python_strip("\x1C a \x1F"), "a");      // Python counts these separators as space
  EXPECT_EQ(hllm::python_strip("\u200B x"), "\u200B x");  // ZERO WIDTH SPACE is not
  EXPECT_EQ(hllm::python_strip("\u0085\u00A0"), "");
}

// ---- Hostile input ------------------------------------------------------------------------------

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning: " << needle;
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, BadFiles) {
  const auto load = [](std::string text) {
    return [text] { hllm::tokenizer_from_json(text, "bad.json"); };
  };
  auto good = tiny_tokenizer({"ab"}, {{"a", "b"}}, true, false);
  expect_error(load("not json"), "bad.json: invalid JSON at byte 0");
  expect_error(load(good.dump().substr(0, good.dump().size() / 2)), "bad.json: invalid JSON");
  expect_error(load("{}"), "no \"model\"");
  expect_error(load(good.dump() + "x"), "trailing");
  auto j = good;
  j["model"]["type"] = "WordPiece";
  expect_error(load(j.dump()), "only BPE");
  j = good;
  j["model"]["merges"] = {"a c d"};
  expect_error(load(j.dump()), "model.merges[0]");
  j = good;
  j["model"]["merges"] = {spell("a") + " " + spell("c")};
  expect_error(load(j.dump()), "merged token is not in model.vocab");
  j = good;
  j["model"]["vocab"][spell("zz")] = -4;
  expect_error(load(j.dump()), "not a valid id");
  j = good;
  j["model"]["vocab"].erase(spell("q"));
  expect_error(load(j.dump()), "lacks the single-byte token");
  j = good;
  j["model"].erase("merges");
  expect_error(load(j.dump()), "needs both");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  expect_error(load(j.dump()), "not the Llama-3 one");
  j = good;
  j["normalizer"] = {{"type", "NFC"}};
  expect_error(load(j.dump()), "normalizer");
  j = good;
  j["added_tokens"][0].erase("content");
  expect_error(load(j.dump()), "added_tokens[0] needs");
  j = good;
  j["model"]["byte_fallback"] = true;
  expect_error(load(j.dump()), "byte_fallback");
  expect_error([] { hllm::load_tokenizer("/nonexistent/dir"); }, "not found");
  // Found by fuzzing (tests/fuzz): a field of the wrong type is an hllm::Error, not nlohmann's
  // type_error; a top-level key given twice is refused (two "added_tokens" sections left the
  // content index pointing into freed memory).
  j = good;
  j["added_tokens"][0]["rstrip"] = "";
  expect_error(load(j.dump()), "bad.json: unexpected JSON");
  j = good;
  j["pre_tokenizer"]["type"] = 7;
  expect_error(load(j.dump()), "bad.json");
  std::string twice = good.dump();
  twice.insert(1, "\"added_tokens\":[{\"id\":1,\"content\":\"a\"}],");
  expect_error(load(twice), "\"added_tokens\" appears twice");
}

TEST(TokenizerErrors, BadConfigsIdsAndText) {
  hllm::Tokenizer tok = tiny();
  expect_error([&] { hllm::set_tokenizer_config(tok, "{\"bos_token\": \"<s>\"}", "tc.json"); },
               "tc.json: bos_token \"<s>\" is not an added token");
  expect_error(
      [&] { hllm::set_generation_config(tok, "{\"eos_token_id\": [1, 99999]}", "gc.json"); },
      "gc.json: eos_token_id must be a token id below 302");
  expect_error([&] { hllm::set_generation_config(tok, "[", "gc.json"); }, "gc.json: invalid JSON");
  expect_error(
      [&] {
        tok.decode(std::vector<TokenId>{5, 280});
      },
      "token id 280 is not in the vocabulary");
  expect_error([&] { tok.decode(std::vector<TokenId>{-1}); }, "token id -1");
  expect_error([&] { tok.encode("ok \xC3"); }, "not valid UTF-8 (byte offset 3)");
  hllm::set_generation_config(tok, "{\"eos_token_id\": 300, \"bos_token_id\": 301}", "gc.json");
  EXPECT_EQ(tok.stop_ids(), (std::vector<TokenId>{300}));
  EXPECT_EQ(tok.bos_token(), "<|end|>x");
}

}  // namespace
