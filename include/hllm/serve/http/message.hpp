// One HTTP exchange as the application sees it, independent of the HTTP library underneath
// (serve/http/server.hpp): the request, read whole and decoded, and the response — a body, or a
// stream written chunk by chunk from a worker thread.
#pragma once

#include <cctype>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hllm::serve::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

// Header names compare case-insensitively (RFC 9110 §5.1).
inline bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

// The value of header `name` ("" when absent; the first when repeated).
inline std::string header_value(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers)
    if (same_name(key, name)) return value;
  return "";
}

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string path;    // percent-decoded, without the query
  std::string query;   // what followed '?', as sent
  Headers headers;
  std::string body;                  // decoded (Content-Encoding undone)
  std::vector<std::string> matches;  // the route's pattern groups; [0] is the whole path

  std::string header(std::string_view name) const { return header_value(headers, name); }
};

// Where a streamed body goes. Both calls are made from the worker thread running the stream.
class BodyWriter {
 public:
  virtual ~BodyWriter() = default;
  // Sends `data` (one chunk); false when the client is gone or stopped reading for too long.
  virtual bool write(std::string_view data) = 0;
};

struct Response {
  int status = 200;
  Headers headers;
  std::string body;
  // Set instead of a body: the body is streamed (chunked) by this function, on a worker thread.
  // It returns true when the body is complete, false to end the connection after what was sent.
  std::function<bool(BodyWriter&)> stream;
  // Called once, from the server's I/O thread, when the client closes its side of the connection
  // while `stream` runs — so the work behind the stream can stop at once.
  std::function<void()> on_disconnect;

  bool has_header(std::string_view name) const {
    for (const auto& header : headers)
      if (same_name(header.first, name)) return true;
    return false;
  }
  // Replaces every header called `name`.
  void set_header(std::string name, std::string value) {
    std::erase_if(headers, [&](const auto& header) { return same_name(header.first, name); });
    headers.emplace_back(std::move(name), std::move(value));
  }
  void set_content(std::string content, std::string content_type) {
    body = std::move(content);
    set_header("Content-Type", std::move(content_type));
  }
};

}  // namespace hllm::serve::http
