// open_model() and what it assembles, against lower-level oracles: the model folder's own files,
// the tokenizer's encode/encode_chat, and a plain generation loop with a StreamDecoder.
#include "hllm/engine/open_model.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "hllm/engine/generate.hpp"
#include "hllm/engine/generate_text.hpp"
#include "hllm/quant/ggml_quantize.hpp"
#include "hllm/quant/quantize.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "reference_generate.hpp"

namespace {

hllm::OpenOptions on_cpu() {
  hllm::OpenOptions options;
  options.device = "cpu";
  options.threads = 2;
  return options;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(OpenModel, DemoFolderHoldsTokenizerStopIdsAndSamplingDefaults) {
  const auto m = hllm::open_model(HLLM_DEMO_MODEL_DIR, on_cpu());
  ASSERT_TRUE(m->tokenizer.has_value());
  EXPECT_EQ(m->backend->device(), hllm::Device::cpu);
  EXPECT_EQ(m->config().vocab_size, 128256);
  // generation_config.json: eos [128001, 128009], do_sample true, temperature 0.6, top_p 0.9;
  // tokenizer_config.json's eos_token <|eot_id|> = 128009 adds nothing new.
  EXPECT_EQ(m->stop_ids, (std::vector<int64_t>{128001, 128009}));
  EXPECT_FLOAT_EQ(m->sampling.temperature, 0.6f);
  EXPECT_FLOAT_EQ(m->sampling.top_p, 0.9f);
  EXPECT_EQ(m->sampling.top_k, hllm::SamplingParams{}.top_k);
}

TEST(OpenModel, IdsOnlyWithoutTokenizer) {
  hllm::OpenOptions options = on_cpu();
  options.load_tokenizer = false;
  const auto m =
      hllm::open_model(std::string(HLLM_TEST_DATA) + "/llama3-tiny-h512-l2-v512", options);
  EXPECT_FALSE(m->tokenizer.has_value());
  EXPECT_EQ(m->stop_ids, (std::vector<int64_t>{128001, 128009}));  // from generation_config.json
  const std::vector<int32_t> prompt = {1, 2, 3};
  EXPECT_NE(error_of([&] {
              hllm::generate_text(*m, prompt, {}, 4, [](std::string_view) { return true; });
            }).find("without its tokenizer"),
            std::string::npos);
}

// --kv-cache-dtype reaches the CPU backend and the caches it allocates: auto follows --cpu-matmul
// (f16 with int8, f32 with exact), f16 and f32 are taken as given.
TEST(OpenModel, KvCacheDtypeReachesTheBackendAndItsCaches) {
  const std::string dir = std::string(HLLM_TEST_DATA) + "/llama3-tiny-h512-l2-v512";
  struct Case {
    hllm::CpuMatmul matmul;
    hllm::CpuKvCache kv;
    hllm::DType expected;
  };
  for (const Case c : {Case{hllm::CpuMatmul::int8, hllm::CpuKvCache::automatic, hllm::DType::f16},
                       Case{hllm::CpuMatmul::exact, hllm::CpuKvCache::automatic, hllm::DType::f32},
                       Case{hllm::CpuMatmul::int8, hllm::CpuKvCache::f32, hllm::DType::f32},
                       Case{hllm::CpuMatmul::exact, hllm::CpuKvCache::f16, hllm::DType::f16}}) {
    hllm::OpenOptions options = on_cpu();
    options.load_tokenizer = false;
    options.int4_matmul = c.matmul;
    options.kv_cache = c.kv;
    const auto m = hllm::open_model(dir, options);
    SCOPED_TRACE(hllm::describe_backend(*m->backend));
    EXPECT_EQ(m->backend->kv_dtype(), c.expected);
    const hllm::KvCache cache = m->model.new_cache(16);
    EXPECT_EQ(cache.layer(0).k.dtype, c.expected);
    EXPECT_EQ(cache.layer(0).v.dtype, c.expected);
  }
}

// --lm-head: q4 makes the head the INT4 tiles of RTN-quantizing the stored matrix, q8 (and auto on
// the CPU) its Q8_0 blocks, q6 its Q6_K blocks, byte for byte what the quantizers give the stored
// matrix; the embedding keeps the stored rows, and a forward pass runs through the new head.
TEST(OpenModel, LmHeadQuantizedAtLoad) {
  hllm::OpenOptions options = on_cpu();
  options.load_tokenizer = false;
  const std::string dir = std::string(HLLM_TEST_DATA) + "/llama3-tiny-h512-l2-v512";
  const auto stored = hllm::open_model(dir, options);
  const hllm::Tensor dense = stored->folder.weights.lm_head.dense;
  ASSERT_TRUE(stored->folder.weights.lm_head.is_dense());
  hllm::ThreadPool pool(1);
  const hllm::Int4Matrix int4 = hllm::quantize_rtn_tiles(dense, pool);
  const hllm::GgmlMatrix q8 = hllm::quantize_ggml_rows(dense, hllm::GgmlType::Q8_0, pool);
  const hllm::GgmlMatrix q6 = hllm::quantize_ggml_rows(dense, hllm::GgmlType::Q6_K, pool);
  for (const hllm::LmHead head :
       {hllm::LmHead::q4, hllm::LmHead::q8, hllm::LmHead::q6, hllm::LmHead::automatic}) {
    options.lm_head = head;
    const auto m = hllm::open_model(dir, options);
    const hllm::Linear& got = m->folder.weights.lm_head;
    EXPECT_TRUE(m->folder.weights.embed.is_dense());
    const hllm::GgmlMatrix& blocks = head == hllm::LmHead::q6 ? q6 : q8;
    const void* expected =
        head == hllm::LmHead::q4 ? static_cast<const void*>(int4.view().tiles) : blocks.view.data;
    const size_t bytes = head == hllm::LmHead::q4 ? int4.view().nbytes() : blocks.view.nbytes();
    ASSERT_EQ(got.storage_name(), head == hllm::LmHead::q4   ? "INT4"
                                  : head == hllm::LmHead::q6 ? "Q6_K"
                                                             : "Q8_0");
    ASSERT_EQ(got.nbytes(), bytes);
    EXPECT_EQ(std::memcmp(got.data(), expected, bytes), 0);
    std::vector<float> logits(static_cast<size_t>(m->config().vocab_size));
    hllm::KvCache cache = m->model.new_cache(8);
    m->model.forward(std::vector<int32_t>{5, 77, 300, 12}, cache, logits, false);
    for (const float v : logits) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(OpenModel, ClearErrors) {
  EXPECT_NE(error_of([] { hllm::open_model("/nonexistent/model", on_cpu()); }).find("/nonexistent"),
            std::string::npos);
  const std::string file = std::string(HLLM_DEMO_MODEL_DIR) + "/model.safetensors";
  EXPECT_NE(error_of([&] {
              hllm::open_model(file, on_cpu());
            }).find("is neither a model folder (config.json + *.safetensors"),
            std::string::npos);
  hllm::OpenOptions bad = on_cpu();
  bad.device = "gpu";
  EXPECT_NE(error_of([&] {
              hllm::open_model(HLLM_DEMO_MODEL_DIR, bad);
            }).find("device must be cpu, cuda or auto"),
            std::string::npos);
  hllm::LlamaConfig config;
  config.head_dim = 128;
  // This program does not register the CUDA entry points (hllm/cuda/device.cuh): asking for the
  // GPU says so, before anything else (open_model_cuda_test covers the registered case).
  EXPECT_FALSE(hllm::cuda_built_in());
  EXPECT_EQ(hllm::cuda_device_count(), 0);
  EXPECT_NE(error_of([&] { hllm::make_backend("cuda", 1, config); }).find("built without CUDA"),
            std::string::npos);
  config.head_dim = 96;
  EXPECT_FALSE(hllm::cuda_supports(config));
  EXPECT_NE(error_of([&] { hllm::make_backend("cuda", 1, config); }).find("head_dim 96"),
            std::string::npos);
  config.head_dim = 128;
  config.quant.method = hllm::QuantMethod::ggml;  // GGUF blocks: no CUDA kernels yet
  EXPECT_FALSE(hllm::cuda_supports(config));
  EXPECT_NE(error_of([&] { hllm::make_backend("cuda", 1, config); }).find("GGUF block-quantized"),
            std::string::npos);
  // "auto" never fails: the CPU when there is no usable GPU.
  EXPECT_NE(hllm::make_backend("auto", 1, config), nullptr);
}

// A GGUF file opens like a folder: config and tokenizer from its metadata, stop ids from its
// eos id, the CPU under "auto" (its ggml blocks have no CUDA kernels).
TEST(OpenModel, GgufFile) {
  const std::string file = std::string(HLLM_TEST_DATA) + "/gguf/model.q4_k_m.gguf";
  hllm::OpenOptions options;
  options.device = "auto";
  const auto m = hllm::open_model(file, options);
  EXPECT_EQ(m->config().quant.method, hllm::QuantMethod::ggml);
  EXPECT_EQ(m->config().hidden_size, 512);
  ASSERT_TRUE(m->tokenizer.has_value());
  EXPECT_EQ(m->tokenizer->vocab_size(), 512u);
  EXPECT_EQ(m->tokenizer->bos_id(), 1);
  EXPECT_NE(std::find(m->stop_ids.begin(), m->stop_ids.end(), 2), m->stop_ids.end());
  EXPECT_EQ(m->backend->device(), hllm::Device::cpu);
  EXPECT_TRUE(m->folder.weights.layers[0].wq.is_ggml());
}

TEST(SamplingDefaults, FromGenerationConfig) {
  hllm::GenerationConfig g;
  const hllm::SamplingParams library;
  hllm::SamplingParams s = hllm::SamplingParams::from_generation_config(g);  // nothing set
  EXPECT_EQ(s.temperature, library.temperature);
  EXPECT_EQ(s.top_p, library.top_p);
  EXPECT_EQ(s.top_k, library.top_k);
  g.temperature = 0.7;
  g.top_p = 0.8;
  g.top_k = 40;
  s = hllm::SamplingParams::from_generation_config(g);
  EXPECT_FLOAT_EQ(s.temperature, 0.7f);
  EXPECT_FLOAT_EQ(s.top_p, 0.8f);
  EXPECT_EQ(s.top_k, 40);
  g.do_sample = false;  // greedy, whatever else it says
  EXPECT_EQ(hllm::SamplingParams::from_generation_config(g).temperature, 0.0f);
}

TEST(EncodePrompt, CompletionIsBosPlusPlainTextAndChatIsTheChatFormat) {
  const auto m = hllm::open_model(HLLM_DEMO_MODEL_DIR, on_cpu());
  const hllm::Tokenizer& tok = *m->tokenizer;
  const std::string text = "Hello <|eot_id|> world";
  std::vector<int32_t> expected = {tok.bos_id()};
  for (const int32_t id : tok.encode(text, /*match_special=*/false)) expected.push_back(id);
  EXPECT_EQ(hllm::encode_prompt(tok, text), expected);  // the special-token text stays text
  const std::vector<hllm::ChatMessage> chat = {{"system", "Be brief."}, {"user", "Hi there"}};
  EXPECT_EQ(hllm::encode_prompt(tok, chat), hllm::encode_chat(tok, chat, true));
}

TEST(GenerateText, EqualsTheGenerationLoopWithAStreamDecoder) {
  const auto m = hllm::open_model(HLLM_DEMO_MODEL_DIR, on_cpu());
  const std::vector<int32_t> prompt = hllm::encode_prompt(*m->tokenizer, "The capital of France");
  hllm::SamplingParams sampling;
  sampling.seed = 1234;  // sampled, not greedy: both paths must draw the same ids
  std::string text;
  const hllm::GenerationResult r =
      hllm::generate_text(*m, prompt, sampling, 24, [&](std::string_view piece) {
        text += piece;
        return true;
      });

  const std::vector<int32_t> direct =
      hllm::test::reference_generate(m->model, prompt, sampling, 24, m->stop_ids);
  hllm::StreamDecoder decoder(*m->tokenizer);
  std::string expected;
  for (int32_t id : direct) expected += decoder.push(id);
  expected += decoder.finish();
  EXPECT_EQ(r.ids, direct);
  EXPECT_EQ(text, expected);
  EXPECT_FALSE(text.empty());

  int pieces = 0;  // on_text returning false stops at once
  const hllm::GenerationResult stopped =
      hllm::generate_text(*m, prompt, sampling, 24, [&](std::string_view) { return ++pieces < 3; });
  EXPECT_EQ(stopped.finish, hllm::FinishReason::cancelled);
  EXPECT_EQ(stopped.ids.size(), 3u);
}

}  // namespace
