// Reading an OpenAI streaming response: server-sent events ("data: {json}" lines, events separated
// by a blank line, the stream ending with "data: [DONE]") and the chat.completion.chunk objects
// they carry. No networking here (include/hllm/serve/client.hpp does that), so the parsing is
// testable on strings.
//
//   bytes ─► SseParser.feed ─► one payload per event ─► apply_chat_chunk ─► ChatStreamTally
//                                                                             (text, usage, error)
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "hllm/io/json.hpp"

namespace hllm::serve {

// Splits a byte stream into SSE events, however the bytes arrive (a line may span two reads).
// An event's data is its "data:" lines joined by '\n' (the SSE rule); comment lines (":"),
// "event:", "id:" and "retry:" fields are skipped.
class SseParser {
 public:
  // Calls on_data(std::string_view payload) for every complete event; stops early and returns
  // false when on_data returns false.
  template <typename OnData>
  bool feed(std::string_view bytes, OnData&& on_data) {
    pending_.append(bytes.data(), bytes.size());
    size_t start = 0;
    for (size_t nl = pending_.find('\n', start); nl != std::string::npos;
         nl = pending_.find('\n', start)) {
      std::string_view line(pending_.data() + start, nl - start);
      start = nl + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty()) {  // end of event
        if (!dispatch(on_data)) {
          pending_.erase(0, start);
          return false;
        }
        continue;
      }
      if (line.substr(0, 5) != "data:") continue;  // comments, event:, id:, retry:
      line.remove_prefix(5);
      if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
      if (has_data_) data_ += '\n';
      data_.append(line.data(), line.size());
      has_data_ = true;
    }
    pending_.erase(0, start);
    return true;
  }

  // At the end of the stream: an event the server did not close with a blank line still counts.
  template <typename OnData>
  bool finish(OnData&& on_data) {
    if (!pending_.empty()) {
      if (!feed("\n", on_data)) return false;
    }
    return dispatch(on_data);
  }

 private:
  template <typename OnData>
  bool dispatch(OnData& on_data) {
    if (!has_data_) return true;
    const std::string data = std::move(data_);
    data_.clear();
    has_data_ = false;
    return on_data(std::string_view(data));
  }

  std::string pending_;  // bytes after the last complete line
  std::string data_;     // the current event's data lines so far
  bool has_data_ = false;
};

// What a chat-completion stream said, accumulated chunk by chunk.
struct ChatStreamTally {
  std::string text;                      // every choices[0].delta.content, concatenated
  int64_t content_chunks = 0;            // chunks whose delta.content was non-empty
  std::optional<int64_t> prompt_tokens;  // usage, when the server sent it (include_usage)
  std::optional<int64_t> completion_tokens;
  std::string finish_reason;  // "stop", "length", ... ("" until the server says)
  std::string error;          // an error object inside the stream, or a payload that is not JSON
  bool done = false;          // "[DONE]" seen
};

// One streaming chat completion, as the client saw it.
struct ChatStreamResult {
  int http_status = 0;  // 0: no HTTP response at all (refused, timed out, TLS failure)
  std::string error;    // "" = success; else "HTTP 404: message", "connection failed: ...", ...
  std::string text;     // the answer (content deltas concatenated), partial on a failure
  double ttft_s = -1;   // request start -> first non-empty content delta (-1: none came)
  double total_s = 0;   // request start -> "[DONE]" (or the failure)
  int64_t content_chunks = 0;            // chunks carrying content
  std::optional<int64_t> prompt_tokens;  // from the server's usage, when sent
  std::optional<int64_t> completion_tokens;
  std::string finish_reason;

  bool ok() const { return error.empty(); }
  // Output tokens: the server's usage when it sent it, else the content chunks (≈ tokens for
  // servers that stream one token per chunk, as hllm serve and vLLM do).
  int64_t output_tokens() const { return completion_tokens.value_or(content_chunks); }
  bool usage_reported() const { return completion_tokens.has_value(); }
  // Decode speed: tokens after the first over the time after the first (the streaming rate a
  // reader sees); the whole-answer rate when only one chunk came.
  double tokens_per_second() const {
    const int64_t n = output_tokens();
    if (n > 1 && ttft_s >= 0 && total_s > ttft_s) return double(n - 1) / (total_s - ttft_s);
    return total_s > 0 ? double(n) / total_s : 0.0;
  }
};

// Applies one SSE payload to the tally and returns the content it added ("" for none). "[DONE]"
// sets done; {"error": {...}} mid-stream (vLLM and OpenAI both do this) sets error.
inline std::string apply_chat_chunk(std::string_view payload, ChatStreamTally& tally) {
  while (!payload.empty() && (payload.back() == ' ' || payload.back() == '\t'))
    payload.remove_suffix(1);
  if (payload == "[DONE]") {
    tally.done = true;
    return {};
  }
  const nlohmann::json chunk = nlohmann::json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (chunk.is_discarded() || !chunk.is_object()) {
    if (tally.error.empty())
      tally.error = "stream payload is not JSON: " + std::string(payload.substr(0, 200));
    return {};
  }
  if (const auto e = chunk.find("error"); e != chunk.end() && !e->is_null()) {
    std::string message = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                              ? (*e)["message"].get<std::string>()
                              : describe_json(*e);
    if (tally.error.empty()) tally.error = "error in stream: " + message;
    return {};
  }
  if (const auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
    if (u->contains("completion_tokens") && (*u)["completion_tokens"].is_number_integer())
      tally.completion_tokens = (*u)["completion_tokens"].get<int64_t>();
    if (u->contains("prompt_tokens") && (*u)["prompt_tokens"].is_number_integer())
      tally.prompt_tokens = (*u)["prompt_tokens"].get<int64_t>();
  }
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array() || choices->empty()) return {};
  const nlohmann::json& choice = (*choices)[0];
  if (const auto f = choice.find("finish_reason"); f != choice.end() && f->is_string())
    tally.finish_reason = f->get<std::string>();
  const auto delta = choice.find("delta");
  if (delta == choice.end() || !delta->is_object()) return {};
  const auto content = delta->find("content");
  if (content == delta->end() || !content->is_string()) return {};
  std::string piece = content->get<std::string>();
  if (piece.empty()) return {};
  tally.text += piece;
  ++tally.content_chunks;
  return piece;
}

}  // namespace hllm::serve
