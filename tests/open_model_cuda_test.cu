// open_model() on the GPU through the registered CUDA entry points (hllm/cuda/device.cuh, included
// here as a program includes it once): "cuda" and "auto" give the CUDA backend for a supported
// model, whose logits match the HF golden within bf16 tolerance; "auto" keeps an unsupported
// head_dim on the CPU.
#define HLLM_GPU_TEST_MAIN
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "gpu_test_util.cuh"
#include "hllm/cuda/device.cuh"
#include "hllm/engine/open_model.hpp"
#include "hllm/io/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path MODEL_DIR = hllm::test::test_data_dir() / "llama3-tiny-h512-l2-v512";

hllm::OpenOptions ids_only(const char* device) {
  hllm::OpenOptions options;
  options.device = device;
  options.load_tokenizer = false;
  options.config = MODEL_DIR / "config.base.json";
  return options;
}

TEST(OpenModelCuda, EntryPointsAreRegistered) {
  ASSERT_TRUE(hllm::cuda_built_in());
  EXPECT_GT(hllm::cuda_device_count(), 0);
  EXPECT_GT(hllm::cuda_bytes_in_use(), 0.0);
}

TEST(OpenModelCuda, CudaAndAutoRunTheModelOnTheGpu) {
  const hllm::SafetensorsFile golden(MODEL_DIR / "golden.base.safetensors");
  const std::vector<int32_t> ids = hllm::test::golden_ids(golden.tensor("input_ids"));
  const hllm::Tensor expected = golden.tensor("logits");
  for (const char* device : {"cuda", "auto"}) {
    const auto m = hllm::open_model(MODEL_DIR, ids_only(device));
    ASSERT_EQ(m->backend->device(), hllm::Device::cuda) << device;
    const int64_t n = static_cast<int64_t>(ids.size()), vocab = m->config().vocab_size;
    hllm::KvCache cache = m->model.new_cache(n);
    std::vector<float> logits(static_cast<size_t>(n * vocab), NAN);
    m->model.forward(ids, cache, logits, /*all_logits=*/true);
    const hllm::test::LogitsError e = hllm::test::logits_error(logits.data(), expected);
    EXPECT_LE(e.max_error, 2e-2f * e.max_golden) << device;
  }
}

TEST(OpenModelCuda, AutoKeepsAnUnsupportedHeadDimOnTheCpu) {
  hllm::LlamaConfig config;
  config.head_dim = 96;
  EXPECT_EQ(hllm::make_backend("auto", 1, config)->device(), hllm::Device::cpu);
  try {
    hllm::make_backend("cuda", 1, config);
    ADD_FAILURE() << "head_dim 96 was accepted on the GPU";
  } catch (const hllm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 96"), std::string::npos) << e.what();
  }
}

}  // namespace
