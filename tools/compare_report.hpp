// `hllm compare`'s report: one self-contained HTML page (inline CSS, inline SVG bar charts, no
// scripts, no external assets) and the same summary table as Markdown for the terminal / a PR.
//
//   render_html:  header (suite, date, settings) ─ summary table ─ TTFT and tok/s bar charts ─
//                 errors by endpoint ─ per prompt: the conversation, then every endpoint's answer
//                 side by side (HTML-escaped), with its timing and score
//   render_markdown_summary:  the summary table alone
#pragma once

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "compare_suite.hpp"

namespace hllm::tools::compare {

inline std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + s.size() / 8);
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A Markdown table cell: '|' escaped, newlines flattened.
inline std::string markdown_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

inline std::string format_number(const char* format, double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, format, v);
  return buffer;
}

// 0.0412 -> "41 ms", 2.5 -> "2.50 s".
inline std::string format_seconds(std::optional<double> s) {
  if (!s) return "–";
  return *s < 1.0 ? format_number("%.0f ms", *s * 1e3) : format_number("%.2f s", *s);
}

inline std::string format_rate(std::optional<double> r) {
  return r ? format_number(*r >= 100 ? "%.0f" : "%.1f", *r) : "–";
}

inline std::string format_percent(std::optional<double> f) {
  return f ? format_number("%.0f%%", *f * 100) : "–";
}

// The summary table as rows of cells (shared by the HTML and Markdown renderings).
struct SummaryTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

inline SummaryTable summary_table(const Comparison& c) {
  SummaryTable t;
  t.header = {"endpoint",  "model",      "requests",   "errors",   "TTFT p50",   "total p50",
              "tok/s p50", "out tokens", "$/Mtok out", "run cost", "extraction", "code"};
  for (const EndpointRun& e : c.endpoints) {
    const EndpointSummary s = summarize(c, e);
    std::string tokens = s.requests > s.errors ? format_number("%.1f", s.mean_output_tokens) : "–";
    if (s.token_source == "chunks") tokens += " (chunks)";
    if (s.token_source == "mixed") tokens += " (usage+chunks)";
    const std::string code =
        s.code_n ? std::to_string(s.code_passed) + "/" + std::to_string(s.code_n) + " pass" : "–";
    t.rows.push_back(
        {e.spec.name, e.model.empty() ? "?" : e.model, std::to_string(s.requests),
         std::to_string(s.errors), format_seconds(s.ttft_s), format_seconds(s.total_s),
         format_rate(s.tokens_per_s), tokens, s.price ? format_number("%.2f", *s.price) : "–",
         s.cost_usd ? format_number(*s.cost_usd >= 0.01 ? "$%.2f" : "$%.6f", *s.cost_usd) : "–",
         s.extraction ? format_percent(s.extraction) + " keywords" : "–", code});
  }
  return t;
}

inline std::string render_markdown_summary(const Comparison& c) {
  const SummaryTable t = summary_table(c);
  std::string out = "|";
  for (const std::string& h : t.header) out += " " + h + " |";
  out += "\n|";
  for (size_t i = 0; i < t.header.size(); ++i) out += i < 2 ? " --- |" : " ---: |";
  out += "\n";
  for (const auto& row : t.rows) {
    out += "|";
    for (const std::string& cell : row) out += " " + markdown_cell(cell) + " |";
    out += "\n";
  }
  return out;
}

namespace detail {

inline const char* endpoint_color(size_t i) {
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                 "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};
  return colors[i % 8];
}

// A horizontal bar chart as inline SVG: one bar per endpoint, "n/a" where there is no value.
inline std::string svg_bar_chart(const std::string& title, const std::vector<std::string>& labels,
                                 const std::vector<std::optional<double>>& values,
                                 const std::string& unit, const char* value_format) {
  const int label_w = 160, bar_w = 420, value_w = 110, row_h = 30, top = 34;
  const int width = label_w + bar_w + value_w, height = top + row_h * int(labels.size()) + 10;
  double max_value = 0;
  for (const auto& v : values)
    if (v && std::isfinite(*v)) max_value = std::max(max_value, *v);
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"" +
                    std::to_string(width) + "\" height=\"" + std::to_string(height) +
                    "\" viewBox=\"0 0 " + std::to_string(width) + " " + std::to_string(height) +
                    "\" role=\"img\" aria-label=\"" + html_escape(title) + "\">\n";
  svg += "<text x=\"0\" y=\"18\" font-size=\"15\" font-weight=\"bold\">" + html_escape(title) +
         "</text>\n";
  for (size_t i = 0; i < labels.size(); ++i) {
    const int y = top + row_h * int(i);
    svg += "<text x=\"" + std::to_string(label_w - 8) + "\" y=\"" + std::to_string(y + 19) +
           "\" font-size=\"13\" text-anchor=\"end\">" + html_escape(labels[i]) + "</text>\n";
    const bool has = values[i] && std::isfinite(*values[i]);
    const double fraction = has && max_value > 0 ? *values[i] / max_value : 0.0;
    const int w = has ? std::max(2, int(std::lround(fraction * bar_w))) : 0;
    if (has)
      svg += "<rect x=\"" + std::to_string(label_w) + "\" y=\"" + std::to_string(y + 5) +
             "\" width=\"" + std::to_string(w) + "\" height=\"20\" rx=\"3\" fill=\"" +
             endpoint_color(i) + "\"/>\n";
    svg += "<text x=\"" + std::to_string(label_w + w + 6) + "\" y=\"" + std::to_string(y + 19) +
           "\" font-size=\"13\">" +
           (has ? html_escape(format_number(value_format, *values[i]) + " " + unit) : "n/a") +
           "</text>\n";
  }
  return svg + "</svg>\n";
}

inline const char* REPORT_CSS = R"css(
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 24px; color: #1d2330; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 16px; margin: 22px 0 6px; } .meta, .note { color: #5b6375; font-size: 13px; }
table.summary { border-collapse: collapse; margin: 8px 0; }
table.summary th, table.summary td { border: 1px solid #d5d9e2; padding: 5px 9px; }
table.summary th { background: #f1f3f7; text-align: left; }
table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { color: #b3261e; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; margin: 12px 0; }
.kind { font-size: 12px; font-weight: normal; background: #eef1f6; border-radius: 4px;
        padding: 1px 6px; margin-left: 6px; color: #394050; }
.answers { display: grid; gap: 12px; }
.card { border: 1px solid #d5d9e2; border-radius: 6px; padding: 8px 10px; min-width: 0; }
.card h4 { margin: 0 0 4px; font-size: 14px; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f7f8fa; padding: 8px;
      border-radius: 4px; margin: 6px 0; font: 12.5px/1.4 ui-monospace, Menlo, Consolas, monospace; }
.msg-role { font-weight: bold; font-size: 12px; color: #5b6375; }
.score-pass { color: #1e7d32; font-weight: bold; } .score-fail { color: #b3261e; font-weight: bold; }
.error { color: #b3261e; font-size: 13px; }
ul.errors { margin: 4px 0; }
)css";

}  // namespace detail

inline std::string render_html(const Comparison& c) {
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<title>hllm compare: " + html_escape(c.suite_path) + "</title>\n";
  h += "<style>" + std::string(detail::REPORT_CSS) + "</style>\n</head>\n<body>\n";
  h += "<h1>hllm compare</h1>\n<div class=\"meta\">suite <code>" + html_escape(c.suite_path) +
       "</code> · " + std::to_string(c.prompts.size()) + " prompts · " +
       std::to_string(c.endpoints.size()) + " endpoints · " + std::to_string(c.repeats) +
       " run(s) per prompt · concurrency " + std::to_string(c.concurrency) +
       (c.max_tokens ? " · max_tokens ≤ " + std::to_string(*c.max_tokens) : std::string()) + " · " +
       html_escape(c.started) + "</div>\n";

  // Summary table.
  const SummaryTable t = summary_table(c);
  h += "<h2>Summary</h2>\n<table class=\"summary\">\n<tr>";
  for (const std::string& head : t.header) h += "<th>" + html_escape(head) + "</th>";
  h += "</tr>\n";
  for (const auto& row : t.rows) {
    h += "<tr>";
    for (size_t i = 0; i < row.size(); ++i) {
      const bool bad = t.header[i] == "errors" && row[i] != "0";
      h += std::string("<td class=\"") + (i >= 2 ? "num" : "") + (bad ? " bad" : "") + "\">" +
           html_escape(row[i]) + "</td>";
    }
    h += "</tr>\n";
  }
  h += "</table>\n<p class=\"note\">Medians over successful requests. TTFT: request sent → first "
       "content delta (connection set-up included). tok/s: output tokens after the first ÷ time "
       "after the first token (the streaming rate). Output tokens: the server's "
       "<code>usage</code> (stream_options.include_usage) or, marked “chunks”, counted content "
       "chunks. Cost: --price × this run's output tokens. Extraction: fraction of the suite's "
       "keywords found (case-insensitive). Code: the answer's first <code>```python</code> block "
       "plus the suite's asserts, run by python3 in a temporary directory with a time limit" +
       std::string(c.code_scoring ? "" : " (disabled: --no-exec)") + ".</p>\n";

  // Charts.
  std::vector<std::string> names;
  std::vector<std::optional<double>> ttft_ms, rates;
  for (const EndpointRun& e : c.endpoints) {
    const EndpointSummary s = summarize(c, e);
    names.push_back(e.spec.name);
    ttft_ms.push_back(s.ttft_s ? std::optional<double>(*s.ttft_s * 1e3) : std::nullopt);
    rates.push_back(s.tokens_per_s);
  }
  h += "<div class=\"charts\">\n";
  h += detail::svg_bar_chart("Time to first token (median, lower is better)", names, ttft_ms, "ms",
                             "%.0f");
  h += detail::svg_bar_chart("Output tokens/s (median, higher is better)", names, rates, "tok/s",
                             "%.1f");
  h += "</div>\n";

  // Errors by endpoint.
  bool any_error = false;
  std::string errors = "<h2>Errors</h2>\n";
  for (const EndpointRun& e : c.endpoints) {
    std::map<std::string, int> counts;
    for (const auto& cell : e.cells)
      for (const Attempt& a : cell)
        if (!a.result.ok()) ++counts[a.result.error];
    if (counts.empty() && e.note.empty()) continue;
    any_error = true;
    errors += "<h3>" + html_escape(e.spec.name) + "</h3>\n<ul class=\"errors\">\n";
    if (!e.note.empty()) errors += "<li>" + html_escape(e.note) + "</li>\n";
    for (const auto& [message, n] : counts)
      errors += "<li><span class=\"error\">" + std::to_string(n) + " × " + html_escape(message) +
                "</span></li>\n";
    errors += "</ul>\n";
  }
  if (any_error) h += errors;

  // Per prompt, the answers side by side.
  h += "<h2>Answers</h2>\n";
  for (size_t p = 0; p < c.prompts.size(); ++p) {
    const SuitePrompt& prompt = c.prompts[p];
    h += "<section>\n<h3 id=\"" + html_escape(prompt.id) + "\">" + html_escape(prompt.id) +
         "<span class=\"kind\">" + html_escape(prompt.kind) + "</span></h3>\n";
    const auto& messages = prompt.messages;
    if (messages.size() > 1) {
      h += "<details><summary>earlier turns (" + std::to_string(messages.size() - 1) +
           " messages)</summary>\n";
      for (size_t m = 0; m + 1 < messages.size(); ++m)
        h += "<div class=\"msg-role\">" + html_escape(messages[m]["role"].get<std::string>()) +
             "</div><pre>" + html_escape(messages[m]["content"].get<std::string>()) + "</pre>\n";
      h += "</details>\n";
    }
    h += "<div class=\"msg-role\">user</div><pre>" +
         html_escape(messages.back()["content"].get<std::string>()) + "</pre>\n";
    h += "<div class=\"answers\" style=\"grid-template-columns: repeat(" +
         std::to_string(std::max<size_t>(1, c.endpoints.size())) + ", minmax(0, 1fr))\">\n";
    for (size_t e = 0; e < c.endpoints.size(); ++e) {
      const auto& cell = c.endpoints[e].cells[p];
      h += "<div class=\"card\" style=\"border-top: 4px solid " +
           std::string(detail::endpoint_color(e)) + "\">\n<h4>" +
           html_escape(c.endpoints[e].spec.name) + "</h4>\n";
      std::vector<double> ttft, total, rate, tokens;
      int failed = 0;
      for (const Attempt& a : cell) {
        if (!a.result.ok()) {
          ++failed;
          continue;
        }
        if (a.result.ttft_s >= 0) ttft.push_back(a.result.ttft_s);
        total.push_back(a.result.total_s);
        rate.push_back(a.result.tokens_per_second());
        tokens.push_back(double(a.result.output_tokens()));
      }
      if (!total.empty())
        h += "<div class=\"meta\">TTFT " + format_seconds(median(ttft)) + " · total " +
             format_seconds(median(total)) + " · " + format_number("%.0f", *median(tokens)) +
             " tokens · " + format_rate(median(rate)) + " tok/s" +
             (cell.size() > 1 ? " (median of " + std::to_string(total.size()) + ")" : "") +
             "</div>\n";
      if (failed)
        h += "<div class=\"error\">" + std::to_string(failed) + " of " +
             std::to_string(cell.size()) + " requests failed</div>\n";
      const Attempt* shown = shown_attempt(cell);
      if (shown && shown->score.scored) {
        const bool pass =
            prompt.kind == "code" ? shown->score.value > 0.5 : shown->score.value >= 0.5;
        h += std::string("<div class=\"") + (pass ? "score-pass" : "score-fail") + "\">" +
             (prompt.kind == "code" ? (pass ? "code: pass" : "code: fail")
                                    : "keywords: " + format_percent(shown->score.value)) +
             "</div>\n";
        if (!shown->score.detail.empty() && shown->score.detail != "passed")
          h += "<div class=\"meta\">" + html_escape(shown->score.detail) + "</div>\n";
      }
      if (shown && shown->result.ok()) {
        h += "<pre class=\"answer\">" + html_escape(shown->result.text) + "</pre>\n";
      } else if (shown) {
        h += "<div class=\"error\">" + html_escape(shown->result.error) + "</div>\n";
      }
      h += "</div>\n";
    }
    h += "</div>\n</section>\n";
  }
  h += "<p class=\"note\">Generated by <code>hllm compare</code>.</p>\n</body>\n</html>\n";
  return h;
}

}  // namespace hllm::tools::compare
