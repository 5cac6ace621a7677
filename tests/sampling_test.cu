// GPU tests of kernels/hllm/cuda/sampling.cuh: argmax exactly equal to the CPU argmax (ties ->
// lowest index), and the sampler against its CPU twin sample_by_rule() (layout/sample_rule.hpp)
// over many (params, uniform) draws: >= 99% identical ids (fp32 vs double sums may disagree at a
// razor-thin boundary) and every GPU id one the CPU rule keeps; the same for CudaBackend::sample
// (penalties on the device, then the rule) against the host's sample_row().
//
// Without a GPU the whole binary prints one "skipped: no GPU (...)" line and exits 0.
#define HLLM_GPU_TEST_MAIN
#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "gpu_test_util.cuh"
#include "hllm/cuda/backend.cuh"
#include "hllm/cuda/sampling.cuh"
#include "hllm/layout/sample_penalty.hpp"
#include "hllm/layout/sample_rule.hpp"

namespace hllm::cuda {
namespace {

std::vector<float> normal_logits(size_t n, float sd, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, sd);
  std::vector<float> l(n);
  for (float& x : l) x = dist(rng);
  return l;
}

void sync() { HLLM_CUDA_CHECK(cudaDeviceSynchronize()); }

const std::vector<SampleRuleParams> PARAMS = {
    {1.0f, 0, 1.0f, 0.0f},  {1.0f, 1, 1.0f, 0.0f},     {1.0f, 40, 1.0f, 0.0f},
    {1.0f, 0, 0.9f, 0.0f},  {1.0f, 0, 0.5f, 0.0f},     {1.0f, 0, 1.0f, 0.05f},
    {0.7f, 0, 1.0f, 0.0f},  {1.3f, 0, 1.0f, 0.0f},     {0.7f, 40, 0.9f, 0.05f},
    {1.3f, 40, 0.5f, 0.0f}, {1.3f, 0, 0.9f, 0.05f},    {0.0f, 0, 1.0f, 0.0f},
    {1.3f, 1, 0.9f, 0.05f}, {0.7f, 1000, 0.95f, 0.0f}, {1.0f, 3, 1.0f, 0.0f},
};

TEST(CudaSampling, ArgmaxMatchesCpuExactly) {
  std::mt19937 rng(41);
  for (int vocab : {128256, 1000, 7}) {
    for (int rows : {1, 5}) {
      auto logits = normal_logits(static_cast<size_t>(rows) * vocab, 3.0f, rng);
      // Row 0: a tie for the max at three places (lowest must win).
      if (vocab >= 7) {
        float m = -std::numeric_limits<float>::infinity();
        for (int i = 0; i < vocab; ++i) m = std::max(m, logits[i]);
        logits[vocab - 1] = logits[vocab / 2] = logits[3] = m + 1.0f;
      }
      DeviceBuffer<float> d_logits(logits);
      DeviceBuffer<int32_t> d_ids(rows);
      d_ids.poison();
      launch_argmax(d_logits.data(), rows, vocab, d_ids.data(), nullptr);
      sync();
      const auto ids = d_ids.download();
      for (int r = 0; r < rows; ++r) {
        const std::span<const float> row(logits.data() + static_cast<size_t>(r) * vocab, vocab);
        EXPECT_EQ(ids[r], sample_argmax(row)) << "vocab " << vocab << " row " << r;
        EXPECT_EQ(ids[r],
                  static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()));
      }
      if (vocab >= 7) EXPECT_EQ(ids[0], 3);
    }
  }
}

TEST(CudaSampling, SampleMatchesCpuRule) {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (int vocab : {128256, 1000, 7}) {
    for (int rows : {1, 5}) {
      const auto logits = normal_logits(static_cast<size_t>(rows) * vocab, 3.0f, rng);
      DeviceBuffer<float> d_logits(logits);
      DeviceBuffer<SampleRuleParams> d_params(rows);
      DeviceBuffer<float> d_uniforms(rows);
      DeviceBuffer<int32_t> d_ids(rows);
      // Kept masks per (row, params), computed once.
      std::vector<std::vector<std::vector<uint8_t>>> kept(rows);
      for (int r = 0; r < rows; ++r) {
        const std::span<const float> row(logits.data() + static_cast<size_t>(r) * vocab, vocab);
        for (const SampleRuleParams& p : PARAMS) kept[r].push_back(sample_rule_kept(row, p));
      }
      const int launches = vocab > 100000 ? 30 : 120;
      int draws = 0, same = 0, outside = 0;
      for (int s = 0; s < launches; ++s) {
        std::vector<SampleRuleParams> params(rows);
        std::vector<size_t> which(rows);
        std::vector<float> uniforms(rows);
        for (int r = 0; r < rows; ++r) {
          which[r] = (static_cast<size_t>(s) * rows + r) % PARAMS.size();
          params[r] = PARAMS[which[r]];
          uniforms[r] = s == 0 ? 0.0f : s == 1 ? 0.99999994f : uniform(rng);  // edges first
        }
        d_params.upload(params);
        d_uniforms.upload(uniforms);
        d_ids.poison();
        launch_sample(d_logits.data(), rows, vocab, d_params.data(), d_uniforms.data(),
                      d_ids.data(), nullptr);
        sync();
        const auto ids = d_ids.download();
        for (int r = 0; r < rows; ++r) {
          const std::span<const float> row(logits.data() + static_cast<size_t>(r) * vocab, vocab);
          const int32_t want = sample_by_rule(row, params[r], uniforms[r]);
          ++draws;
          same += ids[r] == want;
          const bool in_range = ids[r] >= 0 && ids[r] < vocab;
          if (!in_range || !kept[r][which[r]][ids[r]]) {
            ++outside;
            ADD_FAILURE() << "vocab " << vocab << " row " << r << " params #" << which[r] << " u "
                          << uniforms[r] << ": GPU id " << ids[r] << " not kept by the rule";
          }
          if (params[r].temperature == 0.0f || params[r].top_k == 1)
            EXPECT_EQ(ids[r], want) << "greedy/top_k 1 must match exactly";
        }
      }
      EXPECT_EQ(outside, 0);
      EXPECT_GE(same, draws * 99 / 100)
          << "vocab " << vocab << " rows " << rows << ": " << same << " of " << draws << " equal";
    }
  }
}

// The backend's sample(): penalties and the rule on the device against sample_row() on the host
// (the CPU backend's path), rows of different parameters and penalty lists (empty, prompt-only,
// generated counts, long) in one call, the logits staying on the device.
TEST(CudaSampling, BackendSampleMatchesHostSampleRow) {
  std::mt19937 rng(43);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> any_id(0, 128255);
  CudaBackend backend;
  constexpr int ROWS = 6, VOCAB = 128256;
  const std::vector<SamplePenalties> penalties = {{1.0f, 0.0f, 0.0f},  {1.3f, 0.0f, 0.0f},
                                                  {1.0f, 0.5f, 0.25f}, {0.8f, -1.0f, 0.0f},
                                                  {1.2f, 1.5f, 2.0f},  {2.0f, 0.0f, -0.5f}};
  int draws = 0, same = 0;
  for (int s = 0; s < 12; ++s) {
    const auto logits = normal_logits(static_cast<size_t>(ROWS) * VOCAB, 3.0f, rng);
    Buffer device_logits = backend.allocate(DType::f32, Shape{ROWS, VOCAB});
    // On the backend's stream (non-blocking: a legacy-stream copy would not order before it).
    HLLM_CUDA_CHECK(cudaMemcpyAsync(device_logits.tensor.data, logits.data(),
                                    logits.size() * sizeof(float), cudaMemcpyHostToDevice,
                                    backend.stream()));
    std::vector<std::vector<SamplePenaltyToken>> lists(ROWS);
    std::vector<SampleRow> rows(ROWS);
    for (int r = 0; r < ROWS; ++r) {
      std::vector<int32_t> context(static_cast<size_t>(r == 5 ? 4000 : 40 * r));
      for (int32_t& id : context) id = any_id(rng);
      // Make the penalized ids matter: give some of them the row's largest logits.
      for (size_t i = 0; i < context.size() && i < 8; ++i)
        context[i] = static_cast<int32_t>(
            std::max_element(logits.begin() + r * VOCAB, logits.begin() + (r + 1) * VOCAB) -
            (logits.begin() + r * VOCAB));
      lists[r] = sample_penalty_tokens(context, context.size() / 2, VOCAB, penalties[r]);
      rows[r] = {PARAMS[(s * ROWS + r) % PARAMS.size()], penalties[r], lists[r], uniform(rng)};
    }
    std::vector<int32_t> ids(ROWS, -1);
    backend.sample(device_logits.tensor, rows, ids);
    for (int r = 0; r < ROWS; ++r) {
      std::vector<float> row(logits.begin() + r * VOCAB, logits.begin() + (r + 1) * VOCAB);
      const int32_t want = sample_row(row, rows[r]);  // row is penalized in place
      const std::vector<uint8_t> kept = sample_rule_kept(row, rows[r].rule);
      ++draws;
      same += ids[r] == want;
      ASSERT_TRUE(ids[r] >= 0 && ids[r] < VOCAB && kept[ids[r]])
          << "sample " << s << " row " << r << ": GPU id " << ids[r] << " not kept on the host";
    }
  }
  EXPECT_GE(same, draws * 99 / 100) << same << " of " << draws << " equal";
}

TEST(CudaSampling, RejectsBadArguments) {
  DeviceBuffer<float> logits(64);
  DeviceBuffer<int32_t> ids(4);
  DeviceBuffer<SampleRuleParams> params(4);
  DeviceBuffer<float> uniforms(4);
  EXPECT_THROW(launch_argmax(logits.data(), 1, 0, ids.data(), nullptr), Error);
  EXPECT_THROW(launch_argmax(logits.data(), 1, SAMPLE_MAX_VOCAB + 1, ids.data(), nullptr), Error);
  EXPECT_THROW(launch_argmax(logits.data(), -1, 8, ids.data(), nullptr), Error);
  EXPECT_THROW(launch_argmax(logits.data() + 1, 1, 8, ids.data(), nullptr), Error);  // alignment
  EXPECT_THROW(launch_sample(logits.data(), 1, 8, nullptr, uniforms.data(), ids.data(), nullptr),
               Error);
  EXPECT_THROW(launch_sample(logits.data(), 1, 8, params.data(), nullptr, ids.data(), nullptr),
               Error);
  EXPECT_THROW(
      launch_sample(logits.data(), 1, 0, params.data(), uniforms.data(), ids.data(), nullptr),
      Error);
}

}  // namespace
}  // namespace hllm::cuda
