// JSON Schema -> grammar: for each supported keyword, texts that must match and texts that must
// not; unsupported keywords are Errors naming path and keyword; $ref recursion. With the real
// Llama-3 tokenizer: seeded random walks over ~10 schemas always produce JSON that parses and
// satisfies its schema (checked by a small independent validator below), masks equal brute force,
// and end ids are allowed exactly where the grammar can end.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/compiled.hpp"
#include "hllm/grammar/json_schema.hpp"
#include "hllm/grammar/matcher.hpp"
#include "hllm/grammar/token_vocabulary.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

using hllm::grammar::GrammarMatcher;
using nlohmann::json;
using nlohmann::ordered_json;

#if defined(__SANITIZE_ADDRESS__)
constexpr int WALKS_PER_SCHEMA = 4;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int WALKS_PER_SCHEMA = 4;
#else
constexpr int WALKS_PER_SCHEMA = 20;
#endif
#else
constexpr int WALKS_PER_SCHEMA = 20;
#endif

const hllm::Tokenizer& tokenizer() {
  static const hllm::Tokenizer tok = hllm::load_tokenizer(HLLM_DEMO_MODEL_DIR "/tokenizer.json");
  return tok;
}

std::shared_ptr<const hllm::grammar::TokenVocabulary> vocab() {
  static const auto v =
      std::make_shared<const hllm::grammar::TokenVocabulary>(tokenizer(), tokenizer().stop_ids());
  return v;
}

// The id of the one-byte token of each byte.
const std::vector<int32_t>& byte_tokens() {
  static const std::vector<int32_t> ids = [] {
    std::vector<int32_t> out(256, -1);
    for (size_t id = 0; id < vocab()->size(); ++id) {
      const std::string_view b = vocab()->bytes(static_cast<int32_t>(id));
      if (b.size() == 1) out[static_cast<unsigned char>(b[0])] = static_cast<int32_t>(id);
    }
    return out;
  }();
  return ids;
}

GrammarMatcher matcher(const ordered_json& schema) {
  return GrammarMatcher(
      hllm::grammar::compile(hllm::grammar::json_schema_grammar(schema), vocab()));
}

// Whether `text`, fed byte by byte, is a whole document of the grammar.
bool matches(const GrammarMatcher& start, std::string_view text) {
  GrammarMatcher m = start;
  for (const unsigned char b : text) {
    if (!m.accept_token(byte_tokens()[b])) return false;
  }
  return m.accept_token(vocab()->end_ids()[0]);
}

void expect_language(const char* schema, std::vector<std::string> good,
                     std::vector<std::string> bad) {
  const GrammarMatcher m = matcher(ordered_json::parse(schema));
  for (const std::string& t : good) EXPECT_TRUE(matches(m, t)) << schema << " should match " << t;
  for (const std::string& t : bad) EXPECT_FALSE(matches(m, t)) << schema << " should refuse " << t;
}

std::string schema_error(const std::string& schema) {
  try {
    hllm::grammar::json_schema_grammar(ordered_json::parse(schema));
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(JsonSchemaGrammar, Types) {
  expect_language(
      R"({"type":"string"})", {R"("")", R"("héllo \"x\" \\ \/ \b\f\n\r\t \u00e9 \uD83D\uDE00")"},
      {R"(")", "\"a\nb\"", R"("\x")", R"("\uD800")", R"("\uDC00x")", R"( "a")", "\"\xff\""});
  expect_language(R"({"type":"integer"})", {"0", "-7", "123456789012345"},
                  {"01", "1.5", "+1", "1234567890123456", "", "-"});
  expect_language(
      R"({"type":"number"})",
      {"0", "-0.5", "3.25e-7", "1E+293", "2e-199", "123456789012345.123456789012345"},
      {".5", "1.", "1e", "1e294", "1e300", "1e1234", "0.1234567890123456", "NaN", "1 "});
  expect_language(R"({"type":"boolean"})", {"true", "false"}, {"True", "1", "null"});
  expect_language(R"({"type":"null"})", {"null"}, {"nul", "0"});
  expect_language(R"({"type":["string","null"]})", {"null", R"("a")"}, {"1"});
  expect_language(R"({"type":"string","nullable":true})", {"null", R"("a")"}, {"true"});
}

TEST(JsonSchemaGrammar, Objects) {
  const char* s = R"({"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"string"},
                      "c":{"type":"boolean"}},"required":["a"]})";
  expect_language(s,
                  {R"({"a":"x"})", R"({"b":1,"a":"x"})", R"({"b":1,"a":"x","c":true})",
                   R"({"a":"x","c":false})"},
                  {"{}", R"({"a":"x","b":1})", R"({"b":1})", R"({"a":"x",})", R"({"a":"x","d":1})",
                   R"({ "a":"x"})", R"({,"a":"x"})"});
  expect_language(R"({"type":"object","properties":{"x":{"type":"null"}}})",
                  {"{}", R"({"x":null})"}, {R"({"y":null})"});
  expect_language(R"({"type":"object","additionalProperties":false})", {"{}"}, {R"({"a":1})"});
  expect_language(R"({"type":"object","additionalProperties":{"type":"integer"}})",
                  {"{}", R"({"a":1,"b":2})"}, {R"({"a":"x"})", R"({"a":1,})"});
  expect_language(R"({"type":"object","additionalProperties":true})", {R"({"a":[{"b":null}]})"},
                  {"[]"});
  expect_language(R"({"properties":{"k\"ey/é":{"const":1}},"required":["k\"ey/é"]})",
                  {R"({"k\"ey/é":1})"}, {"{}"});
}

TEST(JsonSchemaGrammar, Arrays) {
  expect_language(R"({"type":"array","items":{"type":"integer"}})", {"[]", "[1]", "[1,2,3]"},
                  {"[1,]", "[,]", R"(["a"])", "[1 ,2]"});
  expect_language(R"({"type":"array","items":{"type":"integer"},"minItems":2,"maxItems":3})",
                  {"[1,2]", "[1,2,3]"}, {"[]", "[1]", "[1,2,3,4]"});
  expect_language(R"({"type":"array","maxItems":0})", {"[]"}, {"[1]"});
  expect_language(R"({"type":"array","minItems":1})", {R"([{"a":1},"x",null])"}, {"[]"});
}

TEST(JsonSchemaGrammar, EnumConstAnyOfAndLengths) {
  expect_language(R"({"enum":["red","green",1,null,{"a":[1]}]})",
                  {R"("red")", R"("green")", "1", "null", R"({"a":[1]})"},
                  {R"("blue")", "10", R"("Red")"});
  expect_language(R"({"const":"x"})", {R"("x")"}, {R"("y")"});
  expect_language(R"({"anyOf":[{"type":"integer"},{"type":"string","maxLength":2}]})",
                  {"5", R"("ab")"}, {R"("abc")", "true"});
  expect_language(R"({"oneOf":[{"type":"boolean"},{"type":"null"}],"title":"t"})", {"true", "null"},
                  {"0"});
  expect_language(R"({"type":"string","minLength":2,"maxLength":3})",
                  {R"("ab")", R"("\n\u00e9é")", R"("\uffff中")"}, {R"("a")", R"("abcd")"});
  // With a maxLength, only characters that are one UTF-16 code unit (JSON Schema counts code
  // points, zod UTF-16 units: "😀😀" is 2 to one, 4 to the other); a minLength alone allows them.
  expect_language(R"({"type":"string","maxLength":4})", {R"("abcd")"},
                  {R"("😀")", R"("\ud83d\ude00")", R"("a😀")"});
  expect_language(R"({"type":"string","minLength":2})", {R"("😀😀")", R"("\ud83d\ude00x")"},
                  {R"("😀")"});
  expect_language("{}", {"1", R"({"a":[true]})", R"("s")"}, {"", "{"});
  expect_language("true", {"null"}, {"nul"});
}

TEST(JsonSchemaGrammar, RefsAndRecursion) {
  const char* tree = R"({"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},
      "kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v","kids"]}},
      "$ref":"#/$defs/node"})";
  expect_language(
      tree, {R"({"v":1,"kids":[]})", R"({"v":1,"kids":[{"v":2,"kids":[{"v":3,"kids":[]}]}]})"},
      {R"({"v":1})", R"({"v":1,"kids":[{"v":2}]})"});
  const char* self =
      R"({"type":"object","properties":{"next":{"anyOf":[{"$ref":"#"},{"type":"null"}]}},
      "required":["next"]})";
  expect_language(self, {R"({"next":null})", R"({"next":{"next":{"next":null}}})"}, {"null"});
  expect_language(R"({"definitions":{"x":{"type":"boolean"}},"items":{"$ref":"#/definitions/x"}})",
                  {"[true,false]"}, {"[1]"});
  EXPECT_NE(schema_error(R"({"anyOf":[{"$ref":"#"},{"type":"null"}]})").find("left-recursive"),
            std::string::npos);
}

TEST(JsonSchemaGrammar, UnsupportedKeywordsNamePathAndKeyword) {
  EXPECT_EQ(
      schema_error(R"({"type":"object","properties":{"age":{"type":"string","format":"date"}}})"),
      "#/properties/age: 'format' is not supported");
  for (const char* k : {"pattern", "minimum", "maximum", "multipleOf", "allOf", "not", "if",
                        "patternProperties", "uniqueItems", "prefixItems", "exclusiveMinimum"}) {
    EXPECT_EQ(schema_error(std::string(R"({"items":{")") + k + R"(":1}})"),
              std::string("#/items: '") + k + "' is not supported");
  }
  EXPECT_EQ(
      schema_error(R"({"$defs":{"a b":{"type":"string","pattern":"x"}},"$ref":"#/$defs/a b"})"),
      "#/$defs/a b: 'pattern' is not supported");
  EXPECT_EQ(schema_error(R"({"anyOf":[{"type":"string"},{"type":"string","format":"email"}]})"),
            "#/anyOf/1: 'format' is not supported");
  EXPECT_EQ(schema_error(R"({"$ref":"#/$defs/missing"})"),
            "#: '$ref' '#/$defs/missing' does not resolve in this schema");
  EXPECT_EQ(
      schema_error(R"({"$ref":"https://example.com/s.json"})"),
      "#: '$ref' 'https://example.com/s.json' is not supported (only local references: '#...')");
  EXPECT_EQ(
      schema_error(R"({"type":"objekt"})"),
      "#: 'type' 'objekt' is not one of object, array, string, number, integer, boolean, null");
  EXPECT_EQ(schema_error(R"({"properties":{"a":{}},"required":["b"]})"),
            "#: 'required' names 'b', which is not in 'properties'");
  EXPECT_EQ(schema_error(R"({"type":"string","minLength":3,"maxLength":2})"),
            "#: 'maxLength' is less than 'minLength'");
  EXPECT_EQ(schema_error(R"({"properties":{"a":{}},"additionalProperties":true})"),
            "#: 'additionalProperties' other than false beside 'properties' is not supported");
  EXPECT_EQ(schema_error("false"), "#: the schema 'false' matches nothing");
  EXPECT_EQ(schema_error(R"({"type":"array","items":[{"type":"string"}]})"),
            "#/items: tuple 'items' (an array of schemas) is not supported");
}

TEST(JsonSchemaGrammar, PropertiesKeepTheSchemasOrder) {
  const char* s = R"({"type":"object","properties":{"zeta":{"const":1},"alpha":{"const":2}},
                      "required":["zeta","alpha"]})";
  expect_language(s, {R"({"zeta":1,"alpha":2})"}, {R"({"alpha":2,"zeta":1})"});
  const GrammarMatcher sorted(
      hllm::grammar::compile(hllm::grammar::json_schema_grammar(json::parse(s)), vocab()));
  EXPECT_TRUE(matches(sorted, R"({"alpha":2,"zeta":1})"));  // a plain json sorted its keys
}

// ---- random walks with the real tokenizer ---------------------------------------------------------

// A small validator for the supported subset, independent of the grammar code.
bool valid(const json& v, const json& s, const json& root);

size_t code_points(const std::string& s) {
  size_t n = 0;
  for (const unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool valid_type(const json& v, const std::string& t, const json& s, const json& root) {
  if (t == "null") return v.is_null();
  if (t == "boolean") return v.is_boolean();
  if (t == "integer") return v.is_number_integer();
  if (t == "number") return v.is_number();
  if (t == "string") {
    if (!v.is_string()) return false;
    const size_t n = code_points(v.get<std::string>());
    return n >= s.value("minLength", size_t{0}) && n <= s.value("maxLength", SIZE_MAX);
  }
  if (t == "array") {
    if (!v.is_array()) return false;
    if (v.size() < s.value("minItems", size_t{0}) || v.size() > s.value("maxItems", SIZE_MAX)) {
      return false;
    }
    for (const json& x : v) {
      if (s.contains("items") && !valid(x, s["items"], root)) return false;
    }
    return true;
  }
  if (t == "object") {
    if (!v.is_object()) return false;
    const json props = s.value("properties", json::object());
    for (const json& r : s.value("required", json::array())) {
      if (!v.contains(r.get<std::string>())) return false;
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (props.contains(it.key())) {
        if (!valid(it.value(), props[it.key()], root)) return false;
      } else {
        const json extra = s.value("additionalProperties", json(false));
        if (extra == false || !valid(it.value(), extra, root)) return false;
      }
    }
    return true;
  }
  return false;
}

bool valid(const json& v, const json& s, const json& root) {
  if (s == true || s.empty()) return true;
  if (s.value("nullable", false) && v.is_null()) return true;
  if (s.contains("$ref")) {
    const std::string ref = s["$ref"];
    return valid(v, ref == "#" ? root : root.at(json::json_pointer(ref.substr(1))), root);
  }
  for (const char* k : {"anyOf", "oneOf"}) {
    if (!s.contains(k)) continue;
    for (const json& alt : s[k]) {
      if (valid(v, alt, root)) return true;
    }
    return false;
  }
  if (s.contains("const")) return v == s["const"];
  if (s.contains("enum")) {
    for (const json& e : s["enum"]) {
      if (v == e) return true;
    }
    return false;
  }
  if (!s.contains("type")) return valid_type(v, "object", s, root);  // the walks' schemas
  if (s["type"].is_array()) {
    for (const json& t : s["type"]) {
      if (valid_type(v, t, s, root)) return true;
    }
    return false;
  }
  return valid_type(v, s["type"], s, root);
}

// The allowed ids of the matcher's state, and checks that the end ids are among them exactly when
// it can end.
std::vector<int32_t> allowed(const GrammarMatcher& m) {
  std::vector<uint32_t> words((vocab()->size() + 31) / 32);
  m.fill_bitmask(words);
  std::vector<int32_t> ids;
  for (size_t w = 0; w < words.size(); ++w) {
    for (uint32_t bits = words[w]; bits != 0; bits &= bits - 1) {
      ids.push_back(static_cast<int32_t>(w * 32 + static_cast<size_t>(__builtin_ctz(bits))));
    }
  }
  for (const int32_t e : vocab()->end_ids()) {
    EXPECT_EQ(((words[static_cast<size_t>(e) / 32] >> (e % 32)) & 1) != 0, m.can_end());
  }
  return ids;
}

// One document: random allowed tokens for `budget` steps, then closing ones ('"', '}', ']', ...)
// where allowed, an end id as soon as one is.
std::string random_walk(GrammarMatcher m, std::mt19937& rng, int budget) {
  std::string text;
  for (int step = 0; step < 4000; ++step) {
    const std::vector<int32_t> ids = allowed(m);
    EXPECT_FALSE(ids.empty()) << "no token allowed after: " << text;
    if (ids.empty()) return text;
    int32_t pick = ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)];
    if (step >= budget) {
      if (m.can_end()) pick = vocab()->end_ids()[0];
      for (const char c : std::string_view("0]}\"")) {  // the last one allowed wins
        const int32_t id = byte_tokens()[static_cast<unsigned char>(c)];
        if (!m.can_end() && std::binary_search(ids.begin(), ids.end(), id)) pick = id;
      }
    }
    EXPECT_TRUE(m.accept_token(pick)) << "an allowed token was refused after: " << text;
    if (m.is_finished()) return text;
    text += vocab()->bytes(pick);
  }
  ADD_FAILURE() << "the walk did not end: " << text;
  return text;
}

const char* const WALK_SCHEMAS[] = {
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":20},"age":{"type":"integer"},
        "email":{"type":["string","null"]},"score":{"type":"number"}},"required":["name","age"]})",
    R"({"type":"object","properties":{"color":{"enum":["red","green","blue"]},"ok":{"type":"boolean"},
        "kind":{"const":"fixed"},"none":{"type":"null"}},"required":["color","ok","kind","none"]})",
    R"({"type":"object","properties":{"items":{"type":"array","minItems":1,"maxItems":3,
        "items":{"type":"object","properties":{"id":{"type":"integer"},"tags":{"type":"array",
        "items":{"type":"string","minLength":1,"maxLength":5},"maxItems":2}},"required":["id"]}}},
        "required":["items"]})",
    R"({"type":"object","properties":{"v":{"anyOf":[{"type":"string"},{"type":"number"},
        {"type":"null"}],"default":null,"title":"V"}},"required":["v"]})",
    R"({"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},
        "children":{"type":"array","maxItems":2,"items":{"$ref":"#/$defs/node"}}},
        "required":["value"]}},"type":"object","properties":{"root":{"$ref":"#/$defs/node"}},
        "required":["root"]})",
    R"({"type":"object","properties":{"code":{"type":"string","minLength":3,"maxLength":3},
        "note":{"type":"string","nullable":true}},"required":["code","note"]})",
    R"({"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object",
        "properties":{"c":{"type":"integer"}}}}}}})",
    R"({"type":"object","additionalProperties":{"type":"integer"}})",
    R"({"type":"object","properties":{"any":{},"list":{"type":"array"}},"required":["any","list"]})",
    R"({"type":"object","properties":{"x":{"oneOf":[{"type":"object","properties":{"t":{"const":"a"}},
        "required":["t"]},{"type":"array","items":{"type":"boolean"}}]}},"required":["x"]})",
};

TEST(JsonSchemaGrammarWalks, RandomDocumentsParseAndSatisfyTheSchema) {
  std::mt19937 rng(1234);
  for (const char* text : WALK_SCHEMAS) {
    const json schema = json::parse(text);
    const auto compiled = hllm::grammar::compile(
        hllm::grammar::json_schema_grammar(ordered_json::parse(text)), vocab());
    for (int walk = 0; walk < WALKS_PER_SCHEMA; ++walk) {
      const std::string doc = random_walk(GrammarMatcher(compiled), rng, walk % 2 == 0 ? 8 : 40);
      json value;
      try {
        value = json::parse(doc);
      } catch (const json::exception& e) {
        ADD_FAILURE() << "not JSON (" << e.what() << "): " << doc << "\nschema: " << text;
        continue;
      }
      EXPECT_TRUE(valid(value, schema, schema)) << doc << "\nschema: " << text;
    }
  }
}

TEST(JsonSchemaGrammarWalks, JsonObjectGrammar) {
  std::mt19937 rng(99);
  const auto compiled = hllm::grammar::compile(hllm::grammar::json_object_grammar(), vocab());
  for (int walk = 0; walk < WALKS_PER_SCHEMA; ++walk) {
    const std::string doc = random_walk(GrammarMatcher(compiled), rng, 30);
    json value;
    ASSERT_NO_THROW(value = json::parse(doc)) << doc;
    EXPECT_TRUE(value.is_object()) << doc;
  }
}

// fill_bitmask equals trying every token on a copy of the matcher.
void expect_mask_is_brute_force(const GrammarMatcher& m) {
  std::vector<uint32_t> words((vocab()->size() + 31) / 32);
  m.fill_bitmask(words);
  size_t n_allowed = 0;
  for (size_t id = 0; id < vocab()->size(); ++id) {
    GrammarMatcher copy = m;
    const bool ok = copy.accept_token(static_cast<int32_t>(id));
    n_allowed += ok;
    ASSERT_EQ(((words[id / 32] >> (id % 32)) & 1) != 0, ok) << "token " << id;
  }
  EXPECT_GT(n_allowed, 0u);
}

TEST(JsonSchemaGrammarWalks, MaskEqualsBruteForce) {
  GrammarMatcher m = matcher(ordered_json::parse(WALK_SCHEMAS[0]));
  expect_mask_is_brute_force(m);  // the start: '{' and tokens beginning {"name":
  for (const unsigned char c : std::string_view(R"({"name":"a)")) {
    ASSERT_TRUE(m.accept_token(byte_tokens()[c]));
  }
  expect_mask_is_brute_force(m);  // inside a string of at most 20 characters
  for (const unsigned char c : std::string_view(R"(","age":12)")) {
    ASSERT_TRUE(m.accept_token(byte_tokens()[c]));
  }
  expect_mask_is_brute_force(m);  // after digits: more digits, '.', 'e', ',' or '}'
  ASSERT_TRUE(m.accept_token(byte_tokens()['}']));
  EXPECT_TRUE(m.can_end());
  expect_mask_is_brute_force(m);  // only the end ids
}

}  // namespace

// The token budget: random tokens among those mask_logits(logits, tokens_left) allows. Every
// document ends within the budget, parses and satisfies its schema.
TEST(JsonSchemaGrammarWalks, TheBudgetAlwaysLeavesRoomToFinish) {
  std::mt19937 rng(77);
  for (const char* text : WALK_SCHEMAS) {
    const json schema = json::parse(text);
    const auto compiled = hllm::grammar::compile(
        hllm::grammar::json_schema_grammar(ordered_json::parse(text)), vocab());
    for (int walk = 0; walk < WALKS_PER_SCHEMA; ++walk) {
      GrammarMatcher m(compiled);
      // Tokens, the end id included: what the shortest document needs, and a few more.
      const size_t budget = m.closing_length() + 1 + static_cast<size_t>(walk) * 3;
      std::string doc;
      for (size_t used = 0; used < budget && !m.is_finished(); ++used) {
        ASSERT_LE(m.closing_length() + 1, budget - used) << "out of budget: " << doc;
        std::vector<float> logits(vocab()->size(), 0.0f);
        m.mask_logits(logits, budget - used);
        std::vector<int32_t> ids;
        for (size_t id = 0; id < logits.size(); ++id)
          if (logits[id] == 0.0f) ids.push_back(static_cast<int32_t>(id));
        ASSERT_FALSE(ids.empty()) << doc;
        const int32_t pick = ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)];
        ASSERT_TRUE(m.accept_token(pick)) << doc;
        if (!m.is_finished()) doc += vocab()->bytes(pick);
      }
      ASSERT_TRUE(m.is_finished()) << "not finished in " << budget << " tokens: " << doc;
      json value;
      ASSERT_NO_THROW(value = json::parse(doc)) << doc;
      EXPECT_TRUE(valid(value, schema, schema)) << doc << "\nschema: " << text;
    }
  }
}
