// The runner binary as users and scripts call it: `hllm logits` and `hllm generate` with their
// exact flags reproduce the HF goldens, and bad input ends in one clear error line and a non-zero
// exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "hllm/io/safetensors.hpp"

namespace {

// True when nvidia-smi lists a GPU (the CUDA error path is only testable without one).
bool hllm_test_has_gpu() { return std::system("nvidia-smi -L >/dev/null 2>&1") == 0; }

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
      {"bench --synthetic tiny -m " + MODEL_DIR.string(), "either --synthetic NAME or -m"},
      {"bench --synthetic llama3-70b", "unknown model \"llama3-70b\""},
      {"bench --synthetic tiny --batch 0 --device cpu", "outside 1..256"},
  };
  for (const auto& c : cases) {
    const Result r = run(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find("hllm: error: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
  }
}

// --device cuda on a machine without a GPU (or a build without CUDA) is one clear error; the demo
// model's head_dim 8 is refused by name whatever the machine.
TEST(Runner, DeviceChoiceErrors) {
  if (hllm_test_has_gpu()) GTEST_SKIP() << "a GPU is present";
  const Result no_gpu = run("logits -m " + MODEL_DIR.string() + " --ids 1,2 --device cuda -o x");
  EXPECT_EQ(no_gpu.exit_code, 1) << no_gpu.output;
  EXPECT_TRUE(no_gpu.output.find("no GPU found") != std::string::npos ||
              no_gpu.output.find("built without CUDA") != std::string::npos)
      << no_gpu.output;
  const Result head_dim = run("run -p hi -n 1 --device cuda");  // the demo model
  EXPECT_EQ(head_dim.exit_code, 1) << head_dim.output;
  EXPECT_NE(head_dim.output.find("head_dim 8 is not supported"), std::string::npos)
      << head_dim.output;
}

// hllm bench on the CPU: batched decode over one paged KV pool runs and prints its table.
TEST(Runner, BenchSyntheticOnCpu) {
  const Result r = run("bench --synthetic tiny --quant q4 -p 20 -n 5 --batch 1,3 --device cpu");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("decode t/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("\n     3      20      5 "), std::string::npos) << r.output;
  const Result json = run("bench --synthetic tiny -p 16 -n 3 -r 2 --json --device cpu");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  EXPECT_NE(json.output.find("\"decode_tok_s\":{\"max\":"), std::string::npos) << json.output;
}

}  // namespace
