// GGUF files written by llama.cpp's own tools (tests/data/gguf) through hllm's loader and CPU
// forward pass, against goldens computed independently (gguf-py's dequantizer + a float64 numpy
// Llama, see tests/data/gguf/README.md): logits at all 200 positions, argmax agreement and the
// greedy continuation. hllm's activations stay fp32 (llama.cpp quantizes them for its dot
// products), so every file type is held to 1e-4 of max |golden|, quantized ones included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"

namespace {

const std::filesystem::path DATA = std::filesystem::path(HLLM_TEST_DATA) / "gguf";

using hllm::test::golden_ids;

class GgufGolden : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    folder_ = std::make_unique<hllm::ModelFolder>(
        hllm::open_model_folder(DATA / ("model." + GetParam() + ".gguf")));
    golden_ =
        std::make_unique<hllm::SafetensorsFile>(DATA / ("golden." + GetParam() + ".safetensors"));
    model_ = std::make_unique<hllm::LlamaModel>(folder_->config, folder_->weights, backend_);
  }

  hllm::CpuBackend backend_;
  std::unique_ptr<hllm::ModelFolder> folder_;
  std::unique_ptr<hllm::SafetensorsFile> golden_;
  std::unique_ptr<hllm::LlamaModel> model_;
};

TEST_P(GgufGolden, LogitsMatchAtEveryPosition) {
  const std::vector<int32_t> ids = golden_ids(golden_->tensor("input_ids"));
  const hllm::Tensor expected = golden_->tensor("logits");
  const int64_t n = static_cast<int64_t>(ids.size()), vocab = folder_->config.vocab_size;
  ASSERT_EQ(expected.shape, (hllm::Shape{n, vocab}));
  hllm::KvCache cache = model_->new_cache(n);
  std::vector<float> logits(static_cast<size_t>(n * vocab));
  model_->forward(ids, cache, logits, /*all_logits=*/true);
  const hllm::test::LogitsError e = hllm::test::logits_error(logits.data(), expected);
  std::printf("%s: max |logits - golden| = %.3g = %.3g of max |golden|\n", GetParam().c_str(),
              e.max_error, e.relative());
  EXPECT_LE(e.max_error, 1e-4f * e.max_golden) << "max |golden| = " << e.max_golden;
  EXPECT_GE(hllm::test::argmax_agreement(logits.data(), expected), n * 95 / 100);
}

// Greedy decoding through the KV cache, teacher-forced: each step must pick the golden token
// unless the golden's own top two are within 1e-2 (a near tie either pick is right for).
TEST_P(GgufGolden, GreedyContinuation) {
  std::vector<int32_t> context = golden_ids(golden_->tensor("gen_prompt"));
  const std::vector<int32_t> expected = golden_ids(golden_->tensor("gen_ids"));
  const int64_t vocab = folder_->config.vocab_size;
  hllm::KvCache cache = model_->new_cache(static_cast<int64_t>(context.size() + expected.size()));
  std::vector<float> logits(static_cast<size_t>(vocab));
  model_->forward(context, cache, logits, false);
  for (size_t step = 0; step < expected.size(); ++step) {
    const int32_t ours =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (ours != expected[step]) {
      std::vector<float> sorted(logits);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      EXPECT_LT(sorted[0] - sorted[1], 1e-2f)
          << "step " << step << ": " << ours << " vs golden " << expected[step];
    }
    const int32_t next = expected[step];  // teacher forcing keeps later steps comparable
    model_->forward({&next, 1}, cache, logits, false);
  }
}

std::string type_name(const testing::TestParamInfo<std::string>& info) { return info.param; }

INSTANTIATE_TEST_SUITE_P(FileTypes, GgufGolden,
                         testing::Values("f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"),
                         type_name);

}  // namespace
