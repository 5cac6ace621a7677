// The umbrella header alone is enough for the manual assembly open_model() does (folder, backend,
// model): compiled and run against the tiny fixture model.
#include <gtest/gtest.h>

#include <hllm/hllm.hpp>

TEST(Umbrella, ReadmeSnippetRuns) {
  hllm::ModelFolder folder =
      hllm::open_model_folder(std::string(HLLM_TEST_DATA) + "/llama3-tiny-h512-l2-v512");
  hllm::CpuBackend backend;
  hllm::LlamaModel model(folder.config, folder.weights, backend);
  hllm::KvCache cache = model.new_cache(/*capacity=*/64);
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6};
  std::vector<float> logits(folder.config.vocab_size);
  model.forward(prompt, cache, logits, /*all_logits=*/false);
  EXPECT_EQ(cache.length(), 6);
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(folder.eos_ids, (std::vector<int64_t>{128001, 128009}));  // from generation_config.json
}
