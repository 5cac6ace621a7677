// The pieces every OpenAI request parser shares: ApiError (the {"error": ...} body with its HTTP
// status) and the checked readers of one field (numbers in a range, integers, booleans, message
// content), each failing with a 400 that names the field.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "hllm/io/json.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_MAX_JSON_DEPTH
#define HLLM_SERVE_MAX_JSON_DEPTH 128  // nesting of any JSON the server reads (see parse_json)
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
      case 403:
        return "permission_error";
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

// `text` as Json (json or ordered_json), refused when it nests deeper than
// HLLM_SERVE_MAX_JSON_DEPTH: nlohmann copies and dumps values recursively, so a request of a
// million '[' would overflow a thread's stack long before the body limit. Returns a discarded
// value (is_discarded()) when the text is not valid JSON or too deep; `why` says which.
template <class Json = nlohmann::json>
Json parse_json(std::string_view text, std::string* why = nullptr) {
  struct TooDeep {};
  try {
    Json j = Json::parse(
        text,
        [](int depth, typename Json::parse_event_t, Json&) {
          if (depth > HLLM_SERVE_MAX_JSON_DEPTH) throw TooDeep{};
          return true;
        },
        /*allow_exceptions=*/true);
    return j;
  } catch (const TooDeep&) {
    if (why) *why = "it nests deeper than " + std::to_string(HLLM_SERVE_MAX_JSON_DEPTH) + " levels";
  } catch (const nlohmann::json::exception& e) {
    if (why) *why = e.what();
  }
  return Json(Json::value_t::discarded);
}

// A request body: parse_json, or ApiError 400.
template <class Json = nlohmann::json>
Json request_json(std::string_view text) {
  std::string why;
  Json j = parse_json<Json>(text, &why);
  if (j.is_discarded())
    throw ApiError{400, "the request body is not valid JSON: " + why, "", "invalid_json"};
  return j;
}

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

}  // namespace hllm::serve
