// CORS (the Fetch standard's cross-origin rules) for `hllm serve --allowed-origins`: which web pages
// on other origins may call the API from a browser. Pure functions over header values; the server
// (serve/openai.hpp) applies them in its pre-routing handler (preflights) and its post-routing
// handler (every other response, errors and streams included).
//
//   browser on http://localhost:3000                                   hllm serve
//     OPTIONS /v1/chat/completions  Origin, Access-Control-Request-*  ─► 204 + Allow-Methods,
//                                                                        Allow-Headers, Max-Age
//                                                                        (no API key needed: browsers
//                                                                        never send it on a preflight)
//     POST /v1/chat/completions     Origin, Authorization            ─► the answer + Allow-Origin
//
// An origin is allowed when it is in the list exactly (scheme://host[:port], as browsers send it)
// or the list is "*". Allowed: Access-Control-Allow-Origin names it (or is "*") with Vary: Origin.
// Not allowed: no CORS headers at all, so the browser refuses the page; its preflight gets 403.
// An empty list (the default) turns all of this off: responses are exactly what they were.
#pragma once

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/serve/http/message.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_CORS_MAX_AGE
#define HLLM_SERVE_CORS_MAX_AGE 7200  // seconds a browser may reuse a preflight (Chromium's cap)
#endif

struct CorsPolicy {
  std::vector<std::string> origins;  // exact, lowercase; empty and !any: CORS is off
  bool any = false;                  // "*": every origin, answered with "*"
  bool enabled() const { return any || !origins.empty(); }
};

// The methods and headers a preflight allows when the browser names no headers: what the openai
// SDK and fetch() with a key send.
inline constexpr const char* CORS_ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS";
inline constexpr const char* CORS_DEFAULT_ALLOWED_HEADERS =
    "Authorization, Content-Type, Accept, OpenAI-Organization, OpenAI-Project, "
    "x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, "
    "x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, "
    "x-stainless-timeout";

namespace detail {

inline std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "http://Example.com:3000/" -> "http://example.com:3000"; throws for anything but an origin.
inline std::string parse_origin(std::string_view entry) {
  std::string origin(entry);
  std::transform(origin.begin(), origin.end(), origin.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (origin.ends_with('/')) origin.pop_back();
  const size_t host = origin.starts_with("http://")    ? 7
                      : origin.starts_with("https://") ? 8
                                                       : std::string::npos;
  const bool valid =
      host != std::string::npos && origin.size() > host &&
      std::all_of(
          origin.begin() + static_cast<std::ptrdiff_t>(host), origin.end(), [](unsigned char c) {
            return std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
          });
  if (!valid)
    fail("--allowed-origins: '", entry,
         "' is not an origin (scheme://host[:port] with no path, e.g. http://localhost:3000, "
         "or *)");
  return origin;
}

// A header value made only of header-name characters, commas and spaces (what a browser sends in
// Access-Control-Request-Headers), so echoing it cannot inject anything.
inline bool is_header_name_list(std::string_view value) {
  return !value.empty() && std::all_of(value.begin(), value.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == ',' || c == ' ';
  });
}

}  // namespace detail

// "http://localhost:3000,https://app.example.com", or "*"; "" = off. Throws hllm::Error naming
// the entry that is not an origin.
inline CorsPolicy parse_allowed_origins(std::string_view list) {
  CorsPolicy policy;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view entry = detail::trim_spaces(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (entry.empty()) continue;
    if (entry == "*")
      policy.any = true;
    else
      policy.origins.push_back(detail::parse_origin(entry));
  }
  return policy;
}

// The Access-Control-Allow-Origin value for a request's Origin header ("" when it has none), or
// nothing when that origin may not read the answer.
inline std::optional<std::string> cors_allow_origin(const CorsPolicy& policy,
                                                    std::string_view origin) {
  if (origin.empty() || !policy.enabled()) return std::nullopt;
  if (policy.any) return "*";
  if (std::find(policy.origins.begin(), policy.origins.end(), origin) == policy.origins.end())
    return std::nullopt;
  return std::string(origin);
}

// The headers every response to `origin` gets: Allow-Origin and Vary, or none.
inline http::Headers cors_response_headers(const CorsPolicy& policy, std::string_view origin) {
  const std::optional<std::string> allowed = cors_allow_origin(policy, origin);
  if (!allowed) return {};
  return {{"Access-Control-Allow-Origin", *allowed}, {"Vary", "Origin"}};
}

// The answer to a preflight: 204 with what it may send, or 403 without CORS headers.
struct CorsPreflight {
  int status = 204;
  http::Headers headers;
};

// A preflight is an OPTIONS request with Origin and Access-Control-Request-Method (Fetch §4.8);
// anything else (or CORS off) is no preflight: nothing, and the request is routed as usual.
inline std::optional<CorsPreflight> cors_preflight(const CorsPolicy& policy,
                                                   std::string_view method, std::string_view origin,
                                                   std::string_view request_method,
                                                   std::string_view request_headers) {
  if (!policy.enabled() || method != "OPTIONS" || origin.empty() || request_method.empty())
    return std::nullopt;
  CorsPreflight answer;
  answer.headers = cors_response_headers(policy, origin);
  if (answer.headers.empty()) {
    answer.status = 403;
    return answer;
  }
  request_headers = detail::trim_spaces(request_headers);
  answer.headers.emplace_back("Access-Control-Allow-Methods", CORS_ALLOWED_METHODS);
  answer.headers.emplace_back("Access-Control-Allow-Headers",
                              detail::is_header_name_list(request_headers)
                                  ? std::string(request_headers)
                                  : std::string(CORS_DEFAULT_ALLOWED_HEADERS));
  answer.headers.emplace_back("Access-Control-Max-Age", std::to_string(HLLM_SERVE_CORS_MAX_AGE));
  return answer;
}

}  // namespace hllm::serve
