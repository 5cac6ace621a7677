// `hllm bench`'s accounting and synthetic models: the synthetic configs are the real checkpoints'
// config.json, the K/V bytes per step are the cache's storage, the CPU reads bf16 weights (norms
// included) as bf16; the runner sweeps -t lists and shows every option's default in --help.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <sstream>
#include <string>

#include "../tools/cmd_bench.hpp"
#include "../tools/synthetic_model.hpp"
#include "hllm/model/config_json.hpp"

namespace {

using namespace hllm;
using namespace hllm::tools;

// The architecture fields of meta-llama's config.json files (transformers' keys only).
constexpr const char* LLAMA3_8B_INSTRUCT = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128009,
  "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
  "max_position_embeddings": 8192, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": null, "rope_theta": 500000.0, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16", "vocab_size": 128256})";

constexpr const char* LLAMA3_2_1B = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001,
  "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

constexpr const char* LLAMA3_2_3B = R"({
  "architectures": ["LlamaForCausalLM"], "bos_token_id": 128000, "eos_token_id": 128001,
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 3072, "intermediate_size": 8192,
  "max_position_embeddings": 131072, "model_type": "llama", "num_attention_heads": 24,
  "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "vocab_size": 128256})";

void expect_same_config(const LlamaConfig& a, const LlamaConfig& b) {
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.dtype, b.dtype);
  const RopeScaling &s = a.rope_scaling, &t = b.rope_scaling;
  EXPECT_EQ(s.type, t.type);
  if (s.type == RopeType::none || t.type == RopeType::none) return;
  EXPECT_EQ(s.factor, t.factor);
  EXPECT_EQ(s.low_freq_factor, t.low_freq_factor);
  EXPECT_EQ(s.high_freq_factor, t.high_freq_factor);
  EXPECT_EQ(s.original_max_position_embeddings, t.original_max_position_embeddings);
}

TEST(BenchTool, SyntheticConfigsAreTheCheckpoints) {
  for (const auto& [name, json] :
       {std::pair{"llama3-8b", LLAMA3_8B_INSTRUCT}, std::pair{"llama3.2-1b", LLAMA3_2_1B},
        std::pair{"llama3.2-3b", LLAMA3_2_3B}}) {
    SCOPED_TRACE(name);
    expect_same_config(synthetic_config(name),
                       parse_llama_config(nlohmann::json::parse(json), "config.json"));
  }
}

TEST(BenchTool, KvBytesAreTheCacheStorage) {
  const LlamaConfig c = synthetic_config("tiny");
  for (const CpuKvCache kv : {CpuKvCache::f32, CpuKvCache::f16}) {
    CpuBackend cpu(1, CpuMatmul::exact, kv);
    const KvCache cache(cpu, c, 64);
    double bytes_per_position = 0;
    for (int64_t l = 0; l < c.n_layers; ++l)
      bytes_per_position +=
          static_cast<double>(cache.layer(l).k.nbytes() + cache.layer(l).v.nbytes()) /
          static_cast<double>(cache.rows());
    const auto element = static_cast<double>(dtype_size(cpu.kv_dtype()));
    EXPECT_EQ(element, kv == CpuKvCache::f16 ? 2 : 4);
    // 3 sequences at the average decode length 10 + 4/2.
    EXPECT_DOUBLE_EQ(bench_detail::decode_kv_bytes(c, 3, 10, 4, element),
                     3 * 12 * bytes_per_position);
  }
  // auto: fp16 with int8 activations (llama.cpp's numerics), fp32 with the exact path.
  EXPECT_EQ(CpuBackend(1, CpuMatmul::int8).kv_dtype(), DType::f16);
  EXPECT_EQ(CpuBackend(1, CpuMatmul::exact).kv_dtype(), DType::f32);
}

TEST(BenchTool, CpuReadsBf16WeightsAsBf16) {
  const std::unique_ptr<SyntheticModel> m = make_synthetic_model("tiny", "bf16");
  const LlamaConfig& c = m->config;
  const int64_t h = c.hidden_size;
  const int64_t per_layer = 2 * c.q_dim() * h + 2 * c.kv_dim() * h + 3 * c.intermediate_size * h +
                            2 * h;  // projections, two norms
  const int64_t elements = c.n_layers * per_layer + c.vocab_size * h + h + h;  // head, row, norm
  const auto act_bytes = static_cast<double>(dtype_size(CpuBackend(1).activation_dtype()));
  EXPECT_DOUBLE_EQ(bench_detail::decode_weight_bytes(m->weights, act_bytes), 2.0 * elements);
}

std::string run_runner(const std::string& args) {
  const std::string command = std::string(HLLM_RUNNER) + " " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  EXPECT_EQ(pclose(pipe), 0) << args << "\n" << output;
  return output;
}

TEST(BenchTool, ThreadListSweepsEveryCaseWithItsRoofline) {
  const std::string out = run_runner("bench --synthetic tiny -p 8 -n 2 -r 1 -t 1,2 --device cpu");
  EXPECT_NE(out.find(" steps threads "), std::string::npos) << out;
  EXPECT_NE(out.find(" roof GB/s "), std::string::npos) << out;
  EXPECT_NE(out.find("\n     1       8      2       1 "), std::string::npos) << out;
  EXPECT_NE(out.find("\n     1       8      2       2 "), std::string::npos) << out;
  const std::string json = run_runner("bench --synthetic tiny -p 8 -n 2 -r 1 -t 2 --json");
  EXPECT_NE(json.find("\"threads\":2"), std::string::npos) << json;
  EXPECT_NE(json.find("\"roofline_gb_s\":"), std::string::npos) << json;
}

TEST(BenchTool, HelpShowsEveryOptionsDefault) {
  std::istringstream help(run_runner("bench --help"));
  int options = 0;
  for (std::string line; std::getline(help, line);) {
    if (line.rfind("  -", 0) != 0) continue;
    const std::string spec = line.substr(2, line.find("  ", 2) - 2);  // names, type=default
    const std::string names = spec.substr(0, spec.find(' '));
    if (names == "-h,--help" || names == "--json" || names == "--md") continue;
    ++options;
    EXPECT_NE(spec.find('='), std::string::npos) << line;
  }
  EXPECT_EQ(options, 12);
}

}  // namespace
