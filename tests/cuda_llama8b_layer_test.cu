// GPU test: one Llama-3-8B-shaped decoder layer end to end through CudaBackend, against the CPU
// backend on the same weights. Hidden 4096, 32 query / 8 KV heads of 128, FFN 14336 (the 512-wide
// fixtures never reach these shapes: gemv_q4 over 4096- and 14336-wide tiles, GQA 32/8, cuBLAS
// at 4096), random weights from tools/synthetic_model.hpp, bf16 and INT4 (the engine's tiles,
// fp16 scales). Steps on one sequence:
//   20-token prompt   attn_prefill; INT4 dequantized to bf16 + cuBLAS
//   5-token chunk     gemv_q4 over 5 columns; decode attention over 5 queries of the sequence;
//                     recorded as a CUDA graph
//   3 single tokens   decode; the 2nd and 3rd replay the recorded graph
// Every logits row (all_logits) must be within relative L2 1e-2 of the CPU's (shared/DESIGN.md,
// "Oracles": GPU bf16 ~1e-2); the worst row is printed.
#define HLLM_GPU_TEST_MAIN
#include "gpu_test_util.cuh"
// (gpu_test_util.cuh first: it defines main for this binary.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../tools/synthetic_model.hpp"
#include "hllm/cpu/backend.hpp"
#include "hllm/cuda/backend.cuh"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace {

using namespace hllm;

// The llama3-8b synthetic model (tools/synthetic_model.hpp: norms 1, projections in `quant`,
// embedding and lm_head bf16) cut to one layer and an 8192-token vocabulary: the lm_head is a
// plain bf16 GEMM either way, and 128256 rows would only add upload and CPU time.
std::unique_ptr<tools::SyntheticModel> one_layer_8b(const std::string& quant) {
  auto m = std::make_unique<tools::SyntheticModel>();
  m->config = tools::synthetic_config("llama3-8b");
  m->config.n_layers = 1;
  m->config.vocab_size = 8192;
  const LlamaConfig& c = m->config;
  uint64_t seed = 1;
  m->weights.embed = tools::synthetic_linear(*m, c.vocab_size, c.hidden_size, "bf16", seed++);
  LayerWeights w;
  w.attn_norm = tools::synthetic_ones(*m, c.hidden_size);
  w.wq = tools::synthetic_linear(*m, c.q_dim(), c.hidden_size, quant, seed++);
  w.wk = tools::synthetic_linear(*m, c.kv_dim(), c.hidden_size, quant, seed++);
  w.wv = tools::synthetic_linear(*m, c.kv_dim(), c.hidden_size, quant, seed++);
  w.wo = tools::synthetic_linear(*m, c.hidden_size, c.q_dim(), quant, seed++);
  w.mlp_norm = tools::synthetic_ones(*m, c.hidden_size);
  w.w_gate = tools::synthetic_linear(*m, c.intermediate_size, c.hidden_size, quant, seed++);
  w.w_up = tools::synthetic_linear(*m, c.intermediate_size, c.hidden_size, quant, seed++);
  w.w_down = tools::synthetic_linear(*m, c.hidden_size, c.intermediate_size, quant, seed++);
  m->weights.layers.push_back(std::move(w));
  m->weights.final_norm = tools::synthetic_ones(*m, c.hidden_size);
  m->weights.lm_head = tools::synthetic_linear(*m, c.vocab_size, c.hidden_size, "bf16", seed++);
  return m;
}

constexpr double TOLERANCE = 1e-2;  // relative L2 of a logits row

void run_layer(const std::string& quant) {
  const std::unique_ptr<tools::SyntheticModel> m = one_layer_8b(quant);
  const LlamaConfig& c = m->config;
  ASSERT_EQ(c.hidden_size, 4096);
  ASSERT_EQ(c.intermediate_size, 14336);
  ASSERT_EQ(c.n_heads, 32);
  ASSERT_EQ(c.n_kv_heads, 8);
  ASSERT_EQ(c.head_dim, 128);
  CpuBackend cpu;
  CudaBackend gpu;
  LlamaModel cpu_model(c, m->weights, cpu), gpu_model(c, m->weights, gpu);
  KvCache cpu_cache = cpu_model.new_cache(64), gpu_cache = gpu_model.new_cache(64);
  std::mt19937 rng(8);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.vocab_size - 1));
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  double worst = 0.0;

  const auto step = [&](int n, const char* what) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int32_t& id : ids) id = token(rng);
    std::vector<float> got(n * vocab, NAN), ref(n * vocab, NAN);
    gpu_model.forward(ids, gpu_cache, got, /*all_logits=*/true);
    cpu_model.forward(ids, cpu_cache, ref, /*all_logits=*/true);
    const std::vector<double> ref_d(ref.begin(), ref.end());
    EXPECT_TRUE(test::rows_close_l2(got, ref_d, vocab, TOLERANCE)) << quant << ", " << what;
    for (int r = 0; r < n; ++r) {
      double diff = 0.0, norm = 0.0;
      for (size_t i = r * vocab; i < (r + 1) * vocab; ++i) {
        diff += (got[i] - ref_d[i]) * (got[i] - ref_d[i]);
        norm += ref_d[i] * ref_d[i];
      }
      worst = std::max(worst, std::sqrt(diff / norm));
    }
  };
  step(20, "20-token prompt");
  step(5, "5-token chunk");
  for (int i = 0; i < 3; ++i) step(1, "decode step");
  std::printf(
      "8B-shape layer, %s: worst relative L2 of a logits row vs the CPU backend %.3g "
      "(%lld graph replays)\n",
      quant.c_str(), worst, static_cast<long long>(gpu.graph_replays()));
  // Decode steps 2 and 3 replay the graph recorded at step 1.
  EXPECT_EQ(gpu.graph_replays(), gpu.uses_graphs() ? 2 : 0);
}

TEST(CudaLlama8bLayer, Bf16MatchesTheCpuBackend) { run_layer("bf16"); }

TEST(CudaLlama8bLayer, Int4MatchesTheCpuBackend) { run_layer("q4"); }

}  // namespace
