// Request bodies sent with a Content-Encoding (the openai Python SDK and others can gzip large
// bodies). The body limit holds for the decoded size: inflation is streamed and stops the moment
// the output would pass the limit, so a "zip bomb" (a few hundred KiB that inflate to gigabytes)
// costs at most the limit in memory and is answered 413. Anything but identity, gzip and deflate
// (one layer) is 415.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hllm::serve::http {

// An error the HTTP layer answers itself, with this status.
struct HttpError : std::runtime_error {
  HttpError(int status_code, const std::string& message)
      : std::runtime_error(message), status(status_code) {}
  int status;
};

enum class BodyEncoding { identity, gzip, deflate };

// The encoding a Content-Encoding header names. Throws HttpError 415 for any other, or for two
// layers ("gzip, gzip").
inline BodyEncoding body_encoding(std::string_view header) {
  BodyEncoding found = BodyEncoding::identity;
  while (!header.empty()) {
    const size_t comma = header.find(',');
    std::string token(header.substr(0, comma));
    header.remove_prefix(comma == std::string_view::npos ? header.size() : comma + 1);
    std::erase_if(token, [](unsigned char c) { return c == ' ' || c == '\t'; });
    std::transform(token.begin(), token.end(), token.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (token.empty() || token == "identity") continue;
    BodyEncoding layer;
    if (token == "gzip" || token == "x-gzip")
      layer = BodyEncoding::gzip;
    else if (token == "deflate")
      layer = BodyEncoding::deflate;
    else
      throw HttpError(415, "Content-Encoding '" + token +
                               "' is not supported (send the body plain, gzip or deflate)");
    if (found != BodyEncoding::identity)
      throw HttpError(415, "Content-Encoding with more than one layer is not supported");
    found = layer;
  }
  return found;
}

namespace detail {

// One inflate pass with zlib window bits `window_bits` (15 + 32: zlib or gzip, detected; -15: raw
// deflate). Appends to `out`; concatenated gzip members are read one after another (RFC 1952
// §2.2). Returns false when the data is not of that format (nothing trustworthy was produced).
inline bool inflate_into(std::string_view in, size_t limit, int window_bits, std::string& out) {
  z_stream z{};
  if (inflateInit2(&z, window_bits) != Z_OK) throw HttpError(500, "zlib could not start");
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char chunk[64 * 1024];
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    const int rc = inflate(&z, Z_NO_FLUSH);
    const size_t produced = sizeof chunk - z.avail_out;
    if (out.size() + produced > limit)
      throw HttpError(413, "the request body is too large once decoded (limit " +
                               std::to_string(limit) + " bytes)");
    out.append(chunk, produced);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) return true;
      if (window_bits < 0 || inflateReset(&z) != Z_OK) return false;  // trailing bytes
      continue;                                                       // the next gzip member
    }
    // With fresh output space every time, Z_BUF_ERROR means the input ended early (truncated).
    if (rc != Z_OK) return false;  // that, Z_DATA_ERROR and the like
  }
}

}  // namespace detail

// The decoded body: at most `limit` bytes (HttpError 413 beyond), HttpError 400 when the bytes are
// not valid in their encoding. "deflate" is the zlib format (RFC 9110 §8.4.1.2); raw deflate, which
// some clients send under that name, is accepted too.
inline std::string decode_body(std::string_view body, BodyEncoding encoding, size_t limit) {
  if (encoding == BodyEncoding::identity) return std::string(body);
  if (body.size() > static_cast<size_t>(static_cast<uInt>(-1)))
    throw HttpError(413, "the request body is too large");
  std::string out;
  if (detail::inflate_into(body, limit, 15 + 32, out)) return out;
  out.clear();
  if (encoding == BodyEncoding::deflate && detail::inflate_into(body, limit, -15, out)) return out;
  throw HttpError(400, std::string("the request body is not valid ") +
                           (encoding == BodyEncoding::gzip ? "gzip" : "deflate") + " data");
}

}  // namespace hllm::serve::http
