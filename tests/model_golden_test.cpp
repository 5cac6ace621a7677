// The CPU forward pass against the Hugging Face reference (../shared/fixtures, copied to
// tests/data): for every RoPE variant, logits at all 200 positions within 2e-3 * max|golden| with
// the same argmax, and the 48-token greedy continuation reproduced exactly through the KV cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"

namespace {

const std::filesystem::path MODEL_DIR =
    std::filesystem::path(HLLM_TEST_DATA) / "llama3-tiny-h512-l2-v512";

using hllm::test::golden_ids;

class GoldenTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string variant = GetParam();
    folder_ = std::make_unique<hllm::ModelFolder>(
        hllm::open_model_folder(MODEL_DIR, MODEL_DIR / ("config." + variant + ".json")));
    golden_ =
        std::make_unique<hllm::SafetensorsFile>(MODEL_DIR / ("golden." + variant + ".safetensors"));
    model_ = std::make_unique<hllm::LlamaModel>(folder_->config, folder_->weights, backend_);
  }

  hllm::CpuBackend backend_;
  std::unique_ptr<hllm::ModelFolder> folder_;
  std::unique_ptr<hllm::SafetensorsFile> golden_;
  std::unique_ptr<hllm::LlamaModel> model_;
};

TEST_P(GoldenTest, LogitsMatchAtEveryPosition) {
  const std::vector<int32_t> ids = golden_ids(golden_->tensor("input_ids"));
  const hllm::Tensor expected = golden_->tensor("logits");
  const int64_t n = static_cast<int64_t>(ids.size()), vocab = folder_->config.vocab_size;
  ASSERT_EQ(n, 200);
  ASSERT_EQ(expected.shape, (hllm::Shape{n, vocab}));

  hllm::KvCache cache = model_->new_cache(n);
  std::vector<float> logits(static_cast<size_t>(n * vocab));
  model_->forward(ids, cache, logits, /*all_logits=*/true);

  const hllm::test::LogitsError e = hllm::test::logits_error(logits.data(), expected);
  EXPECT_LE(e.max_error, 2e-3f * e.max_golden) << "max |golden| = " << e.max_golden;
  std::printf("%s: max |logits - golden| = %.3g = %.3g of max |golden|\n", GetParam().c_str(),
              e.max_error, e.relative());
  EXPECT_EQ(hllm::test::argmax_agreement(logits.data(), expected), n);
}

// A prompt split into chunks (each attending to the cached earlier ones, all with the RoPE table
// of the whole forward) gives the same logits as the one-pass golden, and the same bits as the
// one pass here: 37-token chunks run the prompt matmul kernel and a last chunk of 15 (or chunks of
// 5) the decode kernel, which sum every output in the same order (cpu/matmul_panels.hpp).
TEST_P(GoldenTest, ChunkedPrefillMatches) {
  const std::vector<int32_t> ids = golden_ids(golden_->tensor("input_ids"));
  const hllm::Tensor expected = golden_->tensor("logits");
  const int64_t n = static_cast<int64_t>(ids.size()), vocab = folder_->config.vocab_size;
  const auto prefill = [&](int64_t chunk) {
    model_->set_prefill_chunk(chunk);
    hllm::KvCache cache = model_->new_cache(n);
    std::vector<float> logits(static_cast<size_t>(n * vocab));
    model_->forward(ids, cache, logits, /*all_logits=*/true);
    EXPECT_EQ(cache.length(), n);
    return logits;
  };
  const std::vector<float> whole = prefill(n);
  for (const int64_t chunk : {37, 5}) {  // 200 = 5 × 37 + 15: a ragged last chunk
    const std::vector<float> logits = prefill(chunk);
    const hllm::test::LogitsError e = hllm::test::logits_error(logits.data(), expected);
    EXPECT_LE(e.max_error, 2e-3f * e.max_golden) << "max |golden| = " << e.max_golden;
    EXPECT_EQ(std::memcmp(logits.data(), whole.data(), whole.size() * sizeof(float)), 0)
        << "chunks of " << chunk << " are not bit-identical to one pass";
  }
}

// HF re-bases dynamic NTK with the running length, so only its one-pass forward has a golden.
using GenerationTest = GoldenTest;

TEST_P(GenerationTest, GreedyContinuationThroughKvCache) {
  const std::vector<int32_t> prompt = golden_ids(golden_->tensor("gen_prompt"));
  const std::vector<int32_t> expected = golden_ids(golden_->tensor("gen_ids"));
  const int64_t vocab = folder_->config.vocab_size;

  hllm::KvCache cache = model_->new_cache(static_cast<int64_t>(prompt.size() + expected.size()));
  std::vector<float> logits(static_cast<size_t>(vocab));
  model_->forward(prompt, cache, logits, false);
  std::vector<int32_t> generated;
  while (generated.size() < expected.size()) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    generated.push_back(next);
    model_->forward({&next, 1}, cache, logits, false);
  }
  EXPECT_EQ(generated, expected);
}

std::string variant_name(const testing::TestParamInfo<std::string>& info) { return info.param; }

INSTANTIATE_TEST_SUITE_P(RopeVariants, GoldenTest,
                         testing::Values("base", "linear", "llama3", "yarn", "dynamic"),
                         variant_name);
INSTANTIATE_TEST_SUITE_P(RopeVariants, GenerationTest,
                         testing::Values("base", "linear", "llama3", "yarn"), variant_name);

}  // namespace
