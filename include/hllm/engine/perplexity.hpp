// Perplexity of a token sequence under the model, by the sliding-window definition of Hugging
// Face's "Perplexity of fixed-length models" guide:
//
//   windows start at 0, stride, 2·stride, ...; window w covers tokens [begin, end), end =
//   min(begin + ctx, n), and scores the tokens it adds beyond the previous window's end
//   (trg = end - prev_end of them, all of them for the first window):
//
//     tokens   t0 t1 t2 ... t(n-1)
//     window   [begin ............ end)        fresh context for every window
//     scored                [end-trg .. end)   each predicted from the tokens before it inside
//                                              the window (a window's first token never is)
//
//   NLL = Σ over scored tokens of -log softmax(logits of the previous position)[token]
//   PPL = exp(NLL / scored tokens)
//
// With stride = ctx (the default) windows do not overlap and every token but each window's first
// is scored once: this equals HF's guide for non-overlapping windows exactly (its loss ×
// (valid labels - 1) bookkeeping). llama.cpp's `llama-perplexity` instead scores only the second
// half of each non-overlapping window (after a BOS); `second_half_only` reproduces that.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/model/kv_cache.hpp"
#include "hllm/model/llama.hpp"

namespace hllm {

struct PerplexityOptions {
  int64_t ctx = 512;              // tokens per window
  int64_t stride = 0;             // window step (0: ctx, no overlap)
  bool second_half_only = false;  // llama.cpp's scoring: only positions ctx/2 .. ctx-1
  int64_t logits_chunk = 256;     // positions whose logits are on the host at once
};

struct PerplexityResult {
  double nll = 0.0;     // summed negative log-likelihood (nats)
  int64_t scored = 0;   // tokens scored
  int64_t windows = 0;  // forward passes over a fresh context
  double ppl() const { return scored > 0 ? std::exp(nll / static_cast<double>(scored)) : NAN; }
};

// -log softmax(logits)[target], in double, shifted by the max for range safety.
inline double token_nll(std::span<const float> logits, int32_t target) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  return std::log(sum) - (static_cast<double>(logits[target]) - max);
}

// `progress(windows_done, windows_total, running)` after every window (may be empty).
inline PerplexityResult perplexity(
    LlamaModel& model, std::span<const int32_t> tokens, const PerplexityOptions& options,
    const std::function<void(int64_t, int64_t, const PerplexityResult&)>& progress = {}) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t ctx = options.ctx, stride = options.stride > 0 ? options.stride : options.ctx;
  if (ctx < 2) fail("perplexity: the window must hold at least 2 tokens (got ", ctx, ")");
  if (stride > ctx) fail("perplexity: stride ", stride, " exceeds the window of ", ctx);
  if (options.second_half_only && stride != ctx)
    fail("perplexity: llama.cpp-style scoring needs non-overlapping windows (stride = ctx)");
  if (n < 2) fail("perplexity: need at least 2 tokens (got ", n, ")");
  const int64_t vocab = model.config().vocab_size;
  int64_t total_windows = 0;
  for (int64_t begin = 0, prev_end = 0; prev_end < n; begin += stride) {
    ++total_windows;
    prev_end = std::min(begin + ctx, n);
  }

  PerplexityResult result;
  KvCache cache = model.new_cache(ctx);
  std::vector<float> logits;
  for (int64_t begin = 0, prev_end = 0; prev_end < n; begin += stride) {
    const int64_t end = std::min(begin + ctx, n);
    const int64_t length = end - begin;
    // Window positions j whose token is scored (predicted by the logits at j - 1).
    int64_t first_scored = std::max<int64_t>(1, length - (end - prev_end));
    if (options.second_half_only) first_scored = std::max<int64_t>(first_scored, ctx / 2);
    cache.clear();
    for (int64_t at = 0; at < length; at += options.logits_chunk) {
      const int64_t m = std::min(options.logits_chunk, length - at);
      logits.resize(static_cast<size_t>(m * vocab));
      model.forward(tokens.subspan(begin + at, m), cache, logits, /*all_logits=*/true);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t j = at + i + 1;  // the position these logits predict
        if (j < first_scored || j >= length) continue;
        result.nll +=
            token_nll(std::span<const float>(logits).subspan(i * vocab, vocab), tokens[begin + j]);
        ++result.scored;
      }
    }
    ++result.windows;
    prev_end = end;
    if (progress) progress(result.windows, total_windows, result);
  }
  return result;
}

}  // namespace hllm
