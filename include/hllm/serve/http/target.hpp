// A request target as the routes see it: the path percent-decoded, the query apart.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace hllm::serve::http {

// "%2F" -> "/"; a '%' not followed by two hex digits stays as it is.
inline std::string percent_decode(std::string_view s) {
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The path and query of a request target ("/v1/models?x=1"; an absolute-form target
// "http://host/v1/models" is reduced to its path).
inline std::pair<std::string, std::string> split_target(std::string_view target) {
  if (const size_t scheme = target.find("://");
      scheme != std::string_view::npos && target.substr(0, 1) != "/") {
    const size_t slash = target.find('/', scheme + 3);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const size_t question = target.find('?');
  if (question == std::string_view::npos) return {percent_decode(target), ""};
  return {percent_decode(target.substr(0, question)), std::string(target.substr(question + 1))};
}

}  // namespace hllm::serve::http
