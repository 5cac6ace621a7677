// Loading model folders: sharded and single-file checkpoints give the same model, tied embeddings
// work with and without a stored lm_head, and missing / misshapen / wrongly typed tensors are
// errors that name the tensor and the expected shape.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "hllm/cpu/backend.hpp"
#include "hllm/io/json.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
using hllm::DType;
using hllm::Tensor;

// A random tiny Llama (2 layers, hidden 16, 4 heads / 2 KV heads, head_dim 4, vocab 40) whose
// tensors can be written out in any arrangement.
class TinyModel {
 public:
  TinyModel() {
    std::mt19937 rng(11);
    std::normal_distribution<float> dist(0.0f, 0.3f);
    const auto add = [&](const std::string& name, hllm::Shape shape) {
      std::vector<uint16_t>& data = storage_[name];
      for (int64_t i = 0; i < shape.numel(); ++i) data.push_back(hllm::f32_to_bf16(dist(rng)).bits);
      shapes_.emplace_back(name, shape);
    };
    add("model.embed_tokens.weight", {40, 16});
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {16});
      add(p + "self_attn.q_proj.weight", {16, 16});
      add(p + "self_attn.k_proj.weight", {8, 16});
      add(p + "self_attn.v_proj.weight", {8, 16});
      add(p + "self_attn.o_proj.weight", {16, 16});
      add(p + "post_attention_layernorm.weight", {16});
      add(p + "mlp.gate_proj.weight", {24, 16});
      add(p + "mlp.up_proj.weight", {24, 16});
      add(p + "mlp.down_proj.weight", {16, 24});
    }
    add("model.norm.weight", {16});
    add("lm_head.weight", {40, 16});
  }

  std::vector<std::pair<std::string, Tensor>> tensors(const std::vector<std::string>& skip = {}) {
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& [name, shape] : shapes_)
      if (std::find(skip.begin(), skip.end(), name) == skip.end())
        list.emplace_back(name, Tensor(storage_[name].data(), DType::bf16, shape));
    return list;
  }

  static std::string config(bool tied) {
    return std::string(
               R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 16,
      "intermediate_size": 24, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
      "vocab_size": 40, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
      "torch_dtype": "bfloat16", "eos_token_id": 2, "tie_word_embeddings": )") +
           (tied ? "true}" : "false}");
  }

 private:
  std::map<std::string, std::vector<uint16_t>> storage_;
  std::vector<std::pair<std::string, hllm::Shape>> shapes_;
};

class WeightsTest : public testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("hllm_weights_test_" + std::to_string(getpid()));
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  fs::path folder(const std::string& name, bool tied,
                  const std::vector<std::pair<std::string, Tensor>>& tensors) {
    const fs::path dir = root_ / name;
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << TinyModel::config(tied);
    hllm::write_safetensors(dir / "model.safetensors", tensors);
    return dir;
  }

  static std::vector<float> logits_of(const fs::path& dir) {
    const hllm::ModelFolder model_folder = hllm::open_model_folder(dir);
    hllm::CpuBackend backend(2);
    hllm::LlamaModel model(model_folder.config, model_folder.weights, backend);
    const std::vector<int32_t> ids = {1, 7, 39, 0, 12};
    hllm::KvCache cache = model.new_cache(5);
    std::vector<float> logits(5 * 40);
    model.forward(ids, cache, logits, true);
    return logits;
  }

  static std::string load_error(const fs::path& dir) {
    try {
      hllm::open_model_folder(dir);
    } catch (const hllm::Error& e) {
      return e.what();
    }
    return "";
  }

  fs::path root_;
  TinyModel model_;
};

TEST_F(WeightsTest, ShardedEqualsSingleFile) {
  const std::vector<float> single = logits_of(folder("single", false, model_.tensors()));

  const fs::path sharded = root_ / "sharded";
  fs::create_directories(sharded);
  std::ofstream(sharded / "config.json") << TinyModel::config(false);
  auto all = model_.tensors();
  const std::vector<std::pair<std::string, Tensor>> first(all.begin(), all.begin() + 9),
      second(all.begin() + 9, all.end());
  hllm::write_safetensors(sharded / "model-00001-of-00002.safetensors", first);
  hllm::write_safetensors(sharded / "model-00002-of-00002.safetensors", second);
  hllm::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", hllm::json::object()}};
  for (const auto& [name, t] : first)
    index["weight_map"][name] = "model-00001-of-00002.safetensors";
  for (const auto& [name, t] : second)
    index["weight_map"][name] = "model-00002-of-00002.safetensors";
  std::ofstream(sharded / "model.safetensors.index.json") << index.dump();

  EXPECT_EQ(logits_of(sharded), single);
}

TEST_F(WeightsTest, TiedEmbeddingsWithAndWithoutStoredLmHead) {
  // Tied: lm_head is embed_tokens. Storing embed_tokens' values as lm_head must give the same
  // logits.
  auto tied_tensors = model_.tensors({"lm_head.weight"});
  const std::vector<float> tied = logits_of(folder("tied", true, tied_tensors));
  auto untied_tensors = model_.tensors({"lm_head.weight"});
  untied_tensors.emplace_back("lm_head.weight", untied_tensors.front().second);
  EXPECT_EQ(logits_of(folder("untied_copy", false, untied_tensors)), tied);
  EXPECT_NE(logits_of(folder("untied", false, model_.tensors())), tied);
}

TEST_F(WeightsTest, MissingTensorIsNamed) {
  const std::string message =
      load_error(folder("missing", false, model_.tensors({"model.layers.1.mlp.up_proj.weight"})));
  EXPECT_NE(
      message.find("\"model.layers.1.mlp.up_proj.weight\" is missing (expected shape [24, 16])"),
      std::string::npos)
      << message;
  EXPECT_NE(load_error(folder("no_lm_head", false, model_.tensors({"lm_head.weight"})))
                .find("lm_head.weight"),
            std::string::npos);
}

TEST_F(WeightsTest, WrongShapeAndDtypeAreNamed) {
  auto tensors = model_.tensors();
  for (auto& [name, t] : tensors)
    if (name == "model.layers.0.self_attn.k_proj.weight") t = t.reshape({16, 8});
  std::string message = load_error(folder("shape", false, tensors));
  EXPECT_NE(message.find(
                "\"model.layers.0.self_attn.k_proj.weight\" has shape [16, 8], expected [8, 16]"),
            std::string::npos)
      << message;

  std::vector<int32_t> ints(16, 1);
  tensors = model_.tensors({"model.norm.weight"});
  tensors.emplace_back("model.norm.weight", Tensor(ints.data(), DType::i32, {16}));
  message = load_error(folder("dtype", false, tensors));
  EXPECT_NE(message.find("\"model.norm.weight\" has dtype I32"), std::string::npos) << message;
}

TEST_F(WeightsTest, FolderWithoutWeightsOrConfig) {
  const fs::path empty = root_ / "empty";
  fs::create_directories(empty);
  EXPECT_NE(load_error(empty).find("config.json not found"), std::string::npos);
  std::ofstream(empty / "config.json") << TinyModel::config(false);
  EXPECT_NE(load_error(empty).find(empty.string()), std::string::npos);
}

}  // namespace
