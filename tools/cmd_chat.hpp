// `hllm chat [-m MODEL_DIR] [--system "..."] [sampling flags]` — an interactive conversation.
//
// Every turn re-sends the whole history through the chat format. The engine core's prefix cache
// (engine/engine_core.hpp, the server's) keeps the K/V of the history's full blocks between turns,
// so only the new part is computed. Each answer samples with seed + its turn number.
// Commands: /reset forgets the history, /exit (or Ctrl-D) quits. Ctrl-C stops the answer being
// written; at the prompt it quits.
//
// Context policy: when the history plus the new message no longer fits the context, the oldest
// exchanges (user + assistant) are dropped, the system message is kept, and a note says so on
// stderr. A single message longer than the whole context is refused with a message.
#pragma once

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cmd_run.hpp"
#include "hllm/engine/generate.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "interrupt.hpp"
#include "text_model.hpp"

namespace hllm::tools {

inline void add_chat_command(CLI::App& app) {
  struct Options {
    TextModelOptions model;
    std::string system;
    int64_t max_new_tokens = 1024;
    bool verbose_prompt = false;
  };
  auto options = std::make_shared<Options>();
  CLI::App* command = app.add_subcommand("chat", "Talk with the model (multi-turn, streaming)");
  add_text_model_options(*command, options->model);
  command->add_option("--system", options->system, "a system message for the whole conversation");
  command->add_option("-n,--max-tokens", options->max_new_tokens, "most tokens per answer")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  command->add_flag("--verbose-prompt", options->verbose_prompt,
                    "print each turn's full prompt ids to stderr");
  command->callback([options] {
    TextModel m = load_text_model(options->model);
    const bool interactive = isatty(STDIN_FILENO) != 0;
    install_interrupt_handler();
    EngineCore core(m.loaded->model,
                    EngineOptions::one_sequence(m.context, /*prefix_caching=*/true));
    uint64_t turn = 0;
    std::vector<ChatMessage> history;
    if (!options->system.empty()) history.push_back({"system", options->system});
    const size_t first_exchange = history.size();
    if (interactive)
      std::fprintf(stderr,
                   "hllm: chatting (context %lld tokens). /reset forgets, /exit quits, Ctrl-C "
                   "stops an answer.\n",
                   static_cast<long long>(m.context));

    for (std::string line;;) {
      if (interactive) std::fputs("> ", stdout), std::fflush(stdout);
      interrupted = 0;
      if (!std::getline(std::cin, line)) break;  // Ctrl-D, end of input, or Ctrl-C at the prompt
      if (line == "/exit") break;
      if (line == "/reset") {
        history.resize(first_exchange);
        std::fprintf(stderr, "hllm: history cleared\n");
        continue;
      }
      if (line.empty()) continue;
      history.push_back({"user", line});

      // Room for the answer: the token budget, but at most a quarter of the context.
      const int64_t reserve =
          std::min(options->max_new_tokens, std::max<int64_t>(m.context / 4, 1));
      std::vector<int32_t> prompt =
          encode_prompt(m.tokenizer(), history, options->model.special_tokens());
      while (static_cast<int64_t>(prompt.size()) + reserve > m.context &&
             history.size() > first_exchange + 1) {
        const size_t drop_end =
            std::min(first_exchange + 2, history.size() - 1);  // keep the new message
        history.erase(history.begin() + static_cast<std::ptrdiff_t>(first_exchange),
                      history.begin() + static_cast<std::ptrdiff_t>(drop_end));
        std::fprintf(stderr, "hllm: context full, dropped the oldest exchange\n");
        prompt = encode_prompt(m.tokenizer(), history, options->model.special_tokens());
      }
      if (static_cast<int64_t>(prompt.size()) + reserve > m.context) {
        std::fprintf(
            stderr,
            "hllm: this message needs %zu tokens with the chat format and %lld for the answer; "
            "the context is %lld (--ctx)\n",
            prompt.size(), static_cast<long long>(reserve), static_cast<long long>(m.context));
        history.pop_back();
        continue;
      }
      if (options->verbose_prompt) {
        std::fprintf(stderr, "hllm: prompt ids: [");
        for (size_t i = 0; i < prompt.size(); ++i)
          std::fprintf(stderr, "%s%d", i ? "," : "", prompt[i]);
        std::fprintf(stderr, "]\n");
      }

      StreamDecoder text(m.tokenizer());
      std::string answer;
      const int64_t budget =
          std::min(options->max_new_tokens, m.context - static_cast<int64_t>(prompt.size()));
      const GenerationOptions generation{budget, m.stop_ids(), options->model.ignore_eos};
      SamplingParams sampling = m.sampling;
      sampling.seed += turn++;
      const GenerationResult result = generate(core, prompt, sampling, generation, [&](int32_t id) {
        const std::string piece = text.push(id);
        answer += piece;
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return interrupted == 0;
      });
      const std::string rest = text.finish();
      answer += rest;
      std::fwrite(rest.data(), 1, rest.size(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
      if (result.finish == FinishReason::cancelled) std::fprintf(stderr, "hllm: answer stopped\n");
      if (interactive) print_generation_summary(result, m);
      history.push_back({"assistant", answer});
    }
  });
}

}  // namespace hllm::tools
