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
#include <vector>

#include "hllm/engine/sampler.hpp"
#include "hllm/io/json.hpp"
#include "hllm/tokenizer/chat.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_MAX_STOP_STRINGS
#define HLLM_SERVE_MAX_STOP_STRINGS 16  // OpenAI allows 4; vLLM any number: be generous, bounded
#endif
#ifndef HLLM_SERVE_MAX_STOP_BYTES
#define HLLM_SERVE_MAX_STOP_BYTES 256  // per stop string
#endif

// An error answered as {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // the offending field, "" when none
  std::string code;   // machine-readable, "" when none
  std::string type() const {
    switch (status) {
      case 401:
        return "authentication_error";
      case 404:
        return "not_found_error";
      case 429:
        return "rate_limit_error";
      default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
  }
  nlohmann::json to_json() const {
    const auto or_null = [](const std::string& s) {
      return s.empty() ? nlohmann::json() : nlohmann::json(s);
    };
    return {{"error",
             {{"message", message},
              {"type", type()},
              {"param", or_null(param)},
              {"code", or_null(code)}}}};
  }
};

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
  bool chat = true;                   // /v1/chat/completions (messages) or /v1/completions (prompt)
  std::string model;                  // "" when not given
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
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

[[noreturn]] inline void bad_field(const std::string& param, const std::string& message) {
  throw ApiError{400, message, param, "invalid_value"};
}

inline double number_field(const nlohmann::json& v, const std::string& name) {
  if (!v.is_number()) bad_field(name, "'" + name + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) bad_field(name, "'" + name + "' must be finite");
  return x;
}

inline float ranged_float(const nlohmann::json& v, const std::string& name, double lo, double hi,
                          const char* range) {
  const double x = number_field(v, name);
  if (!(x >= lo && x <= hi))
    bad_field(name, "'" + name + "' must be in " + range + " (got " + describe_json(v) + ")");
  return static_cast<float>(x);
}

inline int64_t integer_field(const nlohmann::json& v, const std::string& name, int64_t lo,
                             int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
      bad_field(name, "'" + name + "' must be at most " + std::to_string(hi) + " (got " +
                          describe_json(v) + ")");
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
             v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e18) {
    x = static_cast<int64_t>(v.get<double>());  // 24.0 is an integer too
  } else {
    bad_field(name, "'" + name + "' must be an integer");
  }
  if (x < lo || x > hi) {
    const bool open_above = hi >= std::numeric_limits<int64_t>::max() / 4;  // "no upper limit"
    bad_field(name,
              "'" + name + "' must be " +
                  (open_above ? "at least " + std::to_string(lo)
                              : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]") +
                  " (got " + describe_json(v) + ")");
  }
  return x;
}

inline bool bool_field(const nlohmann::json& v, const std::string& name) {
  if (v.is_null()) return false;
  if (!v.is_boolean()) bad_field(name, "'" + name + "' must be a boolean");
  return v.get<bool>();
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts (joined).
inline std::string message_content(const nlohmann::json& content, const std::string& param) {
  if (content.is_null()) return "";  // e.g. an assistant turn that only called tools
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array())
    bad_field(param, "'" + param + "' must be a string or an array of text parts");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const auto& part = content[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      bad_field(p, "'" + p + "' must be an object with a 'type'");
    if (part["type"] != "text")
      bad_field(p, "'" + p + "': only text content parts are supported (got type " +
                       describe_json(part["type"]) + ")");
    if (!part.contains("text") || !part["text"].is_string())
      bad_field(p, "'" + p + ".text' must be a string");
    text += part["text"].get<std::string>();
  }
  return text;
}

}  // namespace detail

// Parses and checks one request body (already valid JSON). Throws ApiError.
inline CompletionRequest parse_completion_request(const nlohmann::json& body, bool chat) {
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
    if (!messages->is_array() || messages->empty())
      bad_field("messages", "'messages' must be a non-empty array");
    for (size_t i = 0; i < messages->size(); ++i) {
      const auto& m = (*messages)[i];
      const std::string p = "messages[" + std::to_string(i) + "]";
      if (!m.is_object()) bad_field(p, "'" + p + "' must be an object");
      if (!m.contains("role") || !m["role"].is_string())
        bad_field(p + ".role", "'" + p + ".role' must be a string");
      std::string role = m["role"].get<std::string>();
      if (role == "developer") role = "system";  // OpenAI's newer name for it
      if (role != "system" && role != "user" && role != "assistant")
        bad_field(p + ".role",
                  "'" + p + ".role' must be system, user or assistant (got \"" + role + "\")");
      r.messages.push_back(
          {role, message_content(m.contains("content") ? m["content"] : nlohmann::json(),
                                 p + ".content")});
    }
  } else {
    const auto* prompt = field("prompt");
    if (prompt == nullptr) bad_field("prompt", "'prompt' is required");
    if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      r.prompt = (*prompt)[0].get<std::string>();
    } else if (prompt->is_string()) {
      r.prompt = prompt->get<std::string>();
    } else {
      bad_field("prompt", "'prompt' must be a string (or a list of one string)");
    }
  }

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
  if (const auto* v = field("n"))
    if (integer_field(*v, "n", 1, 1000) != 1)
      bad_field("n", "'n' must be 1: one choice per request is supported");
  if (const auto* v = field("best_of"))
    if (integer_field(*v, "best_of", 1, 1000) != 1) bad_field("best_of", "'best_of' must be 1");
  if (const auto* v = field("echo"))
    if (bool_field(*v, "echo")) bad_field("echo", "'echo' is not supported");
  if (const auto* v = field("logprobs"))
    if (!v->is_boolean() || v->get<bool>()) bad_field("logprobs", "'logprobs' is not supported");
  if (const auto* v = field("ignore_eos")) r.ignore_eos = bool_field(*v, "ignore_eos");
  if (const auto* v = field("stream")) r.stream = bool_field(*v, "stream");
  if (const auto* v = field("stream_options")) {
    if (!v->is_object()) bad_field("stream_options", "'stream_options' must be an object");
    if (v->contains("include_usage"))
      r.include_usage = bool_field((*v)["include_usage"], "stream_options.include_usage");
  }
  if (const auto* v = field("user"))
    if (!v->is_string()) bad_field("user", "'user' must be a string");
  if (const auto* v = field("cache_salt")) {
    if (!v->is_string() || v->get_ref<const std::string&>().empty() ||
        v->get_ref<const std::string&>().size() > 1024)
      bad_field("cache_salt", "'cache_salt' must be a non-empty string of at most 1024 bytes");
    r.cache_salt = v->get<std::string>();
  }
  return r;
}

}  // namespace hllm::serve
