// vLLM's /tokenize and /detokenize (the server answers them with and without /v1): the ids a
// prompt or a chat becomes — exactly what /v1/completions and /v1/chat/completions would feed the
// model (same parsing, same encode_prompt) — and the text of a list of ids.
//
//   POST /tokenize    {"model"?, "prompt": "text", "add_special_tokens"?: true (BOS first)}
//                  or {"model"?, "messages": [...], "add_generation_prompt"?: true}
//                     either with "return_token_strs"?: false
//                  -> {"count", "max_model_len", "tokens": [ids], "token_strs"?: ["Ġword", ...]}
//   POST /detokenize  {"model"?, "tokens": [ids]} -> {"prompt": "text"} (special tokens included,
//                     as HF's decode)
//
// Bad input is an ApiError (400 naming the field; 404 for another model's name).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/tokenizer/bpe_load.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::serve {

// What the answers need from the server.
struct TokenizeContext {
  const Tokenizer& tokenizer;
  const std::string& model_name;  // "model", when a request names one, must be this
  int64_t max_model_len = 0;
  // The completion endpoints' own encoding of a parsed request (the one source of prompt ids:
  // chat format, tools, special-token handling). Throws ApiError.
  std::function<std::vector<TokenId>(const CompletionRequest&)> prompt_ids;
};

namespace detail {

// The request body as a JSON object naming no other model. Throws ApiError.
inline nlohmann::json tokenize_body(const TokenizeContext& c, const std::string& text) {
  nlohmann::json body = request_json(text);
  if (!body.is_object()) bad_field("", "the request body must be a JSON object");
  if (const auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) bad_field("model", "'model' must be a string");
    if (*it != c.model_name)
      throw ApiError{404, "The model `" + it->get<std::string>() + "` does not exist.", "model",
                     "model_not_found"};
  }
  return body;
}

inline bool flag(const nlohmann::json& body, const char* name, bool otherwise) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? otherwise : bool_field(*it, name);
}

// HF's convert_ids_to_tokens: an added token's text ("<|eot_id|>"), else the vocabulary's
// byte-level spelling (" world" -> "Ġworld").
inline std::vector<std::string> token_strs(const Tokenizer& tokenizer,
                                           std::span<const TokenId> ids) {
  std::vector<std::string> strs;
  for (const TokenId id : ids) {
    std::string bytes;
    tokenizer.append_bytes(id, bytes);
    const std::optional<TokenId> added = tokenizer.find_added(bytes);
    strs.push_back(added && *added == id ? bytes : hllm::detail::bytes_to_byte_level(bytes));
  }
  return strs;
}

}  // namespace detail

// POST /tokenize: the body's text -> the answer. Throws ApiError.
inline nlohmann::json tokenize_request(const TokenizeContext& c, const std::string& text) {
  using namespace detail;
  const nlohmann::json body = tokenize_body(c, text);
  const bool chat = body.contains("messages") && !body["messages"].is_null();
  if (!chat && (!body.contains("prompt") || body["prompt"].is_null()))
    bad_field("prompt", "'prompt' (a string) or 'messages' (a chat) is required");
  const auto ordered = request_json<nlohmann::ordered_json>(text);  // tools keep the key order
  std::vector<TokenId> ids = c.prompt_ids(parse_completion_request(body, chat, &ordered));
  if (chat && !flag(body, "add_generation_prompt", true)) {
    // encode_prompt ends every chat with the assistant header, encoded apart from the messages
    // (the format's control tokens split the text): its ids are those of an empty chat.
    const std::vector<ChatMessage> none;
    ids.resize(ids.size() - encode_prompt(c.tokenizer, none).size());
  }
  if (!chat && !flag(body, "add_special_tokens", true) && !ids.empty() &&
      ids.front() == c.tokenizer.bos_id())
    ids.erase(ids.begin());  // encode_prompt put BOS first
  nlohmann::json answer = {
      {"count", ids.size()}, {"max_model_len", c.max_model_len}, {"tokens", ids}};
  if (flag(body, "return_token_strs", false)) answer["token_strs"] = token_strs(c.tokenizer, ids);
  return answer;
}

// POST /detokenize: the body's text -> {"prompt": text}. Throws ApiError.
inline nlohmann::json detokenize_request(const TokenizeContext& c, const std::string& text) {
  using namespace detail;
  const nlohmann::json body = tokenize_body(c, text);
  const auto tokens = body.find("tokens");
  if (tokens == body.end() || tokens->is_null()) bad_field("tokens", "'tokens' is required");
  if (!tokens->is_array()) bad_field("tokens", "'tokens' must be an array of token ids");
  std::vector<TokenId> ids;
  for (size_t i = 0; i < tokens->size(); ++i) {
    const nlohmann::json& id = (*tokens)[i];
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<TokenId>::max())
      bad_field("tokens", "'tokens[" + std::to_string(i) + "]' must be a token id (got " +
                              describe_json(id) + ")");
    ids.push_back(id.get<TokenId>());
  }
  try {
    return {{"prompt", c.tokenizer.decode(ids)}};
  } catch (const Error& error) {  // an id outside the vocabulary
    bad_field("tokens", std::string("'tokens': ") + error.what());
  }
}

}  // namespace hllm::serve
