// What shape the output must take, from a request: OpenAI's `response_format` (text, json_object,
// json_schema) and the extensions vLLM and llama.cpp's server accept (`guided_json`,
// `guided_grammar`, `grammar`, `json_schema`). Parsing only: the grammar is compiled where the
// tokenizer is known (serve/constrained.hpp).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "hllm/serve/request_fields.hpp"

namespace hllm::serve {

struct ResponseFormat {
  enum class Kind { text, json_object, json_schema, grammar };
  Kind kind = Kind::text;
  nlohmann::ordered_json schema;  // json_schema, keys in the client's order (properties are
                                  // generated in it)
  std::string grammar;            // grammar: GBNF text
  std::string param;  // the field it came from, for errors ("response_format", "grammar", ...)
  bool constrained() const { return kind != Kind::text; }
};

namespace detail {

inline ResponseFormat schema_format(const nlohmann::ordered_json& schema,
                                    const std::string& param) {
  if (!schema.is_object() && !schema.is_boolean())
    bad_field(param, "'" + param + "' must be a JSON Schema object");
  return {ResponseFormat::Kind::json_schema, schema, "", param};
}

inline ResponseFormat openai_response_format(const nlohmann::ordered_json& v) {
  if (!v.is_object() || !v.contains("type") || !v["type"].is_string())
    bad_field("response_format", "'response_format' must be an object with a 'type'");
  const std::string type = v["type"].get<std::string>();
  if (type == "text") return {};
  if (type == "json_object") return {ResponseFormat::Kind::json_object, {}, "", "response_format"};
  if (type != "json_schema")
    bad_field("response_format.type",
              "'response_format.type' must be text, json_object or "
              "json_schema (got \"" +
                  type + "\")");
  if (!v.contains("json_schema") || !v["json_schema"].is_object())
    bad_field("response_format.json_schema",
              "'response_format.json_schema' must be an object "
              "with a 'schema'");
  const auto& js = v["json_schema"];
  if (!js.contains("schema"))
    bad_field("response_format.json_schema.schema",
              "'response_format.json_schema.schema' is required");
  return schema_format(js["schema"], "response_format.json_schema.schema");
}

}  // namespace detail

// The one output constraint of `body` (text when none). Two at once is a 400.
inline ResponseFormat parse_response_format(const nlohmann::ordered_json& body) {
  using namespace detail;
  ResponseFormat format;
  const auto set = [&](ResponseFormat f, const char* name) {
    if (format.constrained() && f.constrained())
      bad_field(name, std::string("'") + name + "' and '" + format.param +
                          "' both constrain the output: give one");
    if (f.constrained()) format = std::move(f);
  };
  const auto field = [&](const char* name) -> const nlohmann::ordered_json* {
    const auto it = body.find(name);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* v = field("response_format")) set(openai_response_format(*v), "response_format");
  for (const char* name : {"guided_json", "json_schema"})
    if (const auto* v = field(name)) {
      nlohmann::ordered_json schema = *v;
      if (schema.is_string()) {  // vLLM accepts the schema as a JSON string too
        schema = parse_json<nlohmann::ordered_json>(v->get<std::string>());
        if (schema.is_discarded()) bad_field(name, std::string("'") + name + "' is not valid JSON");
      }
      set(schema_format(schema, name), name);
    }
  for (const char* name : {"guided_grammar", "grammar"})
    if (const auto* v = field(name)) {
      if (!v->is_string() || v->get_ref<const std::string&>().empty())
        bad_field(name, std::string("'") + name + "' must be a non-empty GBNF grammar string");
      set({ResponseFormat::Kind::grammar, {}, v->get<std::string>(), name}, name);
    }
  return format;
}

}  // namespace hllm::serve
