// The runner binary as users and scripts call it: `hllm logits` and `hllm generate` with their
// exact flags reproduce the HF goldens, and bad input ends in one clear error line and a non-zero
// exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "hllm/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr together
};

Result run(const std::string& args) {
  const std::string command = std::string(HLLM_RUNNER) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return {-1, "popen failed"};
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string stdout_of(const std::string& args) {
  const std::string command = std::string(HLLM_RUNNER) + " " + args + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  EXPECT_EQ(pclose(pipe), 0) << args;
  return output;
}

std::string id_list(const hllm::Tensor& ids) {
  std::string text;
  for (int64_t i = 0; i < ids.numel(); ++i) {
    if (i) text += ',';
    text += std::to_string(ids.as<int64_t>()[i]);
  }
  return text;
}

TEST(Runner, GenerateReproducesGreedyGolden) {
  const hllm::SafetensorsFile golden(MODEL_DIR / "golden.llama3.safetensors");
  const std::string out =
      stdout_of("generate -m " + MODEL_DIR.string() + " --config " +
                (MODEL_DIR / "config.llama3.json").string() + " --ids " +
                id_list(golden.tensor("gen_prompt")) + " -n 48 --greedy --ignore-eos");
  EXPECT_EQ(out, id_list(golden.tensor("gen_ids")) + "\n");
}

TEST(Runner, LogitsWritesEveryPosition) {
  const hllm::SafetensorsFile golden(MODEL_DIR / "golden.yarn.safetensors");
  const fs::path output =
      fs::temp_directory_path() / ("hllm_runner_test_" + std::to_string(getpid()) + ".safetensors");
  stdout_of("logits -m " + MODEL_DIR.string() + " --config " +
            (MODEL_DIR / "config.yarn.json").string() + " --ids " +
            id_list(golden.tensor("input_ids")) + " -o " + output.string());
  {
    const hllm::SafetensorsFile written(output);
    const hllm::Tensor logits = written.tensor("logits"), expected = golden.tensor("logits");
    ASSERT_EQ(logits.dtype, hllm::DType::f32);
    ASSERT_EQ(logits.shape, expected.shape);
    float max_golden = 0.0f, max_error = 0.0f;
    for (int64_t i = 0; i < logits.numel(); ++i) {
      max_golden = std::max(max_golden, std::fabs(expected.as<float>()[i]));
      max_error = std::max(max_error, std::fabs(logits.as<float>()[i] - expected.as<float>()[i]));
    }
    EXPECT_LE(max_error, 2e-3f * max_golden);
  }
  fs::remove(output);
}

TEST(Runner, BadInputGivesOneClearError) {
  const std::string model = " -m " + MODEL_DIR.string();
  const struct {
    std::string args, message;
  } cases[] = {
      {"generate -m /nonexistent/model --ids 1 -n 2 --greedy", "does not exist"},
      {"generate" + model + " --ids 1,x,3 -n 2 --greedy", "\"x\" is not a token id"},
      {"generate" + model + " --ids 1,,3 -n 2 --greedy", "is not a token id"},
      {"generate" + model + " --ids 1,99999 -n 2 --greedy", "outside the vocabulary"},
      {"generate" + model + " --ids 1,2 -n 2", "pass --greedy"},
      {"generate" + model + " --config /nonexistent.json --ids 1 -n 2 --greedy", "not found"},
      {"logits" + model + " --ids 1 -o /nonexistent/dir/out.safetensors",
       "/nonexistent/dir/out.safetensors"},
  };
  for (const auto& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("hllm: error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
