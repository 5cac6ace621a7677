// `hllm bench`: prefill and decode speed of a real model folder or of a random-weight model of a
// real shape (no file needed), on the chosen device.
//
//   hllm bench --synthetic llama3-8b --quant q4|bf16|q4_0|q8_0|q4_k|q6_k [-p 512,2048] [-n 128]
//              [--batch 1,8,32] [-r 3] [--device cuda|cpu] [--json | --md]
//   hllm bench -m MODEL_DIR ...
//
// For each prompt length and batch size, -r times: B sequences of p random prompt tokens are
// prefilled one after another (TTFT = the first one's), then n decode steps run all B sequences
// at once (one token each, greedy on the device). Prints medians (decode also min-max): prefill
// tok/s, TTFT, decode tok/s, ms per step, and the bytes a decode step must read (weights once + the
// K/V of every sequence) over the step time, against the bandwidth this command measures first
// (GPU: device-to-device copy; CPU: multi-threaded host read): the roofline of memory-bound
// decode. Peak host memory and device memory in use go to stderr (and into --json).
#pragma once

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "hllm/engine/open_model.hpp"
#include "hllm/model/llama.hpp"
#include "synthetic_model.hpp"

namespace hllm::tools {

namespace bench_detail {

// Bytes a decode step reads of one weight: a dense one in its stored dtype or the activation
// dtype, whichever is narrower (the CPU reads bf16 weights as bf16; the GPU holds every dense
// weight as bf16), INT4 tiles (with their scales) and ggml blocks as stored.
inline double linear_bytes(const Linear& m, double act_bytes) {
  if (!m.is_dense()) return static_cast<double>(m.nbytes());
  const double element = std::min(static_cast<double>(dtype_size(m.dense.dtype)), act_bytes);
  return static_cast<double>(m.out_features() * m.in_features()) * element;
}

// One token's row of the embedding table (ggml: the blocks of one row).
inline double embed_row_bytes(const Linear& embed, double act_bytes) {
  return embed.is_ggml() ? static_cast<double>(embed.ggml.row_bytes())
                         : static_cast<double>(embed.in_features()) * act_bytes;
}

// Weight bytes a decode step reads: every linear layer once, the norms, one embedding row.
inline double decode_weight_bytes(const LlamaWeights& w, const LlamaConfig& c, double act_bytes) {
  double bytes = 0;
  for (const LayerWeights& l : w.layers) {
    for (const Linear* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      bytes += linear_bytes(*m, act_bytes);
    bytes += 2.0 * static_cast<double>(c.hidden_size) * act_bytes;
  }
  bytes += linear_bytes(w.lm_head, act_bytes) + embed_row_bytes(w.embed, act_bytes);
  return bytes + static_cast<double>(c.hidden_size) * act_bytes;  // final norm
}

struct BenchResult {
  double prefill_seconds = 0, decode_seconds = 0;
  double first_token_seconds = 0;  // the first sequence's prefill up to its first token (TTFT)
};

// Runs one batch size; returns wall times (the backend synchronizes at each step's end).
inline BenchResult run_batch(LlamaModel& model, int64_t batch, int64_t prompt, int64_t steps) {
  const LlamaConfig& c = model.config();
  const int64_t per_seq_blocks =
      (prompt + steps + KvCache::KV_BLOCK_SIZE - 1) / KvCache::KV_BLOCK_SIZE;
  KvCache pool = model.new_cache(batch * per_seq_blocks * KvCache::KV_BLOCK_SIZE);
  std::vector<int32_t> tables(static_cast<size_t>(batch * per_seq_blocks));
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = static_cast<int32_t>(i);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(c.vocab_size - 1));

  Step step;
  step.block_tables = tables;
  step.max_blocks_per_seq = static_cast<int32_t>(per_seq_blocks);
  step.block_size = KvCache::KV_BLOCK_SIZE;
  step.max_kv_len = static_cast<int32_t>(per_seq_blocks * KvCache::KV_BLOCK_SIZE);

  BenchResult result;
  using clock = std::chrono::steady_clock;
  std::vector<int32_t> ids, seq, positions, next(static_cast<size_t>(batch));
  const auto t0 = clock::now();
  for (int64_t s = 0; s < batch; ++s) {
    ids.resize(static_cast<size_t>(prompt));
    for (int32_t& id : ids) id = token(rng);
    seq.assign(static_cast<size_t>(prompt), static_cast<int32_t>(s));
    positions.resize(static_cast<size_t>(prompt));
    for (int64_t t = 0; t < prompt; ++t) positions[t] = static_cast<int32_t>(t);
    step.ids = ids, step.seq = seq, step.positions = positions;
    model.forward_step(step, pool, {}, /*all_logits=*/false);
    model.backend().argmax(model.last_logits(1), std::span<int32_t>(&next[s], 1));
    if (s == 0)
      result.first_token_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  const auto t1 = clock::now();
  seq.resize(static_cast<size_t>(batch));
  positions.resize(static_cast<size_t>(batch));
  for (int64_t s = 0; s < batch; ++s) seq[s] = static_cast<int32_t>(s);
  for (int64_t i = 0; i < steps; ++i) {
    for (int64_t s = 0; s < batch; ++s) positions[s] = static_cast<int32_t>(prompt + i);
    ids = next;
    step.ids = ids, step.seq = seq, step.positions = positions;
    model.forward_step(step, pool, {}, /*all_logits=*/true);
    model.backend().argmax(model.last_logits(batch), next);
  }
  const auto t2 = clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  result.decode_seconds = std::chrono::duration<double>(t2 - t1).count();
  return result;
}

// Host read bandwidth (GB/s): every thread of the CPU backend's pool sums its share of 256 MiB,
// best of 5 passes. The roofline of CPU decode, which streams the weights once per step.
inline double host_read_bandwidth_gbps(ThreadPool& pool) {
  constexpr size_t WORDS = (size_t{256} << 20) / sizeof(uint64_t);  // far beyond any L3
  std::vector<uint64_t> data(WORDS, 1);
  const int64_t tasks = pool.size() * 4;
  std::vector<uint64_t> sums(static_cast<size_t>(tasks));
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(tasks, [&](int64_t t) {
      const size_t begin = WORDS * t / tasks, end = WORDS * (t + 1) / tasks;
      uint64_t a = 0, b = 0, c = 0, d = 0;
      for (size_t i = begin; i + 4 <= end; i += 4)
        a += data[i], b += data[i + 1], c += data[i + 2], d += data[i + 3];
      sums[t] = a + b + c + d;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(WORDS * sizeof(uint64_t)) / s * 1e-9);
  }
  return best;
}

// Peak resident host memory of this process (bytes).
inline double peak_host_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

struct Stat {
  double median = 0, min = 0, max = 0;
};
inline Stat summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

}  // namespace bench_detail

inline void add_bench_command(CLI::App& app) {
  struct Options {
    std::string synthetic;
    std::string quant = "q4";
    std::string model_dir;
    std::string device = "auto";
    int threads = 0;
    std::vector<int64_t> prompts{512};
    int64_t steps = 128;
    std::vector<int64_t> batches{1};
    int repetitions = 3;
    bool json = false, markdown = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "bench", "Prefill and decode speed (tok/s, TTFT, GB/s against the measured bandwidth)");
  command->add_option("--synthetic", options->synthetic,
                      "random weights of a real shape: llama3-8b, llama3.2-3b, llama3.2-1b, tiny");
  command
      ->add_option("--quant", options->quant,
                   "synthetic weights: q4 (hllm INT4 tiles), bf16, or GGUF blocks q4_0, q8_0, "
                   "q4_k, q6_k (lm_head Q6_K, as llama.cpp's presets; Q8_0 for q8_0)")
      ->check(CLI::IsMember(synthetic_quant_names()))
      ->capture_default_str();
  command->add_option("-m,--model", options->model_dir,
                      "HF model folder or .gguf file instead of --synthetic");
  command->add_option("--device", options->device, "cuda, cpu or auto")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  command->add_option("-t,--threads", options->threads, "CPU threads (default: all)");
  command->add_option("-p,--prompt", options->prompts, "prompt tokens per sequence, e.g. 512,2048")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  command->add_option("-n,--steps", options->steps, "decode steps")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  command->add_option("--batch", options->batches, "batch sizes, e.g. 1,8,32")
      ->delimiter(',')
      ->capture_default_str();
  command->add_option("-r,--repetitions", options->repetitions, "runs per case (median, min, max)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  command->add_flag("--json", options->json, "one JSON object per case on stdout");
  command->add_flag("--md", options->markdown, "a Markdown table on stdout");
  command->callback([options] {
    if (options->synthetic.empty() == options->model_dir.empty())
      fail("bench: give either --synthetic NAME or -m MODEL_DIR");
    for (const int64_t batch : options->batches)
      if (batch < 1 || batch > 256) fail("--batch: ", batch, " is outside 1..256");
    // A checkpoint is opened like every command opens one; synthetic weights are made here and
    // run on the backend the library picks for them.
    std::unique_ptr<SyntheticModel> synthetic;
    std::unique_ptr<Backend> synthetic_backend;
    std::unique_ptr<LlamaModel> synthetic_model;
    std::unique_ptr<LoadedModel> loaded;
    const auto t_load = std::chrono::steady_clock::now();
    if (!options->synthetic.empty()) {
      std::fprintf(stderr, "hllm: making random %s weights (%s)...\n", options->synthetic.c_str(),
                   options->quant.c_str());
      synthetic = make_synthetic_model(options->synthetic, options->quant);
      synthetic_backend = make_backend(options->device, options->threads, synthetic->config);
      synthetic_model =
          std::make_unique<LlamaModel>(synthetic->config, synthetic->weights, *synthetic_backend);
    } else {
      OpenOptions open;
      open.device = options->device;
      open.threads = options->threads;
      open.load_tokenizer = false;
      loaded = open_model(options->model_dir, open);
    }
    const LlamaConfig& config = synthetic ? synthetic->config : loaded->config();
    const LlamaWeights& weights = synthetic ? synthetic->weights : loaded->folder.weights;
    Backend* const backend = synthetic ? synthetic_backend.get() : loaded->backend.get();
    LlamaModel& model = synthetic ? *synthetic_model : loaded->model;
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    const double act_bytes = static_cast<double>(dtype_size(backend->activation_dtype()));
    const double weight_bytes = bench_detail::decode_weight_bytes(weights, config, act_bytes);
    const bool gpu = backend->device() == Device::cuda;
    auto* cpu = dynamic_cast<CpuBackend*>(backend);
    const double ceiling_gbps =
        gpu ? cuda_copy_bandwidth_gbps()
            : (cpu != nullptr ? bench_detail::host_read_bandwidth_gbps(cpu->pool()) : 0.0);
    const std::string model_name = synthetic ? options->synthetic : options->model_dir;
    const std::string weights_kind = synthetic ? options->quant : "checkpoint";
    const bool table = !options->json && !options->markdown;
    const char* ceiling_name = gpu ? "device copy" : "host read";
    std::fprintf(table ? stdout : stderr,
                 "model: %s (%s), %lld layers, %.2f GB of weights read per decode step; ready in "
                 "%.1f s\ndevice: %s; %s bandwidth %.1f GB/s (the decode roofline)\n",
                 model_name.c_str(), weights_kind.c_str(), static_cast<long long>(config.n_layers),
                 weight_bytes * 1e-9, load_s, describe_backend(*backend).c_str(), ceiling_name,
                 ceiling_gbps);
    if (table)
      std::printf("%6s %7s %6s %13s %9s %22s %10s %8s %7s\n", "batch", "prompt", "steps",
                  "prefill t/s", "TTFT ms", "decode t/s (min-max)", "ms/step", "GB/s", "%roof");
    if (options->markdown)
      std::printf(
          "| model | device | batch | prompt | steps | prefill tok/s | TTFT ms | decode tok/s "
          "| min | max | ms/step | GB/s | %% of %s |\n|---|---|---|---|---|---|---|---|---|"
          "---|---|---|---|\n",
          ceiling_name);
    for (const int64_t prompt : options->prompts) {
      for (const int64_t batch : options->batches) {
        bench_detail::run_batch(model, batch, std::min<int64_t>(prompt, 32), 4);  // warm-up
        std::vector<double> prefill, ttft, decode, step_ms;
        for (int r = 0; r < options->repetitions; ++r) {
          const bench_detail::BenchResult b =
              bench_detail::run_batch(model, batch, prompt, options->steps);
          prefill.push_back(static_cast<double>(batch * prompt) / b.prefill_seconds);
          ttft.push_back(b.first_token_seconds * 1e3);
          decode.push_back(static_cast<double>(batch * options->steps) / b.decode_seconds);
          step_ms.push_back(b.decode_seconds / static_cast<double>(options->steps) * 1e3);
        }
        const bench_detail::Stat pf = bench_detail::summarize(prefill),
                                 tt = bench_detail::summarize(ttft),
                                 dc = bench_detail::summarize(decode),
                                 st = bench_detail::summarize(step_ms);
        // K/V bytes at the average decode length, every layer, every sequence.
        const double kv_len =
            static_cast<double>(prompt) + static_cast<double>(options->steps) / 2.0;
        const double kv_bytes = static_cast<double>(batch) * kv_len *
                                static_cast<double>(config.n_layers * config.kv_dim()) * 2.0 *
                                act_bytes;
        const double gbps = (weight_bytes + kv_bytes) / (st.median * 1e-3) * 1e-9;
        const double pct = ceiling_gbps > 0 ? 100.0 * gbps / ceiling_gbps : 0.0;
        if (table)
          std::printf("%6lld %7lld %6lld %13.1f %9.2f %9.1f (%5.1f-%5.1f) %10.3f %8.1f %6.0f%%\n",
                      static_cast<long long>(batch), static_cast<long long>(prompt),
                      static_cast<long long>(options->steps), pf.median, tt.median, dc.median,
                      dc.min, dc.max, st.median, gbps, pct);
        if (options->markdown)
          std::printf(
              "| %s (%s) | %s | %lld | %lld | %lld | %.1f | %.2f | %.1f | %.1f | %.1f | %.3f "
              "| %.1f | %.0f%% |\n",
              model_name.c_str(), weights_kind.c_str(), describe_backend(*backend).c_str(),
              static_cast<long long>(batch), static_cast<long long>(prompt),
              static_cast<long long>(options->steps), pf.median, tt.median, dc.median, dc.min,
              dc.max, st.median, gbps, pct);
        if (options->json) {
          nlohmann::json j = {
              {"model", model_name},
              {"weights", weights_kind},
              {"device", describe_backend(*backend)},
              {"batch", batch},
              {"prompt", prompt},
              {"steps", options->steps},
              {"repetitions", options->repetitions},
              {"prefill_tok_s", pf.median},
              {"ttft_ms", {{"median", tt.median}, {"min", tt.min}, {"max", tt.max}}},
              {"decode_tok_s", {{"median", dc.median}, {"min", dc.min}, {"max", dc.max}}},
              {"ms_per_step", st.median},
              {"decode_gb_s", gbps},
              {"roofline_gb_s", ceiling_gbps},
              {"roofline", ceiling_name},
              {"percent_of_roofline", pct},
              {"weight_bytes_per_step", weight_bytes},
              {"peak_host_bytes", bench_detail::peak_host_bytes()},
              {"device_bytes_in_use", device_bytes_in_use(*backend)}};
          std::printf("%s\n", j.dump().c_str());
        }
        std::fflush(stdout);
      }
    }
    std::fprintf(stderr, "hllm: peak host memory %.2f GB%s\n",
                 bench_detail::peak_host_bytes() * 1e-9,
                 gpu ? (", device memory in use " +
                        std::to_string(device_bytes_in_use(*backend) * 1e-9).substr(0, 5) + " GB")
                           .c_str()
                     : "");
  });
}

}  // namespace hllm::tools
