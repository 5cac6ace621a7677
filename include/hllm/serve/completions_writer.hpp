// The response of /v1/chat/completions and /v1/completions, streamed (SSE chunks, then
// "data: [DONE]") or whole (one JSON body), for n choices, with logprobs and tool calls:
//
//   chat chunk    {"id", "object": "chat.completion.chunk", "created", "model",
//                  "choices": [{"index", "delta": {"content"} | {"tool_calls": [...]},
//                               "logprobs", "finish_reason"}]}
//   chat whole    {... "object": "chat.completion", "choices": [{"index", "message": {"role",
//                  "content", "tool_calls"?}, "logprobs", "finish_reason"}], "usage"}
//   completions   the same with "object": "text_completion" and "text" in place of delta/message
//
// A streamed call goes out as OpenAI's two deltas: {id, type, function: {name, arguments: ""}},
// then {function: {arguments}}, and the choice finishes with "tool_calls".
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "hllm/serve/completion_run.hpp"
#include "hllm/serve/request.hpp"

namespace hllm::serve {

inline std::string json_text(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A call as the "tool_calls" array of a message (with_arguments) or of a first delta (not).
inline nlohmann::json tool_calls_json(const ToolCall& call, bool with_arguments) {
  return nlohmann::json::array(
      {{{"index", 0},
        {"id", call.id},
        {"type", "function"},
        {"function", {{"name", call.name}, {"arguments", with_arguments ? call.arguments : ""}}}}});
}

class CompletionsWriter : public CompletionSink {
 public:
  using Write = std::function<bool(const std::string&)>;

  CompletionsWriter(const CompletionRequest& request, std::string id, int64_t created,
                    std::string model, Write write)
      : r_(request),
        id_(std::move(id)),
        created_(created),
        model_(std::move(model)),
        write_(std::move(write)),
        texts_(static_cast<size_t>(request.n)) {}

  // Streaming chat: each choice's first chunk names the role.
  bool begin() {
    if (!r_.stream || !r_.chat) return true;
    for (int i = 0; i < r_.n; ++i)
      if (!event(chunk(nlohmann::json::array({{{"index", i},
                                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                                               {"logprobs", nullptr},
                                               {"finish_reason", nullptr}}}))))
        return false;
    return true;
  }

  bool piece(int i, const std::string& text, ChoiceOutput& out) override {
    if (!r_.stream) {
      texts_[static_cast<size_t>(i)] += text;
      return true;
    }
    nlohmann::json logprobs = out.take_logprobs();
    const bool has_logprobs = logprobs.is_object() && (r_.chat ? !logprobs["content"].empty()
                                                               : !logprobs["tokens"].empty());
    if (text.empty() && !has_logprobs) return true;
    return event(chunk(nlohmann::json::array(
        {delta(i, text, has_logprobs ? std::move(logprobs) : nlohmann::json(), nullptr)})));
  }

  bool end(int i, ChoiceOutput& out, const ChoiceEnd& end) override {
    if (!r_.stream) return true;  // all at once in finish()
    if (const auto& call = out.tool_call()) {
      nlohmann::json first = delta(i, "", nullptr, nullptr);
      first["delta"] = {{"role", "assistant"}, {"tool_calls", tool_calls_json(*call, false)}};
      nlohmann::json arguments = delta(i, "", nullptr, nullptr);
      arguments["delta"] = {
          {"tool_calls", nlohmann::json::array(
                             {{{"index", 0}, {"function", {{"arguments", call->arguments}}}}})}};
      if (!event(chunk(nlohmann::json::array({first}))) ||
          !event(chunk(nlohmann::json::array({arguments}))))
        return false;
    }
    return event(
        chunk(nlohmann::json::array({delta(i, "", out.take_logprobs(), end.finish_reason(out))})));
  }

  bool idle() override {
    if (std::chrono::steady_clock::now() - last_write_ < std::chrono::seconds(1)) return true;
    return write(r_.stream ? ": keep-alive\n\n" : " ");  // a JSON-insignificant space
  }

  // After drive(): the whole response, or the stream's usage and [DONE]; an error when a choice
  // failed.
  bool finish(std::vector<ChoiceOutput>& outputs, const std::vector<ChoiceEnd>& ends,
              int64_t prompt_tokens) {
    int64_t completion_tokens = 0;
    for (const ChoiceOutput& out : outputs) completion_tokens += out.tokens();
    const nlohmann::json usage = {{"prompt_tokens", prompt_tokens},
                                  {"completion_tokens", completion_tokens},
                                  {"total_tokens", prompt_tokens + completion_tokens}};
    for (const ChoiceEnd& end : ends)
      if (!end.error.empty()) {
        const nlohmann::json e = ApiError{500, end.error, "", "generation_failed"}.to_json();
        return r_.stream ? event(e) && write("data: [DONE]\n\n") : write(json_text(e));
      }
    if (!r_.stream) {
      nlohmann::json choices = nlohmann::json::array();
      for (size_t i = 0; i < outputs.size(); ++i)
        choices.push_back(whole_choice(static_cast<int>(i), outputs[i], ends[i]));
      nlohmann::json body = chunk(std::move(choices));
      body["object"] = r_.chat ? "chat.completion" : "text_completion";
      body["usage"] = usage;
      return write(json_text(body));
    }
    if (r_.include_usage) {
      nlohmann::json last = chunk(nlohmann::json::array());
      last["usage"] = usage;
      if (!event(last)) return false;
    }
    return write("data: [DONE]\n\n");
  }

 private:
  bool write(const std::string& data) {
    last_write_ = std::chrono::steady_clock::now();
    return write_(data);
  }
  bool event(const nlohmann::json& j) { return write("data: " + json_text(j) + "\n\n"); }

  nlohmann::json chunk(nlohmann::json choices) const {
    return {{"id", id_},
            {"object", r_.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", created_},
            {"model", model_},
            {"choices", std::move(choices)}};
  }

  nlohmann::json delta(int i, const std::string& text, nlohmann::json logprobs,
                       const nlohmann::json& finish) const {
    nlohmann::json choice = {{"index", i}};
    if (r_.chat)
      choice["delta"] = text.empty() ? nlohmann::json::object() : nlohmann::json{{"content", text}};
    else
      choice["text"] = text;
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = finish;
    return choice;
  }

  nlohmann::json whole_choice(int i, ChoiceOutput& out, const ChoiceEnd& end) {
    nlohmann::json choice = {{"index", i}};
    const std::string& text = texts_[static_cast<size_t>(i)];
    if (r_.chat) {
      nlohmann::json message = {{"role", "assistant"}, {"content", text}};
      if (const auto& call = out.tool_call()) {
        message["content"] = nullptr;
        message["tool_calls"] = tool_calls_json(*call, true);
      }
      choice["message"] = std::move(message);
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = out.take_logprobs();
    choice["finish_reason"] = end.finish_reason(out);
    return choice;
  }

  const CompletionRequest& r_;
  std::string id_;
  int64_t created_;
  std::string model_;
  Write write_;
  std::vector<std::string> texts_;  // not streaming: each choice's whole text
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
};

}  // namespace hllm::serve
