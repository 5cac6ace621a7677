// What `run` and `chat` share: which model to run (-m, else $HLLM_MODEL, else the bundled demo),
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
#include "hllm/engine/sampler.hpp"
#include "hllm/io/json.hpp"
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
  int64_t context = 0;  // 0: max_position_embeddings
  // Sampling; unset ones come from generation_config.json, then the library defaults.
  std::optional<float> temperature, top_p, min_p, repeat_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
};

inline void add_text_model_options(CLI::App& command, TextModelOptions& o) {
  command.add_option("-m,--model", o.model_dir,
                     "HF model folder (default: $HLLM_MODEL, else the bundled tiny demo model)");
  command.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: the model folder's)");
  command.add_option("-t,--threads", o.threads, "CPU threads (default: all hardware threads)");
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
}

// A loaded model with its tokenizer, ready for text in and text out.
struct TextModel {
  bool is_demo = false;
  Tokenizer tokenizer;
  std::unique_ptr<LoadedModel> loaded;
  std::vector<int64_t> stop_ids;  // generation_config's eos ids and the tokenizer's eos token
  SamplingParams sampling;
  int64_t context = 0;
};

// The sampling flags over generation_config.json's defaults over the library's.
inline SamplingParams sampling_from(const TextModelOptions& o, const std::filesystem::path& dir) {
  SamplingParams s;
  const std::filesystem::path generation_config = dir / "generation_config.json";
  if (std::filesystem::exists(generation_config)) {
    const json g = read_json_file(generation_config);
    const JsonFields fields{g, generation_config.string()};
    if (g.is_object() && fields.boolean_or("do_sample", true)) {
      s.temperature = static_cast<float>(fields.number_or("temperature", s.temperature));
      s.top_p = static_cast<float>(fields.number_or("top_p", s.top_p));
      if (fields.has("top_k")) s.top_k = fields.integer("top_k");
    } else if (g.is_object()) {
      s.temperature = 0.0f;  // do_sample: false means greedy
    }
  }
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

inline TextModel load_text_model(const TextModelOptions& o) {
  bool is_demo = false;
  std::string dir = o.model_dir;
  if (dir.empty() && std::getenv("HLLM_MODEL") != nullptr) dir = std::getenv("HLLM_MODEL");
  if (dir.empty()) {
    dir = HLLM_DEMO_MODEL_DIR;
    is_demo = true;
    if (dir.empty() || !std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
      fail("no model given (-m DIR or HLLM_MODEL) and the bundled demo model is not built (",
           dir.empty() ? "this binary was built without it" : dir,
           "; it needs the tokenizer that cmake fetches with npm)");
    std::fprintf(
        stderr,
        "hllm: no model given (-m DIR or HLLM_MODEL): running the bundled tiny demo model. Its "
        "weights are random, so the text is nonsense; the pipeline around it is real.\n");
  }
  if (!std::filesystem::is_directory(dir))
    fail("model folder ", dir, " does not exist or is not a folder");
  TextModel m{is_demo, Tokenizer::load(o.tokenizer.empty() ? dir : o.tokenizer), nullptr, {}, {},
              0};
  ModelOptions model_options;
  model_options.model_dir = dir;
  model_options.threads = o.threads;
  model_options.device = o.device;
  m.loaded = load_model(model_options);
  prefetch_weights(m.loaded->folder.checkpoint);

  const LlamaConfig& config = m.loaded->folder.config;
  if (static_cast<int64_t>(m.tokenizer.vocab_size()) > config.vocab_size)
    fail("the tokenizer has ", m.tokenizer.vocab_size(), " tokens but the model only ",
         config.vocab_size, " (wrong --tokenizer?)");
  m.stop_ids = m.loaded->folder.eos_ids;
  for (int64_t id : m.tokenizer.stop_ids())
    if (std::find(m.stop_ids.begin(), m.stop_ids.end(), id) == m.stop_ids.end())
      m.stop_ids.push_back(id);
  m.sampling = sampling_from(o, dir);
  m.context = o.context > 0 ? o.context : config.max_position_embeddings;
  return m;
}

}  // namespace hllm::tools
