// libFuzzer harness: the body of a POST /v1/chat/completions or /v1/completions, handled as the
// server does before it queues a request: nlohmann::json::parse of the bytes (a parse error is the
// server's 400 invalid_json), then hllm::serve::parse_completion_request for both endpoints (a bad
// field is a thrown ApiError, 400), then the prompt ids, with special-token spellings in content as
// plain text (the default) and as control tokens (--allow-special-tokens-in-content), against the
// tiny tokenizer of corpus/tokenizer_json/tiny.json (it has the Llama-3 chat tokens). ApiError,
// nlohmann's parse_error and hllm::Error are the expected failures (other nlohmann exceptions out
// of parse_completion_request: see fuzz_util.hpp); an accepted request must obey the limits the
// parser promises.
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fuzz_util.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

#ifndef HLLM_FUZZ_TINY_TOKENIZER
#error "HLLM_FUZZ_TINY_TOKENIZER must name tests/fuzz/corpus/tokenizer_json/tiny.json"
#endif

using hllm::fuzz::check;
namespace serve = hllm::serve;

namespace {

const hllm::Tokenizer& tiny_tokenizer() {
  static const hllm::Tokenizer tok = [] {
    std::ifstream in(HLLM_FUZZ_TINY_TOKENIZER, std::ios::binary);
    const std::string text(std::istreambuf_iterator<char>(in), {});
    return hllm::tokenizer_from_json(text, HLLM_FUZZ_TINY_TOKENIZER);
  }();
  return tok;
}

void check_request(const serve::CompletionRequest& r, bool chat) {
  check(r.chat == chat, "chat flag");
  if (chat) check(!r.messages.empty(), "accepted a chat request with no messages");
  for (const hllm::ChatMessage& m : r.messages)
    check(m.role == "system" || m.role == "user" || m.role == "assistant", "role", m.role);
  check(r.stop.size() <= HLLM_SERVE_MAX_STOP_STRINGS, "too many stop strings");
  for (const std::string& s : r.stop)
    check(!s.empty() && s.size() <= HLLM_SERVE_MAX_STOP_BYTES, "stop string size");
  if (r.max_tokens) check(*r.max_tokens >= 1, "max_tokens < 1");
  const serve::SamplingOverrides& s = r.sampling;
  if (s.temperature) check(*s.temperature >= 0 && *s.temperature <= 100, "temperature range");
  if (s.top_p) check(*s.top_p > 0 && *s.top_p <= 1, "top_p range");
  if (s.top_k) check(*s.top_k >= 0, "top_k < 0");
  if (s.min_p) check(*s.min_p >= 0 && *s.min_p <= 1, "min_p range");
  if (s.repetition_penalty)
    check(*s.repetition_penalty > 0 && *s.repetition_penalty <= 100, "repetition_penalty range");
  (void)s.over(hllm::SamplingParams{});

  // The prompt ids as the server makes them; hllm::Error (invalid UTF-8 in a string) is expected.
  const hllm::Tokenizer& tok = tiny_tokenizer();
  for (const auto mode : {hllm::SpecialTokens::text, hllm::SpecialTokens::control}) {
    hllm::fuzz::expect_only_hllm_errors("encode_prompt", [&] {
      const std::vector<hllm::TokenId> ids = chat ? hllm::encode_prompt(tok, r.messages, mode)
                                                  : hllm::encode_prompt(tok, r.prompt, mode);
      for (const hllm::TokenId id : ids)
        check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "prompt id out of range");
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json body;
  try {
    body = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // the server answers 400 invalid_json
  }
  for (const bool chat : {true, false}) {
    try {
      check_request(serve::parse_completion_request(body, chat), chat);
    } catch (const serve::ApiError& e) {
      check(e.status == 400, "an ApiError that is not a 400");
      check(!e.message.empty(), "an ApiError without a message");
      (void)e.to_json().dump();  // the error body the client gets
    } catch (const nlohmann::json::exception& e) {
      hllm::fuzz::json_exception_escaped("parse_completion_request", e);
    } catch (const std::exception& e) {
      hllm::fuzz::violated("parse_completion_request threw something other than ApiError",
                           std::string(typeid(e).name()) + ": " + e.what());
    }
  }
  return 0;
}
