// hllm::Error — the one exception type for recoverable problems (bad file, bad request, unsupported
// config). Messages name the file / tensor / field at fault and say what is supported.
// Kernels and hot loops never throw.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace hllm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

// Joins any streamable values into one string: str_cat("tensor ", name, " has ", n, " dims").
template <typename... Parts>
std::string str_cat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace detail

// Throws hllm::Error with the message built from `parts`.
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::str_cat(std::forward<Parts>(parts)...));
}

}  // namespace hllm
