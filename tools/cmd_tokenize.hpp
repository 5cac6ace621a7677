// `hllm tokenize --tokenizer PATH (--text TEXT | --jsonl FILE)` and
// `hllm detokenize --tokenizer PATH (--ids 1,2,3 | --jsonl FILE)`.
// PATH is a tokenizer.json, a model folder or a GGUF file. tokenize prints a JSON array of ids per input; a
// JSONL line holds "messages" (rendered with the Llama-3 chat format, BOS from the folder's
// tokenizer_config.json; "add_generation_prompt" defaults to true) or else "text" (added tokens
// in it are matched). detokenize prints the text for
// --ids, and one JSON string per line (specials included) for JSONL lines holding "ids".
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_common.hpp"
#include "hllm/core/error.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/gguf_tokenizer.hpp"
#include "hllm/tokenizer/tokenizer.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace hllm::tools {

// Calls on_line(json, where) for each non-blank line of a JSONL file; `where` is "FILE:LINE".
template <typename OnLine>
void for_each_jsonl(const std::string& path, OnLine&& on_line) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open file");
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = detail::str_cat(path, ":", number);
    nlohmann::json value;
    try {
      value = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": invalid JSON: ", e.what());
    }
    if (!value.is_object()) fail(where, ": expected a JSON object");
    on_line(value, where);
  }
}

inline std::vector<TokenId> encode_jsonl_line(const Tokenizer& tok, const nlohmann::json& line,
                                              const std::string& where) {
  const auto messages = line.find("messages");
  if (messages == line.end()) {
    const auto text = line.find("text");
    if (text == line.end()) fail(where, ": expected \"text\" or \"messages\"");
    if (!text->is_string()) fail(where, ": \"text\" must be a string");
    return tok.encode(text->get<std::string>());
  }
  if (!messages->is_array()) fail(where, ": \"messages\" must be an array");
  std::vector<ChatMessage> chat;
  for (const auto& m : *messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      fail(where, ": each message needs string \"role\" and \"content\"");
    }
    chat.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  bool add_generation_prompt = true;
  if (const auto it = line.find("add_generation_prompt"); it != line.end()) {
    if (!it->is_boolean()) fail(where, ": \"add_generation_prompt\" must be true or false");
    add_generation_prompt = it->get<bool>();
  }
  return encode_chat(tok, chat, add_generation_prompt);
}

// Registers `tokenize` and its inverse `detokenize`.
inline void add_tokenize_command(CLI::App& app) {
  struct Options {
    std::string tokenizer;
    std::string text;
    std::string ids;
    std::string jsonl;
  };
  auto options = std::make_shared<Options>();

  CLI::App* tokenize = app.add_subcommand("tokenize", "Print the token ids of a text (JSON array)");
  tokenize
      ->add_option("--tokenizer", options->tokenizer,
                   "tokenizer.json, a model folder or a .gguf file")
      ->required();
  auto* text = tokenize->add_option("--text", options->text, "text to encode (specials matched)");
  auto* jsonl = tokenize->add_option("--jsonl", options->jsonl,
                                     "JSONL file: lines with \"text\" or \"messages\"");
  text->excludes(jsonl);
  tokenize->callback([options, text, jsonl] {
    if (text->count() == 0 && jsonl->count() == 0) fail("tokenize: give --text or --jsonl");
    const Tokenizer tok = load_tokenizer_from(options->tokenizer);
    if (jsonl->count() == 0) {
      std::printf("%s\n", nlohmann::json(tok.encode(options->text)).dump().c_str());
      return;
    }
    for_each_jsonl(options->jsonl, [&](const nlohmann::json& line, const std::string& where) {
      std::printf("%s\n", nlohmann::json(encode_jsonl_line(tok, line, where)).dump().c_str());
    });
  });

  CLI::App* detokenize = app.add_subcommand("detokenize", "Print the text of token ids");
  detokenize
      ->add_option("--tokenizer", options->tokenizer,
                   "tokenizer.json, a model folder or a .gguf file")
      ->required();
  auto* ids = detokenize->add_option("--ids", options->ids, "comma-separated token ids");
  auto* ids_jsonl =
      detokenize->add_option("--jsonl", options->jsonl, "JSONL file: lines with \"ids\"");
  ids->excludes(ids_jsonl);
  detokenize->callback([options, ids, ids_jsonl] {
    if (ids->count() == 0 && ids_jsonl->count() == 0) fail("detokenize: give --ids or --jsonl");
    const Tokenizer tok = load_tokenizer_from(options->tokenizer);
    if (ids_jsonl->count() == 0) {
      std::printf("%s\n", tok.decode(parse_id_list(options->ids)).c_str());
      return;
    }
    for_each_jsonl(options->jsonl, [&](const nlohmann::json& line, const std::string& where) {
      const auto it = line.find("ids");
      if (it == line.end() || !it->is_array()) fail(where, ": expected \"ids\": [...]");
      std::vector<TokenId> ids;
      for (const auto& id : *it) {
        if (!id.is_number_integer()) fail(where, ": \"ids\" must hold integers");
        const int64_t value = id.get<int64_t>();
        if (value < 0 || value >= static_cast<int64_t>(tok.vocab_size())) {
          fail(where, ": token id ", value, " is not in the vocabulary (size ", tok.vocab_size(),
               ")");
        }
        ids.push_back(static_cast<TokenId>(value));
      }
      std::printf("%s\n", nlohmann::json(tok.decode(ids)).dump().c_str());
    });
  });
}

}  // namespace hllm::tools
