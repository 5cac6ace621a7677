// Tokenizer speed: load time of the real 9 MB tokenizer.json, and encode / decode MB/s on a ~1 MB
// mixed corpus (English and Chinese prose, code, numbers, many scripts, emoji), one thread.
// Encode is measured twice: "cold" is the first pass of a freshly loaded tokenizer (empty piece
// cache: what a prompt of new text costs, and the number the >= 20 MB/s goal is about); "warm"
// re-encodes the same corpus with the cache filled by earlier passes (an upper bound).
// The corpus is the texts of tests/data/tokenizer/encode.jsonl, each line once per round with
// the round number appended (so repeats are not all cache hits), until it passes 1 MB;
// tests/tokenizer_diff/bench.mjs builds the same corpus for the JavaScript reference.
// The tokenizer: $HLLM_TOKENIZER_JSON, else the copy that tests/fetch_tokenizer.cmake fetched into
// <build>/llama3_tokenizer (this binary runs from <build>/bench).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

std::string tokenizer_path() {
  if (const char* env = std::getenv("HLLM_TOKENIZER_JSON")) return env;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe");
  return (exe.parent_path().parent_path() / "llama3_tokenizer" / "tokenizer.json").string();
}

std::string corpus() {
  std::vector<std::string> texts;
  const auto source_dir = std::filesystem::path(__FILE__).parent_path().parent_path();
  std::ifstream in(source_dir / "tests" / "data" / "tokenizer" / "encode.jsonl");
  if (!in) hllm::fail("tokenizer_bench: cannot open tests/data/tokenizer/encode.jsonl");
  for (std::string line; std::getline(in, line);)
    texts.push_back(nlohmann::json::parse(line)["text"]);
  std::string out;
  for (int round = 0; out.size() < (1 << 20); ++round) {
    for (const auto& t : texts) out += t + " " + std::to_string(round) + "\n";
  }
  return out;
}

const hllm::Tokenizer& tokenizer() {
  static const hllm::Tokenizer tok = hllm::load_tokenizer(tokenizer_path());
  return tok;
}

void BM_tokenizer_load(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(hllm::load_tokenizer(tokenizer_path()));
  state.SetLabel("real Llama-3 tokenizer.json, 9 MB");
}

// Each iteration encodes with a tokenizer that has never encoded anything; loading it is not timed.
void BM_tokenizer_encode_cold(benchmark::State& state) {
  const std::string text = corpus();
  const std::string path = tokenizer_path();
  size_t n_tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::optional<hllm::Tokenizer> tok;
    tok.emplace(hllm::load_tokenizer(path));
    state.ResumeTiming();
    n_tokens = tok->encode(text).size();
    state.PauseTiming();
    tok.reset();  // freeing its tables is not encode time either
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
}

void BM_tokenizer_encode_warm(benchmark::State& state) {
  const std::string text = corpus();
  const hllm::Tokenizer& tok = tokenizer();
  size_t n_tokens = tok.encode(text).size();  // fills the piece cache
  for (auto _ : state) n_tokens = tok.encode(text).size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
}

void BM_tokenizer_decode(benchmark::State& state) {
  const hllm::Tokenizer& tok = tokenizer();
  const auto ids = tok.encode(corpus());
  size_t n_bytes = 0;
  for (auto _ : state) n_bytes = tok.decode(ids).size();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n_bytes));
}

BENCHMARK(BM_tokenizer_load)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_tokenizer_encode_cold)->Unit(benchmark::kMillisecond)->Iterations(20);
BENCHMARK(BM_tokenizer_encode_warm)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(BM_tokenizer_decode)->Unit(benchmark::kMillisecond)->MinTime(2.0);

}  // namespace

BENCHMARK_MAIN();
