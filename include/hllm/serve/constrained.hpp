// Structured outputs and forced tool calls on the engine: a request's output constraint (its
// response_format, or the call schema of tool_choice "required" / a named function) compiled into
// a grammar over the tokenizer's vocabulary (include/hllm/grammar/), and the engine's logits
// processor that masks each step to what the grammar allows.
//
// Compiling a schema and the token masks it gathers cost far more than one request, so compiled
// grammars are kept, keyed by the constraint's text, for every request that asks for the same
// shape (the last HLLM_SERVE_GRAMMAR_CACHE of them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "hllm/grammar/json_schema.hpp"
#include "hllm/grammar/matcher.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/serve/tool_output.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::serve {

#ifndef HLLM_SERVE_GRAMMAR_CACHE
#define HLLM_SERVE_GRAMMAR_CACHE 16  // each grammar caches up to ~128 MiB of masks and rows
#endif

// The engine's logits processor for one request: feeds the grammar what was generated since the
// last step, then masks what it forbids. (Engine thread only; the masked ids are never sampled,
// so every generated id is one the grammar accepts.)
//
// Within max_tokens: the grammar leaves room for the shortest completion of the document
// (GrammarMatcher::mask_logits with a budget), so the answer is complete, ending as "stop", rather
// than cut off at the limit.
inline std::function<void(std::span<float>, std::span<const int32_t>)> grammar_processor(
    std::shared_ptr<grammar::CompiledGrammar> compiled, int64_t max_tokens) {
  auto matcher = std::make_shared<grammar::GrammarMatcher>(std::move(compiled));
  return [matcher, max_tokens, fed = size_t{0}](std::span<float> logits,
                                                std::span<const int32_t> generated) mutable {
    for (; fed < generated.size(); ++fed) matcher->accept_token(generated[fed]);
    matcher->mask_logits(logits,
                         static_cast<size_t>(max_tokens - static_cast<int64_t>(generated.size())));
  };
}

// A request's logits processor: its logit_bias added first (OpenAI's order: the bias shapes the
// distribution), then its grammar's mask when it has one (the mask has the last word).
inline std::function<void(std::span<float>, std::span<const int32_t>)> logits_processor(
    std::vector<std::pair<int32_t, float>> logit_bias,
    std::shared_ptr<grammar::CompiledGrammar> grammar, int64_t max_tokens) {
  auto mask = grammar ? grammar_processor(std::move(grammar), max_tokens)
                      : std::function<void(std::span<float>, std::span<const int32_t>)>();
  return [bias = std::move(logit_bias), mask](std::span<float> logits,
                                              std::span<const int32_t> generated) {
    for (const auto& [id, b] : bias) logits[static_cast<size_t>(id)] += b;
    if (mask) mask(logits, generated);
  };
}

class GrammarCache {
 public:
  // The model is loaded: its vocabulary, with the ids that end a completion.
  void set_vocabulary(const Tokenizer& tokenizer, const std::vector<int64_t>& stop_ids) {
    std::vector<int32_t> end_ids(stop_ids.begin(), stop_ids.end());
    std::lock_guard lock(mutex_);
    vocabulary_ = std::make_shared<const grammar::TokenVocabulary>(tokenizer, std::move(end_ids));
    entries_.clear();
  }

  // The constraint of `r`, or nullptr when its output is free. Throws ApiError (400) naming the
  // field whose schema or grammar cannot be compiled.
  std::shared_ptr<grammar::CompiledGrammar> constraint(const CompletionRequest& r) const {
    if (r.tool_choice == ToolChoice::required || r.tool_choice == ToolChoice::named) {
      const std::string param = r.tool_choice == ToolChoice::named ? "tool_choice" : "tools";
      return get(ResponseFormat{ResponseFormat::Kind::json_schema,
                                tool_call_schema(r.tools, r.tool_name), "", param});
    }
    return r.format.constrained() ? get(r.format) : nullptr;
  }

 private:
  std::shared_ptr<grammar::CompiledGrammar> get(const ResponseFormat& f) const {
    const std::string key = std::to_string(static_cast<int>(f.kind)) + ":" +
                            (f.kind == ResponseFormat::Kind::grammar ? f.grammar : f.schema.dump());
    std::shared_ptr<const grammar::TokenVocabulary> vocabulary;
    {
      std::lock_guard lock(mutex_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->first == key) {
          entries_.splice(entries_.begin(), entries_, it);  // most recently used first
          return it->second;
        }
      vocabulary = vocabulary_;
    }
    if (!vocabulary) throw ApiError{503, "the model is still loading", "", "loading"};
    std::shared_ptr<grammar::CompiledGrammar> compiled;
    try {
      compiled = grammar::compile(grammar_of(f), vocabulary);
    } catch (const Error& e) {
      throw ApiError{400, "'" + f.param + "': " + e.what(), f.param, "invalid_value"};
    }
    std::lock_guard lock(mutex_);
    entries_.emplace_front(key, compiled);
    if (entries_.size() > HLLM_SERVE_GRAMMAR_CACHE) entries_.pop_back();
    return compiled;
  }

  static grammar::Grammar grammar_of(const ResponseFormat& f) {
    switch (f.kind) {
      case ResponseFormat::Kind::json_object:
        return grammar::json_object_grammar();
      case ResponseFormat::Kind::json_schema:
        return grammar::json_schema_grammar(f.schema);
      case ResponseFormat::Kind::grammar:
        return grammar::parse_gbnf(f.grammar);
      case ResponseFormat::Kind::text:
        break;
    }
    fail("no grammar for a free-text response");
  }

  mutable std::mutex mutex_;
  std::shared_ptr<const grammar::TokenVocabulary> vocabulary_;
  mutable std::list<std::pair<std::string, std::shared_ptr<grammar::CompiledGrammar>>> entries_;
};

}  // namespace hllm::serve
