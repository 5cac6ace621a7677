// `hllm compare --suite SUITE.jsonl --endpoint NAME=URL[,key=ENVVAR][,model=ID] ... -o report.html`
// Sends every prompt of a suite to each OpenAI-compatible endpoint (hllm serve, vLLM, a hosted
// API) as a streaming chat completion, R times each, and writes one self-contained HTML report
// (summary table, TTFT and tok/s charts, the answers side by side) plus the summary as Markdown on
// stdout. Endpoints run one after another (so they never compete for the same machine or link);
// within one, up to -c requests are in flight. A failing endpoint is recorded, never fatal: the
// exit status is 0 once the report is written, 1 for bad arguments or an unreadable suite.
#pragma once

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "compare_report.hpp"
#include "compare_suite.hpp"
#include "hllm/core/error.hpp"
#include "hllm/serve/client.hpp"

namespace hllm::tools {

namespace compare {

struct RunOptions {
  int repeats = 3;
  int concurrency = 1;
  std::optional<int64_t> max_tokens;  // caps every request
  std::optional<double> temperature;  // overrides every request's
  double read_timeout_s = 300;
  std::string python = "python3";
  double exec_timeout_s = 5;
  bool exec = true;
};

inline nlohmann::json request_body(const SuitePrompt& p, const std::string& model,
                                   const RunOptions& o) {
  constexpr int64_t DEFAULT_MAX_TOKENS = 1024;  // when neither the suite nor --max-tokens says
  int64_t max_tokens = p.max_tokens.value_or(DEFAULT_MAX_TOKENS);
  if (o.max_tokens) max_tokens = std::min(max_tokens, *o.max_tokens);
  nlohmann::json body = {{"messages", p.messages}, {"max_tokens", max_tokens}};
  if (!model.empty()) body["model"] = model;
  if (o.temperature) {
    body["temperature"] = *o.temperature;
  } else if (p.temperature) {
    body["temperature"] = *p.temperature;
  }
  return body;
}

// Runs every prompt × repeat against one endpoint, up to o.concurrency at a time.
inline void run_endpoint(EndpointRun& e, const std::vector<SuitePrompt>& prompts,
                         const serve::ApiUrl& url, const serve::ClientOptions& client,
                         const RunOptions& o) {
  e.cells.assign(prompts.size(), std::vector<Attempt>(size_t(o.repeats)));
  struct Job {
    size_t prompt;
    int repeat;
  };
  std::vector<Job> jobs;
  for (int r = 0; r < o.repeats; ++r)
    for (size_t p = 0; p < prompts.size(); ++p) jobs.push_back({p, r});
  std::atomic<size_t> next{0};
  const auto worker = [&] {
    for (size_t j = next++; j < jobs.size(); j = next++) {
      const Job job = jobs[j];
      e.cells[job.prompt][size_t(job.repeat)].result =
          serve::post_chat_stream(url, client, request_body(prompts[job.prompt], e.model, o));
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  const int n_threads = std::max(1, std::min<int>(o.concurrency, int(jobs.size())));
  for (int t = 0; t < n_threads; ++t) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  e.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline void score_all(Comparison& c, const RunOptions& o) {
  for (EndpointRun& e : c.endpoints)
    for (size_t p = 0; p < c.prompts.size(); ++p)
      for (Attempt& a : e.cells[p]) {
        if (!a.result.ok()) continue;
        const SuitePrompt& prompt = c.prompts[p];
        if (prompt.kind == "extraction") a.score = score_keywords(a.result.text, prompt.keywords);
        if (prompt.kind == "code" && o.exec)
          a.score = score_python(a.result.text, prompt.asserts, o.python, o.exec_timeout_s);
      }
}

// Every result, for scripts and for re-rendering later.
inline nlohmann::json results_json(const Comparison& c) {
  nlohmann::json j = {{"suite", c.suite_path},
                      {"started", c.started},
                      {"repeats", c.repeats},
                      {"concurrency", c.concurrency},
                      {"endpoints", nlohmann::json::array()}};
  for (const EndpointRun& e : c.endpoints) {
    nlohmann::json ej = {{"name", e.spec.name}, {"url", e.spec.url},
                         {"model", e.model},    {"note", e.note},
                         {"wall_s", e.wall_s},  {"prompts", nlohmann::json::array()}};
    if (e.price) ej["usd_per_mtok_out"] = *e.price;
    for (size_t p = 0; p < c.prompts.size(); ++p) {
      nlohmann::json runs = nlohmann::json::array();
      for (const Attempt& a : e.cells[p]) {
        const serve::ChatStreamResult& r = a.result;
        nlohmann::json rj = {{"ok", r.ok()},
                             {"http_status", r.http_status},
                             {"error", r.error},
                             {"ttft_s", r.ttft_s},
                             {"total_s", r.total_s},
                             {"output_tokens", r.output_tokens()},
                             {"usage_reported", r.usage_reported()},
                             {"tokens_per_s", r.tokens_per_second()},
                             {"finish_reason", r.finish_reason},
                             {"text", r.text}};
        if (a.score.scored) rj["score"] = {{"value", a.score.value}, {"detail", a.score.detail}};
        runs.push_back(std::move(rj));
      }
      ej["prompts"].push_back({{"id", c.prompts[p].id}, {"runs", std::move(runs)}});
    }
    j["endpoints"].push_back(std::move(ej));
  }
  return j;
}

inline std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buffer;
}

}  // namespace compare

inline void add_compare_command(CLI::App& app) {
  struct Options {
    std::string suite;
    std::vector<std::string> endpoints;
    std::vector<std::string> prices;
    std::string output = "hllm-compare.html";
    std::string json_output;
    int64_t max_tokens = 0;
    double temperature = -1;
    compare::RunOptions run;
  };
  auto o = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "compare",
      "Send a prompt suite to OpenAI-compatible endpoints (streaming) and write an HTML report");
  command->add_option("--suite", o->suite, "prompt suite, JSON lines (models/suites/*.jsonl)")
      ->required()
      ->check(CLI::ExistingFile);
  command
      ->add_option("--endpoint", o->endpoints,
                   "NAME=URL[,key=ENVVAR][,model=ID], e.g. local=http://127.0.0.1:8000/v1 or "
                   "openai=https://api.openai.com/v1,key=OPENAI_API_KEY,model=gpt-4o-mini "
                   "(repeatable; https only when cpp-httplib has OpenSSL)")
      ->required()
      ->take_all();
  command->add_option("-r,--repeats", o->run.repeats, "runs of each prompt (timings: median)")
      ->check(CLI::Range(1, 1000));
  command
      ->add_option("-c,--concurrency", o->run.concurrency,
                   "requests in flight per endpoint (endpoints run one after another)")
      ->check(CLI::Range(1, 1024));
  command->add_option("--price", o->prices,
                      "NAME=USD per million output tokens, for the cost column (repeatable)");
  command
      ->add_option("--max-tokens", o->max_tokens,
                   "cap on max_tokens of every request (default: the suite's, else 1024)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  command
      ->add_option("--temperature", o->temperature,
                   "sampling temperature for every request (default: the suite's, else the "
                   "server's)")
      ->check(CLI::Range(0.0, 2.0));
  command->add_option("-o,--output", o->output, "the HTML report (default: hllm-compare.html)");
  command->add_option("--json", o->json_output, "also write every result as JSON");
  command
      ->add_option("--timeout", o->run.read_timeout_s,
                   "seconds of silence after which a request fails (default 300)")
      ->check(CLI::Range(0.1, 86400.0));
  command->add_option("--python", o->run.python, "Python for scoring code answers (python3)");
  command
      ->add_option("--exec-timeout", o->run.exec_timeout_s,
                   "seconds a code answer's test may run (default 5)")
      ->check(CLI::Range(0.1, 3600.0));
  command->add_flag("!--no-exec", o->run.exec,
                    "do not run model-written code (code prompts are then not scored); by default "
                    "it runs with your rights in a temporary directory, time-limited, unsandboxed");
  command->callback([o] {
    using namespace compare;
    std::signal(SIGPIPE, SIG_IGN);
    if (o->max_tokens > 0) o->run.max_tokens = o->max_tokens;
    if (o->temperature >= 0) o->run.temperature = o->temperature;

    Comparison c;
    c.suite_path = o->suite;
    c.prompts = load_suite(o->suite);
    c.repeats = o->run.repeats;
    c.concurrency = o->run.concurrency;
    c.max_tokens = o->run.max_tokens;
    c.code_scoring = o->run.exec;
    c.started = utc_now();

    // Check every argument before the first request.
    std::vector<serve::ApiUrl> urls;
    std::vector<serve::ClientOptions> clients;
    for (const std::string& spec : o->endpoints) {
      EndpointRun e;
      e.spec = parse_endpoint_spec(spec);
      for (const EndpointRun& other : c.endpoints)
        if (other.spec.name == e.spec.name)
          fail("--endpoint: name \"", e.spec.name, "\" is used twice");
      urls.push_back(serve::parse_api_url(e.spec.url));
      serve::ClientOptions client;
      client.read_timeout_s = o->run.read_timeout_s;
      if (!e.spec.key_env.empty()) {
        const char* key = std::getenv(e.spec.key_env.c_str());
        if (key == nullptr || *key == '\0')
          fail("--endpoint ", e.spec.name, ": environment variable ", e.spec.key_env,
               " (key=) is not set");
        client.api_key = key;
      }
      clients.push_back(client);
      c.endpoints.push_back(std::move(e));
    }
    for (const std::string& price : o->prices) {
      const size_t eq = price.find('=');
      const std::string name = price.substr(0, eq);
      char* end = nullptr;
      const double usd = eq == std::string::npos ? -1 : std::strtod(price.c_str() + eq + 1, &end);
      if (eq == std::string::npos || end == price.c_str() + eq + 1 || *end != '\0' || usd < 0)
        fail("--price \"", price, "\": expected NAME=USD_PER_MILLION_OUTPUT_TOKENS, e.g. gpt=0.60");
      bool found = false;
      for (EndpointRun& e : c.endpoints)
        if (e.spec.name == name) e.price = usd, found = true;
      if (!found) fail("--price \"", price, "\": no --endpoint is named \"", name, "\"");
    }

    for (size_t i = 0; i < c.endpoints.size(); ++i) {
      EndpointRun& e = c.endpoints[i];
      e.model = e.spec.model;
      if (e.model.empty()) {
        std::string error;
        const auto models = serve::get_json(urls[i], clients[i], "/models", &error);
        if (models && models->contains("data") && (*models)["data"].is_array() &&
            !(*models)["data"].empty() && (*models)["data"][0].contains("id") &&
            (*models)["data"][0]["id"].is_string()) {
          e.model = (*models)["data"][0]["id"].get<std::string>();
        } else {
          e.note = "GET " + urls[i].str() +
                   "/models: " + (error.empty() ? "no model listed" : error) +
                   "; requests sent without a model id (pass model=ID)";
        }
      }
      std::fprintf(stderr, "hllm compare: %s (%s, model %s): %zu prompts x %d ...\n",
                   e.spec.name.c_str(), urls[i].str().c_str(),
                   e.model.empty() ? "?" : e.model.c_str(), c.prompts.size(), c.repeats);
      std::fflush(stderr);
      run_endpoint(e, c.prompts, urls[i], clients[i], o->run);
      size_t errors = 0;
      std::string first_error;
      for (const auto& cell : e.cells)
        for (const Attempt& a : cell)
          if (!a.result.ok() && errors++ == 0) first_error = a.result.error;
      std::fprintf(stderr, "hllm compare: %s: done in %.1f s, %zu of %zu requests failed%s%s\n",
                   e.spec.name.c_str(), e.wall_s, errors, c.prompts.size() * size_t(c.repeats),
                   errors ? ", first: " : "", first_error.c_str());
    }
    score_all(c, o->run);

    {
      std::ofstream out(o->output, std::ios::binary);
      if (!out) fail("-o ", o->output, ": cannot be written");
      out << render_html(c);
      if (!out) fail("-o ", o->output, ": write failed");
    }
    if (!o->json_output.empty()) {
      std::ofstream out(o->json_output, std::ios::binary);
      if (!out) fail("--json ", o->json_output, ": cannot be written");
      out << results_json(c).dump(1) << "\n";
    }
    std::fputs(render_markdown_summary(c).c_str(), stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "hllm compare: wrote %s\n", o->output.c_str());
  });
}

}  // namespace hllm::tools
