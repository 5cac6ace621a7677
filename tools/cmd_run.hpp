// `hllm run [-m MODEL_DIR] -p "prompt" [--system "..."] [-n MAX_TOKENS] [sampling flags] [--raw]`
// One answer, streamed to stdout as it is generated; stdout carries exactly the generated text and
// one newline. A timing summary goes to stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "hllm/engine/generate_text.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "interrupt.hpp"
#include "text_model.hpp"

namespace hllm::tools {

inline void print_generation_summary(const GenerationResult& r, const TextModel& m) {
  const double decode_rate =
      r.ids.size() > 1 ? static_cast<double>(r.ids.size() - 1) / r.decode_seconds : 0.0;
  const std::string cached =
      r.cached_tokens > 0 ? ", " + std::to_string(r.cached_tokens) + " from the prefix cache" : "";
  std::fprintf(
      stderr,
      "hllm: prompt %lld tokens%s, first token after %.1f ms (%.1f tok/s prefill); %zu tokens "
      "at %.2f tok/s; finish: %s (%s, seed %llu)\n",
      static_cast<long long>(r.prompt_tokens), cached.c_str(), r.prefill_seconds * 1e3,
      static_cast<double>(r.computed_prompt_tokens()) / r.prefill_seconds, r.ids.size(),
      decode_rate, finish_reason_name(r.finish), m.loaded->backend_description().c_str(),
      static_cast<unsigned long long>(m.sampling.seed));
}

inline void add_run_command(CLI::App& app) {
  struct Options {
    TextModelOptions model;
    std::string prompt;
    std::string system;
    int64_t max_new_tokens = 256;
    bool raw = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand("run", "Answer one prompt, streaming the text to stdout");
  add_text_model_options(*command, options->model);
  command->add_option("-p,--prompt", options->prompt, "the user message (or the text, with --raw)")
      ->required();
  command->add_option("--system", options->system, "a system message");
  command->add_option("-n,--max-tokens", options->max_new_tokens, "most tokens to generate")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  command->add_flag("--raw", options->raw, "plain completion of the text, no chat format");
  command->callback([options] {
    if (options->raw && !options->system.empty()) fail("--system has no meaning with --raw");
    TextModel m = load_text_model(options->model);
    std::vector<int32_t> prompt;
    if (options->raw) {
      prompt = encode_prompt(m.tokenizer(), options->prompt, options->model.special_tokens());
    } else {
      std::vector<ChatMessage> messages;
      if (!options->system.empty()) messages.push_back({"system", options->system});
      messages.push_back({"user", options->prompt});
      prompt = encode_prompt(m.tokenizer(), messages, options->model.special_tokens());
    }
    const int64_t budget =
        std::min(options->max_new_tokens, m.context - static_cast<int64_t>(prompt.size()));
    if (budget <= 0)
      fail("the prompt is ", prompt.size(), " tokens; the context is ", m.context,
           " (raise --ctx up to ", m.loaded->config().max_position_embeddings, ")");

    install_interrupt_handler();
    const GenerationResult result = generate_text(
        *m.loaded, prompt, m.sampling, budget,
        [](std::string_view piece) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);
          return interrupted == 0;
        },
        options->model.ignore_eos);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    print_generation_summary(result, m);
  });
}

}  // namespace hllm::tools
