// Perplexity (engine/perplexity.hpp) on the tiny fixture model:
//   - one window over the 200 golden positions equals the perplexity computed from the Hugging
//     Face golden logits themselves;
//   - sliding windows (stride < ctx) and llama.cpp-style scoring equal a direct computation that
//     runs every window as one forward pass and scores the positions by their definition;
//   - the CLI prints the result.
#include "hllm/engine/perplexity.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = fs::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

class PerplexityTest : public testing::Test {
 protected:
  PerplexityTest()
      : folder_(hllm::open_model_folder(MODEL_DIR, MODEL_DIR / "config.base.json")),
        golden_(MODEL_DIR / "golden.base.safetensors"),
        model_(folder_.config, folder_.weights, backend_),
        ids_(hllm::test::golden_ids(golden_.tensor("input_ids"))) {}

  // Every window as one forward pass; scores window positions [first, length).
  double direct_ppl(int64_t ctx, int64_t stride, bool second_half) {
    const int64_t n = static_cast<int64_t>(ids_.size()), vocab = folder_.config.vocab_size;
    double nll = 0;
    int64_t scored = 0;
    int64_t prev_end = 0;
    for (int64_t begin = 0; prev_end < n; begin += stride) {
      const int64_t end = std::min(begin + ctx, n), length = end - begin;
      const int64_t target_tokens = end - prev_end;  // HF's trg_len
      int64_t first = std::max<int64_t>(1, length - target_tokens);
      if (second_half) first = std::max<int64_t>(first, ctx / 2);
      hllm::KvCache cache = model_.new_cache(length);
      std::vector<float> logits(static_cast<size_t>(length * vocab));
      model_.forward(std::span(ids_).subspan(begin, length), cache, logits, true);
      for (int64_t j = first; j < length; ++j) {
        nll += hllm::token_nll(std::span<const float>(logits).subspan((j - 1) * vocab, vocab),
                               ids_[begin + j]);
        ++scored;
      }
      prev_end = end;
    }
    return std::exp(nll / static_cast<double>(scored));
  }

  hllm::ModelFolder folder_;
  hllm::SafetensorsFile golden_;
  hllm::CpuBackend backend_;
  hllm::LlamaModel model_;
  std::vector<int32_t> ids_;
};

TEST_F(PerplexityTest, OneWindowEqualsTheGoldenLogits) {
  const hllm::Tensor logits = golden_.tensor("logits");
  const int64_t n = static_cast<int64_t>(ids_.size()), vocab = logits.dim(1);
  double nll = 0;
  for (int64_t t = 1; t < n; ++t)
    nll += hllm::token_nll(std::span<const float>(logits.as<float>() + (t - 1) * vocab, vocab),
                           ids_[t]);
  const double expected = std::exp(nll / static_cast<double>(n - 1));

  hllm::PerplexityOptions options;
  options.ctx = n;
  options.logits_chunk = 64;  // the window's logits arrive in 4 pieces
  const hllm::PerplexityResult r = hllm::perplexity(model_, ids_, options);
  EXPECT_EQ(r.scored, n - 1);
  EXPECT_EQ(r.windows, 1);
  EXPECT_NEAR(r.ppl(), expected, 1e-4 * expected);
  std::printf("perplexity %.6f, from the golden logits %.6f\n", r.ppl(), expected);
}

TEST_F(PerplexityTest, SlidingWindowsFollowTheDefinition) {
  for (const auto& [ctx, stride] : {std::pair<int64_t, int64_t>{64, 64}, {64, 32}, {50, 17}}) {
    hllm::PerplexityOptions options;
    options.ctx = ctx;
    options.stride = stride;
    int64_t calls = 0;
    const hllm::PerplexityResult r = hllm::perplexity(
        model_, ids_, options, [&](int64_t done, int64_t total, const hllm::PerplexityResult&) {
          ++calls;
          EXPECT_LE(done, total);
        });
    EXPECT_EQ(calls, r.windows);
    EXPECT_NEAR(r.ppl(), direct_ppl(ctx, stride, false), 1e-6 * r.ppl()) << ctx << "/" << stride;
  }
  hllm::PerplexityOptions llama_cpp;
  llama_cpp.ctx = 64;
  llama_cpp.second_half_only = true;
  const hllm::PerplexityResult r = hllm::perplexity(model_, ids_, llama_cpp);
  EXPECT_NEAR(r.ppl(), direct_ppl(64, 64, true), 1e-6 * r.ppl());
  EXPECT_EQ(r.scored, 3 * 32);  // windows [0,64) [64,128) [128,192) score 32..63; [192,200) none
}

TEST_F(PerplexityTest, BadOptionsAreErrors) {
  hllm::PerplexityOptions o;
  o.ctx = 1;
  EXPECT_THROW(hllm::perplexity(model_, ids_, o), hllm::Error);
  o.ctx = 16, o.stride = 32;
  EXPECT_THROW(hllm::perplexity(model_, ids_, o), hllm::Error);
  o.stride = 8, o.second_half_only = true;
  EXPECT_THROW(hllm::perplexity(model_, ids_, o), hllm::Error);
  o = {};
  EXPECT_THROW(hllm::perplexity(model_, std::span<const int32_t>(ids_).first(1), o), hllm::Error);
}

TEST(PerplexityCli, PrintsTheResult) {
  const fs::path text = fs::temp_directory_path() / "hllm_ppl_test.txt";
  std::ofstream(text) << "The quick brown fox jumps over the lazy dog. " << std::string(40, 'a');
  const std::string command = std::string(HLLM_RUNNER) + " perplexity -m " + HLLM_DEMO_MODEL_DIR +
                              " -f " + text.string() + " --ctx 8 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, n);
  EXPECT_EQ(pclose(pipe), 0) << out;
  EXPECT_NE(out.find("perplexity "), std::string::npos) << out;
  EXPECT_NE(out.find("windows of 8"), std::string::npos) << out;
  fs::remove(text);
}

}  // namespace
