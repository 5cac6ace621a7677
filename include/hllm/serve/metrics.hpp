// The engine's numbers in Prometheus' text exposition format (version 0.0.4), what GET /metrics
// answers: one gauge or counter per line, each labelled with the served model's name, named like
// vLLM's (hllm_ instead of vllm:) so existing dashboards map over.
#pragma once

#include <cstdint>
#include <string>

#include "hllm/engine/engine_core.hpp"

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

inline std::string prometheus_metrics(const EngineStats& s, const std::string& model_name) {
  const std::string label = "{model_name=\"" + prometheus_label(model_name) + "\"}";
  std::string out;
  const auto metric = [&](const char* name, const char* type, const char* help, double value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + label + " " + std::to_string(value) + "\n";
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

}  // namespace hllm::serve
