// The OpenAI request bodies (/v1/chat/completions, /v1/completions) parsed and range-checked into
// what the engine needs. Everything a client sends is checked here, before a token is encoded:
// wrong types and out-of-range values become ApiError 400 naming the field (`param`), unknown
// fields are ignored (Open WebUI and the SDKs send many), and sizes are capped (stop strings, n).
//
//   JSON body ──parse_completion_request──► CompletionRequest ──(server: encode, defaults)──►
//                                                                               EngineRequest
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "hllm/engine/sampler.hpp"
#include "hllm/io/json.hpp"
#include "hllm/serve/chat_messages.hpp"
#include "hllm/serve/request_fields.hpp"
#include "hllm/serve/response_format.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_MAX_STOP_STRINGS
#define HLLM_SERVE_MAX_STOP_STRINGS 16  // OpenAI allows 4; vLLM any number: be generous, bounded
#endif
#ifndef HLLM_SERVE_MAX_CHOICES
#define HLLM_SERVE_MAX_CHOICES 16  // n: each choice is a sequence in the batch
#endif
#ifndef HLLM_SERVE_MAX_STOP_BYTES
#define HLLM_SERVE_MAX_STOP_BYTES 256  // per stop string
#endif

// Sampling fields as the client gave them; unset ones take the model's defaults.
struct SamplingOverrides {
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;

  SamplingParams over(SamplingParams s) const {
    if (temperature) s.temperature = *temperature;
    if (top_p) s.top_p = *top_p;
    if (top_k) s.top_k = *top_k;
    if (min_p) s.min_p = *min_p;
    if (repetition_penalty) s.repetition_penalty = *repetition_penalty;
    if (presence_penalty) s.presence_penalty = *presence_penalty;
    if (frequency_penalty) s.frequency_penalty = *frequency_penalty;
    if (seed) s.seed = *seed;
    return s;
  }
};

struct CompletionRequest {
  bool chat = true;                  // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::string model;                 // "" when not given
  std::vector<ApiMessage> messages;  // chat
  std::vector<Tool> tools;           // chat
  ToolChoice tool_choice = ToolChoice::none;
  std::string tool_name;            // the function tool_choice names
  std::string prompt;               // completions: text ...
  std::vector<int32_t> prompt_ids;  // ... or token ids (non-empty: these, as given)
  ResponseFormat format;            // response_format and its extensions
  int32_t logprobs = -1;            // -1: none; else the top alternatives per token (0-20)
  bool echo = false;                // completions: the prompt (and its logprobs) first
  int64_t n = 1;                    // choices, each its own engine request (seed + i)
  bool tokens_as_ids = false;       // vLLM's return_tokens_as_token_ids: "token_id:N" in logprobs
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to those ids' logits, [-100, 100]
  SamplingOverrides sampling;
  std::optional<int64_t> max_tokens;  // unset: up to the context
  std::vector<std::string> stop;      // stop strings, matched on the generated text
  bool ignore_eos = false;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // vLLM's extension: requests with different salts never share prefix-cache blocks (so one
  // tenant cannot learn from cache timing what another sent). "" = the shared cache.
  std::string cache_salt;
};

namespace detail {

// A completion prompt: a string, or token ids, or a list of exactly one of either.
inline void parse_prompt(const nlohmann::json& prompt, CompletionRequest& r) {
  const nlohmann::json& one =
      prompt.is_array() && prompt.size() == 1 && (prompt[0].is_string() || prompt[0].is_array())
          ? prompt[0]
          : prompt;
  if (one.is_string()) {
    r.prompt = one.get<std::string>();
    return;
  }
  if (one.is_array() && !one.empty()) {
    for (const auto& id : one) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max())
        bad_field("prompt", "'prompt' token ids must be non-negative integers");
      r.prompt_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return;
  }
  bad_field("prompt",
            "'prompt' must be a string or token ids (or a list of one of them): one "
            "prompt per request");
}

// {"token id": bias, ...}: OpenAI's logit_bias, each bias in [-100, 100] (-100 bans the token).
inline std::vector<std::pair<int32_t, float>> parse_logit_bias(const nlohmann::json& v) {
  if (!v.is_object()) bad_field("logit_bias", "'logit_bias' must be an object of token id: bias");
  if (v.size() > 1024) bad_field("logit_bias", "'logit_bias' holds at most 1024 tokens");
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, bias] : v.items()) {
    size_t used = 0;
    long long id = -1;
    try {
      id = std::stoll(key, &used);
    } catch (const std::exception&) {
    }
    if (used != key.size() || id < 0 || id > std::numeric_limits<int32_t>::max())
      bad_field("logit_bias", "'logit_bias' keys must be token ids (got \"" + key + "\")");
    out.emplace_back(static_cast<int32_t>(id),
                     ranged_float(bias, "logit_bias", -100, 100, "[-100, 100]"));
  }
  return out;
}

// Chat: logprobs (bool) + top_logprobs (0-20). Completions: logprobs (0-20) + echo.
inline void parse_logprobs(const nlohmann::json& body, CompletionRequest& r) {
  const auto field = [&](const char* name) -> const nlohmann::json* {
    const auto it = body.find(name);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (r.chat) {
    const bool on = field("logprobs") != nullptr && bool_field(*field("logprobs"), "logprobs");
    if (const auto* v = field("top_logprobs")) {
      const auto top = static_cast<int32_t>(integer_field(*v, "top_logprobs", 0, 20));
      if (!on) bad_field("top_logprobs", "'top_logprobs' needs 'logprobs': true");
      r.logprobs = top;
    } else if (on) {
      r.logprobs = 0;
    }
    if (const auto* v = field("echo"))
      if (bool_field(*v, "echo")) bad_field("echo", "'echo' belongs to /v1/completions");
    return;
  }
  if (const auto* v = field("logprobs")) {
    if (v->is_boolean())  // not OpenAI's type here, but clients send it: false = none
      bad_field("logprobs", "'logprobs' on /v1/completions is an integer (0-20) or null");
    r.logprobs = static_cast<int32_t>(integer_field(*v, "logprobs", 0, 20));
  }
  if (const auto* v = field("echo")) r.echo = bool_field(*v, "echo");
}

}  // namespace detail

// Parses and checks one request body (already valid JSON). Throws ApiError. `ordered`: the same body
// read as ordered_json (schemas and tools keep the client's key order), or null (sorted keys).
inline CompletionRequest parse_completion_request(const nlohmann::json& body, bool chat,
                                                  const nlohmann::ordered_json* ordered = nullptr) {
  using namespace detail;
  if (!body.is_object()) bad_field("", "the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  const auto field = [&](const char* name) -> const nlohmann::json* {
    const auto it = body.find(name);
    return it == body.end() || it->is_null() ? nullptr : &*it;
  };
  if (const auto* v = field("model")) {
    if (!v->is_string()) bad_field("model", "'model' must be a string");
    r.model = v->get<std::string>();
  }
  if (chat) {
    const auto* messages = field("messages");
    if (messages == nullptr) bad_field("messages", "'messages' is required");
    r.messages = parse_messages(*messages);
    if (const auto* v = field("tools"))
      r.tools = parse_tools(
          *v, ordered != nullptr && ordered->contains("tools") ? &(*ordered)["tools"] : nullptr);
    if (!r.tools.empty()) r.tool_choice = ToolChoice::automatic;
    if (const auto* v = field("tool_choice"))
      std::tie(r.tool_choice, r.tool_name) = parse_tool_choice(*v, r.tools);
    if (const auto* v = field("parallel_tool_calls")) bool_field(*v, "parallel_tool_calls");
    for (const char* legacy : {"functions", "function_call"})
      if (field(legacy) != nullptr)
        bad_field(legacy, std::string("'") + legacy +
                              "' is deprecated: use 'tools' and "
                              "'tool_choice'");
  } else {
    const auto* prompt = field("prompt");
    if (prompt == nullptr) bad_field("prompt", "'prompt' is required");
    parse_prompt(*prompt, r);
  }
  r.format = parse_response_format(ordered != nullptr ? *ordered
                                                      : nlohmann::ordered_json::parse(body.dump()));
  const bool forced_call =
      r.tool_choice == ToolChoice::required || r.tool_choice == ToolChoice::named;
  if (r.format.constrained() && forced_call)
    bad_field(r.format.param, "'" + r.format.param +
                                  "' cannot be combined with a tool_choice "
                                  "that forces a call");

  SamplingOverrides& s = r.sampling;
  if (const auto* v = field("temperature"))
    s.temperature = ranged_float(*v, "temperature", 0, 100, "[0, 100]");
  if (const auto* v = field("top_p")) {
    s.top_p = ranged_float(*v, "top_p", 0, 1, "(0, 1]");
    if (*s.top_p <= 0.0f)
      bad_field("top_p", "'top_p' must be in (0, 1] (got " + describe_json(*v) + ")");
  }
  if (const auto* v = field("top_k")) {
    // vLLM spells "off" as -1; 0 means off here.
    const int64_t k = integer_field(*v, "top_k", -1, std::numeric_limits<int32_t>::max());
    s.top_k = k < 0 ? 0 : k;
  }
  if (const auto* v = field("min_p")) s.min_p = ranged_float(*v, "min_p", 0, 1, "[0, 1]");
  for (const char* name : {"repetition_penalty", "repeat_penalty"})
    if (const auto* v = field(name)) {
      s.repetition_penalty = ranged_float(*v, name, 0, 100, "(0, 100]");
      if (*s.repetition_penalty <= 0.0f)
        bad_field(name, std::string("'") + name + "' must be > 0 (got " + describe_json(*v) + ")");
    }
  if (const auto* v = field("presence_penalty"))
    s.presence_penalty = ranged_float(*v, "presence_penalty", -2, 2, "[-2, 2]");
  if (const auto* v = field("frequency_penalty"))
    s.frequency_penalty = ranged_float(*v, "frequency_penalty", -2, 2, "[-2, 2]");
  if (const auto* v = field("seed"))
    s.seed = static_cast<uint64_t>(integer_field(*v, "seed", std::numeric_limits<int64_t>::min(),
                                                 std::numeric_limits<int64_t>::max()));

  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (const auto* v = field(name))
      r.max_tokens = integer_field(*v, name, 1, std::numeric_limits<int64_t>::max() / 4);

  if (const auto* v = field("stop")) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > HLLM_SERVE_MAX_STOP_STRINGS)
        bad_field("stop", "'stop' holds at most " + std::to_string(HLLM_SERVE_MAX_STOP_STRINGS) +
                              " strings (got " + std::to_string(v->size()) + ")");
      for (const auto& x : *v) {
        if (!x.is_string()) bad_field("stop", "'stop' must be a string or a list of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad_field("stop", "'stop' must be a string or a list of strings");
    }
    for (const auto& x : r.stop)
      if (x.size() > HLLM_SERVE_MAX_STOP_BYTES)
        bad_field("stop", "each stop string is at most " +
                              std::to_string(HLLM_SERVE_MAX_STOP_BYTES) + " bytes");
    std::erase_if(r.stop, [](const std::string& x) { return x.empty(); });
  }
  if (const auto* v = field("n")) r.n = integer_field(*v, "n", 1, HLLM_SERVE_MAX_CHOICES);
  if (const auto* v = field("best_of"))
    if (integer_field(*v, "best_of", 1, 1000) != 1) bad_field("best_of", "'best_of' must be 1");
  parse_logprobs(body, r);
  if (const auto* v = field("return_tokens_as_token_ids"))
    r.tokens_as_ids = bool_field(*v, "return_tokens_as_token_ids");
  if (r.echo && r.logprobs >= 0 && r.n > 1) bad_field("n", "'echo' with 'logprobs' needs n = 1");
  if (const auto* v = field("ignore_eos")) r.ignore_eos = bool_field(*v, "ignore_eos");
  if (r.ignore_eos && (r.format.constrained() || forced_call))
    bad_field("ignore_eos",
              "'ignore_eos' cannot be combined with a constrained output: a "
              "finished document allows nothing but the end");
  if (const auto* v = field("stream")) r.stream = bool_field(*v, "stream");
  if (const auto* v = field("stream_options")) {
    if (!v->is_object()) bad_field("stream_options", "'stream_options' must be an object");
    if (v->contains("include_usage"))
      r.include_usage = bool_field((*v)["include_usage"], "stream_options.include_usage");
  }
  if (const auto* v = field("user"))
    if (!v->is_string()) bad_field("user", "'user' must be a string");
  if (const auto* v = field("logit_bias")) r.logit_bias = parse_logit_bias(*v);
  // OpenAI fields that would change the answer and that this server cannot honour: a 400, never
  // silently ignored.
  for (const char* name :
       {"suffix", "audio", "prediction", "web_search_options", "reasoning_effort", "verbosity"})
    if (field(name) != nullptr)
      bad_field(name, std::string("'") + name + "' is not supported by this server");
  if (const auto* v = field("modalities"))
    if (*v != nlohmann::json::array({"text"}))
      bad_field("modalities", "'modalities' must be [\"text\"]: this server answers in text");
  if (const auto* v = field("store"))
    if (bool_field(*v, "store"))
      bad_field("store", "'store': true is not supported: chat completions are not kept");
  if (const auto* v = field("cache_salt")) {
    if (!v->is_string() || v->get_ref<const std::string&>().empty() ||
        v->get_ref<const std::string&>().size() > 1024)
      bad_field("cache_salt", "'cache_salt' must be a non-empty string of at most 1024 bytes");
    r.cache_salt = v->get<std::string>();
  }
  return r;
}

}  // namespace hllm::serve
