// Constrained decoding cost per generated token over the real 128k Llama-3 vocabulary: a matcher
// generates a valid JSON document token by token (a random allowed token each step, fixed seed;
// after 40 tokens closing tokens are preferred so documents end), and what is timed is what a
// server pays per token: mask_logits over 128,256 logits + accept_token.
//
//   warm   the same document again on the same CompiledGrammar: every state's mask is cached (the
//          steady state of a server answering many requests with one schema; goal <= 50 us/token)
//   cold   a fresh CompiledGrammar per document: nearly every token lands in a state not seen
//          before, whose mask is computed by walking the vocabulary trie
//
// Counters: us_per_token (timed time / tokens), tokens (per document).
// The tokenizer: $HLLM_TOKENIZER_JSON, else the copy that models/fetch_tokenizer.cmake fetched into
// <build>/llama3_tokenizer (this binary runs from <build>/bench).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/grammar/compiled.hpp"
#include "hllm/grammar/json_schema.hpp"
#include "hllm/grammar/matcher.hpp"
#include "hllm/grammar/token_vocabulary.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

using hllm::grammar::GrammarMatcher;

std::string tokenizer_path() {
  if (const char* env = std::getenv("HLLM_TOKENIZER_JSON")) return env;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe");
  return (exe.parent_path().parent_path() / "llama3_tokenizer" / "tokenizer.json").string();
}

std::shared_ptr<const hllm::grammar::TokenVocabulary> vocab() {
  static const auto v = [] {
    const hllm::Tokenizer tok = hllm::load_tokenizer(tokenizer_path());
    return std::make_shared<const hllm::grammar::TokenVocabulary>(tok, tok.stop_ids());
  }();
  return v;
}

// A user profile (nested object, enum, bounded array of strings, optional fields).
const char* const PROFILE = R"({"type":"object","properties":{
  "name":{"type":"string","maxLength":40},"age":{"type":"integer"},
  "email":{"type":["string","null"]},"role":{"enum":["admin","editor","viewer"]},
  "address":{"type":"object","properties":{"street":{"type":"string"},"city":{"type":"string"},
    "zip":{"type":"string","minLength":5,"maxLength":5}},"required":["street","city","zip"]},
  "tags":{"type":"array","items":{"type":"string","maxLength":12},"maxItems":4},
  "active":{"type":"boolean"}},"required":["name","age","email","role","address","tags","active"]})";

// A tool call as OpenAI-style function calling constrains it.
const char* const TOOL_CALL = R"({"type":"object","properties":{
  "name":{"const":"get_weather"},
  "arguments":{"type":"object","properties":{"location":{"type":"string"},
    "unit":{"enum":["celsius","fahrenheit"]},"days":{"type":"integer"},
    "hourly":{"type":"boolean"}},"required":["location","unit"]}},
  "required":["name","arguments"]})";

hllm::grammar::Grammar grammar_of(const char* schema) {
  if (schema == nullptr) return hllm::grammar::json_object_grammar();
  return hllm::grammar::json_schema_grammar(nlohmann::ordered_json::parse(schema));
}

// Generates one document; returns the timed seconds (mask + accept) and sets n_tokens.
double generate(const std::shared_ptr<hllm::grammar::CompiledGrammar>& compiled, size_t& n_tokens) {
  using Clock = std::chrono::steady_clock;
  std::mt19937 rng(42);
  GrammarMatcher m(compiled);
  const hllm::grammar::TokenVocabulary& v = *vocab();
  std::vector<float> logits(v.size());
  std::vector<uint32_t> words((v.size() + 31) / 32);
  std::vector<int32_t> ids;
  double seconds = 0;
  n_tokens = 0;
  while (!m.is_finished() && n_tokens < 2000) {
    const auto t0 = Clock::now();
    m.mask_logits(logits);
    const auto t1 = Clock::now();
    m.fill_bitmask(words);  // choosing a token is the sampler's business: not timed
    ids.clear();
    for (size_t w = 0; w < words.size(); ++w) {
      for (uint32_t bits = words[w]; bits != 0; bits &= bits - 1) {
        ids.push_back(static_cast<int32_t>(w * 32 + static_cast<size_t>(__builtin_ctz(bits))));
      }
    }
    if (ids.empty()) hllm::fail("grammar_bench: no token allowed");
    int32_t pick = ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)];
    if (n_tokens >= 40) {
      if (m.can_end()) pick = v.end_ids()[0];
      int best = 0;
      for (const int32_t id : ids) {  // prefer a one-byte closing token: '"' over '}' over ']'
        const std::string_view b = v.bytes(id);
        const int rank = b.size() != 1 ? 0
                         : b[0] == '"' ? 3
                         : b[0] == '}' ? 2
                         : b[0] == ']' ? 1
                                       : 0;
        if (!m.can_end() && rank > best) {
          pick = id;
          best = rank;
        }
      }
    }
    const auto t2 = Clock::now();
    if (!m.accept_token(pick)) hllm::fail("grammar_bench: an allowed token was refused");
    const auto t3 = Clock::now();
    seconds += std::chrono::duration<double>((t1 - t0) + (t3 - t2)).count();
    ++n_tokens;
  }
  return seconds;
}

void run(benchmark::State& state, const char* schema, bool warm) {
  const hllm::grammar::Grammar grammar = grammar_of(schema);
  auto compiled = hllm::grammar::compile(grammar, vocab());
  size_t n_tokens = 0;
  if (warm) generate(compiled, n_tokens);  // fills the caches
  double total = 0;
  size_t total_tokens = 0;
  for (auto _ : state) {
    if (!warm) compiled = hllm::grammar::compile(grammar, vocab());
    const double seconds = generate(compiled, n_tokens);
    state.SetIterationTime(seconds);
    total += seconds;
    total_tokens += n_tokens;
  }
  state.counters["us_per_token"] = 1e6 * total / static_cast<double>(total_tokens);
  state.counters["tokens"] = static_cast<double>(n_tokens);
}

// mask_logits alone, cached mask: at the start (only tokens that begin '{"name":' are allowed,
// so nearly every logit is written) and inside a string (nearly every token allowed).
void mask_only(benchmark::State& state, std::string_view prefix) {
  GrammarMatcher m(hllm::grammar::compile(grammar_of(PROFILE), vocab()));
  for (const char c : prefix) {  // fed one single-byte token at a time
    for (size_t id = 0; id < vocab()->size(); ++id) {
      if (vocab()->bytes(static_cast<int32_t>(id)) == std::string_view(&c, 1)) {
        m.accept_token(static_cast<int32_t>(id));
        break;
      }
    }
  }
  std::vector<float> logits(vocab()->size());
  for (auto _ : state) {
    m.mask_logits(logits);
    benchmark::DoNotOptimize(logits.data());
  }
}
void BM_grammar_mask_logits_structural(benchmark::State& s) { mask_only(s, ""); }
void BM_grammar_mask_logits_string(benchmark::State& s) { mask_only(s, R"({"name":"a)"); }
BENCHMARK(BM_grammar_mask_logits_structural)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_grammar_mask_logits_string)->Unit(benchmark::kMicrosecond);

void BM_grammar_profile_warm(benchmark::State& s) { run(s, PROFILE, true); }
void BM_grammar_profile_cold(benchmark::State& s) { run(s, PROFILE, false); }
void BM_grammar_tool_call_warm(benchmark::State& s) { run(s, TOOL_CALL, true); }
void BM_grammar_tool_call_cold(benchmark::State& s) { run(s, TOOL_CALL, false); }
void BM_grammar_json_object_warm(benchmark::State& s) { run(s, nullptr, true); }
void BM_grammar_json_object_cold(benchmark::State& s) { run(s, nullptr, false); }

BENCHMARK(BM_grammar_profile_warm)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_grammar_profile_cold)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_grammar_tool_call_warm)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_grammar_tool_call_cold)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_grammar_json_object_warm)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_grammar_json_object_cold)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
