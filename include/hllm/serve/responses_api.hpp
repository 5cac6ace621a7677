// POST /v1/responses — OpenAI's Responses API, what the Vercel AI SDK's default provider and
// `client.responses.create` call: text in and out, `instructions`, function tools (calls and their
// outputs in `input`), `text.format` (structured outputs), streaming as typed events. Responses are
// kept in memory (serve/response_store.hpp; store: false opts out), so a request may continue one
// (previous_response_id) or point at its items (item_reference).
//
// The request is read by translating it into the chat-completions request it means and parsing
// that with the same checks (errors are renamed to the Responses fields: input, max_output_tokens,
// text.format, tools[i].name ...); the answer is written by ResponsesWriter from the same choice
// output as chat completions.
//
//   stream:  response.created, response.in_progress,
//            text:  response.output_item.added (message), response.content_part.added,
//                   response.output_text.delta ..., response.output_text.done,
//                   response.content_part.done, response.output_item.done
//            call:  response.output_item.added (function_call), response.function_call_arguments
//                   .delta, response.function_call_arguments.done, response.output_item.done
//            response.completed (or response.incomplete: max_output_tokens; response.failed)
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "hllm/serve/completion_run.hpp"
#include "hllm/serve/completions_writer.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/serve/response_store.hpp"

namespace hllm::serve {

namespace detail {

// One `input` item as chat messages (appended to `messages`).
inline void input_item(const nlohmann::ordered_json& item, const std::string& p,
                       nlohmann::ordered_json& messages) {
  const std::string type = item.value("type", item.contains("role") ? "message" : "");
  if (type == "function_call") {
    for (const char* key : {"call_id", "name", "arguments"})
      if (!item.contains(key) || !item[key].is_string())
        bad_field(p + "." + key, "'" + p + "." + key + "' must be a string");
    messages.push_back(
        {{"role", "assistant"},
         {"content", nullptr},
         {"tool_calls",
          {{{"id", item["call_id"]},
            {"type", "function"},
            {"function", {{"name", item["name"]}, {"arguments", item["arguments"]}}}}}}});
    return;
  }
  if (type == "function_call_output") {
    if (!item.contains("call_id") || !item["call_id"].is_string())
      bad_field(p + ".call_id", "'" + p + ".call_id' must be a string");
    const auto& output = item.contains("output") ? item["output"] : nlohmann::ordered_json("");
    messages.push_back(
        {{"role", "tool"},
         {"tool_call_id", item["call_id"]},
         {"content", output.is_string() ? output.get<std::string>() : output.dump()}});
    return;
  }
  if (type != "message")
    bad_field(p + ".type", "'" + p +
                               ".type' must be message, function_call, function_call_output "
                               "or item_reference (got \"" +
                               type + "\")");
  if (!item.contains("role") || !item["role"].is_string())
    bad_field(p + ".role", "'" + p + ".role' must be a string");
  nlohmann::ordered_json content = item.contains("content") ? item["content"] : "";
  if (content.is_array())  // input_text / output_text parts: chat's text parts
    for (auto& part : content) {
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) continue;
      const std::string t = part["type"].get<std::string>();
      if (t == "input_text" || t == "output_text") part["type"] = "text";
    }
  messages.push_back({{"role", item["role"]}, {"content", content}});
}

// A chat-completions error's field, named as the Responses API names it.
inline std::string responses_param(std::string param) {
  const auto rename = [&](std::string_view from, std::string_view to) {
    if (param.rfind(from, 0) == 0) param = std::string(to) + param.substr(from.size());
  };
  rename("messages", "input");
  rename("max_tokens", "max_output_tokens");
  rename("response_format.json_schema.schema", "text.format.schema");
  rename("response_format", "text.format");
  if (param.rfind("tools[", 0) == 0) {
    const size_t at = param.find("].function");
    if (at != std::string::npos) param.erase(at + 1, std::string_view(".function").size());
  }
  return param;
}

}  // namespace detail

// A /v1/responses body, read: the chat-completions request it means, and the conversation so far
// (previous response's items, then this input, references resolved) to store with the answer.
struct ResponsesInput {
  CompletionRequest request;
  nlohmann::ordered_json items = nlohmann::ordered_json::array();
  bool store = true;
};

// `body` read with key order kept; `store` resolves previous_response_id and item references.
inline ResponsesInput parse_responses_request(const nlohmann::ordered_json& body,
                                              const ResponseStore& store) {
  using namespace detail;
  if (!body.is_object()) bad_field("", "the request body must be a JSON object");
  ResponsesInput in;
  nlohmann::ordered_json chat = nlohmann::ordered_json::object();
  const auto field = [&](const char* name) -> const nlohmann::ordered_json* {
    const auto it = body.find(name);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* v = field("store")) {
    if (!v->is_boolean()) bad_field("store", "'store' must be a boolean");
    in.store = v->get<bool>();
  }
  if (const auto* v = field("previous_response_id")) {
    const auto previous = v->is_string() ? store.conversation(v->get<std::string>()) : std::nullopt;
    if (!previous)
      throw ApiError{404,
                     "no stored response " + describe_json(nlohmann::json::parse(v->dump())) +
                         " (responses are kept in memory, the last " +
                         std::to_string(HLLM_SERVE_STORED_RESPONSES) + ", until a restart)",
                     "previous_response_id", "not_found"};
    in.items = *previous;
  }
  for (const char* name : {"reasoning", "top_logprobs", "prompt", "conversation", "background"})
    if (field(name) != nullptr)
      bad_field(name, std::string("'") + name + "' is not supported by this server");
  if (const auto* v = field("include"); v != nullptr && (!v->is_array() || !v->empty()))
    bad_field("include", "'include' lists nothing this server can add");

  const auto* input = field("input");
  if (input == nullptr) bad_field("input", "'input' is required");
  if (input->is_string()) {
    in.items.push_back({{"role", "user"}, {"content", *input}});
  } else if (input->is_array()) {
    for (size_t i = 0; i < input->size(); ++i) {
      const auto& item = (*input)[i];
      const std::string p = "input[" + std::to_string(i) + "]";
      if (!item.is_object()) bad_field(p, "'" + p + "' must be an object");
      if (!(item.contains("type") && item["type"] == "item_reference")) {
        in.items.push_back(item);
        continue;
      }
      const auto found = item.contains("id") && item["id"].is_string()
                             ? store.item(item["id"].get<std::string>())
                             : std::nullopt;
      if (!found)
        throw ApiError{404, "'" + p + "' refers to no stored item", p + ".id", "not_found"};
      in.items.push_back(*found);
    }
  } else {
    bad_field("input", "'input' must be a string or an array of items");
  }
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (const auto* v = field("instructions")) {
    if (!v->is_string()) bad_field("instructions", "'instructions' must be a string");
    messages.push_back({{"role", "system"}, {"content", *v}});
  }
  for (size_t i = 0; i < in.items.size(); ++i)
    input_item(in.items[i], "input[" + std::to_string(i) + "]", messages);
  chat["messages"] = std::move(messages);

  if (const auto* v = field("tools")) {
    if (!v->is_array()) bad_field("tools", "'tools' must be an array");
    nlohmann::ordered_json tools = nlohmann::ordered_json::array();
    for (size_t i = 0; i < v->size(); ++i) {
      const auto& t = (*v)[i];
      const std::string p = "tools[" + std::to_string(i) + "]";
      if (!t.is_object() || !(t.contains("type") && t["type"] == "function"))
        bad_field(p + ".type", "'" + p + ".type' must be \"function\" (the only tools served)");
      nlohmann::ordered_json function = nlohmann::ordered_json::object();
      for (const char* key : {"name", "description", "parameters", "strict"})
        if (t.contains(key)) function[key] = t[key];
      tools.push_back({{"type", "function"}, {"function", std::move(function)}});
    }
    chat["tools"] = std::move(tools);
  }
  if (const auto* v = field("tool_choice")) {
    chat["tool_choice"] = *v;
    if (v->is_object() && v->contains("type") && (*v)["type"] == "function" && v->contains("name"))
      chat["tool_choice"] = {{"type", "function"}, {"function", {{"name", (*v)["name"]}}}};
  }
  if (const auto* v = field("text")) {
    if (!v->is_object()) bad_field("text", "'text' must be an object");
    if (v->contains("format")) {
      nlohmann::ordered_json format = (*v)["format"];
      if (format.is_object() && format.contains("type") && format["type"] == "json_schema")
        format = {{"type", "json_schema"},
                  {"json_schema",
                   {{"name", format.value("name", "response")},
                    {"schema",
                     format.contains("schema") ? format["schema"] : nlohmann::ordered_json()}}}};
      chat["response_format"] = std::move(format);
    }
  }
  for (const auto& [from, to] : std::vector<std::pair<const char*, const char*>>{
           {"model", "model"},
           {"max_output_tokens", "max_tokens"},
           {"temperature", "temperature"},
           {"top_p", "top_p"},
           {"stream", "stream"},
           {"parallel_tool_calls", "parallel_tool_calls"},
           {"user", "user"}})
    if (const auto* v = field(from)) chat[to] = *v;

  try {
    const nlohmann::json plain = nlohmann::json::parse(chat.dump());
    in.request = parse_completion_request(plain, /*chat=*/true, &chat);
    return in;
  } catch (ApiError& e) {
    e.param = responses_param(e.param);
    throw;
  }
}

// Writes a /v1/responses answer (one choice) from the choice output.
class ResponsesWriter : public CompletionSink {
 public:
  using Write = std::function<bool(const std::string&)>;

  ResponsesWriter(const CompletionRequest& request, const nlohmann::json& echo, std::string id,
                  int64_t created, std::string model, Write write)
      : r_(request),
        echo_(echo),
        id_(std::move(id)),
        created_(created),
        model_(std::move(model)),
        write_(std::move(write)) {}

  bool begin() {
    if (!r_.stream) return true;
    return event("response.created", {{"response", response("in_progress")}}) &&
           event("response.in_progress", {{"response", response("in_progress")}});
  }

  bool piece(int, const std::string& text, ChoiceOutput&) override {
    if (text.empty()) return true;
    text_ += text;
    if (!r_.stream) return true;
    if (!message_open_) {
      message_open_ = true;
      if (!event("response.output_item.added",
                 {{"output_index", 0}, {"item", message_item("in_progress", false)}}) ||
          !event("response.content_part.added", {{"item_id", message_id_},
                                                 {"output_index", 0},
                                                 {"content_index", 0},
                                                 {"part", text_part("")}}))
        return false;
    }
    return event("response.output_text.delta", {{"item_id", message_id_},
                                                {"output_index", 0},
                                                {"content_index", 0},
                                                {"delta", text},
                                                {"logprobs", nlohmann::json::array()}});
  }

  bool end(int, ChoiceOutput& out, const ChoiceEnd& end) override {
    end_ = end;
    if (const auto& call = out.tool_call()) call_ = *call;
    if (!r_.stream) return true;
    if (message_open_ &&
        (!event("response.output_text.done", {{"item_id", message_id_},
                                              {"output_index", 0},
                                              {"content_index", 0},
                                              {"text", text_},
                                              {"logprobs", nlohmann::json::array()}}) ||
         !event("response.content_part.done", {{"item_id", message_id_},
                                               {"output_index", 0},
                                               {"content_index", 0},
                                               {"part", text_part(text_)}}) ||
         !event("response.output_item.done",
                {{"output_index", 0}, {"item", message_item("completed", true)}})))
      return false;
    if (call_) {
      const int index = message_open_ ? 1 : 0;
      nlohmann::json item = call_item("in_progress");
      item["arguments"] = "";
      if (!event("response.output_item.added", {{"output_index", index}, {"item", item}}) ||
          !event(
              "response.function_call_arguments.delta",
              {{"item_id", call_item_id_}, {"output_index", index}, {"delta", call_->arguments}}) ||
          !event("response.function_call_arguments.done", {{"item_id", call_item_id_},
                                                           {"output_index", index},
                                                           {"arguments", call_->arguments}}) ||
          !event("response.output_item.done",
                 {{"output_index", index}, {"item", call_item("completed")}}))
        return false;
    }
    return true;
  }

  bool idle() override {
    if (std::chrono::steady_clock::now() - last_write_ < std::chrono::seconds(1)) return true;
    return write(r_.stream ? ": keep-alive\n\n" : " ");
  }

  // The end: the response object, handed to `completed` (may be empty) before it is written.
  bool finish(const std::vector<ChoiceOutput>& outputs, const std::vector<ChoiceEnd>& ends,
              int64_t prompt_tokens,
              const std::function<void(const nlohmann::json&)>& completed = {}) {
    usage_ = {{"input_tokens", prompt_tokens},
              {"input_tokens_details", {{"cached_tokens", 0}}},
              {"output_tokens", outputs.front().tokens()},
              {"output_tokens_details", {{"reasoning_tokens", 0}}},
              {"total_tokens", prompt_tokens + outputs.front().tokens()}};
    if (!ends.front().error.empty()) {
      nlohmann::json failed = response("failed");
      failed["error"] = {{"code", "server_error"}, {"message", ends.front().error}};
      if (!r_.stream)
        return write(
            json_text(ApiError{500, ends.front().error, "", "generation_failed"}.to_json()));
      return event("response.failed", {{"response", failed}});
    }
    const bool complete = end_.reason != FinishReason::length || call_.has_value();
    final_ = response(complete ? "completed" : "incomplete");
    if (!complete) final_["incomplete_details"] = {{"reason", "max_output_tokens"}};
    if (completed) completed(final_);
    if (!r_.stream) return write(json_text(final_));
    return event(complete ? "response.completed" : "response.incomplete", {{"response", final_}});
  }

 private:
  bool write(const std::string& data) {
    last_write_ = std::chrono::steady_clock::now();
    return write_(data);
  }
  bool event(const char* type, nlohmann::json data) {
    data["type"] = type;
    data["sequence_number"] = sequence_++;
    return write(std::string("event: ") + type + "\ndata: " + json_text(data) + "\n\n");
  }

  static nlohmann::json text_part(const std::string& text) {
    return {{"type", "output_text"},
            {"text", text},
            {"annotations", nlohmann::json::array()},
            {"logprobs", nlohmann::json::array()}};
  }
  nlohmann::json message_item(const char* status, bool with_text) const {
    return {{"id", message_id_},
            {"type", "message"},
            {"status", status},
            {"role", "assistant"},
            {"content",
             with_text ? nlohmann::json::array({text_part(text_)}) : nlohmann::json::array()}};
  }
  nlohmann::json call_item(const char* status) const {
    return {{"id", call_item_id_},  {"type", "function_call"}, {"status", status},
            {"call_id", call_->id}, {"name", call_->name},     {"arguments", call_->arguments}};
  }

  // The response object: the request's settings (echo_) with this answer's state.
  nlohmann::json response(const char* status) const {
    nlohmann::json body = echo_;
    body["id"] = id_;
    body["object"] = "response";
    body["created_at"] = created_;
    body["status"] = status;
    body["model"] = model_;
    body["error"] = nullptr;
    body["incomplete_details"] = nullptr;
    nlohmann::json output = nlohmann::json::array();
    const bool done = std::string_view(status) != "in_progress";
    if (done && (!text_.empty() || !call_)) output.push_back(message_item("completed", true));
    if (done && call_) output.push_back(call_item("completed"));
    body["output"] = std::move(output);
    body["usage"] = done ? usage_ : nlohmann::json();
    return body;
  }

  const CompletionRequest& r_;
  nlohmann::json echo_;  // instructions, tools, text, temperature ... as requested
  std::string id_;
  int64_t created_;
  std::string model_;
  Write write_;
  std::string message_id_ = "msg_" + id_.substr(std::string_view("resp_").size());
  std::string call_item_id_ = "fc_" + id_.substr(std::string_view("resp_").size());
  bool message_open_ = false;
  std::string text_;
  std::optional<ToolCall> call_;
  ChoiceEnd end_;
  nlohmann::json usage_;
  nlohmann::json final_;
  int64_t sequence_ = 0;
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
};

// The settings a response object repeats from its request.
inline nlohmann::json responses_echo(const nlohmann::json& body) {
  nlohmann::json echo = {{"instructions", nullptr},
                         {"max_output_tokens", nullptr},
                         {"parallel_tool_calls", true},
                         {"temperature", nullptr},
                         {"top_p", nullptr},
                         {"tool_choice", "auto"},
                         {"tools", nlohmann::json::array()},
                         {"text", {{"format", {{"type", "text"}}}}},
                         {"metadata", nlohmann::json::object()},
                         {"store", true},
                         {"truncation", "disabled"}};
  for (auto& [key, value] : echo.items())
    if (body.contains(key) && !body[key].is_null()) value = body[key];
  return echo;
}

}  // namespace hllm::serve
