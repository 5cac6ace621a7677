// JSON Schema -> Grammar (structured outputs, tool calls): the subset OpenAI's strict structured
// outputs allow, plus what zod-to-json-schema and pydantic emit. The only grammar header that
// includes nlohmann/json.
//
//   type            object, array, string, number, integer, boolean, null, or an array of them
//   properties      emitted in the SCHEMA'S order; pass an nlohmann::ordered_json for that (a plain
//                   nlohmann::json has already sorted its keys alphabetically)
//   required        the others are optional: each may be omitted
//   additionalProperties  false or ABSENT: only the listed properties (absent is read as false,
//                   as OpenAI strict mode does). true or a schema: only without 'properties', for a
//                   map whose every value matches it
//   items, minItems, maxItems, enum, const, anyOf / oneOf (as alternatives), nullable,
//   $defs / definitions + $ref ("#/$defs/x", "#/definitions/x", "#"; recursion allowed),
//   minLength / maxLength (in characters: code points or escapes; with a maxLength only those of
//                   the BMP, so that JavaScript's UTF-16 count agrees, JsonRules::string)
//   {} and true     any JSON value
//
// Annotations (title, description, $schema, $id, default, examples, $comment, deprecated,
// readOnly, writeOnly) are ignored. Every other keyword (pattern, format, minimum, allOf, not, ...)
// is an Error naming it and its schema path, e.g. "#/properties/age: 'format' is not supported" —
// never silently dropped. Without 'type', the keywords present say which type is meant
// (properties -> object, items -> array, minLength -> string); with none of them, any value.
//
// The output is COMPACT JSON: no whitespace between tokens (a random-weight model would never stop
// emitting it). Strings: any JSON string content: escapes \" \\ \/ \b \f \n \r \t \uXXXX (a
// surrogate escape only as a high-low pair), no raw control characters, any valid UTF-8.
// Numbers are bounded so that random generation ends: at most 15 integer digits, 15 fraction
// digits and an exponent of at most 3 digits, at most 293 (so that every number fits a double:
// 999999999999999e293 < 1.8e308; JSON parsers refuse larger ones):
//
//   number   -?(0|[1-9][0-9]{0,14})(\.[0-9]{1,15})?([eE][-+]?exp)?
//            exp = [0-9]{1,2} | [01][0-9][0-9] | 2[0-8][0-9] | 29[0-3]
//   integer  -?(0|[1-9][0-9]{0,14})
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/grammar/grammar.hpp"

namespace hllm::grammar {

namespace detail {

// The rules every JSON grammar shares, made on first use.
class JsonRules {
 public:
  explicit JsonRules(GrammarBuilder& b) : b_(b) {}

  // One JSON string character: a code point or an escape. BMP: only those that are one UTF-16
  // code unit (no code point above U+FFFF, no surrogate-pair escape), see string().
  Element string_char(bool bmp = false) {
    std::optional<Element>& cached = bmp ? bmp_char_ : char_;
    if (!cached) {
      const uint32_t r = b_.rule(bmp ? "json_bmp_char" : "json_char");
      const auto cls = [&](char lo, char hi) {
        ByteSet s;
        s.add(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi));
        return b_.bytes(s);
      };
      ByteSet simple_escape;
      for (const char c : std::string_view("\"\\/bfnrt")) simple_escape.add(c, c);
      ByteSet hex;
      hex.add('0', '9');
      hex.add('a', 'f');
      hex.add('A', 'F');
      ByteSet hex_not_d;  // a first hex digit that does not start a surrogate (D800-DFFF)
      hex_not_d.add('0', '9');
      hex_not_d.add('a', 'c');
      hex_not_d.add('A', 'C');
      hex_not_d.add('e', 'f');
      hex_not_d.add('E', 'F');
      ByteSet d, high, low;
      d.add('d', 'd');
      d.add('D', 'D');
      high.add('8', '9');
      high.add('a', 'b');
      high.add('A', 'B');
      low.add('c', 'f');
      low.add('C', 'F');
      const Element h = b_.bytes(hex);
      const Element bs = b_.byte('\\');
      const Element u = b_.byte('u');
      std::vector<Sequence> alternatives = {
          {b_.code_points({{0x20, 0x21}, {0x23, 0x5B}, {0x5D, bmp ? 0xFFFF : MAX_CODE_POINT}})},
          {bs, b_.bytes(simple_escape)},
          {bs, u, b_.bytes(hex_not_d), h, h, h},
          {bs, u, b_.bytes(d), cls('0', '7'), h, h}};
      if (!bmp)
        alternatives.push_back(
            {bs, u, b_.bytes(d), b_.bytes(high), h, h, bs, u, b_.bytes(d), b_.bytes(low), h, h});
      b_.define(r, alternatives);
      cached = GrammarBuilder::ref(r);
    }
    return *cached;
  }

  // A string of min..max characters. JSON Schema counts code points, JavaScript validators (zod)
  // UTF-16 code units, so one above U+FFFF is 1 character to one and 2 to the other: with a
  // maxLength the characters are kept to the BMP, where both counts agree (a minLength alone
  // holds under both counts whatever the characters).
  Element string(uint32_t min = 0, uint32_t max = GrammarBuilder::UNBOUNDED) {
    const bool plain = min == 0 && max == GrammarBuilder::UNBOUNDED;
    if (plain && string_) return *string_;
    const Element quote = b_.byte('"');
    const uint32_t r = b_.fresh_rule("json_string");
    const Element c = string_char(max != GrammarBuilder::UNBOUNDED);
    b_.define(r, {{quote, b_.repeat({c}, min, max, "json_chars"), quote}});
    if (plain) string_ = GrammarBuilder::ref(r);
    return GrammarBuilder::ref(r);
  }

  Element integer() {
    if (!integer_) {
      ByteSet digit, nonzero;
      digit.add('0', '9');
      nonzero.add('1', '9');
      const uint32_t r = b_.rule("json_integer");
      const Element magnitude = b_.wrap(
          {b_.bytes(nonzero), b_.repeat({b_.bytes(digit)}, 0, 14, "json_digits")}, "json_int");
      const uint32_t unsigned_int = b_.fresh_rule("json_uint");
      b_.define(unsigned_int, {{b_.byte('0')}, {magnitude}});
      b_.define(
          r, {{b_.repeat({b_.byte('-')}, 0, 1, "json_sign"), GrammarBuilder::ref(unsigned_int)}});
      integer_ = GrammarBuilder::ref(r);
    }
    return *integer_;
  }

  Element number() {
    if (!number_) {
      ByteSet digit, e, sign;
      digit.add('0', '9');
      e.add('e', 'e');
      e.add('E', 'E');
      sign.add('-', '-');
      sign.add('+', '+');
      const Element fraction = b_.wrap(
          {b_.byte('.'), b_.repeat({b_.bytes(digit)}, 1, 15, "json_fraction")}, "json_frac");
      const auto range = [&](char lo, char hi) {
        ByteSet s;
        s.add(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi));
        return b_.bytes(s);
      };
      const Element d = b_.bytes(digit);
      const uint32_t exp_value = b_.fresh_rule("json_exp_value");
      b_.define(exp_value, {{b_.repeat({d}, 1, 2, "json_exp_digits")},
                            {range('0', '1'), d, d},
                            {b_.byte('2'), range('0', '8'), d},
                            {b_.byte('2'), b_.byte('9'), range('0', '3')}});
      const Element exponent =
          b_.wrap({b_.bytes(e), b_.repeat({b_.bytes(sign)}, 0, 1, "json_exp_sign"),
                   GrammarBuilder::ref(exp_value)},
                  "json_exp");
      const uint32_t r = b_.rule("json_number");
      b_.define(r, {{integer(), b_.repeat({fraction}, 0, 1, "json_frac_opt"),
                     b_.repeat({exponent}, 0, 1, "json_exp_opt")}});
      number_ = GrammarBuilder::ref(r);
    }
    return *number_;
  }

  // "{" (key ":" value ("," key ":" value)*)? "}" with every value matching `value`.
  Element map(Element value) {
    const uint32_t r = b_.fresh_rule("json_map");
    Sequence pair{string(), b_.byte(':'), value};
    Sequence more{b_.byte(',')};
    more.insert(more.end(), pair.begin(), pair.end());
    pair.push_back(b_.repeat(more, 0, GrammarBuilder::UNBOUNDED, "json_pairs"));
    b_.define(r, {{b_.byte('{'), b_.repeat(pair, 0, 1, "json_map_body"), b_.byte('}')}});
    return GrammarBuilder::ref(r);
  }

  // "[" item ("," item){min-1,max-1} "]", or "[]" when min is 0.
  Element array(Element item, uint32_t min = 0, uint32_t max = GrammarBuilder::UNBOUNDED) {
    const uint32_t r = b_.fresh_rule("json_array");
    const Element open = b_.byte('['), close = b_.byte(']');
    if (max == 0) {
      b_.define(r, {{open, close}});
      return GrammarBuilder::ref(r);
    }
    const uint32_t more_max = max == GrammarBuilder::UNBOUNDED ? max : max - 1;
    Sequence body{item,
                  b_.repeat({b_.byte(','), item}, min == 0 ? 0 : min - 1, more_max, "json_items")};
    if (min == 0) {
      b_.define(r, {{open, b_.repeat(body, 0, 1, "json_array_body"), close}});
    } else {
      body.insert(body.begin(), open);
      body.push_back(close);
      b_.define(r, {body});
    }
    return GrammarBuilder::ref(r);
  }

  // Any JSON value.
  Element value() {
    if (!value_) {
      const uint32_t r = b_.rule("json_value");
      value_ = GrammarBuilder::ref(r);
      b_.define(r, {{map(*value_)},
                    {array(*value_)},
                    {string()},
                    {number()},
                    b_.literal("true"),
                    b_.literal("false"),
                    b_.literal("null")});
    }
    return *value_;
  }

 private:
  GrammarBuilder& b_;
  std::optional<Element> char_, bmp_char_, string_, integer_, number_, value_;
};

template <typename Json>
class SchemaCompiler {
 public:
  explicit SchemaCompiler(const Json& root) : root_(root), json_(builder_) {}

  Grammar compile() {
    const uint32_t root = builder_.rule("root");
    builder_.define(root, {{schema(root_, "#")}});
    return builder_.build(root);
  }

 private:
  template <typename... Parts>
  [[noreturn]] static void error(const std::string& path, Parts&&... parts) {
    fail(path, ": ", std::forward<Parts>(parts)...);
  }

  static bool is_annotation(std::string_view key) {
    for (const std::string_view a :
         {"title", "description", "$schema", "$id", "default", "examples", "$comment", "deprecated",
          "readOnly", "writeOnly"}) {
      if (key == a) return true;
    }
    return false;
  }
  static bool is_supported(std::string_view key) {
    for (const std::string_view k :
         {"type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
          "enum", "const", "anyOf", "oneOf", "$defs", "definitions", "$ref", "minLength",
          "maxLength", "nullable"}) {
      if (key == k) return true;
    }
    return false;
  }

  static std::string child(const std::string& path, std::string_view key) {
    std::string out = path + "/";
    for (const char c : key) {  // JSON pointer escapes
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
    return out;
  }

  static uint32_t count(const Json& s, const char* key, const std::string& path, uint32_t absent) {
    if (!s.contains(key)) return absent;
    const Json& v = s[key];
    if (!v.is_number_integer() || v.template get<int64_t>() < 0) {
      error(path, "'", key, "' must be a non-negative integer");
    }
    if (v.template get<int64_t>() > GrammarBuilder::MAX_REPEAT) {
      error(path, "'", key, "' over ", GrammarBuilder::MAX_REPEAT, " is not supported");
    }
    return static_cast<uint32_t>(v.template get<int64_t>());
  }

  // One rule whose alternatives are `alts` (or the one element itself).
  Element one_of(std::vector<Sequence> alts, const std::string& path) {
    if (alts.size() == 1 && alts[0].size() == 1) return alts[0][0];
    const uint32_t r = builder_.fresh_rule(path);
    builder_.define(r, std::move(alts));
    return GrammarBuilder::ref(r);
  }

  Sequence literal(const Json& value) { return builder_.literal(value.dump()); }

  Element schema(const Json& s, const std::string& path) {
    if (s.is_boolean()) {
      if (!s.template get<bool>()) error(path, "the schema 'false' matches nothing");
      return json_.value();
    }
    if (!s.is_object()) error(path, "a schema must be an object or a boolean");
    bool constraining = false;  // any keyword besides annotations and definitions
    for (auto it = s.begin(); it != s.end(); ++it) {
      const std::string& key = it.key();
      if (is_annotation(key)) continue;
      if (!is_supported(key)) error(path, "'", key, "' is not supported");
      if (key != "$defs" && key != "definitions") constraining = true;
    }
    const bool nullable = s.contains("nullable") && s["nullable"] == true;
    std::vector<Sequence> alts;
    if (s.contains("$ref")) {
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (is_supported(it.key()) && it.key() != "$ref" && it.key() != "$defs" &&
            it.key() != "definitions" && it.key() != "nullable") {
          error(path, "'", it.key(), "' beside '$ref' is not supported");
        }
      }
      alts.push_back({reference(s["$ref"], path)});
    } else if (s.contains("anyOf") || s.contains("oneOf")) {
      const char* key = s.contains("anyOf") ? "anyOf" : "oneOf";
      for (auto it = s.begin(); it != s.end(); ++it) {
        if (is_supported(it.key()) && it.key() != key && it.key() != "$defs" &&
            it.key() != "definitions" && it.key() != "nullable") {
          error(path, "'", it.key(), "' beside '", key, "' is not supported");
        }
      }
      const Json& list = s[key];
      if (!list.is_array() || list.empty()) error(path, "'", key, "' must be a non-empty array");
      for (size_t i = 0; i < list.size(); ++i) {
        alts.push_back({schema(list[i], child(child(path, key), std::to_string(i)))});
      }
    } else if (s.contains("const")) {
      alts.push_back(literal(s["const"]));
    } else if (s.contains("enum")) {
      const Json& list = s["enum"];
      if (!list.is_array() || list.empty()) error(path, "'enum' must be a non-empty array");
      for (const Json& v : list) alts.push_back(literal(v));
    } else if (!constraining) {
      return json_.value();
    } else {
      for (const std::string& type : types(s, path)) alts.push_back({typed(type, s, path)});
    }
    if (nullable) alts.push_back(builder_.literal("null"));
    return one_of(std::move(alts), path);
  }

  std::vector<std::string> types(const Json& s, const std::string& path) {
    std::vector<std::string> out;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) out.push_back(t.template get<std::string>());
      if (t.is_array()) {
        for (const Json& x : t) {
          if (!x.is_string()) error(path, "'type' must be a string or an array of strings");
          out.push_back(x.template get<std::string>());
        }
      }
      if (out.empty()) error(path, "'type' must be a string or a non-empty array of strings");
      return out;
    }
    for (const char* k : {"properties", "required", "additionalProperties"}) {
      if (s.contains(k)) return {"object"};
    }
    for (const char* k : {"items", "minItems", "maxItems"}) {
      if (s.contains(k)) return {"array"};
    }
    for (const char* k : {"minLength", "maxLength"}) {
      if (s.contains(k)) return {"string"};
    }
    return {"any"};
  }

  Element typed(const std::string& type, const Json& s, const std::string& path) {
    if (type == "string") {
      const uint32_t min = count(s, "minLength", path, 0);
      const uint32_t max = count(s, "maxLength", path, GrammarBuilder::UNBOUNDED);
      if (max < min) error(path, "'maxLength' is less than 'minLength'");
      return json_.string(min, max);
    }
    if (type == "number") return json_.number();
    if (type == "integer") return json_.integer();
    if (type == "boolean")
      return one_of({builder_.literal("true"), builder_.literal("false")}, path);
    if (type == "null") return one_of({builder_.literal("null")}, path);
    if (type == "array") {
      const uint32_t min = count(s, "minItems", path, 0);
      const uint32_t max = count(s, "maxItems", path, GrammarBuilder::UNBOUNDED);
      if (max < min) error(path, "'maxItems' is less than 'minItems'");
      if (s.contains("items") && s["items"].is_array()) {
        error(child(path, "items"), "tuple 'items' (an array of schemas) is not supported");
      }
      const Element item =
          s.contains("items") ? schema(s["items"], child(path, "items")) : json_.value();
      return json_.array(item, min, max);
    }
    if (type == "object") return object(s, path);
    if (type == "any") return json_.value();
    error(path, "'type' '", type,
          "' is not one of object, array, string, number, integer, boolean, null");
  }

  // "{" then the properties in order, each optional one possibly skipped, commas between.
  //   rest(i, some): properties i.. after `some` properties were written (some: a comma first)
  Element object(const Json& s, const std::string& path) {
    const bool has_properties = s.contains("properties");
    const Json empty = Json::object();
    const Json& props = has_properties ? s["properties"] : empty;
    if (!props.is_object()) error(path, "'properties' must be an object");
    if (s.contains("additionalProperties")) {
      const Json& extra = s["additionalProperties"];
      if (!extra.is_boolean() && !extra.is_object()) {
        error(path, "'additionalProperties' must be a boolean or a schema");
      }
      if (extra != false) {
        if (!props.empty()) {
          error(path,
                "'additionalProperties' other than false beside 'properties' is not supported");
        }
        return json_.map(schema(extra, child(path, "additionalProperties")));
      }
    }
    std::vector<bool> required;
    std::vector<Sequence> pairs;  // "\"key\":" value, per property in order
    for (auto it = props.begin(); it != props.end(); ++it) {
      Sequence pair = builder_.literal(Json(it.key()).dump() + ":");
      pair.push_back(schema(it.value(), child(child(path, "properties"), it.key())));
      pairs.push_back(std::move(pair));
      required.push_back(false);
    }
    if (s.contains("required")) {
      const Json& req = s["required"];
      if (!req.is_array()) error(path, "'required' must be an array of property names");
      for (const Json& name : req) {
        if (!name.is_string()) error(path, "'required' must be an array of property names");
        size_t k = 0;
        for (auto it = props.begin(); it != props.end() && it.key() != name; ++it) ++k;
        if (k == pairs.size()) {
          error(path, "'required' names '", name.template get<std::string>(),
                "', which is not in 'properties'");
        }
        required[k] = true;
      }
    }
    // rest[i][some]: the rule for properties i.., built from the last one back.
    const size_t n = pairs.size();
    std::vector<std::array<Element, 2>> rest(n + 1);
    for (const bool some : {false, true}) {
      const uint32_t r = builder_.fresh_rule(path);
      builder_.define(r, {{}});
      rest[n][some] = GrammarBuilder::ref(r);
    }
    for (size_t i = n; i-- > 0;) {
      for (const bool some : {false, true}) {
        Sequence write;
        if (some) write.push_back(builder_.byte(','));
        write.insert(write.end(), pairs[i].begin(), pairs[i].end());
        write.push_back(rest[i + 1][true]);
        std::vector<Sequence> alts{std::move(write)};
        if (!required[i]) alts.push_back({rest[i + 1][some]});
        const uint32_t r = builder_.fresh_rule(path);
        builder_.define(r, std::move(alts));
        rest[i][some] = GrammarBuilder::ref(r);
      }
    }
    const uint32_t r = builder_.fresh_rule(path);
    builder_.define(r, {{builder_.byte('{'), rest[0][false], builder_.byte('}')}});
    return GrammarBuilder::ref(r);
  }

  Element reference(const Json& ref, const std::string& path) {
    if (!ref.is_string()) error(path, "'$ref' must be a string");
    const std::string target = ref.template get<std::string>();
    if (const auto it = refs_.find(target); it != refs_.end())
      return GrammarBuilder::ref(it->second);
    if (target.empty() || target[0] != '#') {
      error(path, "'$ref' '", target, "' is not supported (only local references: '#...')");
    }
    const Json* resolved = nullptr;
    try {
      const typename Json::json_pointer pointer(target.substr(1));
      if (root_.contains(pointer)) resolved = &root_.at(pointer);
    } catch (const nlohmann::json::exception&) {
    }
    if (resolved == nullptr) error(path, "'$ref' '", target, "' does not resolve in this schema");
    const uint32_t r = builder_.rule(target);
    refs_.emplace(target, r);
    builder_.define(r, {{schema(*resolved, target)}});
    return GrammarBuilder::ref(r);
  }

  const Json& root_;
  GrammarBuilder builder_;
  JsonRules json_;
  std::map<std::string, uint32_t> refs_;  // "$ref" target -> its rule
};

}  // namespace detail

// The grammar of JSON documents that satisfy `schema` (see the top of this file). Grammar and parse_gbnf come with
// this header (grammar.hpp). A plain
// nlohmann::json orders properties alphabetically; an ordered_json keeps the schema's order.
inline Grammar json_schema_grammar(const nlohmann::json& schema) {
  return detail::SchemaCompiler<nlohmann::json>(schema).compile();
}
inline Grammar json_schema_grammar(const nlohmann::ordered_json& schema) {
  return detail::SchemaCompiler<nlohmann::ordered_json>(schema).compile();
}

// Any JSON object (response_format {"type": "json_object"}), values nested freely, compact.
inline Grammar json_object_grammar() {
  GrammarBuilder builder;
  detail::JsonRules json(builder);
  const uint32_t root = builder.rule("root");
  builder.define(root, {{json.map(json.value())}});
  return builder.build(root);
}

}  // namespace hllm::grammar
