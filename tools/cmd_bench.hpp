// `hllm bench`: prefill and decode speed of a real model folder or of a random-weight model of a
// real shape (no file needed), on the chosen device.
//
//   hllm bench --synthetic llama3-8b --quant q4|bf16|q4_0|q8_0|q4_k|q6_k [-p 512,2048] [-n 128]
//              [--batch 1,8,32] [-r 3] [-t 1,2,4] [--device cuda|cpu] [--json | --md]
//   hllm bench -m MODEL_DIR ...
//
// For each CPU thread count (-t; a list is for the CPU, one backend per count over the same
// weights), prompt length and batch size, -r times: B sequences of p random prompt tokens are
// prefilled one after another (TTFT = the first one's), then n decode steps run all B sequences
// at once (one token each, greedy on the device). Prints medians (decode also min-max): prefill
// tok/s, TTFT, decode tok/s, ms per step, and the bytes a decode step must read (weights once + the
// K/V of every sequence at its storage size) over the step time, against the roofline of
// memory-bound decode: on the CPU the multi-threaded host read bandwidth, measured again just
// before each row (it drifts on a shared machine); on the GPU the device-to-device copy, measured
// once. Peak host memory and device memory in use go to stderr (and into --json).
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

// Bytes a decode step reads per element of a dense weight: its stored dtype or the activation
// dtype, whichever is narrower (the CPU reads bf16 weights as bf16; the GPU holds every dense
// weight as bf16).
inline double dense_element_bytes(DType stored, double act_bytes) {
  return std::min(static_cast<double>(dtype_size(stored)), act_bytes);
}

// Bytes a decode step reads of one weight: a dense one as above, INT4 tiles (with their scales)
// and ggml blocks as stored.
inline double linear_bytes(const Linear& m, double act_bytes) {
  if (!m.is_dense()) return static_cast<double>(m.nbytes());
  return static_cast<double>(m.out_features() * m.in_features()) *
         dense_element_bytes(m.dense.dtype, act_bytes);
}

inline double norm_bytes(const Tensor& norm, double act_bytes) {
  return static_cast<double>(norm.numel()) * dense_element_bytes(norm.dtype, act_bytes);
}

// One token's row of the embedding table (ggml: the blocks of one row).
inline double embed_row_bytes(const Linear& embed, double act_bytes) {
  return embed.is_ggml() ? static_cast<double>(embed.ggml.row_bytes())
                         : static_cast<double>(embed.in_features()) *
                               dense_element_bytes(embed.dense.dtype, act_bytes);
}

// Weight bytes a decode step reads: every linear layer once, the norms, one embedding row.
inline double decode_weight_bytes(const LlamaWeights& w, double act_bytes) {
  double bytes = 0;
  for (const LayerWeights& l : w.layers) {
    for (const Linear* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      bytes += linear_bytes(*m, act_bytes);
    bytes += norm_bytes(l.attn_norm, act_bytes) + norm_bytes(l.mlp_norm, act_bytes);
  }
  bytes += linear_bytes(w.lm_head, act_bytes) + embed_row_bytes(w.embed, act_bytes);
  return bytes + norm_bytes(w.final_norm, act_bytes);
}

// K/V bytes a decode step reads at the average decode length, every layer, every sequence;
// kv_element_bytes: the size of one cached K or V value.
inline double decode_kv_bytes(const LlamaConfig& c, int64_t batch, int64_t prompt, int64_t steps,
                              double kv_element_bytes) {
  const double kv_len = static_cast<double>(prompt) + static_cast<double>(steps) / 2.0;
  return static_cast<double>(batch) * kv_len * static_cast<double>(c.n_layers * c.kv_dim()) * 2.0 *
         kv_element_bytes;
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
// best of `passes`. The roofline of CPU decode, which streams the weights once per step.
inline double host_read_bandwidth_gbps(ThreadPool& pool, int passes) {
  constexpr size_t WORDS = (size_t{256} << 20) / sizeof(uint64_t);  // far beyond any L3
  std::vector<uint64_t> data(WORDS, 1);
  const int64_t tasks = pool.size() * 4;
  std::vector<uint64_t> sums(static_cast<size_t>(tasks));
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
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

// The decode roofline (GB/s) of `backend` now: a CPU backend's host read bandwidth over its pool,
// the device-to-device copy on the GPU.
inline double roofline_gbps(Backend& backend, int passes) {
  if (backend.device() == Device::cuda) return cuda_copy_bandwidth_gbps();
  auto* cpu = dynamic_cast<CpuBackend*>(&backend);
  return cpu != nullptr ? host_read_bandwidth_gbps(cpu->pool(), passes) : 0.0;
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

// One (threads, prompt, batch) configuration, measured.
struct Row {
  int threads = 0;  // CPU threads; 0 on the GPU
  int64_t batch = 0, prompt = 0, steps = 0;
  Stat prefill_tok_s, ttft_ms, decode_tok_s, step_ms;
  double gbps = 0, roof_gbps = 0, percent = 0;  // bytes per step over the step time; roofline
};

// A warm-up, then `repetitions` runs of run_batch, summarized.
inline Row measure(LlamaModel& model, int64_t batch, int64_t prompt, int64_t steps,
                   int repetitions) {
  run_batch(model, batch, std::min<int64_t>(prompt, 32), 4);
  std::vector<double> prefill, ttft, decode, step_ms;
  for (int r = 0; r < repetitions; ++r) {
    const BenchResult b = run_batch(model, batch, prompt, steps);
    prefill.push_back(static_cast<double>(batch * prompt) / b.prefill_seconds);
    ttft.push_back(b.first_token_seconds * 1e3);
    decode.push_back(static_cast<double>(batch * steps) / b.decode_seconds);
    step_ms.push_back(b.decode_seconds / static_cast<double>(steps) * 1e3);
  }
  Row row;
  row.batch = batch, row.prompt = prompt, row.steps = steps;
  row.prefill_tok_s = summarize(prefill), row.ttft_ms = summarize(ttft);
  row.decode_tok_s = summarize(decode), row.step_ms = summarize(step_ms);
  return row;
}

// What every row of one bench run shares.
struct Report {
  std::string model, weights, device, roofline_name;
  double weight_bytes = 0;
  double first_roof_gbps = 0;  // measured before the first row (the GPU's, for every row)
  int repetitions = 0;
};

inline int cpu_threads(const Backend& backend) {
  const auto* cpu = dynamic_cast<const CpuBackend*>(&backend);
  return cpu != nullptr ? cpu->n_threads() : 0;
}

// measure() on the model's backend, the CPU roofline measured again just before it.
inline Row bench_case(LlamaModel& model, const Report& report, int64_t batch, int64_t prompt,
                      int64_t steps) {
  Backend& backend = model.backend();
  const double roof =
      backend.device() == Device::cuda ? report.first_roof_gbps : roofline_gbps(backend, 3);
  Row row = measure(model, batch, prompt, steps, report.repetitions);
  row.threads = cpu_threads(backend);
  // KvCache stores K/V in kv_dtype() (f32 or f16 on the CPU, bf16 on CUDA): that is their size.
  const double kv_element_bytes = static_cast<double>(dtype_size(backend.kv_dtype()));
  const double bytes =
      report.weight_bytes + decode_kv_bytes(model.config(), batch, prompt, steps, kv_element_bytes);
  row.gbps = bytes / (row.step_ms.median * 1e-3) * 1e-9;
  row.roof_gbps = roof;
  row.percent = roof > 0 ? 100.0 * row.gbps / roof : 0.0;
  return row;
}

inline std::string threads_label(int threads) {
  return threads > 0 ? std::to_string(threads) : "-";
}

inline void print_table_header() {
  std::printf("%6s %7s %6s %7s %13s %9s %22s %10s %8s %9s %6s\n", "batch", "prompt", "steps",
              "threads", "prefill t/s", "TTFT ms", "decode t/s (min-max)", "ms/step", "GB/s",
              "roof GB/s", "%roof");
}

inline void print_table_row(const Row& r) {
  std::printf("%6lld %7lld %6lld %7s %13.1f %9.2f %9.1f (%5.1f-%5.1f) %10.3f %8.1f %9.1f %5.0f%%\n",
              static_cast<long long>(r.batch), static_cast<long long>(r.prompt),
              static_cast<long long>(r.steps), threads_label(r.threads).c_str(),
              r.prefill_tok_s.median, r.ttft_ms.median, r.decode_tok_s.median, r.decode_tok_s.min,
              r.decode_tok_s.max, r.step_ms.median, r.gbps, r.roof_gbps, r.percent);
}

inline void print_markdown_header(const Report& report) {
  std::printf(
      "| model | device | batch | prompt | steps | threads | prefill tok/s | TTFT ms "
      "| decode tok/s | min | max | ms/step | GB/s | roof GB/s (%s) | %% of roof |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
      report.roofline_name.c_str());
}

inline void print_markdown_row(const Report& report, const Row& r) {
  std::printf(
      "| %s (%s) | %s | %lld | %lld | %lld | %s | %.1f | %.2f | %.1f | %.1f | %.1f | %.3f | %.1f "
      "| %.1f | %.0f%% |\n",
      report.model.c_str(), report.weights.c_str(), report.device.c_str(),
      static_cast<long long>(r.batch), static_cast<long long>(r.prompt),
      static_cast<long long>(r.steps), threads_label(r.threads).c_str(), r.prefill_tok_s.median,
      r.ttft_ms.median, r.decode_tok_s.median, r.decode_tok_s.min, r.decode_tok_s.max,
      r.step_ms.median, r.gbps, r.roof_gbps, r.percent);
}

inline void print_json_row(const Report& report, const Row& r, const Backend& backend) {
  const auto stat = [](const Stat& s) {
    return nlohmann::json{{"median", s.median}, {"min", s.min}, {"max", s.max}};
  };
  const nlohmann::json j = {
      {"model", report.model},
      {"weights", report.weights},
      {"device", report.device},
      {"threads", r.threads > 0 ? nlohmann::json(r.threads) : nlohmann::json(nullptr)},
      {"batch", r.batch},
      {"prompt", r.prompt},
      {"steps", r.steps},
      {"repetitions", report.repetitions},
      {"prefill_tok_s", r.prefill_tok_s.median},
      {"ttft_ms", stat(r.ttft_ms)},
      {"decode_tok_s", stat(r.decode_tok_s)},
      {"ms_per_step", r.step_ms.median},
      {"decode_gb_s", r.gbps},
      {"roofline_gb_s", r.roof_gbps},
      {"roofline", report.roofline_name},
      {"percent_of_roofline", r.percent},
      {"weight_bytes_per_step", report.weight_bytes},
      {"peak_host_bytes", peak_host_bytes()},
      {"device_bytes_in_use", device_bytes_in_use(backend)}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace bench_detail

inline void add_bench_command(CLI::App& app) {
  struct Options {
    std::string synthetic;
    std::string quant = "q4";
    std::string model_dir;
    std::string device = "auto";
    std::vector<int> threads{0};
    std::vector<int64_t> prompts{512};
    int64_t steps = 128;
    std::vector<int64_t> batches{1};
    int repetitions = 3;
    bool json = false, markdown = false;
    CpuMatmul int4_matmul = CpuMatmul::int8;
    CpuKvCache kv_cache = CpuKvCache::automatic;
    LmHead lm_head = LmHead::automatic;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "bench", "Prefill and decode speed (tok/s, TTFT, GB/s against the measured bandwidth)");
  command
      ->add_option("--synthetic", options->synthetic,
                   "random weights of a real shape: llama3-8b, llama3.2-3b, llama3.2-1b, tiny")
      ->default_str("none");
  command
      ->add_option("--quant", options->quant,
                   "synthetic weights: q4 (hllm INT4 tiles), bf16, or GGUF blocks q4_0, q8_0, "
                   "q4_k, q6_k (lm_head Q6_K, as llama.cpp's presets; Q8_0 for q8_0)")
      ->check(CLI::IsMember(synthetic_quant_names()))
      ->capture_default_str();
  command
      ->add_option("-m,--model", options->model_dir,
                   "HF model folder or .gguf file instead of --synthetic")
      ->default_str("none");
  command->add_option("--device", options->device, "cuda, cpu or auto")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  command
      ->add_option("-t,--threads", options->threads,
                   "CPU threads, 0 = one per hardware thread; a list runs every case for each, "
                   "e.g. 1,2,4")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 12))
      ->capture_default_str();
  add_cpu_matmul_option(*command, options->int4_matmul, CpuMatmul::int8);
  add_kv_cache_option(*command, options->kv_cache);
  add_lm_head_option(*command, options->lm_head, LmHead::automatic);
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
    // run on the backend the library picks for them. Both with the first thread count.
    std::unique_ptr<SyntheticModel> synthetic;
    std::unique_ptr<Backend> synthetic_backend;
    std::unique_ptr<LlamaModel> synthetic_model;
    std::unique_ptr<LoadedModel> loaded;
    const auto t_load = std::chrono::steady_clock::now();
    if (!options->synthetic.empty()) {
      std::fprintf(stderr, "hllm: making random %s weights (%s)...\n", options->synthetic.c_str(),
                   options->quant.c_str());
      synthetic_backend = make_backend(options->device, options->threads.front(),
                                       synthetic_model_config(options->synthetic, options->quant),
                                       options->int4_matmul, options->kv_cache);
      synthetic = make_synthetic_model(options->synthetic, options->quant,
                                       synthetic_backend->device() == Device::cpu);
      apply_lm_head(synthetic->weights, options->lm_head, synthetic_backend->device(),
                    options->threads.front());
      synthetic_model =
          std::make_unique<LlamaModel>(synthetic->config, synthetic->weights, *synthetic_backend);
    } else {
      OpenOptions open;
      open.device = options->device;
      open.threads = options->threads.front();
      open.int4_matmul = options->int4_matmul;
      open.kv_cache = options->kv_cache;
      open.lm_head = options->lm_head;
      open.load_tokenizer = false;
      loaded = open_model(options->model_dir, open);
    }
    const LlamaConfig& config = synthetic ? synthetic->config : loaded->config();
    const LlamaWeights& weights = synthetic ? synthetic->weights : loaded->folder.weights;
    Backend& backend = synthetic ? *synthetic_backend : *loaded->backend;
    LlamaModel& model = synthetic ? *synthetic_model : loaded->model;
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    const bool gpu = backend.device() == Device::cuda;
    if (gpu && options->threads.size() > 1)
      fail("-t: a list of thread counts is for the CPU; the model runs on ",
           describe_backend(backend), " (add --device cpu)");
    bench_detail::Report report;
    report.model = synthetic ? options->synthetic : options->model_dir;
    report.weights = (synthetic ? options->quant : std::string("checkpoint")) + ", lm_head " +
                     weights.lm_head.storage_name();
    report.device = describe_backend(backend);
    report.roofline_name = gpu ? "device copy" : "host read";
    report.weight_bytes = bench_detail::decode_weight_bytes(
        weights, static_cast<double>(dtype_size(backend.activation_dtype())));
    report.first_roof_gbps = bench_detail::roofline_gbps(backend, 5);
    report.repetitions = options->repetitions;
    const bool table = !options->json && !options->markdown;
    std::fprintf(table ? stdout : stderr,
                 "model: %s (%s), %lld layers, %.2f GB of weights read per decode step; ready in "
                 "%.1f s\ndevice: %s; %s bandwidth %.1f GB/s (the decode roofline)\n",
                 report.model.c_str(), report.weights.c_str(),
                 static_cast<long long>(config.n_layers), report.weight_bytes * 1e-9, load_s,
                 report.device.c_str(), report.roofline_name.c_str(), report.first_roof_gbps);
    if (table) bench_detail::print_table_header();
    if (options->markdown) bench_detail::print_markdown_header(report);
    for (size_t i = 0; i < options->threads.size(); ++i) {
      // Thread counts after the first: a CPU backend of their own over the first model's weights
      // (already in the CPU's layout: nothing is copied again).
      std::unique_ptr<CpuBackend> cpu;
      std::unique_ptr<LlamaModel> cpu_model;
      if (i > 0) {
        cpu = std::make_unique<CpuBackend>(options->threads[i], options->int4_matmul,
                                           options->kv_cache);
        const bool on_cpu = model.backend().device() == Device::cpu;
        cpu_model = std::make_unique<LlamaModel>(config, on_cpu ? model.weights() : weights, *cpu);
      }
      LlamaModel& m = cpu ? *cpu_model : model;
      report.device = describe_backend(m.backend());
      for (const int64_t prompt : options->prompts) {
        for (const int64_t batch : options->batches) {
          const bench_detail::Row row =
              bench_detail::bench_case(m, report, batch, prompt, options->steps);
          if (table) bench_detail::print_table_row(row);
          if (options->markdown) bench_detail::print_markdown_row(report, row);
          if (options->json) bench_detail::print_json_row(report, row, m.backend());
          std::fflush(stdout);
        }
      }
    }
    std::fprintf(stderr, "hllm: peak host memory %.2f GB%s\n",
                 bench_detail::peak_host_bytes() * 1e-9,
                 gpu ? (", device memory in use " +
                        std::to_string(device_bytes_in_use(backend) * 1e-9).substr(0, 5) + " GB")
                           .c_str()
                     : "");
  });
}

}  // namespace hllm::tools
