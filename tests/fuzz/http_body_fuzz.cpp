// libFuzzer harness: what the server's HTTP layer parses itself, beyond Boost.Beast's parser —
//   byte 0 = 0   the rest as a Content-Encoding header (body_encoding)
//   byte 0 = 1   the rest as a gzip body, decoded with a 64 KiB limit (decode_body)
//   byte 0 = 2   the rest as a deflate body (zlib or raw), the same
//   byte 0 = 3   the rest as a request target (split_target, percent_decode)
// A bad input must be an HttpError with the status the server answers (400, 413, 415); a decoded
// body never passes the limit; a path never holds the query.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_util.hpp"
#include "hllm/serve/http/content_encoding.hpp"
#include "hllm/serve/http/target.hpp"

namespace http = hllm::serve::http;
using hllm::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  constexpr size_t LIMIT = 64 << 10;
  try {
    switch (data[0] % 4) {
      case 0:
        http::body_encoding(rest);
        break;
      case 1:
      case 2: {
        const auto encoding =
            data[0] % 4 == 1 ? http::BodyEncoding::gzip : http::BodyEncoding::deflate;
        const std::string body = http::decode_body(rest, encoding, LIMIT);
        check(body.size() <= LIMIT, "a decoded body passed the limit", std::to_string(body.size()));
        break;
      }
      default: {
        const auto [path, query] = http::split_target(rest);
        check(path.size() <= rest.size(), "a decoded path grew", path);
        if (rest.find('?') == std::string_view::npos)
          check(query.empty(), "a query without '?'", query);
        break;
      }
    }
  } catch (const http::HttpError& e) {
    check(e.status == 400 || e.status == 413 || e.status == 415, "an unexpected status",
          std::to_string(e.status) + ": " + e.what());
  }
  return 0;
}
