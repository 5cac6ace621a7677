// `hllm bench`: prefill and decode speed of a real model folder or of a random-weight model of a
// real shape (no file needed), on the chosen device.
//
//   hllm bench --synthetic llama3-8b --quant q4 [-p 512] [-n 128] [--batch 1,8,32] [--device cuda]
//   hllm bench -m MODEL_DIR [-p 512] [-n 128]
//
// For each batch size: B sequences of p random prompt tokens are prefilled one after another,
// then n decode steps run all B sequences at once (one token each, greedy on the device). Prints
// prefill tok/s, decode tok/s and ms per step, and the bytes a decode step must read (weights once
// + the K/V of every sequence) over the step time, against the device's measured copy bandwidth:
// the roofline of memory-bound decode.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend_choice.hpp"
#include "cli_common.hpp"
#include "hllm/model/llama.hpp"
#include "synthetic_model.hpp"

namespace hllm::tools {

namespace bench_detail {

// Weight bytes a decode step reads: every linear layer once, the norms, one embedding row.
inline double decode_weight_bytes(const LlamaWeights& w, const LlamaConfig& c, double act_bytes) {
  double bytes = 0;
  for (const LayerWeights& l : w.layers) {
    for (const Linear* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      const bool dense = !m->is_int4();
      bytes += dense ? static_cast<double>(m->out_features() * m->in_features()) * act_bytes
                     : static_cast<double>(m->nbytes());
    }
    bytes += 2.0 * static_cast<double>(c.hidden_size) * act_bytes;
  }
  const Linear& head = w.lm_head;
  bytes += head.is_int4() ? static_cast<double>(head.nbytes())
                          : static_cast<double>(c.vocab_size * c.hidden_size) * act_bytes;
  return bytes + static_cast<double>(c.hidden_size) * act_bytes * 2;  // final norm, embed row
}

struct BenchResult {
  double prefill_seconds = 0, decode_seconds = 0;
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

}  // namespace bench_detail

inline void add_bench_command(CLI::App& app) {
  struct Options {
    std::string synthetic;
    std::string quant = "q4";
    std::string model_dir;
    std::string device = "auto";
    int threads = 0;
    int64_t prompt = 512;
    int64_t steps = 128;
    std::vector<int64_t> batches{1};
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "bench", "Prefill and decode speed (tok/s, ms/token, GB/s against the copy bandwidth)");
  command->add_option("--synthetic", options->synthetic,
                      "random weights of a real shape: llama3-8b, llama3-1b, tiny");
  command->add_option("--quant", options->quant, "synthetic weights: q4 (INT4 tiles) or bf16")
      ->check(CLI::IsMember({"q4", "bf16"}));
  command->add_option("-m,--model", options->model_dir, "HF model folder instead of --synthetic");
  command->add_option("--device", options->device, "cuda, cpu or auto")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  command->add_option("-t,--threads", options->threads, "CPU threads (default: all)");
  command->add_option("-p,--prompt", options->prompt, "prompt tokens per sequence")
      ->check(CLI::Range(1, 1 << 20));
  command->add_option("-n,--steps", options->steps, "decode steps")->check(CLI::Range(1, 1 << 20));
  command->add_option("--batch", options->batches, "batch sizes, e.g. 1,8,32")->delimiter(',');
  command->callback([options] {
    if (options->synthetic.empty() == options->model_dir.empty())
      fail("bench: give either --synthetic NAME or -m MODEL_DIR");
    std::unique_ptr<SyntheticModel> synthetic;
    std::unique_ptr<ModelFolder> folder;
    const auto t_load = std::chrono::steady_clock::now();
    if (!options->synthetic.empty()) {
      std::fprintf(stderr, "hllm: making random %s weights (%s)...\n", options->synthetic.c_str(),
                   options->quant.c_str());
      synthetic = make_synthetic_model(options->synthetic, options->quant == "q4");
    } else {
      folder = std::make_unique<ModelFolder>(open_model_folder(options->model_dir));
    }
    const LlamaConfig& config = synthetic ? synthetic->config : folder->config;
    const LlamaWeights& weights = synthetic ? synthetic->weights : folder->weights;
    std::unique_ptr<Backend> backend = make_backend(options->device, options->threads, config);
    LlamaModel model(config, weights, *backend);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    const double act_bytes = static_cast<double>(dtype_size(backend->activation_dtype()));
    const double weight_bytes = bench_detail::decode_weight_bytes(weights, config, act_bytes);
    const double copy_gbps = backend->device() == Device::cuda ? cuda_copy_bandwidth_gbps() : 0.0;
    std::printf(
        "model: %s (%s), %lld layers, %.2f GB read per decode step for weights; ready in "
        "%.1f s\n",
        synthetic ? options->synthetic.c_str() : options->model_dir.c_str(),
        synthetic ? options->quant.c_str() : "checkpoint", static_cast<long long>(config.n_layers),
        weight_bytes * 1e-9, load_s);
    std::printf("device: %s; copy bandwidth %s\n", describe_backend(*backend).c_str(),
                copy_gbps > 0 ? (std::to_string(static_cast<int>(copy_gbps)) + " GB/s").c_str()
                              : "not measured (cpu)");
    std::printf("%6s %8s %6s %12s %12s %10s %9s %8s\n", "batch", "prompt", "steps", "prefill t/s",
                "decode t/s", "ms/step", "GB/s", "%copy");
    for (const int64_t batch : options->batches) {
      if (batch < 1 || batch > 256) fail("--batch: ", batch, " is outside 1..256");
      bench_detail::run_batch(model, batch, std::min<int64_t>(options->prompt, 32), 4);  // warm-up
      const bench_detail::BenchResult r =
          bench_detail::run_batch(model, batch, options->prompt, options->steps);
      const double step_s = r.decode_seconds / static_cast<double>(options->steps);
      // K/V bytes at the average decode length, every layer, every sequence.
      const double kv_len =
          static_cast<double>(options->prompt) + static_cast<double>(options->steps) / 2.0;
      const double kv_bytes = static_cast<double>(batch) * kv_len *
                              static_cast<double>(config.n_layers * config.kv_dim()) * 2.0 *
                              act_bytes;
      const double gbps = (weight_bytes + kv_bytes) / step_s * 1e-9;
      std::printf(
          "%6lld %8lld %6lld %12.1f %12.1f %10.3f %9.1f %8s\n", static_cast<long long>(batch),
          static_cast<long long>(options->prompt), static_cast<long long>(options->steps),
          static_cast<double>(batch * options->prompt) / r.prefill_seconds,
          static_cast<double>(batch * options->steps) / r.decode_seconds, step_s * 1e3, gbps,
          copy_gbps > 0 ? (std::to_string(static_cast<int>(100 * gbps / copy_gbps)) + "%").c_str()
                        : "-");
      std::fflush(stdout);
    }
  });
}

}  // namespace hllm::tools
