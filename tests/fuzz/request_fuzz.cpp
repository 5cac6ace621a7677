// libFuzzer harness: the body of a POST /v1/chat/completions or /v1/completions, handled as the
// server does before it queues a request: serve::request_json of the bytes, as json and as
// ordered_json (invalid or too deeply nested JSON is the server's 400 invalid_json), then
// hllm::serve::parse_completion_request for both endpoints (a bad field is a thrown ApiError, 400),
// then the prompt ids (tools rendered into the chat when offered), with special-token spellings in
// content as plain text (the default) and as control tokens (--allow-special-tokens-in-content),
// against the tiny tokenizer of corpus/tokenizer_json/tiny.json (it has the Llama-3 chat tokens).
// ApiError and hllm::Error are the expected failures (nlohmann exceptions out of
// parse_completion_request: see fuzz_util.hpp); an accepted request must obey the limits the
// parser promises.
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
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
  for (const serve::ApiMessage& m : r.messages)
    check(m.role == "system" || m.role == "user" || m.role == "assistant" || m.role == "tool",
          "role", m.role);
  check(r.n >= 1 && r.n <= HLLM_SERVE_MAX_CHOICES, "n range");
  check(r.logprobs >= -1 && r.logprobs <= 20, "logprobs range");
  for (const auto& [id, bias] : r.logit_bias)
    check(id >= 0 && bias >= -100 && bias <= 100, "logit_bias range");
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

  // The chat as the prompt renders it: tools need a user message to go with (else a 400).
  std::vector<hllm::ChatMessage> messages;
  if (chat) {
    try {
      messages =
          serve::chat_messages(r.messages, r.tools, r.tool_choice != serve::ToolChoice::none);
    } catch (const serve::ApiError& e) {
      check(e.status == 400 && !e.message.empty(), "chat_messages: an ApiError that is not a 400");
      return;
    }
  }
  // The prompt ids as the server makes them; hllm::Error (invalid UTF-8 in a string) is expected.
  const hllm::Tokenizer& tok = tiny_tokenizer();
  for (const auto mode : {hllm::SpecialTokens::text, hllm::SpecialTokens::control}) {
    hllm::fuzz::expect_only_hllm_errors("encode_prompt", [&] {
      const std::vector<hllm::TokenId> ids = chat ? hllm::encode_prompt(tok, messages, mode)
                                                  : hllm::encode_prompt(tok, r.prompt, mode);
      for (const hllm::TokenId id : ids)
        check(id >= 0 && static_cast<size_t>(id) < tok.vocab_size(), "prompt id out of range");
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json body = serve::parse_json(text);
  const nlohmann::ordered_json ordered = serve::parse_json<nlohmann::ordered_json>(text);
  if (body.is_discarded() || ordered.is_discarded()) return 0;  // 400 invalid_json
  for (const bool chat : {true, false}) {
    try {
      check_request(serve::parse_completion_request(body, chat, &ordered), chat);
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
