// serve/cors.hpp: parsing --allowed-origins, which origins may read answers, and the preflight
// answers (allowed: 204 with what may be sent; not allowed: 403 without CORS headers; not a
// preflight or CORS off: routed as usual).
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "hllm/serve/cors.hpp"

namespace {

using hllm::serve::cors_allow_origin;
using hllm::serve::cors_preflight;
using hllm::serve::cors_response_headers;
using hllm::serve::CorsPolicy;
using HttpHeaders = hllm::serve::http::Headers;
using hllm::serve::parse_allowed_origins;

std::optional<std::string> header(const HttpHeaders& headers, const std::string& name) {
  for (const auto& [key, value] : headers)
    if (key == name) return value;
  return std::nullopt;
}

TEST(ServeCors, ParsesAList) {
  const CorsPolicy p = parse_allowed_origins(" http://localhost:3000, HTTPS://App.Example.com/ ,");
  EXPECT_EQ(p.origins,
            (std::vector<std::string>{"http://localhost:3000", "https://app.example.com"}));
  EXPECT_FALSE(p.any);
  EXPECT_TRUE(p.enabled());
  EXPECT_TRUE(parse_allowed_origins("*").any);
  EXPECT_FALSE(parse_allowed_origins("").enabled());
  EXPECT_EQ(parse_allowed_origins("http://[::1]:8080").origins.front(), "http://[::1]:8080");
}

TEST(ServeCors, RefusesWhatIsNotAnOrigin) {
  for (const char* bad : {"localhost:3000", "http://x.com/path", "ftp://x.com", "http://",
                          "http://a b", "http://x.com?q"}) {
    try {
      parse_allowed_origins(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const hllm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--allowed-origins"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(ServeCors, AllowsListedOriginsExactly) {
  const CorsPolicy p = parse_allowed_origins("http://localhost:3000");
  EXPECT_EQ(cors_allow_origin(p, "http://localhost:3000"), "http://localhost:3000");
  EXPECT_EQ(cors_allow_origin(p, "http://localhost:3001"), std::nullopt);
  EXPECT_EQ(cors_allow_origin(p, "https://localhost:3000"), std::nullopt);
  EXPECT_EQ(cors_allow_origin(p, "http://localhost:3000.evil.com"), std::nullopt);
  EXPECT_EQ(cors_allow_origin(p, ""), std::nullopt);
  EXPECT_EQ(cors_allow_origin(parse_allowed_origins("*"), "http://anything:1"), "*");
  EXPECT_EQ(cors_allow_origin(CorsPolicy{}, "http://localhost:3000"), std::nullopt);
}

TEST(ServeCors, ResponseHeaders) {
  const CorsPolicy p = parse_allowed_origins("http://a.test");
  EXPECT_EQ(cors_response_headers(p, "http://a.test"),
            (HttpHeaders{{"Access-Control-Allow-Origin", "http://a.test"}, {"Vary", "Origin"}}));
  EXPECT_TRUE(cors_response_headers(p, "http://b.test").empty());
  EXPECT_TRUE(cors_response_headers(p, "").empty());
  EXPECT_TRUE(cors_response_headers(CorsPolicy{}, "http://a.test").empty());
}

TEST(ServeCors, PreflightFromAnAllowedOrigin) {
  const CorsPolicy p = parse_allowed_origins("http://a.test");
  const auto answer =
      cors_preflight(p, "OPTIONS", "http://a.test", "POST", "authorization,content-type");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 204);
  EXPECT_EQ(header(answer->headers, "Access-Control-Allow-Origin"), "http://a.test");
  EXPECT_EQ(header(answer->headers, "Vary"), "Origin");
  EXPECT_EQ(header(answer->headers, "Access-Control-Allow-Methods"), "GET, POST, DELETE, OPTIONS");
  EXPECT_EQ(header(answer->headers, "Access-Control-Allow-Headers"), "authorization,content-type");
  EXPECT_EQ(header(answer->headers, "Access-Control-Max-Age"), "7200");

  // No requested headers (or ones that are not a list of names): the SDK's set.
  for (const char* requested : {"", "x\r\nSet-Cookie: a=b"}) {
    const auto fallback = cors_preflight(p, "OPTIONS", "http://a.test", "GET", requested);
    ASSERT_TRUE(fallback);
    const std::string allowed = *header(fallback->headers, "Access-Control-Allow-Headers");
    for (const char* name : {"Authorization", "Content-Type", "x-stainless-os"})
      EXPECT_NE(allowed.find(name), std::string::npos) << name;
    EXPECT_EQ(allowed.find('\n'), std::string::npos);
  }
}

TEST(ServeCors, PreflightFromAnotherOriginIsRefusedWithoutHeaders) {
  const auto answer = cors_preflight(parse_allowed_origins("http://a.test"), "OPTIONS",
                                     "http://b.test", "POST", "authorization");
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->status, 403);
  EXPECT_TRUE(answer->headers.empty());
}

TEST(ServeCors, NotAPreflight) {
  const CorsPolicy p = parse_allowed_origins("http://a.test");
  EXPECT_FALSE(cors_preflight(p, "POST", "http://a.test", "POST", ""));  // not OPTIONS
  EXPECT_FALSE(cors_preflight(p, "OPTIONS", "", "POST", ""));            // no Origin
  EXPECT_FALSE(cors_preflight(p, "OPTIONS", "http://a.test", "", ""));   // no request method
  EXPECT_FALSE(cors_preflight(CorsPolicy{}, "OPTIONS", "http://a.test", "POST", ""));  // CORS off
}

}  // namespace
