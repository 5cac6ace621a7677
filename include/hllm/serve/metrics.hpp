// The server's numbers in Prometheus' text exposition format (version 0.0.4), what GET /metrics
// answers, each labelled with the served model's name and named like vLLM's (hllm_ instead of
// vllm:) so existing dashboards map over:
//
//   engine state    gauges and counters read from EngineStats when scraped (prometheus_metrics)
//   request-level   counters and histograms recorded as requests run (RequestMetrics): tokens,
//                   finish reasons, time to first token, inter-token latency, end-to-end latency
//
// A histogram is written as Prometheus expects: one cumulative NAME_bucket{le="..."} line per
// upper bound (an observation x counts in every bucket with x <= le), le="+Inf" equal to
// NAME_count, then NAME_sum. The bounds are vLLM's, so quantiles compare across servers.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "hllm/engine/engine_core.hpp"
#include "hllm/engine/request.hpp"

namespace hllm::serve {

// A label value with \, " and newlines escaped, as the format requires.
inline std::string prometheus_label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// A sample value or bound: the shortest text that reads back as the same double ("0.25", "12",
// "+Inf").
inline std::string prometheus_number(double value) {
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  std::array<char, 32> text{};
  const auto result = std::to_chars(text.data(), text.data() + text.size(), value);
  return std::string(text.data(), result.ptr);
}

inline std::string prometheus_metrics(const EngineStats& s, const std::string& model_name) {
  const std::string label = "{model_name=\"" + prometheus_label(model_name) + "\"}";
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + label + " " + prometheus_number(value) + "\n";
  };
  const double total = static_cast<double>(s.kv_blocks_total);
  metric("hllm_num_requests_running", "gauge", "Requests in the running batch.",
         static_cast<double>(s.running));
  metric("hllm_num_requests_waiting", "gauge", "Requests waiting to start or to resume.",
         static_cast<double>(s.waiting));
  metric("hllm_kv_cache_usage_perc", "gauge", "Fraction of KV blocks held by requests (0-1).",
         total > 0 ? 1.0 - static_cast<double>(s.kv_blocks_free) / total : 0.0);
  metric("hllm_kv_cache_blocks_total", "gauge", "KV blocks in the pool (16 positions each).",
         total);
  metric("hllm_kv_cache_blocks_cached", "gauge",
         "KV blocks holding a reusable prefix (held or free).",
         static_cast<double>(s.kv_blocks_cached));
  metric("hllm_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache.",
         static_cast<double>(s.prefix_query_tokens));
  metric("hllm_prefix_cache_hits_total", "counter",
         "Prompt tokens found in the prefix cache (not computed again).",
         static_cast<double>(s.prefix_hit_tokens));
  metric("hllm_num_preemptions_total", "counter",
         "Running requests sent back to wait for KV blocks (recomputed on return).",
         static_cast<double>(s.preemptions));
  metric("hllm_request_finished_total", "counter", "Requests ended (any reason).",
         static_cast<double>(s.finished));
  return out;
}

// vLLM's bucket bounds (vllm/v1/metrics/loggers.py).
inline constexpr std::array<double, 22> TIME_TO_FIRST_TOKEN_BUCKETS = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
inline constexpr std::array<double, 19> INTER_TOKEN_LATENCY_BUCKETS = {
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
    0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
inline constexpr std::array<double, 21> REQUEST_LATENCY_BUCKETS = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

// 1, 2, 5, 10, 20, 50, ... up to `max_value` (vLLM's build_1_2_5_buckets, for token counts).
inline std::vector<double> buckets_1_2_5(int64_t max_value) {
  std::vector<double> bounds;
  for (int64_t scale = 1; scale <= max_value; scale *= 10)
    for (int64_t mantissa : {1, 2, 5})
      if (mantissa * scale <= max_value) bounds.push_back(static_cast<double>(mantissa * scale));
  return bounds;
}

// Observations counted per bucket (not yet cumulative) with their sum. Not thread-safe alone.
struct Histogram {
  std::vector<double> bounds;   // ascending upper bounds; +Inf is implied
  std::vector<uint64_t> count;  // (bounds + 1) observations x with bounds[i-1] < x <= bounds[i]
  double sum = 0;

  explicit Histogram(std::span<const double> upper_bounds)
      : bounds(upper_bounds.begin(), upper_bounds.end()), count(bounds.size() + 1, 0) {}

  void observe(double x) {
    const auto bucket = std::lower_bound(bounds.begin(), bounds.end(), x) - bounds.begin();
    ++count[static_cast<size_t>(bucket)];
    sum += x;
  }

  // The _bucket, _sum and _count lines; `labels` is the inner label list (model_name="...").
  std::string prometheus(const std::string& name, const std::string& labels) const {
    std::string out;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < count.size(); ++i) {
      cumulative += count[i];
      const double le = i < bounds.size() ? bounds[i] : INFINITY;
      out += name + "_bucket{" + labels + ",le=\"" + prometheus_number(le) + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += name + "_sum{" + labels + "} " + prometheus_number(sum) + "\n";
    out += name + "_count{" + labels + "} " + std::to_string(cumulative) + "\n";
    return out;
  }
};

// vLLM's request-level metrics, recorded from each completion's engine callbacks (token() from
// on_token, finish() from on_finish) and read by /metrics on the HTTP threads; one mutex guards
// them (a few additions per generated token).
class RequestMetrics {
 public:
  using Clock = std::chrono::steady_clock;

  // One request's times, owned by its callbacks.
  struct Timeline {
    explicit Timeline(size_t prompt) : prompt_tokens(static_cast<int64_t>(prompt)) {}
    int64_t prompt_tokens = 0;
    Clock::time_point arrival = Clock::now();  // about to be handed to the engine
    Clock::time_point last_token{};
    int64_t tokens = 0;  // generated so far
  };

  // max_model_len bounds the token-count buckets, as in vLLM.
  explicit RequestMetrics(int64_t max_model_len)
      : request_prompt_tokens_(buckets_1_2_5(max_model_len)),
        request_generation_tokens_(buckets_1_2_5(max_model_len)) {}

  // A generated token: the first one ends the prefill (time to first token; the prompt counts as
  // processed), each later one gives an inter-token latency.
  void token(Timeline& t, Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    if (t.tokens == 0) {
      time_to_first_token_.observe(seconds(now - t.arrival));
      prompt_tokens_ += static_cast<uint64_t>(t.prompt_tokens);
    } else {
      inter_token_latency_.observe(seconds(now - t.last_token));
    }
    ++t.tokens;
    t.last_token = now;
    ++generation_tokens_;
  }

  void finish(const Timeline& t, const RequestEnd& end, Clock::time_point now = Clock::now()) {
    std::lock_guard lock(mutex_);
    e2e_request_latency_.observe(seconds(now - t.arrival));
    request_prompt_tokens_.observe(static_cast<double>(end.prompt_tokens));
    request_generation_tokens_.observe(static_cast<double>(end.completion_tokens));
    ++finished_[static_cast<size_t>(reason_index(end))];
  }

  std::string prometheus(const std::string& model_name) const {
    const std::string labels = "model_name=\"" + prometheus_label(model_name) + "\"";
    std::string out;
    const auto header = [&](const std::string& name, const char* type, const char* help) {
      out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    const auto counter = [&](const std::string& name, const char* help, uint64_t value) {
      header(name, "counter", help);
      out += name + "{" + labels + "} " + std::to_string(value) + "\n";
    };
    const auto histogram = [&](const std::string& name, const char* help, const Histogram& h) {
      header(name, "histogram", help);
      out += h.prometheus(name, labels);
    };
    std::lock_guard lock(mutex_);
    counter("hllm_prompt_tokens_total", "Prefill tokens processed.", prompt_tokens_);
    counter("hllm_generation_tokens_total", "Generation tokens processed.", generation_tokens_);
    header("hllm_request_success_total", "counter", "Requests finished, by finish reason.");
    for (size_t i = 0; i < FINISH_REASONS.size(); ++i)
      out += "hllm_request_success_total{" + labels + ",finished_reason=\"" + FINISH_REASONS[i] +
             "\"} " + std::to_string(finished_[i]) + "\n";
    histogram("hllm_time_to_first_token_seconds", "Time to first token in seconds.",
              time_to_first_token_);
    // vLLM's older name for it: time_per_output_token_seconds.
    histogram("hllm_inter_token_latency_seconds", "Inter-token latency in seconds.",
              inter_token_latency_);
    histogram("hllm_e2e_request_latency_seconds", "End-to-end request latency in seconds.",
              e2e_request_latency_);
    histogram("hllm_request_prompt_tokens", "Prompt tokens per request.", request_prompt_tokens_);
    histogram("hllm_request_generation_tokens", "Generated tokens per request.",
              request_generation_tokens_);
    return out;
  }

 private:
  // vLLM's finished_reason label values; an engine request that was cancelled is "abort" (a
  // client gone, a shutdown), one that failed is "error"; one a stop string ended is "stop" (the
  // server says so: serve/completion_run.hpp).
  static constexpr std::array<const char*, 4> FINISH_REASONS = {"stop", "length", "abort", "error"};
  static int reason_index(const RequestEnd& end) {
    if (!end.error.empty()) return 3;
    switch (end.reason) {
      case FinishReason::stop:
        return 0;
      case FinishReason::length:
        return 1;
      case FinishReason::cancelled:
        return 2;
    }
    return 2;
  }
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

  mutable std::mutex mutex_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generation_tokens_ = 0;
  std::array<uint64_t, FINISH_REASONS.size()> finished_{};
  Histogram time_to_first_token_{TIME_TO_FIRST_TOKEN_BUCKETS};
  Histogram inter_token_latency_{INTER_TOKEN_LATENCY_BUCKETS};
  Histogram e2e_request_latency_{REQUEST_LATENCY_BUCKETS};
  Histogram request_prompt_tokens_;
  Histogram request_generation_tokens_;
};

}  // namespace hllm::serve
