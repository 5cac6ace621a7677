// The model's side of a tool call: the schema a forced call must match (tool_choice "required" or
// a named function) and reading a call back out of the generated text.
//
// The model is asked (serve/chat_messages.hpp) to answer a call as one JSON object,
//   {"name": "get_weather", "parameters": {"city": "Paris"}}
// and "arguments" is read as a synonym of "parameters" (models trained on OpenAI's format write it).
// Anything else is text: an answer that is not exactly one such object naming one of the tools is
// returned as content, unchanged.
#pragma once

#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/serve/chat_messages.hpp"

namespace hllm::serve {

// The JSON Schema of a call to `name` (or, when empty, to any of `tools`).
inline nlohmann::ordered_json tool_call_schema(const std::vector<Tool>& tools,
                                               const std::string& name) {
  using Json = nlohmann::ordered_json;
  const auto one = [](const Tool& t) {
    Json parameters = t.parameters;
    if (parameters.empty()) parameters = {{"type", "object"}, {"properties", Json::object()}};
    return Json{{"type", "object"},
                {"properties", {{"name", {{"const", t.name}}}, {"parameters", parameters}}},
                {"required", {"name", "parameters"}},
                {"additionalProperties", false}};
  };
  Json any_of = Json::array();
  for (const Tool& t : tools)
    if (name.empty() || t.name == name) any_of.push_back(one(t));
  return any_of.size() == 1 ? any_of[0] : Json{{"anyOf", any_of}};
}

// A fresh call id in OpenAI's style ("call_" + 24 alphanumerics).
inline std::string tool_call_id() {
  static constexpr char ALPHABET[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += ALPHABET[rng() % (sizeof ALPHABET - 1)];
  return id;
}

// The call `text` spells, or nullopt when it is text (see the top).
inline std::optional<ToolCall> parse_tool_call(std::string_view text,
                                               const std::vector<Tool>& tools) {
  const auto parsed = parse_json(text);
  if (parsed.is_discarded() || !parsed.is_object() || !parsed.contains("name") ||
      !parsed["name"].is_string())
    return std::nullopt;
  const nlohmann::json* arguments = nullptr;
  for (const char* key : {"parameters", "arguments"})
    if (parsed.contains(key) && parsed[key].is_object()) arguments = &parsed[key];
  if (arguments == nullptr || parsed.size() != 2) return std::nullopt;
  const std::string name = parsed["name"].get<std::string>();
  for (const Tool& t : tools)
    if (t.name == name)
      return ToolCall{tool_call_id(), name,
                      arguments->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  return std::nullopt;
}

// While streaming with tool_choice "auto": could the answer so far still turn out to be a call?
// (Only whitespace yet, or a '{' first.) Such text is held back until it is decided.
inline bool may_become_tool_call(std::string_view text) {
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    return c == '{';
  }
  return true;
}

}  // namespace hllm::serve
