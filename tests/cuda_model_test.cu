// The CUDA backend end to end on the Hugging Face fixtures (tests/data): the dense tiny model with
// every RoPE variant and both GPTQ int4 checkpoints.
//   - logits at every position within 2e-2 · max|golden| (bf16 activations), argmax equal at
//     >= 99% of positions;
//   - decode through the KV cache (CUDA graphs after the first step), teacher-forced along the
//     golden greedy continuation: each step's argmax is the golden next token, unless the golden
//     logits themselves have a near-tie (top-2 gap under the bf16 tolerance) there; the
//     free-running greedy continuation is printed with its agreement length;
//   - batched decode: 32 sequences of different lengths in one paged cache, steps of 32, 9 (both
//     past the graphed size, so the ungraphed path) and 8 tokens, against the CPU backend running
//     the same steps: relative L2 of every logits row within 2e-2;
//   - a step whose positions run past its max_kv_len throws hllm::Error at the next
//     synchronization (the attention kernels' error flag), eager, recorded and replayed alike;
//   - the engine's decode steps sampled on the device (penalties, top-k, top-p) give the same ids
//     as the same requests sampled on the host.
#define HLLM_GPU_TEST_MAIN
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "golden_util.hpp"
#include "gpu_test_util.cuh"
#include "hllm/cpu/backend.hpp"
#include "hllm/cuda/backend.cuh"
#include "hllm/engine/engine_core.hpp"
#include "hllm/io/safetensors.hpp"
#include "hllm/model/llama.hpp"
#include "hllm/model/load.hpp"

namespace {

namespace fs = std::filesystem;
const fs::path DATA = hllm::test::test_data_dir();
constexpr float TOLERANCE = 2e-2f;  // of max |golden|: bf16 weights and activations

using hllm::test::golden_ids;

int64_t argmax(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

// The gap between the largest and second-largest logit of a row.
float top2_gap(const float* row, int64_t n) {
  float first = -INFINITY, second = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    if (row[i] > first)
      second = first, first = row[i];
    else if (row[i] > second)
      second = row[i];
  }
  return first - second;
}

struct Fixture {
  std::string name;
  fs::path dir;
  fs::path config;  // empty: the folder's
  fs::path golden;
};

std::vector<Fixture> fixtures() {
  std::vector<Fixture> all;
  const fs::path dense = DATA / "llama3-tiny-h512-l2-v512";
  for (const char* v : {"base", "linear", "llama3", "yarn", "dynamic"})
    all.push_back({std::string("dense_") + v, dense, dense / (std::string("config.") + v + ".json"),
                   dense / (std::string("golden.") + v + ".safetensors")});
  for (const char* q : {"actorder-sym", "asym"}) {
    const fs::path dir = DATA / (std::string("llama3-tiny-gptq-") + q);
    all.push_back({std::string("gptq_") + (q[0] == 'a' && q[1] == 'c' ? "actorder" : "asym"),
                   dir,
                   {},
                   dir / "golden.safetensors"});
  }
  return all;
}

class CudaModel : public testing::TestWithParam<Fixture> {
 protected:
  void SetUp() override {
    const Fixture& f = GetParam();
    folder_ = std::make_unique<hllm::ModelFolder>(hllm::open_model_folder(
        f.dir, f.config.empty() ? std::nullopt : std::optional<fs::path>(f.config)));
    golden_ = std::make_unique<hllm::SafetensorsFile>(f.golden);
    model_ = std::make_unique<hllm::LlamaModel>(folder_->config, folder_->weights, backend_);
  }

  hllm::CudaBackend backend_;
  std::unique_ptr<hllm::ModelFolder> folder_;
  std::unique_ptr<hllm::SafetensorsFile> golden_;
  std::unique_ptr<hllm::LlamaModel> model_;
};

TEST_P(CudaModel, LogitsMatchAtEveryPosition) {
  const std::vector<int32_t> ids = golden_ids(golden_->tensor("input_ids"));
  const hllm::Tensor expected = golden_->tensor("logits");
  const int64_t n = static_cast<int64_t>(ids.size()), vocab = folder_->config.vocab_size;
  ASSERT_EQ(expected.shape, (hllm::Shape{n, vocab}));

  hllm::KvCache cache = model_->new_cache(n);
  std::vector<float> logits(static_cast<size_t>(n * vocab), NAN);
  model_->forward(ids, cache, logits, /*all_logits=*/true);

  const hllm::test::LogitsError e = hllm::test::logits_error(logits.data(), expected);
  EXPECT_LE(e.max_error, TOLERANCE * e.max_golden) << "max |golden| = " << e.max_golden;
  const int64_t agree = hllm::test::argmax_agreement(logits.data(), expected);
  EXPECT_GE(static_cast<double>(agree), 0.99 * static_cast<double>(n));
  std::printf("%s: max |logits - golden| = %.3g of max |golden|; argmax agrees at %lld/%lld\n",
              GetParam().name.c_str(), e.relative(), static_cast<long long>(agree),
              static_cast<long long>(n));
}

TEST_P(CudaModel, DecodeAlongTheGreedyContinuation) {
  if (GetParam().name == "dense_dynamic") GTEST_SKIP() << "HF has no dynamic-NTK generation golden";
  const std::vector<int32_t> prompt = golden_ids(golden_->tensor("gen_prompt"));
  const std::vector<int32_t> expected = golden_ids(golden_->tensor("gen_ids"));
  const int64_t vocab = folder_->config.vocab_size;
  const int64_t capacity = static_cast<int64_t>(prompt.size() + expected.size());

  // Reference logits of the golden continuation, from the CPU fp32 path (near-ties are judged
  // on them).
  hllm::CpuBackend cpu;
  hllm::LlamaModel cpu_model(folder_->config, folder_->weights, cpu);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), expected.begin(), expected.end() - 1);
  hllm::KvCache cpu_cache = cpu_model.new_cache(capacity);
  std::vector<float> ref(all.size() * static_cast<size_t>(vocab));
  cpu_model.forward(all, cpu_cache, ref, /*all_logits=*/true);

  // Teacher-forced decode on the GPU: prompt, then one golden token per step.
  hllm::KvCache cache = model_->new_cache(capacity);
  std::vector<float> logits(static_cast<size_t>(vocab));
  model_->forward(prompt, cache, logits, false);
  const int64_t replays_before = backend_.graph_replays();
  int64_t exact = 0, near_ties = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const float* ref_row = &ref[(prompt.size() - 1 + i) * static_cast<size_t>(vocab)];
    const float max_ref = std::fabs(*std::max_element(
        ref_row, ref_row + vocab, [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
    const int64_t ours = argmax(logits.data(), vocab);
    if (ours == expected[i]) {
      ++exact;
    } else {
      const bool near_tie = top2_gap(ref_row, vocab) < TOLERANCE * max_ref;
      near_ties += near_tie;
      EXPECT_TRUE(near_tie) << "step " << i << ": argmax " << ours << ", golden " << expected[i];
    }
    model_->forward({&expected[i], 1}, cache, logits, false);
  }
  EXPECT_GT(backend_.graph_replays(), replays_before) << "decode steps never replayed a graph";

  // Free-running greedy from the prompt, for the record.
  hllm::KvCache free_cache = model_->new_cache(capacity);
  model_->forward(prompt, free_cache, logits, false);
  size_t agree = 0;
  bool diverged = false;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int32_t next = static_cast<int32_t>(argmax(logits.data(), vocab));
    if (next != expected[i]) diverged = true;
    if (!diverged) ++agree;
    model_->forward({&next, 1}, free_cache, logits, false);
  }
  std::printf(
      "%s: teacher-forced argmax exact %lld/%zu (near-ties %lld); free-running greedy "
      "matches the golden for %zu/%zu tokens\n",
      GetParam().name.c_str(), static_cast<long long>(exact), expected.size(),
      static_cast<long long>(near_ties), agree, expected.size());
}

// Graph replays and plain launches compute the same thing: decode with graphs off gives the
// same logits, also after a 12-token step on the same cache grew the scratch buffers (which must
// drop the recorded graphs that point at the old ones).
TEST_P(CudaModel, GraphReplayEqualsDirectLaunches) {
  const std::vector<int32_t> ids = golden_ids(golden_->tensor("input_ids"));
  const int64_t vocab = folder_->config.vocab_size;
  hllm::CudaBackend direct(0, /*use_graphs=*/false);
  hllm::LlamaModel direct_model(folder_->config, folder_->weights, direct);
  hllm::KvCache a = model_->new_cache(4096), b = direct_model.new_cache(4096);
  std::vector<float> la(static_cast<size_t>(vocab)), lb(static_cast<size_t>(vocab));
  const auto same = [&](const char* when, int64_t step) {
    float max_abs = 0.0f, max_diff = 0.0f;
    for (int64_t i = 0; i < vocab; ++i) {
      max_abs = std::max(max_abs, std::fabs(lb[i]));
      max_diff = std::max(max_diff, std::fabs(la[i] - lb[i]));  // NaN fails below
    }
    EXPECT_LE(max_diff, 1e-5f * max_abs) << when << " step " << step;
  };
  int64_t next = 0;
  model_->forward({ids.data(), 10}, a, la, false);
  direct_model.forward({ids.data(), 10}, b, lb, false);
  next = 10;
  for (int round = 0; round < 2; ++round) {
    for (int64_t s = 0; s < 5; ++s, ++next) {
      model_->forward({&ids[next], 1}, a, la, false);
      direct_model.forward({&ids[next], 1}, b, lb, false);
      same("decode", next);
    }
    model_->forward({&ids[next], 12}, a, la, false);  // a prefill-sized step between decodes
    direct_model.forward({&ids[next], 12}, b, lb, false);
    same("12-token step", next);
    next += 12;
  }
  EXPECT_GE(backend_.graph_replays(), 6);
}

// Steps over many sequences at once (forward_step, as the engine runs them): 32 sequences with
// prompts of 1 .. 40 tokens in one pool whose blocks are interleaved (sequence s owns blocks
// s, s + 32, s + 64, ...), then decode steps of all 32, of 9 and of 8 sequences. Steps of more
// than CudaBackend::MAX_GRAPH_TOKENS tokens run ungraphed: INT4 weights dequantized for cuBLAS,
// decode attention over many sequences' block tables. The CPU backend runs the same steps on its
// own pool; every logits row must match it within relative L2 TOLERANCE.
TEST_P(CudaModel, BatchedStepsMatchTheCpuBackend) {
  const hllm::LlamaConfig& c = folder_->config;
  hllm::CpuBackend cpu;
  hllm::LlamaModel cpu_model(c, folder_->weights, cpu);
  constexpr int N_SEQS = 32, BLOCK = hllm::KvCache::KV_BLOCK_SIZE;
  std::vector<int32_t> length(N_SEQS);
  for (int s = 0; s < N_SEQS; ++s) length[s] = 1 + (s * 13) % 40;  // 1 .. 40, all different
  const int32_t blocks_per_seq = (40 + 3 + BLOCK - 1) / BLOCK;     // prompt + 3 decode steps
  hllm::KvCache gpu_pool = model_->new_cache(int64_t{N_SEQS} * blocks_per_seq * BLOCK);
  hllm::KvCache cpu_pool = cpu_model.new_cache(int64_t{N_SEQS} * blocks_per_seq * BLOCK);
  std::vector<int32_t> tables(static_cast<size_t>(N_SEQS) * blocks_per_seq);
  for (int s = 0; s < N_SEQS; ++s)
    for (int b = 0; b < blocks_per_seq; ++b) tables[s * blocks_per_seq + b] = b * N_SEQS + s;
  std::mt19937 rng(41);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.vocab_size - 1));
  double worst = 0.0;

  // One step on both backends; logits of every token (all_logits) or of the last one.
  const auto run = [&](const std::vector<int32_t>& ids, const std::vector<int32_t>& seq,
                       const std::vector<int32_t>& positions, bool all_logits, const char* what) {
    hllm::Step step;
    step.ids = ids;
    step.seq = seq;
    step.positions = positions;
    step.block_tables = tables;
    step.max_blocks_per_seq = blocks_per_seq;
    step.block_size = BLOCK;
    step.max_kv_len = blocks_per_seq * BLOCK;
    const size_t rows = all_logits ? ids.size() : 1;
    std::vector<float> got(rows * c.vocab_size, NAN), ref(rows * c.vocab_size, NAN);
    model_->forward_step(step, gpu_pool, got, all_logits);
    cpu_model.forward_step(step, cpu_pool, ref, all_logits);
    EXPECT_TRUE(hllm::test::rows_close_l2(got, std::vector<double>(ref.begin(), ref.end()),
                                          static_cast<size_t>(c.vocab_size), TOLERANCE))
        << what << ", " << ids.size() << " tokens";
    for (size_t r = 0; r < rows; ++r) {
      double diff = 0.0, norm = 0.0;
      for (int64_t i = 0; i < c.vocab_size; ++i) {
        const double g = got[r * c.vocab_size + i], e = ref[r * c.vocab_size + i];
        diff += (g - e) * (g - e);
        norm += e * e;
      }
      worst = std::max(worst, std::sqrt(diff / norm));
    }
  };

  for (int s = 0; s < N_SEQS; ++s) {  // prompts: > 8 tokens take attn_prefill on the GPU
    std::vector<int32_t> ids(length[s]), seq(length[s], s), positions(length[s]);
    for (int32_t t = 0; t < length[s]; ++t) ids[t] = token(rng), positions[t] = t;
    run(ids, seq, positions, false, "prompt");
  }
  std::vector<int32_t> all(N_SEQS), batch9, batch8;
  std::iota(all.begin(), all.end(), 0);
  for (int s = 0; s < N_SEQS; s += 4) batch9.push_back(s), batch8.push_back(s + 1);
  batch9.push_back(31);
  for (const std::vector<int32_t>& seqs : {all, batch9, batch8}) {
    std::vector<int32_t> ids, positions;
    for (const int32_t s : seqs) ids.push_back(token(rng)), positions.push_back(length[s]++);
    run(ids, seqs, positions, true, "decode");
  }
  std::printf("%s: batched steps, worst relative L2 of a logits row vs the CPU backend %.3g\n",
              GetParam().name.c_str(), worst);
}

// Step::max_kv_len promises a bound on every position + 1; a step that breaks it gets attention
// clamped to the bound on the device, and the backend reports it (common.cuh's error flag) when
// it next synchronizes: here to_host_f32 at the end of forward_step. The flag is reset, so the
// next good step goes through.
TEST(CudaBackendErrors, KvLenPastTheStepBoundThrowsAtTheNextSync) {
  const fs::path dir = DATA / "llama3-tiny-h512-l2-v512";
  const hllm::ModelFolder folder =
      hllm::open_model_folder(dir, std::optional<fs::path>(dir / "config.base.json"));
  hllm::CudaBackend backend;
  hllm::LlamaModel model(folder.config, folder.weights, backend);
  hllm::KvCache cache = model.new_cache(64);
  std::vector<float> logits(static_cast<size_t>(folder.config.vocab_size));
  const auto step = [&](int32_t first, int32_t n, int32_t max_kv_len) {
    std::vector<int32_t> ids(n, 7), seq(n, 0), positions(n);
    for (int32_t t = 0; t < n; ++t) positions[t] = first + t;
    hllm::Step s;
    s.ids = ids;
    s.seq = seq;
    s.positions = positions;
    s.block_tables = cache.block_table();
    s.max_blocks_per_seq = static_cast<int32_t>(cache.block_table().size());
    s.block_size = hllm::KvCache::KV_BLOCK_SIZE;
    s.max_kv_len = max_kv_len;
    model.forward_step(s, cache, logits, /*all_logits=*/false);
  };
  const auto throws_kv_len_error = [&](int32_t first, int32_t n, int32_t max_kv_len) {
    try {
      step(first, n, max_kv_len);
    } catch (const hllm::Error& e) {
      return std::string(e.what()).find("max_kv_len") != std::string::npos
                 ? testing::AssertionSuccess()
                 : testing::AssertionFailure() << "unexpected message: " << e.what();
    }
    return testing::AssertionFailure() << "no error for positions " << first << " .. "
                                       << first + n - 1 << " with max_kv_len " << max_kv_len;
  };
  EXPECT_TRUE(throws_kv_len_error(0, 20, 16)) << "prompt chunk (attn_prefill)";
  EXPECT_NO_THROW(step(0, 20, 64)) << "the flag was reset";
  EXPECT_TRUE(throws_kv_len_error(30, 1, 16)) << "decode, first sight: eager run, then recorded";
  EXPECT_TRUE(throws_kv_len_error(31, 1, 16)) << "decode, replayed from the recorded graph";
  EXPECT_NO_THROW(step(20, 1, 64));  // positions 0 .. 20 all written: finite logits
  EXPECT_NO_THROW(step(21, 1, 64));
}

// The engine samples a decode step on the device (Backend::sample: penalties and the rule there,
// only ids back) unless a request wants host logits (logprobs). Both paths take the same draws from
// the same seeded generator, so the same requests give the same ids either way.
TEST(CudaEngine, DeviceSamplingPicksWhatHostSamplingPicks) {
  const fs::path dir = DATA / "llama3-tiny-h512-l2-v512";
  hllm::ModelFolder folder =
      hllm::open_model_folder(dir, std::optional<fs::path>(dir / "config.base.json"));
  hllm::CudaBackend backend;
  hllm::LlamaModel model(folder.config, folder.weights, backend);
  hllm::EngineOptions options;
  options.max_num_seqs = 4;
  options.max_model_len = 128;
  std::uniform_int_distribution<int32_t> token(0,
                                               static_cast<int32_t>(folder.config.vocab_size) - 1);
  const auto run = [&](bool host_logits) {
    hllm::EngineCore core(model, options);
    std::vector<std::vector<int32_t>> ids(4);
    int finished = 0;
    std::mt19937 prompts(5);
    for (int r = 0; r < 4; ++r) {
      hllm::EngineRequest q;
      for (int i = 0; i < 5 + 7 * r; ++i) q.prompt.push_back(token(prompts));
      q.max_tokens = 24;
      q.ignore_eos = true;
      q.sampling.temperature = 0.9f;
      q.sampling.top_p = r == 1 ? 0.8f : 1.0f;
      q.sampling.top_k = r == 2 ? 20 : 0;
      q.sampling.repetition_penalty = r >= 2 ? 1.3f : 1.0f;
      q.sampling.presence_penalty = r == 3 ? 0.7f : 0.0f;
      q.sampling.frequency_penalty = r == 3 ? 0.4f : 0.0f;
      q.sampling.seed = 100 + r;
      q.logprobs = host_logits ? 0 : -1;
      q.on_token = [&ids, r](int32_t id) {
        ids[r].push_back(id);
        return true;
      };
      q.on_finish = [&finished](const hllm::RequestEnd&) { ++finished; };
      core.add(std::move(q));
    }
    while (finished < 4) core.step();
    return ids;
  };
  const auto on_device = run(false), on_host = run(true);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(on_device[r].size(), 24u);
    EXPECT_EQ(on_device[r], on_host[r]) << "request " << r;
  }
}

std::string fixture_name(const testing::TestParamInfo<Fixture>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModel, testing::ValuesIn(fixtures()), fixture_name);

}  // namespace
