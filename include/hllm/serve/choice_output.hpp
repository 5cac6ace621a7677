// One choice of a completion, from generated ids to what the response says: text (detokenized,
// stop strings applied), the tokens' logprobs in OpenAI's two shapes, and tool calls.
//
//   ids ──StreamDecoder──► text pieces ──StopTextFilter──► tool-call hold-back ──► content / call
//        └── logprobs (engine, per id) ─────────────────────────────────────────► logprobs JSON
//
// Tool calls (serve/tool_output.hpp): with tool_choice "auto" the text is held back while it may
// still be a call (only whitespace yet, or a '{' first) and read as a call at the end; with a forced
// call (required / named) the grammar guarantees one, so nothing is streamed as content.
//
// Logprobs:
//   chat         {"content": [{"token", "logprob", "bytes", "top_logprobs": [{token, logprob,
//                bytes}]}]}, per streamed chunk the entries of its tokens;
//   completions  {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"},
//                prompt tokens first with `echo` (the first one's logprob null, as OpenAI's).
#pragma once

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hllm/engine/request.hpp"
#include "hllm/serve/chat_messages.hpp"
#include "hllm/serve/stop_text.hpp"
#include "hllm/serve/tool_output.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::serve {

// How logprobs name a token: its bytes (invalid UTF-8 becomes U+FFFD on output), or "token_id:N"
// (vLLM's return_tokens_as_token_ids).
struct TokenNames {
  const Tokenizer* tokenizer;
  bool as_ids = false;
};

inline std::string token_text(const TokenNames& names, int32_t id) {
  if (names.as_ids) return "token_id:" + std::to_string(id);
  const Tokenizer& tokenizer = *names.tokenizer;
  std::string bytes;
  try {
    tokenizer.append_bytes(id, bytes);
  } catch (const Error&) {  // an id beyond the tokenizer (padded vocabularies)
  }
  return bytes;
}

inline nlohmann::json token_bytes(const std::string& text) {
  nlohmann::json bytes = nlohmann::json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// OpenAI's logprob of a token that is impossible (-inf is not JSON): the most negative it reports.
inline double json_logprob(float logprob) {
  return std::isfinite(logprob) ? static_cast<double>(logprob) : -9999.0;
}

// Chat: one entry of logprobs.content.
inline nlohmann::json chat_logprob(const TokenNames& names, const TokenLogprob& lp) {
  const auto entry = [&](int32_t id, float logprob) {
    const std::string text = token_text(names, id);
    return nlohmann::json{
        {"token", text}, {"logprob", json_logprob(logprob)}, {"bytes", token_bytes(text)}};
  };
  nlohmann::json e = entry(lp.id, lp.logprob);
  e["top_logprobs"] = nlohmann::json::array();
  for (const auto& [id, logprob] : lp.top) e["top_logprobs"].push_back(entry(id, logprob));
  return e;
}

// Completions: the four parallel arrays of a choice's logprobs.
struct CompletionLogprobs {
  nlohmann::json tokens = nlohmann::json::array(), token_logprobs = nlohmann::json::array(),
                 top_logprobs = nlohmann::json::array(), text_offset = nlohmann::json::array();
  size_t offset = 0;  // text offset of the next token (bytes)

  // `lp` null: a token without a logprob (the first prompt token).
  void add(const TokenNames& names, int32_t id, const TokenLogprob* lp) {
    const std::string text = token_text(names, id);
    tokens.push_back(text);
    text_offset.push_back(offset);
    offset += text.size();
    if (lp == nullptr) {
      token_logprobs.push_back(nullptr);
      top_logprobs.push_back(nullptr);
      return;
    }
    token_logprobs.push_back(json_logprob(lp->logprob));
    nlohmann::json top = nlohmann::json::object();
    for (const auto& [other, logprob] : lp->top)
      top[token_text(names, other)] = json_logprob(logprob);
    top_logprobs.push_back(std::move(top));
  }
  bool empty() const { return tokens.empty(); }
  nlohmann::json take() {
    nlohmann::json j = {{"tokens", std::move(tokens)},
                        {"token_logprobs", std::move(token_logprobs)},
                        {"top_logprobs", std::move(top_logprobs)},
                        {"text_offset", std::move(text_offset)}};
    tokens = token_logprobs = top_logprobs = text_offset = nlohmann::json::array();
    return j;
  }
};

enum class ToolMode { none, automatic, forced };

class ChoiceOutput {
 public:
  ChoiceOutput(TokenNames names, bool chat, std::vector<std::string> stops, ToolMode tools,
               const std::vector<Tool>* tool_list)
      : names_(names),
        chat_(chat),
        decoder_(*names.tokenizer, /*skip_special=*/true),
        stops_(std::move(stops)),
        tool_mode_(tools),
        tools_(tool_list) {}

  // One generated id (with its logprob when asked for). Returns the text that may be sent now.
  std::string push(int32_t id, const TokenLogprob* lp) {
    ++tokens_;
    if (lp != nullptr) add_logprob(id, *lp);
    std::string piece;
    try {
      piece = decoder_.push(id);
    } catch (const Error&) {  // an id the tokenizer lacks (padded vocabularies): no text
    }
    return release(stops_.push(piece));
  }

  // Prompt tokens first (completions with echo): their text and logprobs.
  std::string echo_prompt(const std::string& text) { return release(text); }
  void add_prompt_logprob(int32_t id, const TokenLogprob* lp) {
    completion_lp_.add(names_, id, lp);
  }

  bool stopped() const { return stops_.stopped(); }
  int64_t tokens() const { return tokens_; }

  // The end of the ids: the rest of the text, and the call it spells when tools allow one.
  std::string finish() {
    std::string rest = stopped() ? "" : release(stops_.push(decoder_.finish()));
    if (!stopped()) rest += release(stops_.finish());
    if (tool_mode_ != ToolMode::none && held_back_) {
      call_ = parse_tool_call(held_, *tools_);
      if (!call_) rest += std::exchange(held_, std::string());  // it was text after all
      held_back_ = false;
    }
    return rest;
  }

  const std::optional<ToolCall>& tool_call() const { return call_; }

  // The logprobs gathered since the last call, in this endpoint's shape (null when none asked).
  nlohmann::json take_logprobs() {
    if (chat_) {
      if (!wants_logprobs_) return nullptr;
      return {{"content", std::exchange(chat_lp_, nlohmann::json::array())}};
    }
    if (!wants_logprobs_ && completion_lp_.empty()) return nullptr;
    return completion_lp_.take();
  }
  void want_logprobs() { wants_logprobs_ = true; }

 private:
  void add_logprob(int32_t id, const TokenLogprob& lp) {
    wants_logprobs_ = true;
    if (chat_)
      chat_lp_.push_back(chat_logprob(names_, lp));
    else
      completion_lp_.add(names_, id, &lp);
  }

  // Text past the stop filter: out now, or held back while it may be a tool call.
  std::string release(std::string text) {
    if (tool_mode_ == ToolMode::none || !held_back_) return text;
    held_ += text;
    if (tool_mode_ == ToolMode::automatic && !may_become_tool_call(held_)) {
      held_back_ = false;
      return std::exchange(held_, std::string());
    }
    return "";
  }

  TokenNames names_;
  bool chat_;
  StreamDecoder decoder_;
  StopTextFilter stops_;
  ToolMode tool_mode_;
  const std::vector<Tool>* tools_;
  bool held_back_ = true;  // (tools) the text so far is being held back
  std::string held_;
  std::optional<ToolCall> call_;
  int64_t tokens_ = 0;
  bool wants_logprobs_ = false;
  nlohmann::json chat_lp_ = nlohmann::json::array();
  CompletionLogprobs completion_lp_;
};

}  // namespace hllm::serve
