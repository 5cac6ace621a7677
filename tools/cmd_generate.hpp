// `hllm generate -m MODEL_DIR [--config CONFIG_JSON] --ids 1,2,3 -n N --greedy [--ignore-eos]`
// Prefill the ids, then decode up to N tokens through the KV cache; prints the generated ids
// comma-separated on one line of stdout, and a timing summary on stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"

namespace hllm::tools {

inline int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

inline void add_generate_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string ids;
    int64_t max_new_tokens = 16;
    bool greedy = false;
    bool ignore_eos = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command =
      app.add_subcommand("generate", "Continue a list of token ids (greedy), print the new ids");
  add_model_options(*command, options->model);
  command->add_option("--ids", options->ids, "comma-separated prompt token ids")->required();
  command->add_option("-n,--max-new-tokens", options->max_new_tokens, "tokens to generate")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command->add_flag("--greedy", options->greedy,
                    "pick the most likely token (the only mode of this command)");
  command->add_flag("--ignore-eos", options->ignore_eos, "keep going past end-of-sequence tokens");
  command->callback([options] {
    if (!options->greedy) fail("generate: pass --greedy (sampled generation is `hllm run`'s job)");
    const std::vector<int32_t> prompt = parse_id_list(options->ids);
    auto loaded = load_model(options->model);
    LlamaModel& model = loaded->model;
    const std::vector<int64_t>& eos = loaded->stop_ids;  // the eos ids: opened without tokenizer
    const int64_t n_prompt = static_cast<int64_t>(prompt.size());
    const int64_t context = model.config().max_position_embeddings;
    if (n_prompt + options->max_new_tokens > context &&
        model.config().rope_scaling.type != RopeType::dynamic)
      std::fprintf(
          stderr, "hllm: warning: %lld tokens exceed max_position_embeddings %lld of this config\n",
          static_cast<long long>(n_prompt + options->max_new_tokens),
          static_cast<long long>(context));

    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    KvCache cache = model.new_cache(n_prompt + options->max_new_tokens);
    std::vector<float> logits(static_cast<size_t>(model.config().vocab_size));
    model.forward(prompt, cache, logits, /*all_logits=*/false);
    const auto prefilled = clock::now();

    std::vector<int32_t> generated;
    for (int64_t step = 0; step < options->max_new_tokens; ++step) {
      const int32_t next = argmax(logits);
      generated.push_back(next);
      if (!options->ignore_eos && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
      if (step + 1 < options->max_new_tokens)
        model.forward({&next, 1}, cache, logits, /*all_logits=*/false);
    }
    const auto done = clock::now();

    for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? "," : "", generated[i]);
    std::printf("\n");
    const double prefill_s = std::chrono::duration<double>(prefilled - start).count();
    const double decode_s = std::chrono::duration<double>(done - prefilled).count();
    const double decode_steps = static_cast<double>(std::max<size_t>(generated.size(), 1) - 1);
    std::fprintf(stderr,
                 "hllm: prefill %lld tokens in %.1f ms (%.1f tok/s); decode %zu tokens, %.1f tok/s "
                 "(%s)\n",
                 static_cast<long long>(n_prompt), prefill_s * 1e3, n_prompt / prefill_s,
                 generated.size(), decode_steps > 0 ? decode_steps / decode_s : 0.0,
                 loaded->backend_description().c_str());
  });
}

}  // namespace hllm::tools
