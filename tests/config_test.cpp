// config.json -> LlamaConfig: every rope_scaling spelling (transformers 4.x `type` /
// `rope_type`, 5.x `rope_parameters`), defaults, and a one-line error for missing fields and
// unsupported values.
#include "hllm/model/config.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "hllm/io/json.hpp"
#include "hllm/model/config_json.hpp"
#include "hllm/model/rope.hpp"

namespace {

using hllm::json;

// The Llama-3-8B-Instruct config.json as published.
json llama3_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": false,
    "bos_token_id": 128000, "eos_token_id": 128009, "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 14336, "max_position_embeddings": 8192, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": null,
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})");
}

std::string error_of(const json& config) {
  try {
    hllm::parse_llama_config(config, "config.json");
  } catch (const hllm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, Llama3_8B) {
  const hllm::LlamaConfig c = hllm::parse_llama_config(llama3_8b(), "config.json");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.n_layers, 32);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.group_size(), 4);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{128009});
  EXPECT_EQ(c.dtype, hllm::DType::bf16);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_scaling.type, hllm::RopeType::none);
}

TEST(Config, EosListAndExplicitHeadDim) {
  json j = llama3_8b();
  j["eos_token_id"] = {128001, 128008, 128009};
  j["head_dim"] = 64;
  const hllm::LlamaConfig c = hllm::parse_llama_config(j, "config.json");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.head_dim, 64);
}

TEST(Config, RopeScalingSpellings) {
  const struct {
    const char* scaling;
    hllm::RopeType type;
  } cases[] = {
      {R"({"type": "linear", "factor": 2.0})", hllm::RopeType::linear},
      {R"({"rope_type": "linear", "factor": 2.0})", hllm::RopeType::linear},
      {R"({"type": "dynamic", "rope_type": "dynamic", "factor": 2.0})", hllm::RopeType::dynamic},
      {R"({"type": "su", "rope_type": "yarn", "factor": 4.0})",
       hllm::RopeType::yarn},  // rope_type wins
      {R"({"rope_type": "default"})", hllm::RopeType::none},
      {R"({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192, "rope_type": "llama3"})",
       hllm::RopeType::llama3},
  };
  for (const auto& c : cases) {
    json j = llama3_8b();
    j["rope_scaling"] = json::parse(c.scaling);
    EXPECT_EQ(hllm::parse_llama_config(j, "config.json").rope_scaling.type, c.type) << c.scaling;
  }
}

TEST(Config, Transformers5RopeParameters) {
  json j = llama3_8b();
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  j["rope_parameters"] =
      json::parse(R"({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  const hllm::LlamaConfig c = hllm::parse_llama_config(j, "config.json");
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, hllm::RopeType::llama3);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.dtype, hllm::DType::f16);
}

TEST(Config, ErrorsNameTheFieldAndWhatIsSupported) {
  const struct {
    const char* key;
    json value;  // null = remove the key
    const char* message;
  } cases[] = {
      {"hidden_size", nullptr, "\"hidden_size\" must be a positive integer"},
      {"num_hidden_layers", "32", "\"num_hidden_layers\" must be a positive integer"},
      {"num_attention_heads", 0, "\"num_attention_heads\" must be a positive integer"},
      {"num_key_value_heads", 5, "not a multiple of num_key_value_heads"},
      {"vocab_size", -3, "\"vocab_size\" must be a positive integer"},
      {"model_type", "mistral", "model_type \"mistral\" is not supported"},
      {"architectures", json::array({"LlamaForSequenceClassification"}), "is not supported"},
      {"hidden_act", "gelu", "hidden_act \"gelu\" is not supported"},
      {"attention_bias", true, "attention_bias"},
      {"torch_dtype", "float64", "dtype \"float64\" is not supported"},
      {"rope_scaling", json::parse(R"({"type": "longrope", "factor": 4})"),
       "\"longrope\" is not supported"},
      {"rope_scaling", json::parse(R"({"type": "linear"})"), "\"factor\" must be a number"},
      {"rope_scaling", json::parse(R"({"type": "linear", "factor": 0.5})"),
       "\"factor\" must be a number >= 1"},
      {"rope_scaling", json::parse(R"({"rope_type": "llama3", "factor": 8})"),
       "\"low_freq_factor\""},
      {"rope_scaling", "linear", "\"rope_scaling\" must be an object"},
      {"eos_token_id", "eos", "\"eos_token_id\" must be an integer or a list of integers"},
      {"eos_token_id", json::parse("18446744073709551615"),
       "\"eos_token_id\" must be an integer or a list of integers"},
      {"eos_token_id", json::parse("[128001, 18446744073709551615]"),
       "\"eos_token_id\" must be an integer or a list of integers"},
      {"rms_norm_eps", -1, "\"rms_norm_eps\" must be a positive number"},
      {"quantization_config", json::parse(R"({"quant_method": "awq", "bits": 4})"),
       "quantization method \"awq\" is not supported"},
  };
  for (const auto& c : cases) {
    json j = llama3_8b();
    if (c.value.is_null())
      j.erase(c.key);
    else
      j[c.key] = c.value;
    const std::string message = error_of(j);
    EXPECT_NE(message.find(c.message), std::string::npos) << c.key << ": got \"" << message << "\"";
    EXPECT_EQ(message.rfind("config.json", 0), 0u) << message;
  }
  EXPECT_NE(error_of(json::array()).find("expected a JSON object"), std::string::npos);
}

TEST(RopeTable, ScalingTypesFollowTheirDefinitions) {
  hllm::LlamaConfig c = hllm::parse_llama_config(llama3_8b(), "config.json");
  const std::vector<float> base = hllm::rope_table(c).inv_freq;
  ASSERT_EQ(base.size(), 64u);
  EXPECT_FLOAT_EQ(base[0], 1.0f);
  EXPECT_FLOAT_EQ(base[1], static_cast<float>(std::pow(500000.0, -2.0 / 128)));

  c.rope_scaling = {};
  c.rope_scaling.type = hllm::RopeType::linear;
  c.rope_scaling.factor = 4.0;
  for (size_t i = 0; i < base.size(); ++i)
    EXPECT_FLOAT_EQ(hllm::rope_table(c).inv_freq[i], base[i] / 4.0f);

  // Llama 3.1: short wavelengths kept, long ones divided by the factor.
  c.rope_scaling.type = hllm::RopeType::llama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 8192;
  const hllm::RopeTable llama3 = hllm::rope_table(c);
  EXPECT_FLOAT_EQ(llama3.inv_freq[0], base[0]);
  EXPECT_FLOAT_EQ(llama3.inv_freq[63], base[63] / 8.0f);
  EXPECT_EQ(llama3.attention_factor, 1.0f);

  // Dynamic NTK: unchanged within max_position_embeddings, lower frequencies beyond it.
  c.rope_scaling.type = hllm::RopeType::dynamic;
  c.rope_scaling.factor = 2.0;
  EXPECT_EQ(hllm::rope_table(c, 100).inv_freq, base);
  EXPECT_LT(hllm::rope_table(c, 3 * 8192).inv_freq[63], base[63]);

  // YaRN temperature: 0.1 ln(s) + 1.
  c.rope_scaling.type = hllm::RopeType::yarn;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 0;
  EXPECT_NEAR(hllm::rope_table(c).attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-6);
}

}  // namespace

// Error messages describe a bad value without json::dump() of the whole of it: 100,000 nested
// arrays (200 KB, found by reading the parsers' error paths while fuzzing) would overflow the stack
// in a recursive dump. The message shows the kind and size instead; flat values as written.
TEST(Config, ErrorsOnDeeplyNestedValuesDoNotRecurse) {
  const std::string depth(100000, '[');
  json j = llama3_8b();
  j["hidden_size"] = json::parse(depth + std::string(100000, ']'));
  EXPECT_NE(error_of(j).find("an array of 1 values"), std::string::npos) << error_of(j);
  EXPECT_EQ(hllm::describe_json(json::parse("[4096, 4096]")), "[4096,4096]");
  EXPECT_EQ(hllm::describe_json(json{{"a", 1}}), "an object with 1 keys");
  const std::string long_text = hllm::describe_json(json(std::string(500, 'x')));
  EXPECT_LE(long_text.size(), 124u);
  // Cut at a UTF-8 boundary: the result is valid UTF-8 that nlohmann can dump again.
  EXPECT_NO_THROW(json(hllm::describe_json(json(std::string(300, 'x') + "é"))).dump());
  EXPECT_NO_THROW(json(hllm::describe_json(json(std::string(118, 'x') + "éé"))).dump());
}
