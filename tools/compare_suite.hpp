// `hllm compare`'s data: the prompt suite (JSONL), the endpoints (NAME=URL,key=ENV,model=ID), what
// each request gave (serve::ChatStreamResult), the machine scorers, and the per-endpoint summary
// the report's table shows. No networking and no printing here (cmd_compare.hpp runs, and
// compare_report.hpp renders), so all of it is testable on plain values.
//
// Suite line:  {"id": "extract-climate", "kind": "extraction"|"copywriting"|"code"|"conversation",
//               "messages": [{"role": "user", "content": "..."}, ...],
//               "keywords": ["..."],        extraction: score = fraction found, case-insensitive
//               "asserts": "assert ...",    code: first ```python block + these lines must run
//               "max_tokens": 512, "temperature": 0.7}   optional per-prompt request fields
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/serve/sse.hpp"

namespace hllm::tools::compare {

inline const std::vector<std::string>& suite_kinds() {
  static const std::vector<std::string> kinds = {"extraction", "copywriting", "code",
                                                 "conversation"};
  return kinds;
}

struct SuitePrompt {
  std::string id;                     // unique in the suite
  std::string kind;                   // one of suite_kinds()
  nlohmann::json messages;            // OpenAI chat messages, the last one the user's
  std::vector<std::string> keywords;  // extraction scoring (may be empty: not scored)
  std::string asserts;                // code scoring: Python run after the answer's code
  std::optional<int64_t> max_tokens;  // per-prompt completion budget
  std::optional<double> temperature;  // per-prompt sampling temperature
  int line = 0;                       // 1-based line in the suite file, for messages
};

// Reads a JSONL suite; blank lines and lines starting with '#' are skipped. Throws hllm::Error
// naming the file, line and field for anything malformed.
inline std::vector<SuitePrompt> load_suite(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail("suite ", path.string(), ": cannot be opened");
  std::vector<SuitePrompt> prompts;
  std::set<std::string> ids;
  std::string text;
  int line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    const size_t first = text.find_first_not_of(" \t\r");
    if (first == std::string::npos || text[first] == '#') continue;
    const std::string where = path.string() + ":" + std::to_string(line_number);
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(where, ": not a JSON object");
    for (const auto& [key, value] : j.items()) {
      static const std::set<std::string> known = {"id",      "kind",       "messages",   "keywords",
                                                  "asserts", "max_tokens", "temperature"};
      if (!known.count(key))
        fail(where, ": unknown field \"", key,
             "\" (known: id, kind, messages, keywords, asserts, max_tokens, temperature)");
    }
    SuitePrompt p;
    p.line = line_number;
    if (!j.contains("id") || !j["id"].is_string() || j["id"].get<std::string>().empty())
      fail(where, ": \"id\" must be a non-empty string");
    p.id = j["id"].get<std::string>();
    if (!ids.insert(p.id).second) fail(where, ": id \"", p.id, "\" is used twice");
    if (!j.contains("kind") || !j["kind"].is_string()) fail(where, ": \"kind\" must be a string");
    p.kind = j["kind"].get<std::string>();
    if (std::find(suite_kinds().begin(), suite_kinds().end(), p.kind) == suite_kinds().end())
      fail(where, ": kind \"", p.kind,
           "\" is not one of extraction, copywriting, code, conversation");
    if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty())
      fail(where, ": \"messages\" must be a non-empty array");
    for (const auto& m : j["messages"]) {
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string())
        fail(where, ": every message needs a string \"role\" and a string \"content\"");
      const std::string role = m["role"].get<std::string>();
      if (role != "system" && role != "user" && role != "assistant")
        fail(where, ": message role \"", role, "\" is not system, user or assistant");
    }
    if (j["messages"].back()["role"] != "user")
      fail(where, ": the last message must be the user's (the one to answer)");
    p.messages = j["messages"];
    if (j.contains("keywords")) {
      if (!j["keywords"].is_array()) fail(where, ": \"keywords\" must be an array of strings");
      for (const auto& k : j["keywords"]) {
        if (!k.is_string() || k.get<std::string>().empty())
          fail(where, ": \"keywords\" must be an array of non-empty strings");
        p.keywords.push_back(k.get<std::string>());
      }
    }
    if (j.contains("asserts")) {
      if (!j["asserts"].is_string()) fail(where, ": \"asserts\" must be a string of Python code");
      p.asserts = j["asserts"].get<std::string>();
    }
    if (j.contains("max_tokens")) {
      if (!j["max_tokens"].is_number_integer() || j["max_tokens"].get<int64_t>() < 1)
        fail(where, ": \"max_tokens\" must be a positive integer");
      p.max_tokens = j["max_tokens"].get<int64_t>();
    }
    if (j.contains("temperature")) {
      if (!j["temperature"].is_number()) fail(where, ": \"temperature\" must be a number");
      p.temperature = j["temperature"].get<double>();
    }
    prompts.push_back(std::move(p));
  }
  if (prompts.empty()) fail("suite ", path.string(), ": no prompts");
  return prompts;
}

// One --endpoint NAME=URL[,key=ENVVAR][,model=ID].
struct EndpointSpec {
  std::string name;     // the label in the report ([A-Za-z0-9_.-]+)
  std::string url;      // "http://127.0.0.1:8000/v1"
  std::string key_env;  // environment variable holding the bearer key ("" = none)
  std::string model;    // model id to request ("" = the first of GET /models)
};

inline EndpointSpec parse_endpoint_spec(const std::string& spec) {
  EndpointSpec e;
  const size_t eq = spec.find('=');
  if (eq == std::string::npos || eq == 0)
    fail("--endpoint \"", spec, "\": expected NAME=URL[,key=ENVVAR][,model=ID]");
  e.name = spec.substr(0, eq);
  for (char c : e.name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
      fail("--endpoint \"", spec, "\": name \"", e.name, "\" may hold only letters, digits, _ - .");
  std::stringstream rest(spec.substr(eq + 1));
  std::string item;
  bool first = true;
  while (std::getline(rest, item, ',')) {
    if (first) {
      e.url = item;
      first = false;
    } else if (item.rfind("key=", 0) == 0) {
      e.key_env = item.substr(4);
    } else if (item.rfind("model=", 0) == 0) {
      e.model = item.substr(6);
    } else {
      fail("--endpoint \"", spec, "\": \"", item, "\" is not key=ENVVAR or model=ID");
    }
  }
  if (e.url.empty()) fail("--endpoint \"", spec, "\": no URL");
  return e;
}

// ---- Scorers ------------------------------------------------------------------------------------

// The score of one answer; not every kind is scored (copywriting and conversation need a reader).
struct Score {
  bool scored = false;
  double value = 0;    // extraction: fraction of keywords found; code: 1 pass, 0 fail
  std::string detail;  // "missing: tariff, 2030" or "AssertionError" or "no ```python block"
};

inline std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

inline Score score_keywords(const std::string& answer, const std::vector<std::string>& keywords) {
  Score s;
  if (keywords.empty()) return s;
  s.scored = true;
  const std::string haystack = to_lower(answer);
  size_t found = 0;
  for (const std::string& k : keywords) {
    if (haystack.find(to_lower(k)) != std::string::npos) {
      ++found;
    } else {
      s.detail += (s.detail.empty() ? "missing: " : ", ") + k;
    }
  }
  s.value = double(found) / double(keywords.size());
  return s;
}

// The code of the first ```python (or ```py / ```python3) fenced block; failing that, of the first
// fence with no language; nullopt when neither is there.
inline std::optional<std::string> first_python_block(const std::string& answer) {
  std::optional<std::string> bare;
  size_t pos = 0;
  while ((pos = answer.find("```", pos)) != std::string::npos) {
    const size_t eol = answer.find('\n', pos);
    if (eol == std::string::npos) break;
    std::string lang = answer.substr(pos + 3, eol - pos - 3);
    while (!lang.empty() && std::isspace(static_cast<unsigned char>(lang.back()))) lang.pop_back();
    lang = to_lower(lang);
    size_t close = answer.find("```", eol + 1);
    const std::string code =
        answer.substr(eol + 1, close == std::string::npos ? std::string::npos : close - eol - 1);
    if (lang == "python" || lang == "py" || lang == "python3") return code;
    if (lang.empty() && !bare) bare = code;
    if (close == std::string::npos) break;
    pos = close + 3;
  }
  return bare;
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs the answer's first Python block followed by `asserts` with `python` in a fresh temporary
// directory (its cwd), killed after timeout_s. Pass = exit status 0. This executes model-written
// code with the user's rights: there is no sandbox beyond the temp cwd and the timeout.
inline Score score_python(const std::string& answer, const std::string& asserts,
                          const std::string& python, double timeout_s) {
  Score s;
  if (asserts.empty()) return s;
  s.scored = true;
  const std::optional<std::string> code = first_python_block(answer);
  if (!code) {
    s.detail = "no ```python block in the answer";
    return s;
  }
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "hllm_compare_XXXXXX").string();
  if (!mkdtemp(dir_template.data())) {
    s.detail = "cannot create a temporary directory";
    return s;
  }
  const std::filesystem::path dir = dir_template;
  {
    std::ofstream out(dir / "answer_test.py");
    out << *code << "\n\n# ---- the suite's asserts ----\n" << asserts << "\n";
  }
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.1f", timeout_s);
  const std::string command = "cd " + shell_quote(dir.string()) + " && timeout -k 1 " + seconds +
                              " " + shell_quote(python) +
                              " answer_test.py </dev/null >output.txt 2>&1";
  const int status = std::system(command.c_str());
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::string output;
  {
    std::ifstream in(dir / "output.txt");
    std::stringstream buffer;
    buffer << in.rdbuf();
    output = buffer.str();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  if (rc == 0) {
    s.value = 1;
    s.detail = "passed";
    return s;
  }
  if (rc == 124 || rc == 137) {
    s.detail = "timed out after " + std::string(seconds) + " s";
    return s;
  }
  if (rc == 127) {
    s.detail = "python not found (" + python + ")";
    return s;
  }
  // The last two non-empty lines of the traceback: the failing line and the exception.
  std::vector<std::string> lines;
  std::stringstream stream(output);
  for (std::string l; std::getline(stream, l);)
    if (l.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(l);
  std::string tail;
  for (size_t i = lines.size() > 2 ? lines.size() - 2 : 0; i < lines.size(); ++i) {
    std::string l = lines[i];
    l.erase(0, l.find_first_not_of(' '));
    tail += (tail.empty() ? "" : " | ") + l;
  }
  s.detail = "failed (exit " + std::to_string(rc) + ")" + (tail.empty() ? "" : ": " + tail);
  if (s.detail.size() > 300) s.detail = s.detail.substr(0, 297) + "...";
  return s;
}

// ---- Results ------------------------------------------------------------------------------------

struct Attempt {
  serve::ChatStreamResult result;
  Score score;
};

// Everything one endpoint gave: cells[prompt][repeat].
struct EndpointRun {
  EndpointSpec spec;
  std::string model;            // the model id requested
  std::string note;             // e.g. "GET /models failed: ..." ("" = nothing to say)
  std::optional<double> price;  // USD per million output tokens (--price)
  std::vector<std::vector<Attempt>> cells;
  double wall_s = 0;  // the endpoint's whole run
};

struct Comparison {
  std::string suite_path;
  std::vector<SuitePrompt> prompts;
  std::vector<EndpointRun> endpoints;
  int repeats = 1;
  int concurrency = 1;
  std::optional<int64_t> max_tokens;  // --max-tokens cap
  bool code_scoring = true;           // false: --no-exec
  std::string started;                // "2025-01-31 12:00:00 UTC"
};

inline std::optional<double> median(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The first successful attempt (the one the report shows), else the first.
inline const Attempt* shown_attempt(const std::vector<Attempt>& attempts) {
  for (const Attempt& a : attempts)
    if (a.result.ok()) return &a;
  return attempts.empty() ? nullptr : &attempts.front();
}

// One row of the summary table.
struct EndpointSummary {
  int64_t requests = 0, errors = 0;
  std::optional<double> ttft_s, total_s, tokens_per_s;  // medians over successful requests
  double mean_output_tokens = 0;
  int64_t output_tokens = 0;  // all successful requests together
  std::string token_source;   // "usage", "chunks" (counted, the server sent no usage), "mixed"
  std::optional<double> price, cost_usd;  // cost_usd: this run's output tokens
  std::optional<double> extraction;       // mean keyword fraction
  int64_t extraction_n = 0;
  int64_t code_passed = 0, code_n = 0;
};

inline EndpointSummary summarize(const Comparison& c, const EndpointRun& e) {
  EndpointSummary s;
  std::vector<double> ttft, total, rate, extraction;
  int64_t ok = 0, with_usage = 0;
  for (size_t p = 0; p < e.cells.size(); ++p) {
    for (const Attempt& a : e.cells[p]) {
      ++s.requests;
      if (!a.result.ok()) {
        ++s.errors;
        continue;
      }
      ++ok;
      if (a.result.ttft_s >= 0) ttft.push_back(a.result.ttft_s);
      total.push_back(a.result.total_s);
      rate.push_back(a.result.tokens_per_second());
      s.output_tokens += a.result.output_tokens();
      with_usage += a.result.usage_reported();
      if (a.score.scored && c.prompts[p].kind == "extraction") extraction.push_back(a.score.value);
      if (a.score.scored && c.prompts[p].kind == "code") {
        ++s.code_n;
        s.code_passed += a.score.value > 0.5;
      }
    }
  }
  s.ttft_s = median(ttft);
  s.total_s = median(total);
  s.tokens_per_s = median(rate);
  s.mean_output_tokens = ok ? double(s.output_tokens) / double(ok) : 0.0;
  s.token_source = ok == 0 ? "" : with_usage == ok ? "usage" : with_usage == 0 ? "chunks" : "mixed";
  s.price = e.price;
  if (e.price && ok > 0) s.cost_usd = *e.price * double(s.output_tokens) / 1e6;
  s.extraction_n = static_cast<int64_t>(extraction.size());
  if (!extraction.empty()) {
    double sum = 0;
    for (double v : extraction) sum += v;
    s.extraction = sum / double(extraction.size());
  }
  return s;
}

}  // namespace hllm::tools::compare
