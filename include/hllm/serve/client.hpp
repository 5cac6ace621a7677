// A small OpenAI-compatible client over cpp-httplib: one streaming chat completion, timed.
// What `hllm compare` uses to measure hllm serve, vLLM or a hosted API the same way.
//
//   post_chat_stream(url, options, body)   POST {base}/chat/completions with stream=true and
//        │                                 stream_options.include_usage=true
//        ├─ on_delta(piece) per content delta, as it arrives
//        └─ ChatStreamResult: text, TTFT, total time, usage (when sent), HTTP status, error
//
// URLs: "http://HOST[:PORT]/BASE" (BASE usually "/v1"). "https://" works when cpp-httplib was
// built with OpenSSL (CPPHTTPLIB_OPENSSL_SUPPORT, as Debian's libcpp-httplib-dev is); otherwise
// it is a clear error. Nothing here throws for a failing server: errors come back in the result,
// so one bad endpoint never stops a caller's run. The library never prints.
#pragma once

#include <httplib.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "hllm/core/error.hpp"
#include "hllm/serve/sse.hpp"

namespace hllm::serve {

// "http://127.0.0.1:8000/v1" taken apart.
struct ApiUrl {
  std::string scheme;     // "http" or "https"
  std::string host;       // "127.0.0.1", "api.openai.com", "::1" (no brackets)
  int port = 0;           // explicit or the scheme's default
  std::string base_path;  // "/v1" (no trailing slash; "" for the root)

  // "http://127.0.0.1:8000", as httplib::Client wants it.
  std::string origin() const {
    const std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return scheme + "://" + shown + ":" + std::to_string(port);
  }
  std::string str() const { return origin() + base_path; }
};

// Throws hllm::Error naming the URL when it is not http(s)://host[:port][/path].
inline ApiUrl parse_api_url(const std::string& url) {
  ApiUrl u;
  const size_t sep = url.find("://");
  if (sep == std::string::npos)
    fail("endpoint URL \"", url, "\" has no scheme (expected http://HOST:PORT/v1)");
  u.scheme = url.substr(0, sep);
  for (char& c : u.scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (u.scheme != "http" && u.scheme != "https")
    fail("endpoint URL \"", url, "\": scheme \"", u.scheme, "\" is not supported (http, https)");
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
  if (u.scheme == "https")
    fail("endpoint URL \"", url,
         "\": https needs cpp-httplib built with OpenSSL (CPPHTTPLIB_OPENSSL_SUPPORT); this build "
         "has plain http only (put a local proxy in front, or rebuild against an OpenSSL "
         "cpp-httplib)");
#endif
  std::string rest = url.substr(sep + 3);
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  u.base_path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!u.base_path.empty() && u.base_path.back() == '/') u.base_path.pop_back();
  std::string port_text;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:8000
    const size_t close = authority.find(']');
    if (close == std::string::npos) fail("endpoint URL \"", url, "\": unclosed '[' in the host");
    u.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') fail("endpoint URL \"", url, "\": bad host:port");
      port_text = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port_text = authority.substr(colon + 1);
  }
  if (u.host.empty()) fail("endpoint URL \"", url, "\" has no host");
  u.port = u.scheme == "https" ? 443 : 80;
  if (!port_text.empty()) {
    int port = 0;
    for (char c : port_text) {
      if (c < '0' || c > '9' || port > 65535)
        fail("endpoint URL \"", url, "\": port \"", port_text, "\" is not a number in 1..65535");
      port = port * 10 + (c - '0');
    }
    if (port < 1 || port > 65535)
      fail("endpoint URL \"", url, "\": port \"", port_text, "\" is not a number in 1..65535");
    u.port = port;
  }
  return u;
}

struct ClientOptions {
  std::string api_key;              // sent as "Authorization: Bearer KEY" when not empty
  double connect_timeout_s = 10.0;  // TCP (+ TLS) connect
  double read_timeout_s = 300.0;    // longest silence between two reads of the response
};

namespace detail {

inline void configure_client(httplib::Client& client, const ClientOptions& options) {
  const auto us = [](double s) { return std::chrono::microseconds(static_cast<int64_t>(s * 1e6)); };
  client.set_connection_timeout(us(options.connect_timeout_s));
  client.set_read_timeout(us(options.read_timeout_s));
  client.set_write_timeout(us(options.connect_timeout_s));
  if (!options.api_key.empty()) client.set_bearer_token_auth(options.api_key);
}

// httplib's error codes in words ("Connection" alone says little in a report).
inline std::string transport_error(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "could not connect (refused or unreachable)";
    case httplib::Error::ConnectionTimeout:
      return "connect timed out";
    case httplib::Error::Read:
      return "read failed or timed out";
    case httplib::Error::Write:
      return "write failed";
    case httplib::Error::Canceled:
      return "canceled";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts:
      return "could not load CA certificates";
    case httplib::Error::SSLServerVerification:
      return "server certificate not trusted";
    case httplib::Error::Compression:
      return "bad compressed body";
    default:
      return "error " + httplib::to_string(error);
  }
}

// "HTTP 401: Invalid API key" from an OpenAI error body, else the body's start.
inline std::string http_error_message(int status, const std::string& body) {
  std::string message;
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("error")) {
    const nlohmann::json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string())
      message = e["message"].get<std::string>();
    else if (e.is_string())
      message = e.get<std::string>();
  }
  if (message.empty()) message = body.substr(0, 300);
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return "HTTP " + std::to_string(status) + (message.empty() ? "" : ": " + message);
}

}  // namespace detail

// POSTs `body` (an OpenAI chat-completion request; stream and stream_options.include_usage are
// set here) to {url}/chat/completions and reads the SSE stream to "[DONE]". on_delta, if given,
// runs on the calling thread for every content delta. Never throws for server or network trouble.
inline ChatStreamResult post_chat_stream(
    const ApiUrl& url, const ClientOptions& options, nlohmann::json body,
    const std::function<void(std::string_view)>& on_delta = {}) {
  using clock = std::chrono::steady_clock;
  ChatStreamResult result;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};

  httplib::Client client(url.origin());
  detail::configure_client(client, options);
  httplib::Request request;
  request.method = "POST";
  request.path = url.base_path + "/chat/completions";
  request.headers = {{"Accept", "text/event-stream"}};
  request.body = body.dump();
  request.set_header("Content-Type", "application/json");

  ChatStreamTally tally;
  SseParser parser;
  std::string error_body;  // a non-200 answer's body (an OpenAI error object)
  const clock::time_point start = clock::now();
  const auto seconds_since_start = [&] {
    return std::chrono::duration<double>(clock::now() - start).count();
  };
  const auto on_payload = [&](std::string_view payload) {
    const std::string piece = apply_chat_chunk(payload, tally);
    if (!piece.empty()) {
      if (result.ttft_s < 0) result.ttft_s = seconds_since_start();
      if (on_delta) on_delta(piece);
    }
    return !tally.done && tally.error.empty();
  };
  request.response_handler = [&](const httplib::Response& response) {
    result.http_status = response.status;
    return true;
  };
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    if (result.http_status != 200) {
      if (error_body.size() < 64 * 1024) error_body.append(data, size);
      return true;
    }
    parser.feed(std::string_view(data, size), on_payload);
    return true;  // read to the end so the connection closes cleanly
  };

  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client.send(request, response, error);
  if (result.http_status == 200) parser.finish(on_payload);
  result.total_s = seconds_since_start();
  result.text = std::move(tally.text);
  result.content_chunks = tally.content_chunks;
  result.prompt_tokens = tally.prompt_tokens;
  result.completion_tokens = tally.completion_tokens;
  result.finish_reason = tally.finish_reason;

  if (!sent || error != httplib::Error::Success) {
    result.error = (result.http_status == 0 ? "no response: " : "stream broken: ") +
                   detail::transport_error(error) + " (" + url.str() + ")";
  } else if (result.http_status != 200) {
    result.error = detail::http_error_message(result.http_status, error_body);
  } else if (!tally.error.empty()) {
    result.error = tally.error;
  } else if (!tally.done) {
    result.error = "stream ended without data: [DONE]";
  }
  return result;
}

// GETs {url}{path} ("/models") and parses the JSON; on failure returns nullopt and sets *error.
inline std::optional<nlohmann::json> get_json(const ApiUrl& url, const ClientOptions& options,
                                              const std::string& path, std::string* error) {
  httplib::Client client(url.origin());
  detail::configure_client(client, options);
  const httplib::Result response = client.Get(url.base_path + path);
  if (!response) {
    if (error) *error = "no response: " + detail::transport_error(response.error());
    return std::nullopt;
  }
  if (response->status != 200) {
    if (error) *error = detail::http_error_message(response->status, response->body);
    return std::nullopt;
  }
  nlohmann::json j = nlohmann::json::parse(response->body, nullptr, false);
  if (j.is_discarded()) {
    if (error) *error = "GET " + path + ": the answer is not JSON";
    return std::nullopt;
  }
  return j;
}

}  // namespace hllm::serve
