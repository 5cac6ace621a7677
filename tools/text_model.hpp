// What `run`, `chat` and `serve` share: which model to run (-m, else $HLLM_MODEL, else the bundled demo),
// its tokenizer, the sampling flags with defaults from generation_config.json, and the stop ids.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "hllm/engine/open_model.hpp"
#include "hllm/engine/sampler.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "progress.hpp"

#ifndef HLLM_DEMO_MODEL_DIR
#define HLLM_DEMO_MODEL_DIR ""
#endif

namespace hllm::tools {

struct TextModelOptions {
  std::string model_dir;  // empty: $HLLM_MODEL, then the demo
  std::string tokenizer;  // empty: the model folder's tokenizer.json
  int threads = 0;
  std::string device = "auto";
  CpuMatmul int4_matmul = CpuMatmul::int8;
  CpuKvCache kv_cache = CpuKvCache::automatic;
  LmHead lm_head = LmHead::automatic;
  int64_t context = 0;  // 0: max_position_embeddings
  // Sampling; unset ones come from generation_config.json, then the library defaults.
  std::optional<float> temperature, top_p, min_p, repeat_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  bool allow_special_tokens = false;  // <|...|> spellings in prompts are special tokens
  SpecialTokens special_tokens() const {
    return allow_special_tokens ? SpecialTokens::control : SpecialTokens::text;
  }
};

inline void add_special_tokens_flag(CLI::App& command, bool& allow) {
  command.add_flag("--allow-special-tokens-in-content", allow,
                   "read <|...|> spellings in prompts and messages as special tokens (default: "
                   "plain text, so typed text cannot end a turn or forge a system message)");
}

inline void add_text_model_options(CLI::App& command, TextModelOptions& o) {
  command.add_option(
      "-m,--model", o.model_dir,
      "HF model folder or .gguf file (default: $HLLM_MODEL, else the bundled tiny demo model)");
  command.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: the model folder's)");
  command.add_option("-t,--threads", o.threads, "CPU threads (default: all hardware threads)");
  add_cpu_matmul_option(command, o.int4_matmul, CpuMatmul::int8);
  add_kv_cache_option(command, o.kv_cache);
  add_lm_head_option(command, o.lm_head, LmHead::automatic);
  command
      .add_option("--device", o.device,
                  "cuda, cpu, or auto (cuda when a GPU is present and this build has CUDA)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  command.add_option("-c,--ctx", o.context, "context size in tokens (default: the model's)");
  command.add_option("--temperature", o.temperature,
                     "0 = greedy (default: generation_config.json)");
  command.add_option("--top-p", o.top_p, "nucleus sampling mass (default: generation_config.json)");
  command.add_option("--top-k", o.top_k, "keep the k most likely tokens, 0 = off");
  command.add_option("--min-p", o.min_p, "drop tokens below min_p x the top probability");
  command.add_option("--repeat-penalty", o.repeat_penalty, "HF repetition penalty, 1 = off");
  command.add_option("--presence-penalty", o.presence_penalty, "OpenAI presence penalty");
  command.add_option("--frequency-penalty", o.frequency_penalty, "OpenAI frequency penalty");
  command.add_option("--seed", o.seed, "RNG seed (default: random, printed on stderr)");
  command.add_flag("--ignore-eos", o.ignore_eos, "keep generating past end-of-turn tokens");
  add_special_tokens_flag(command, o.allow_special_tokens);
}

// A model opened with its tokenizer, the sampling settings of this run and the context size.
struct TextModel {
  bool is_demo = false;
  std::unique_ptr<LoadedModel> loaded;
  SamplingParams sampling;  // the model's defaults (generation_config.json) under the flags
  int64_t context = 0;

  const Tokenizer& tokenizer() const { return *loaded->tokenizer; }
  const std::vector<int64_t>& stop_ids() const { return loaded->stop_ids; }
};

// The sampling flags over the model's defaults; the seed is random unless given.
inline SamplingParams apply_sampling_flags(const TextModelOptions& o, SamplingParams s) {
  if (o.temperature) s.temperature = *o.temperature;
  if (o.top_p) s.top_p = *o.top_p;
  if (o.top_k) s.top_k = *o.top_k;
  if (o.min_p) s.min_p = *o.min_p;
  if (o.repeat_penalty) s.repetition_penalty = *o.repeat_penalty;
  if (o.presence_penalty) s.presence_penalty = *o.presence_penalty;
  if (o.frequency_penalty) s.frequency_penalty = *o.frequency_penalty;
  s.seed = o.seed ? *o.seed : std::random_device{}();
  s.validate();
  return s;
}

// -m, else $HLLM_MODEL, else the bundled demo (with a note on stderr that its text is nonsense).
inline std::string resolve_model_dir(const std::string& given, bool& is_demo) {
  is_demo = false;
  std::string dir = given;
  if (dir.empty() && std::getenv("HLLM_MODEL") != nullptr) dir = std::getenv("HLLM_MODEL");
  if (!dir.empty()) return dir;
  dir = HLLM_DEMO_MODEL_DIR;
  is_demo = true;
  if (dir.empty() || !std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
    fail("no model given (-m DIR or HLLM_MODEL) and the bundled demo model is not built (",
         dir.empty() ? "this binary was built without it" : dir,
         "; it needs the tokenizer that cmake fetches with npm)");
  std::fprintf(
      stderr,
      "hllm: no model given (-m DIR or HLLM_MODEL): running the bundled tiny demo model. "
      "Its weights are random, so the text is nonsense; the pipeline around it is real.\n");
  return dir;
}

inline TextModel load_text_model(const TextModelOptions& o) {
  TextModel m;
  const std::string dir = resolve_model_dir(o.model_dir, m.is_demo);
  OpenOptions open;
  open.device = o.device;
  open.threads = o.threads;
  open.int4_matmul = o.int4_matmul;
  open.kv_cache = o.kv_cache;
  open.lm_head = o.lm_head;
  open.tokenizer = o.tokenizer;
  open.prefetch = true;
  open.progress = load_progress_printer();
  m.loaded = open_model(dir, open);
  m.sampling = apply_sampling_flags(o, m.loaded->sampling);
  m.context = o.context > 0 ? o.context : m.loaded->config().max_position_embeddings;
  return m;
}

}  // namespace hllm::tools
