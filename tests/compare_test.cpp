// `hllm compare` end to end: two real `hllm serve` processes with the bundled demo model plus one
// port that refuses connections, a 3-prompt suite, the HTML report and the Markdown summary — real
// HTTP, no mocks. Around it, the pieces on plain values: the bundled suite, the SSE parser, the
// scorers and the report's escaping. With chromium installed the report is also rendered headless.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../tools/compare_report.hpp"
#include "../tools/compare_suite.hpp"
#include "hllm/serve/sse.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace cmp = hllm::tools::compare;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool have_program(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

fs::path fresh_dir(const std::string& stem) {
  const fs::path dir = fs::temp_directory_path() / (stem + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// ---- The bundled suite ------------------------------------------------------------------------

TEST(CompareSuite, BundledSeedSuiteIsWellFormed) {
  const auto prompts =
      cmp::load_suite(fs::path(HLLM_SOURCE_DIR) / "models/suites/seed-english.jsonl");
  ASSERT_EQ(prompts.size(), 12u);
  std::map<std::string, int> kinds;
  for (const auto& p : prompts) {
    ++kinds[p.kind];
    if (p.kind == "extraction") {
      // Every keyword is in the article, so a perfect extraction can score 100%.
      ASSERT_FALSE(p.keywords.empty()) << p.id;
      const cmp::Score s =
          cmp::score_keywords(p.messages.back()["content"].get<std::string>(), p.keywords);
      EXPECT_EQ(s.value, 1.0) << p.id << ": " << s.detail;
    }
    if (p.kind == "code") {
      EXPECT_FALSE(p.asserts.empty()) << p.id;
    }
    if (p.kind == "conversation") {
      EXPECT_GE(p.messages.size(), 5u) << p.id << ": 3 user turns with the assistant's between";
    }
  }
  for (const char* kind : {"extraction", "copywriting", "code", "conversation"})
    EXPECT_EQ(kinds[kind], 3) << kind;
  EXPECT_EQ(prompts[0].id, "extract-climate-policy");
  EXPECT_EQ(prompts[2].id, "code-numpy-moving-average");
}

TEST(CompareSuite, MalformedLinesNameTheLineAndField) {
  const fs::path dir = fresh_dir("hllm_compare_suite");
  const struct {
    std::string line, message;
  } cases[] = {
      {R"({"id": "a", "kind": "poetry", "messages": [{"role": "user", "content": "x"}]})",
       "kind \"poetry\""},
      {R"({"id": "a", "kind": "code", "messages": []})", "\"messages\""},
      {R"({"id": "a", "kind": "code", "messages": [{"role": "assistant", "content": "x"}]})",
       "last message"},
      {R"({"id": "a", "kind": "code", "mesages": []})", "unknown field \"mesages\""},
      {"not json", "not a JSON object"},
  };
  for (const auto& c : cases) {
    std::ofstream(dir / "s.jsonl") << "# comment\n\n" << c.line << "\n";
    try {
      cmp::load_suite(dir / "s.jsonl");
      ADD_FAILURE() << "accepted: " << c.line;
    } catch (const hllm::Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("s.jsonl:3"), std::string::npos) << message;
      EXPECT_NE(message.find(c.message), std::string::npos) << message;
    }
  }
  fs::remove_all(dir);
}

TEST(CompareSuite, EndpointSpecs) {
  const cmp::EndpointSpec e =
      cmp::parse_endpoint_spec("gpt=https://api.openai.com/v1,key=OPENAI_API_KEY,model=gpt-4o");
  EXPECT_EQ(e.name, "gpt");
  EXPECT_EQ(e.url, "https://api.openai.com/v1");
  EXPECT_EQ(e.key_env, "OPENAI_API_KEY");
  EXPECT_EQ(e.model, "gpt-4o");
  EXPECT_THROW(cmp::parse_endpoint_spec("http://x"), hllm::Error);
  EXPECT_THROW(cmp::parse_endpoint_spec("a=http://x,token=Y"), hllm::Error);
  EXPECT_THROW(cmp::parse_endpoint_spec("a b=http://x"), hllm::Error);
}

// ---- SSE parsing --------------------------------------------------------------------------------

TEST(CompareSse, ChunksSplitAnywhereGiveTheSameAnswer) {
  const std::string stream =
      ": heartbeat\n\n"
      "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
      "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n"
      "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\"}}]}\n\n"
      "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\n"
      "data: [DONE]\n\n";
  for (size_t step : {size_t{1}, size_t{3}, size_t{17}, stream.size()}) {
    hllm::serve::SseParser parser;
    hllm::serve::ChatStreamTally tally;
    const auto on = [&](std::string_view payload) {
      hllm::serve::apply_chat_chunk(payload, tally);
      return true;
    };
    for (size_t i = 0; i < stream.size(); i += step)
      parser.feed(std::string_view(stream).substr(i, step), on);
    parser.finish(on);
    EXPECT_EQ(tally.text, "Hello \xc3\xa9") << step;
    EXPECT_EQ(tally.content_chunks, 2);
    EXPECT_EQ(tally.completion_tokens, 3);
    EXPECT_EQ(tally.prompt_tokens, 7);
    EXPECT_EQ(tally.finish_reason, "length");
    EXPECT_TRUE(tally.done);
    EXPECT_TRUE(tally.error.empty()) << tally.error;
  }
}

TEST(CompareSse, ErrorObjectInTheStreamIsAnError) {
  hllm::serve::ChatStreamTally tally;
  hllm::serve::apply_chat_chunk(R"({"error":{"message":"out of memory","type":"server_error"}})",
                                tally);
  EXPECT_NE(tally.error.find("out of memory"), std::string::npos);
  hllm::serve::ChatStreamTally garbage;
  hllm::serve::apply_chat_chunk("<html>", garbage);
  EXPECT_NE(garbage.error.find("not JSON"), std::string::npos);
}

// ---- Scorers ------------------------------------------------------------------------------------

TEST(CompareScore, KeywordsAreCaseInsensitive) {
  const cmp::Score s =
      cmp::score_keywords("The EU cut emissions by 55 Percent.", {"55 percent", "eu", "2030"});
  EXPECT_TRUE(s.scored);
  EXPECT_DOUBLE_EQ(s.value, 2.0 / 3.0);
  EXPECT_EQ(s.detail, "missing: 2030");
  EXPECT_FALSE(cmp::score_keywords("anything", {}).scored);
}

TEST(CompareScore, FirstPythonBlock) {
  EXPECT_EQ(cmp::first_python_block("Here:\n```js\nx\n```\n```python\ndef f():\n  pass\n```\n"),
            "def f():\n  pass\n");
  EXPECT_EQ(cmp::first_python_block("```\nprint(1)\n```"), "print(1)\n");
  EXPECT_EQ(cmp::first_python_block("```Python \nprint(2)\n"),
            "print(2)\n");  // cut off by max_tokens
  EXPECT_FALSE(cmp::first_python_block("no code here").has_value());
}

TEST(CompareScore, PythonAssertsPassFailAndTimeOut) {
  if (!have_program("python3")) GTEST_SKIP() << "python3 not installed";
  const std::string asserts = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n";
  const cmp::Score pass = cmp::score_python(
      "Sure:\n```python\ndef add(a, b):\n    return a + b\n```", asserts, "python3", 5);
  EXPECT_TRUE(pass.scored);
  EXPECT_EQ(pass.value, 1.0) << pass.detail;
  const cmp::Score wrong =
      cmp::score_python("```python\ndef add(a, b):\n    return a - b\n```", asserts, "python3", 5);
  EXPECT_EQ(wrong.value, 0.0);
  EXPECT_NE(wrong.detail.find("AssertionError"), std::string::npos) << wrong.detail;
  const cmp::Score slow =
      cmp::score_python("```python\nwhile True:\n    pass\n```", asserts, "python3", 0.5);
  EXPECT_EQ(slow.value, 0.0);
  EXPECT_NE(slow.detail.find("timed out"), std::string::npos) << slow.detail;
  EXPECT_NE(cmp::score_python("no code", asserts, "python3", 5).detail.find("no ```python"),
            std::string::npos);
}

// ---- The report on plain values -----------------------------------------------------------------

TEST(CompareReport, AnswersAreEscapedAndTablesAgree) {
  cmp::Comparison c;
  c.suite_path = "mini.jsonl";
  cmp::SuitePrompt p;
  p.id = "p1";
  p.kind = "copywriting";
  p.messages = nlohmann::json::array({{{"role", "user"}, {"content", "write <b>bold</b>"}}});
  c.prompts = {p};
  cmp::EndpointRun e;
  e.spec.name = "x";
  e.model = "m|odel";
  e.price = 2.0;
  cmp::Attempt a;
  a.result.text = "<script>alert('x')</script> & more";
  a.result.ttft_s = 0.1;
  a.result.total_s = 1.1;
  a.result.content_chunks = 11;
  e.cells = {{a}};
  c.endpoints = {e};
  const std::string html = cmp::render_html(c);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
            std::string::npos);
  EXPECT_NE(html.find("write &lt;b&gt;bold&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  const std::string md = cmp::render_markdown_summary(c);
  // 11 chunks, no usage: counted and said so; 10 tokens after the first in 1.0 s; 11 tokens × $2/M.
  EXPECT_NE(md.find("| x | m\\|odel | 1 | 0 | 100 ms | 1.10 s | 10.0 | 11.0 (chunks) | 2.00 | "
                    "$0.000022 |"),
            std::string::npos)
      << md;
}

// ---- End to end: real servers, real HTTP --------------------------------------------------------

// A child process with its stdout and stderr in a log file, stopped (SIGTERM) on destruction.
class Child {
 public:
  Child(const std::vector<std::string>& args, const fs::path& log) : log_(log) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
  }
  ~Child() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  std::string log() const { return read_file(log_); }
  bool exited() { return pid_ <= 0 || waitpid(pid_, nullptr, WNOHANG) == pid_; }

 private:
  pid_t pid_ = -1;
  fs::path log_;
};

// Starts `hllm serve --port 0` and returns its base URL once it says "serving ... on URL".
std::optional<std::string> wait_for_server(Child& server) {
  const std::regex serving(R"(hllm: serving \S+ on (http://[0-9.]+:[0-9]+/v1))");
  for (int i = 0; i < 1200; ++i) {  // 120 s: the demo model loads in well under a second
    std::smatch m;
    const std::string log = server.log();
    if (std::regex_search(log, m, serving)) return m[1].str();
    if (server.exited()) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

CommandResult run_command(const std::string& command, const fs::path& err_file) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>" + err_file.string()).c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_file(err_file);
  return r;
}

// One comparison run shared by the end-to-end tests (starting servers is the slow part).
struct EndToEnd {
  fs::path dir;
  std::string skip;  // why the run could not happen ("" = it ran)
  CommandResult result;
  fs::path report, json;

  static EndToEnd& get() {
    static EndToEnd run = make();
    return run;
  }

  static EndToEnd make() {
    EndToEnd r;
    r.dir = fresh_dir("hllm_compare_e2e");
    const std::string runner = HLLM_RUNNER;
    const CommandResult help = run_command(runner + " --help", r.dir / "help.err");
    if (help.out.find("\n  compare ") == std::string::npos) {
      r.skip = "this hllm was built without `compare` (no cpp-httplib)";
      return r;
    }
    const std::string model = HLLM_DEMO_MODEL_DIR;
    // Two instances that differ in scheduling: beta decodes one request at a time, so with -c 2
    // its second request waits.
    Child alpha(
        {runner, "serve", "-m", model, "--port", "0", "-t", "1", "--served-model-name", "alpha"},
        r.dir / "alpha.log");
    Child beta({runner, "serve", "-m", model, "--port", "0", "-t", "1", "--served-model-name",
                "beta", "--max-num-seqs", "1"},
               r.dir / "beta.log");
    const auto alpha_url = wait_for_server(alpha), beta_url = wait_for_server(beta);
    if (!alpha_url || !beta_url) {
      r.skip = "FAILED: hllm serve did not start:\n" + alpha.log() + "\n" + beta.log();
      return r;
    }
    // A port that refuses connections: bound (so nobody else takes it) but not listening.
    const int refusing = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    bind(refusing, reinterpret_cast<sockaddr*>(&address), sizeof address);
    getsockname(refusing, reinterpret_cast<sockaddr*>(&address), &length);
    const std::string refused_url =
        "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/v1";

    // The mini suite: extraction (keywords), code (asserts), a multi-turn conversation whose
    // text needs escaping in the report.
    const fs::path suite = r.dir / "mini.jsonl";
    std::ofstream(suite)
        << R"({"id": "mini-extract", "kind": "extraction", "messages": [{"role": "user", "content": "List the key points: the council approved 300 stations for 18 million euros."}], "keywords": ["300", "18 million"]})"
        << "\n"
        << R"({"id": "mini-code", "kind": "code", "messages": [{"role": "user", "content": "Write add(a, b) in a ```python block."}], "asserts": "assert add(2, 3) == 5"})"
        << "\n"
        << R"({"id": "mini-chat", "kind": "conversation", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Explain <qubits> & \"gates\" briefly."}]})"
        << "\n";
    r.report = r.dir / "report.html";
    r.json = r.dir / "results.json";
    r.result = run_command(runner + " compare --suite " + suite.string() +
                               " --endpoint alpha=" + *alpha_url + " beta=" + *beta_url +
                               ",model=beta refused=" + refused_url +
                               " -r 2 -c 2 --max-tokens 16 --price alpha=0.5 -o " +
                               r.report.string() + " --json " + r.json.string(),
                           r.dir / "compare.err");
    close(refusing);
    return r;
  }
};

// The end-to-end files (logs, report, screenshot) go away after a passing run; a failing one, or
// HLLM_KEEP_TEST_OUTPUT=1, keeps them for a look.
class RemoveEndToEndFiles : public ::testing::Environment {
 public:
  void TearDown() override {
    const fs::path dir =
        fs::temp_directory_path() / ("hllm_compare_e2e_" + std::to_string(getpid()));
    if (std::getenv("HLLM_KEEP_TEST_OUTPUT") == nullptr && !::testing::Test::HasFailure() &&
        ::testing::UnitTest::GetInstance()->Passed())
      fs::remove_all(dir);
  }
};
[[maybe_unused]] const auto* const remove_files =
    ::testing::AddGlobalTestEnvironment(new RemoveEndToEndFiles);

TEST(CompareEndToEnd, TwoServersAndARefusedPort) {
  EndToEnd& e = EndToEnd::get();
  if (e.skip.rfind("FAILED", 0) == 0) FAIL() << e.skip;
  if (!e.skip.empty()) GTEST_SKIP() << e.skip;
  ASSERT_EQ(e.result.exit_code, 0) << e.result.err;

  // Markdown summary on stdout: the two servers answered every request, the refused port none.
  const std::string& md = e.result.out;
  EXPECT_NE(md.find("| endpoint | model | requests | errors |"), std::string::npos) << md;
  EXPECT_NE(md.find("| alpha | alpha | 6 | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| beta | beta | 6 | 0 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| refused | ? | 6 | 6 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 0.50 |"), std::string::npos) << "alpha's price\n" << md;

  // The report: self-contained, both names, the table, the charts, the errors, escaped text.
  ASSERT_TRUE(fs::exists(e.report));
  const std::string html = read_file(e.report);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* s :
       {"alpha", "beta", "refused", "<table class=\"summary\">", "<svg", "Time to first token",
        "mini-extract", "mini-code", "mini-chat", "6 × no response: could not connect",
        "Explain &lt;qubits&gt; &amp; &quot;gates&quot; briefly."})
    EXPECT_NE(html.find(s), std::string::npos) << s;
  EXPECT_EQ(html.find("<qubits>"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos) << "no external assets";
  EXPECT_EQ(html.find("<link"), std::string::npos) << "no external assets";

  // Every result as JSON: hllm serve sends usage, so tokens come from it and stay within 16.
  const nlohmann::json j = nlohmann::json::parse(read_file(e.json));
  ASSERT_EQ(j["endpoints"].size(), 3u);
  for (int i = 0; i < 2; ++i) {
    for (const auto& prompt : j["endpoints"][i]["prompts"]) {
      for (const auto& run : prompt["runs"]) {
        EXPECT_TRUE(run["ok"].get<bool>()) << run.dump();
        EXPECT_TRUE(run["usage_reported"].get<bool>());
        EXPECT_GE(run["output_tokens"].get<int64_t>(), 1);
        EXPECT_LE(run["output_tokens"].get<int64_t>(), 16);
        EXPECT_GE(run["ttft_s"].get<double>(), 0.0);
        EXPECT_GE(run["total_s"].get<double>(), run["ttft_s"].get<double>());
        EXPECT_EQ(run["http_status"], 200);
      }
      if (prompt["id"] == "mini-extract") {
        EXPECT_TRUE(prompt["runs"][0].contains("score"));
      }
    }
  }
  for (const auto& prompt : j["endpoints"][2]["prompts"]) {
    for (const auto& run : prompt["runs"]) {
      EXPECT_FALSE(run["ok"].get<bool>());
      EXPECT_EQ(run["http_status"], 0);
    }
  }
}

TEST(CompareEndToEnd, WrongModelIsAnHttpErrorNotAnAbort) {
  EndToEnd& e = EndToEnd::get();
  if (!e.skip.empty()) GTEST_SKIP() << e.skip;
  // The shared run is over and its servers gone; this one needs its own.
  const std::string runner = HLLM_RUNNER;
  Child server({runner, "serve", "-m", HLLM_DEMO_MODEL_DIR, "--port", "0", "-t", "1"},
               e.dir / "wrong_model.log");
  const auto url = wait_for_server(server);
  ASSERT_TRUE(url) << server.log();
  const fs::path suite = e.dir / "one.jsonl";
  std::ofstream(suite)
      << R"({"id": "one", "kind": "copywriting", "messages": [{"role": "user", "content": "Hi"}]})"
      << "\n";
  const CommandResult r = run_command(
      runner + " compare --suite " + suite.string() + " --endpoint nope=" + *url +
          ",model=no-such-model -r 1 --max-tokens 4 -o " + (e.dir / "wrong.html").string(),
      e.dir / "wrong.err");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| nope | no-such-model | 1 | 1 |"), std::string::npos) << r.out;
  EXPECT_NE(read_file(e.dir / "wrong.html").find("HTTP 404"), std::string::npos);
}

TEST(CompareEndToEnd, BadArgumentsAreOneClearError) {
  EndToEnd& e = EndToEnd::get();
  if (!e.skip.empty()) GTEST_SKIP() << e.skip;
  const std::string runner = HLLM_RUNNER;
  const std::string suite = (e.dir / "mini.jsonl").string();
  const struct {
    std::string args, message;
  } cases[] = {
      {"--endpoint a=ftp://x/v1", "scheme \"ftp\""},
      {"--endpoint a=http://127.0.0.1:1/v1,key=HLLM_COMPARE_TEST_UNSET", "HLLM_COMPARE_TEST_UNSET"},
      {"--endpoint a=http://127.0.0.1:1/v1 --price b=1", "no --endpoint is named \"b\""},
      {"--endpoint a=http://127.0.0.1:1/v1 a=http://127.0.0.1:2/v1", "used twice"},
  };
  for (const auto& c : cases) {
    const CommandResult r = run_command(runner + " compare --suite " + suite + " " + c.args +
                                            " -o " + (e.dir / "bad.html").string(),
                                        e.dir / "bad.err");
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find("hllm: error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
  }
}

// The report as a browser shows it: headless chromium renders it to a PNG.
TEST(CompareEndToEnd, ReportRendersInChromium) {
  std::string browser;
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"})
    if (have_program(name)) {
      browser = name;
      break;
    }
  if (browser.empty()) GTEST_SKIP() << "chromium not installed (apt install chromium)";
  EndToEnd& e = EndToEnd::get();
  if (!e.skip.empty()) GTEST_SKIP() << e.skip;
  ASSERT_TRUE(fs::exists(e.report));
  const fs::path png = e.dir / "report.png";
  const std::string command = "timeout 120 " + browser +
                              " --headless --no-sandbox --disable-gpu --hide-scrollbars "
                              "--user-data-dir=" +
                              (e.dir / "chromium-profile").string() +
                              " --screenshot=" + png.string() + " --window-size=1200,2000 file://" +
                              e.report.string() + " >" + (e.dir / "chromium.log").string() +
                              " 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << read_file(e.dir / "chromium.log");
  ASSERT_TRUE(fs::exists(png)) << read_file(e.dir / "chromium.log");
  const std::string bytes = read_file(png);
  ASSERT_GE(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  const auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(bytes[at])) << 24) | (uint32_t(uint8_t(bytes[at + 1])) << 16) |
           (uint32_t(uint8_t(bytes[at + 2])) << 8) | uint32_t(uint8_t(bytes[at + 3]));
  };
  EXPECT_EQ(be32(16), 1200u);  // IHDR width
  EXPECT_EQ(be32(20), 2000u);  // IHDR height
  // A blank page compresses to a few KB; text, a table and charts do not.
  EXPECT_GT(bytes.size(), 30000u);
}

}  // namespace
