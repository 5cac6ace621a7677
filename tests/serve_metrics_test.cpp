// serve/metrics.hpp: vLLM's bucket bounds, the Prometheus histogram text (cumulative buckets up to
// +Inf, _sum, _count) and RequestMetrics fed with a request's times as the engine callbacks do.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "hllm/serve/metrics.hpp"

namespace {

using hllm::serve::Histogram;
using hllm::serve::RequestMetrics;
using namespace std::chrono_literals;

// The value of the line that starts with `series` followed by a space; -1 when there is none.
double sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  return -1;
}

TEST(ServeMetrics, Buckets125LikeVllm) {
  EXPECT_EQ(hllm::serve::buckets_1_2_5(100), (std::vector<double>{1, 2, 5, 10, 20, 50, 100}));
  EXPECT_EQ(hllm::serve::buckets_1_2_5(8192).back(), 5000);
  EXPECT_TRUE(hllm::serve::buckets_1_2_5(0).empty());
}

TEST(ServeMetrics, HistogramTextIsCumulative) {
  const std::vector<double> bounds = {0.5, 1, 2.5};
  Histogram h(bounds);
  for (double x : {0.1, 0.5, 0.7, 3.0, 100.0}) h.observe(x);  // le is inclusive: 0.5 in "0.5"
  EXPECT_EQ(h.prometheus("x_seconds", "model_name=\"m\""),
            "x_seconds_bucket{model_name=\"m\",le=\"0.5\"} 2\n"
            "x_seconds_bucket{model_name=\"m\",le=\"1\"} 3\n"
            "x_seconds_bucket{model_name=\"m\",le=\"2.5\"} 3\n"
            "x_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 5\n"
            "x_seconds_sum{model_name=\"m\"} 104.3\n"
            "x_seconds_count{model_name=\"m\"} 5\n");
}

TEST(ServeMetrics, RequestTimesAndTokens) {
  RequestMetrics metrics(8192);
  const auto t0 = RequestMetrics::Clock::now();
  RequestMetrics::Timeline a(7);  // a request with a 7-token prompt: 3 tokens, then length
  a.arrival = t0;
  metrics.token(a, t0 + 30ms);   // time to first token 0.03
  metrics.token(a, t0 + 50ms);   // inter-token 0.02
  metrics.token(a, t0 + 150ms);  // inter-token 0.1
  metrics.finish(a, {hllm::FinishReason::length, 7, 3, 0, ""}, t0 + 2s);
  RequestMetrics::Timeline b(4);  // cancelled before its first token
  b.arrival = t0;
  metrics.finish(b, {hllm::FinishReason::cancelled, 4, 0, 0, ""}, t0 + 1s);

  const std::string text = metrics.prometheus("demo");
  const std::string m = "{model_name=\"demo\"";
  EXPECT_EQ(sample(text, "hllm_prompt_tokens_total" + m + "}"), 7);  // counted at the first token
  EXPECT_EQ(sample(text, "hllm_generation_tokens_total" + m + "}"), 3);
  EXPECT_EQ(sample(text, "hllm_request_success_total" + m + ",finished_reason=\"length\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_request_success_total" + m + ",finished_reason=\"abort\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_request_success_total" + m + ",finished_reason=\"stop\"}"), 0);
  EXPECT_EQ(sample(text, "hllm_request_success_total" + m + ",finished_reason=\"error\"}"), 0);
  EXPECT_EQ(sample(text, "hllm_time_to_first_token_seconds_count" + m + "}"), 1);
  EXPECT_DOUBLE_EQ(sample(text, "hllm_time_to_first_token_seconds_sum" + m + "}"), 0.03);
  EXPECT_EQ(sample(text, "hllm_time_to_first_token_seconds_bucket" + m + ",le=\"0.02\"}"), 0);
  EXPECT_EQ(sample(text, "hllm_time_to_first_token_seconds_bucket" + m + ",le=\"0.04\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_inter_token_latency_seconds_count" + m + "}"), 2);
  EXPECT_EQ(sample(text, "hllm_inter_token_latency_seconds_bucket" + m + ",le=\"0.025\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_inter_token_latency_seconds_bucket" + m + ",le=\"0.1\"}"), 2);
  EXPECT_EQ(sample(text, "hllm_e2e_request_latency_seconds_count" + m + "}"), 2);
  EXPECT_DOUBLE_EQ(sample(text, "hllm_e2e_request_latency_seconds_sum" + m + "}"), 3);
  EXPECT_EQ(sample(text, "hllm_e2e_request_latency_seconds_bucket" + m + ",le=\"1\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_e2e_request_latency_seconds_bucket" + m + ",le=\"2\"}"), 2);
  EXPECT_EQ(sample(text, "hllm_request_prompt_tokens_sum" + m + "}"), 11);
  EXPECT_EQ(sample(text, "hllm_request_prompt_tokens_bucket" + m + ",le=\"5\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_request_generation_tokens_bucket" + m + ",le=\"1\"}"), 1);
  EXPECT_EQ(sample(text, "hllm_request_generation_tokens_count" + m + "}"), 2);
  EXPECT_EQ(sample(text, "hllm_request_generation_tokens_bucket" + m + ",le=\"5000\"}"), 2);
  EXPECT_NE(text.find("# TYPE hllm_inter_token_latency_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE hllm_request_success_total counter\n"), std::string::npos);
}

TEST(ServeMetrics, NumbersAreShortAndExact) {
  EXPECT_EQ(hllm::serve::prometheus_number(12), "12");
  EXPECT_EQ(hllm::serve::prometheus_number(0.001), "0.001");
  EXPECT_EQ(hllm::serve::prometheus_number(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(hllm::serve::prometheus_number(INFINITY), "+Inf");
}

}  // namespace
