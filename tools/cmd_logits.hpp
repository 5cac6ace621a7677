// `hllm logits -m MODEL_DIR [--config CONFIG_JSON] --ids 1,2,3 -o OUT.safetensors`
// One forward pass over the ids; writes tensor "logits", F32 [n_ids, vocab] (every position).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "hllm/io/safetensors.hpp"

namespace hllm::tools {

inline void add_logits_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string ids;
    std::string output;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command =
      app.add_subcommand("logits", "Run one forward pass and save the logits of every position");
  add_model_options(*command, options->model);
  command->add_option("--ids", options->ids, "comma-separated token ids")->required();
  command
      ->add_option("-o,--output", options->output, "output .safetensors file (tensor \"logits\")")
      ->required();
  command->callback([options] {
    const std::vector<int32_t> ids = parse_id_list(options->ids);
    auto loaded = load_model(options->model);
    const int64_t n = static_cast<int64_t>(ids.size()), vocab = loaded->folder.config.vocab_size;
    KvCache cache = loaded->model.new_cache(n);
    std::vector<float> logits(static_cast<size_t>(n * vocab));
    loaded->model.forward(ids, cache, logits, /*all_logits=*/true);
    write_safetensors(options->output, {{"logits", Tensor(logits.data(), DType::f32, {n, vocab})}});
  });
}

}  // namespace hllm::tools
