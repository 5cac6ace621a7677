// `hllm perplexity -m MODEL_DIR -f TEXT_FILE [--ctx 512] [--stride 512] [--llama-cpp]`
// The text is tokenized once (BOS first, as HF's tokenizer(text) does for Llama-3) and scored by
// engine/perplexity.hpp's sliding windows (its header gives the exact definition). stderr shows the
// windows done and the running estimate; stdout gets one result line.
#pragma once

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "hllm/engine/perplexity.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"

namespace hllm::tools {

inline void add_perplexity_command(CLI::App& app) {
  struct Options {
    ModelOptions model;
    std::string file;
    std::string tokenizer;
    PerplexityOptions ppl;
    bool llama_cpp = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand(
      "perplexity", "Perplexity of a text file (sliding windows, Hugging Face's definition)");
  add_model_options(*command, options->model);
  command->add_option("-f,--file", options->file, "text file to score")->required();
  command->add_option("--tokenizer", options->tokenizer,
                      "tokenizer.json (default: the model folder's)");
  command->add_option("--ctx", options->ppl.ctx, "tokens per window")
      ->check(CLI::Range(2, 1 << 20));
  command->add_option("--stride", options->ppl.stride, "window step (default: --ctx, no overlap)")
      ->check(CLI::Range(1, 1 << 20));
  command->add_flag("--llama-cpp", options->llama_cpp,
                    "score only the second half of each window, as llama.cpp's llama-perplexity");
  command->callback([options] {
    std::ifstream in(options->file, std::ios::binary);
    if (!in) fail("cannot read ", options->file);
    std::stringstream text;
    text << in.rdbuf();
    OpenOptions open = open_options(options->model);
    open.load_tokenizer = true;
    open.tokenizer = options->tokenizer;
    const auto loaded = open_model(options->model.model_dir, open);
    const std::vector<int32_t> tokens = encode_prompt(*loaded->tokenizer, text.str());
    options->ppl.second_half_only = options->llama_cpp;

    const bool tty = isatty(STDERR_FILENO) != 0;
    const auto start = std::chrono::steady_clock::now();
    const PerplexityResult r = perplexity(
        loaded->model, tokens, options->ppl,
        [&](int64_t done, int64_t total, const PerplexityResult& running) {
          const double s =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          std::fprintf(stderr, "%shllm: window %lld/%lld  ppl %.4f  %.0f tok/s%s", tty ? "\r" : "",
                       static_cast<long long>(done), static_cast<long long>(total), running.ppl(),
                       static_cast<double>(running.scored) / s, tty ? "   " : "\n");
        });
    if (tty) std::fprintf(stderr, "\n");
    std::printf(
        "perplexity %.6f over %lld scored tokens (%lld tokens, %lld windows of %lld, "
        "stride %lld%s; %s)\n",
        r.ppl(), static_cast<long long>(r.scored), static_cast<long long>(tokens.size()),
        static_cast<long long>(r.windows), static_cast<long long>(options->ppl.ctx),
        static_cast<long long>(options->ppl.stride > 0 ? options->ppl.stride : options->ppl.ctx),
        options->llama_cpp ? ", second half of each window" : "",
        loaded->backend_description().c_str());
  });
}

}  // namespace hllm::tools
