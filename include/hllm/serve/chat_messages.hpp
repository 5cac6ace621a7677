// The chat half of an OpenAI request: `messages` (with tool calls and tool results in the history),
// `tools` and `tool_choice`, parsed and checked, and rendered into the Llama-3 chat format.
//
// Tools follow Llama-3.1's chat template (Meta's, "tools in the first user message"); Llama-3-8B-
// Instruct has no tool format of its own, so the same one is used for every Llama-3:
//
//   user:       Given the following functions, please respond with a JSON for a function call with
//               its proper arguments that best answers the given prompt.\n\n
//               Respond in the format {"name": function name, "parameters": dictionary of argument
//               name and its value}.Do not use variables.\n\n
//               {tool 1 as JSON, indent 4}\n\n{tool 2 ...}\n\n{the first user message}
//   assistant:  {"name": "get_weather", "parameters": {"city": "Paris"}}     (a call in the history)
//   ipython:    {the tool's result}                                         (role "tool")
//
// JSON inside the prompt is written the way the template's `tojson` (Python's json.dumps) writes it:
// ", " and ": " separators, non-ASCII as is, keys in the client's order (Python dicts keep it; so
// tools and arguments are read as ordered_json). The system message stays where it is.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "hllm/io/json.hpp"
#include "hllm/serve/request_fields.hpp"
#include "hllm/tokenizer/chat.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_MAX_TOOLS
#define HLLM_SERVE_MAX_TOOLS 128  // OpenAI's limit
#endif

// A function the model may call: its name and its parameters' JSON Schema, and the tool object as
// the client sent it (rendered into the prompt as given).
struct Tool {
  std::string name;
  nlohmann::ordered_json parameters;  // a JSON Schema ({} when none), in the client's key order
  std::string definition;  // {"type": "function", "function": {...}} as the prompt shows it
};

enum class ToolChoice { automatic, none, required, named };

// A call the assistant made: what the history carries and what a response returns.
struct ToolCall {
  std::string id;         // "call_..."
  std::string name;       // the function's name
  std::string arguments;  // a JSON object, as text (OpenAI's convention)
};

// One message of the history, as the API has it.
struct ApiMessage {
  std::string role;  // system, user, assistant, tool ("developer" is read as system)
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant only
  std::string tool_call_id;          // tool only
};

// Python's json.dumps(value, ensure_ascii=False, indent=indent) (indent < 0: none, one line), for
// nlohmann::json or ordered_json.
template <class Json>
std::string python_json(const Json& value, int indent = -1, int depth = 0) {
  const auto newline = [&](int level) {
    return indent < 0 ? std::string()
                      : "\n" + std::string(static_cast<size_t>(indent * level), ' ');
  };
  const std::string separator = indent < 0 ? ", " : ",";
  if (value.is_object() && !value.empty()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [key, item] : value.items()) {
      if (!first) out += separator;
      first = false;
      out += newline(depth + 1) +
             Json(key).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": " +
             python_json(item, indent, depth + 1);
    }
    return out + newline(depth) + "}";
  }
  if (value.is_array() && !value.empty()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i)
      out += (i ? separator : "") + newline(depth + 1) + python_json(value[i], indent, depth + 1);
    return out + newline(depth) + "]";
  }
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace detail {

inline std::vector<ToolCall> parse_tool_calls(const nlohmann::json& v, const std::string& p) {
  if (!v.is_array()) bad_field(p, "'" + p + "' must be an array");
  std::vector<ToolCall> calls;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string q = p + "[" + std::to_string(i) + "]";
    const auto& call = v[i];
    if (!call.is_object() || !call.contains("function") || !call["function"].is_object())
      bad_field(q, "'" + q + "' must be an object with a 'function' object");
    if (call.contains("type") && call["type"] != "function")
      bad_field(q + ".type", "'" + q + ".type' must be \"function\"");
    const auto& f = call["function"];
    if (!f.contains("name") || !f["name"].is_string())
      bad_field(q + ".function.name", "'" + q + ".function.name' must be a string");
    ToolCall c;
    c.name = f["name"].get<std::string>();
    if (call.contains("id") && call["id"].is_string()) c.id = call["id"].get<std::string>();
    if (!f.contains("arguments") || f["arguments"].is_null()) {
      c.arguments = "{}";
    } else if (f["arguments"].is_string()) {
      c.arguments = f["arguments"].get<std::string>();
    } else if (f["arguments"].is_object()) {
      c.arguments = f["arguments"].dump();
    } else {
      bad_field(q + ".function.arguments",
                "'" + q + ".function.arguments' must be a JSON object as a string");
    }
    const auto parsed = parse_json(c.arguments);
    if (parsed.is_discarded() || !parsed.is_object())
      bad_field(q + ".function.arguments",
                "'" + q + ".function.arguments' must be a JSON object (as a string)");
    calls.push_back(std::move(c));
  }
  return calls;
}

}  // namespace detail

// `messages`: system/developer, user, assistant (text and/or tool_calls), tool (tool_call_id).
inline std::vector<ApiMessage> parse_messages(const nlohmann::json& messages) {
  using namespace detail;
  if (!messages.is_array() || messages.empty())
    bad_field("messages", "'messages' must be a non-empty array");
  std::vector<ApiMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_field(p, "'" + p + "' must be an object");
    if (!m.contains("role") || !m["role"].is_string())
      bad_field(p + ".role", "'" + p + ".role' must be a string");
    ApiMessage a;
    a.role = m["role"].get<std::string>();
    if (a.role == "developer") a.role = "system";  // OpenAI's newer name for it
    if (a.role != "system" && a.role != "user" && a.role != "assistant" && a.role != "tool")
      bad_field(p + ".role", "'" + p +
                                 ".role' must be system, developer, user, assistant or tool "
                                 "(got \"" +
                                 a.role + "\")");
    a.content =
        message_content(m.contains("content") ? m["content"] : nlohmann::json(), p + ".content");
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (a.role != "assistant")
        bad_field(p + ".tool_calls", "'" + p + ".tool_calls' belongs to assistant messages");
      a.tool_calls = parse_tool_calls(m["tool_calls"], p + ".tool_calls");
      if (a.tool_calls.size() > 1)
        bad_field(p + ".tool_calls", "'" + p +
                                         ".tool_calls': the Llama-3 tool format holds one "
                                         "call per assistant turn (got " +
                                         std::to_string(a.tool_calls.size()) + ")");
    }
    if (a.role == "tool") {
      if (!m.contains("tool_call_id") || !m["tool_call_id"].is_string())
        bad_field(p + ".tool_call_id", "'" + p + ".tool_call_id' must be a string");
      a.tool_call_id = m["tool_call_id"].get<std::string>();
    }
    out.push_back(std::move(a));
  }
  return out;
}

// `tools`: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}].
// `ordered`: the same array read as ordered_json (for the prompt's key order), or null.
inline std::vector<Tool> parse_tools(const nlohmann::json& tools,
                                     const nlohmann::ordered_json* ordered = nullptr) {
  using namespace detail;
  if (!tools.is_array()) bad_field("tools", "'tools' must be an array");
  if (tools.size() > HLLM_SERVE_MAX_TOOLS)
    bad_field("tools", "'tools' holds at most " + std::to_string(HLLM_SERVE_MAX_TOOLS) +
                           " functions (got " + std::to_string(tools.size()) + ")");
  std::vector<Tool> out;
  for (size_t i = 0; i < tools.size(); ++i) {
    const auto& t = tools[i];
    const std::string p = "tools[" + std::to_string(i) + "]";
    if (!t.is_object() || !(t.contains("type") && t["type"] == "function"))
      bad_field(p + ".type", "'" + p + "' must be {\"type\": \"function\", \"function\": {...}}");
    if (!t.contains("function") || !t["function"].is_object())
      bad_field(p + ".function", "'" + p + ".function' must be an object");
    const auto& f = t["function"];
    if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
      bad_field(p + ".function.name", "'" + p + ".function.name' must be a non-empty string");
    Tool tool;
    tool.name = f["name"].get<std::string>();
    for (const Tool& other : out)
      if (other.name == tool.name)
        bad_field(p + ".function.name", "two tools are named \"" + tool.name + "\"");
    const nlohmann::ordered_json as_given =
        ordered != nullptr && ordered->is_array() && ordered->size() == tools.size()
            ? (*ordered)[i]
            : nlohmann::ordered_json::parse(t.dump());
    tool.parameters = nlohmann::ordered_json::object();
    if (f.contains("parameters") && !f["parameters"].is_null()) {
      if (!f["parameters"].is_object())
        bad_field(p + ".function.parameters",
                  "'" + p + ".function.parameters' must be a JSON Schema object");
      tool.parameters = as_given["function"]["parameters"];
    }
    tool.definition = python_json(as_given, 4);
    out.push_back(std::move(tool));
  }
  return out;
}

// `tool_choice`: "auto", "none", "required", or {"type": "function", "function": {"name"}}.
// Returns the choice and, for a named one, the name (checked against `tools`).
inline std::pair<ToolChoice, std::string> parse_tool_choice(const nlohmann::json& v,
                                                            const std::vector<Tool>& tools) {
  using namespace detail;
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "none") return {ToolChoice::none, ""};
    if (s == "auto") return {ToolChoice::automatic, ""};
    if (s == "required") {
      if (tools.empty()) bad_field("tool_choice", "'tool_choice' is \"required\" but no tools");
      return {ToolChoice::required, ""};
    }
    bad_field("tool_choice",
              "'tool_choice' must be \"none\", \"auto\", \"required\" or a "
              "function (got \"" +
                  s + "\")");
  }
  if (!v.is_object() || !v.contains("function") || !v["function"].is_object() ||
      !v["function"].contains("name") || !v["function"]["name"].is_string())
    bad_field(
        "tool_choice",
        "'tool_choice' must be a string or {\"type\": \"function\", \"function\": {\"name\"}}");
  const std::string name = v["function"]["name"].get<std::string>();
  for (const Tool& t : tools)
    if (t.name == name) return {ToolChoice::named, name};
  bad_field("tool_choice", "'tool_choice' names \"" + name + "\", which is not among 'tools'");
}

// The assistant text that stands for a call in the prompt (and that the model is asked to write).
inline std::string tool_call_text(const ToolCall& call) {
  return "{\"name\": " + python_json(nlohmann::json(call.name)) +
         ", \"parameters\": " + python_json(parse_json<nlohmann::ordered_json>(call.arguments)) +
         "}";
}

// The history in the Llama-3 chat format, with the tools in the first user message (see the top)
// when `with_tools`.
inline std::vector<ChatMessage> chat_messages(const std::vector<ApiMessage>& messages,
                                              const std::vector<Tool>& tools, bool with_tools) {
  std::vector<ChatMessage> out;
  bool tools_written = !with_tools || tools.empty();
  for (const ApiMessage& m : messages) {
    if (m.role == "tool") {
      out.push_back({"ipython", m.content});
    } else if (!m.tool_calls.empty()) {
      out.push_back({"assistant", tool_call_text(m.tool_calls.front())});
    } else if (m.role == "user" && !tools_written) {
      std::string text =
          "Given the following functions, please respond with a JSON for a function call with its "
          "proper arguments that best answers the given prompt.\n\n"
          "Respond in the format {\"name\": function name, \"parameters\": dictionary of argument "
          "name and its value}.Do not use variables.\n\n";
      for (const Tool& t : tools) text += t.definition + "\n\n";
      out.push_back({"user", text + std::string(python_strip(m.content))});
      tools_written = true;
    } else {
      out.push_back({m.role, m.content});
    }
  }
  if (!tools_written)  // no user message to carry them: a user turn of their own
    detail::bad_field("messages", "'tools' need a user message to go with (Llama-3's tool format)");
  return out;
}

}  // namespace hllm::serve
