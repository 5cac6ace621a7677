// The OpenAI request pieces behind tools, structured outputs and logprobs: the tool prompt in
// Llama-3.1's format (JSON written as Python's json.dumps writes it: the expected strings below were
// printed by Python 3's json.dumps(..., ensure_ascii=False[, indent=4])), reading calls back out of
// generated text, the per-choice output (hold-back of would-be calls, stop strings), and the 400s
// that name the offending field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "hllm/serve/choice_output.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/serve/tool_output.hpp"
#include "hllm/tokenizer/tokenizer_load.hpp"

namespace {

using hllm::serve::ApiError;
using nlohmann::json;
using nlohmann::ordered_json;

const hllm::Tokenizer& tokenizer() {
  static const hllm::Tokenizer tok = hllm::load_tokenizer(HLLM_TOKENIZER_JSON);
  return tok;
}

// The `param` of the ApiError that parsing `body` throws ("<none>" when it does not throw).
std::string error_param(const json& body, bool chat = true) {
  try {
    hllm::serve::parse_completion_request(body, chat);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_FALSE(e.message.empty());
    return e.param;
  }
  return "<none>";
}

const char* const WEATHER_TOOL = R"({"type": "function", "function": {"name": "get_weather",
  "description": "Wetter in der Stadt – heute", "parameters": {"type": "object", "properties":
  {"city": {"type": "string"}, "days": {"type": "integer", "enum": [1, 2]}}, "required": ["city"],
  "additionalProperties": false}}})";

TEST(PythonJson, IndentedAsJsonDumpsIndent4InTheClientsKeyOrder) {
  const std::string python =
      "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_weather\",\n  "
      "      \"description\": \"Wetter in der Stadt \u2013 heute\",\n        \"parameters\": {\n "
      "           \"type\": \"object\",\n            \"properties\": {\n                "
      "\"city\": {\n                    \"type\": \"string\"\n                },\n              "
      "  \"days\": {\n                    \"type\": \"integer\",\n                    \"enum\": "
      "[\n                        1,\n                        2\n                    ]\n       "
      "         }\n            },\n            \"required\": [\n                \"city\"\n     "
      "       ],\n            \"additionalProperties\": false\n        }\n    }\n}";
  EXPECT_EQ(hllm::serve::python_json(ordered_json::parse(WEATHER_TOOL), 4), python);
}

TEST(PythonJson, OneLineWithPythonsSeparators) {
  const auto v = ordered_json::parse(R"({"a": [1, 2.5, null, true], "b": {}, "c": [],
                                         "d": "x\"y\n\u00e9\u0001"})");
  EXPECT_EQ(hllm::serve::python_json(v),
            "{\"a\": [1, 2.5, null, true], \"b\": {}, \"c\": [], "
            "\"d\": \"x\\\"y\\n\u00e9\\u0001\"}");
}

TEST(ToolPrompt, ToolsGoIntoTheFirstUserMessageCallsAndResultsIntoTheHistory) {
  const std::string text = std::string(R"({"messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "user", "content": "  Weather in Paris? "},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 1}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "21 C"}],
    "tools": [)") + WEATHER_TOOL +
                           "]}";
  const json body = json::parse(text);
  const ordered_json ordered = ordered_json::parse(text);
  const auto r = hllm::serve::parse_completion_request(body, true, &ordered);
  EXPECT_EQ(r.tool_choice, hllm::serve::ToolChoice::automatic);
  const auto messages = hllm::serve::chat_messages(r.messages, r.tools, true);
  ASSERT_EQ(messages.size(), 4u);
  EXPECT_EQ(messages[0].role, "system");
  EXPECT_EQ(messages[0].content, "Be brief.");
  EXPECT_EQ(messages[1].role, "user");
  EXPECT_EQ(messages[1].content,
            "Given the following functions, please respond with a JSON for a function call with "
            "its proper arguments that best answers the given prompt.\n\nRespond in the format "
            "{\"name\": function name, \"parameters\": dictionary of argument name and its "
            "value}.Do not use variables.\n\n" +
                hllm::serve::python_json(ordered_json::parse(WEATHER_TOOL), 4) +
                "\n\nWeather in Paris?");
  EXPECT_EQ(messages[2].role, "assistant");
  EXPECT_EQ(messages[2].content,
            R"({"name": "get_weather", "parameters": {"city": "Paris", "days": 1}})");
  EXPECT_EQ(messages[3].role, "ipython");
  EXPECT_EQ(messages[3].content, "21 C");
  // tool_choice none: the tools are not offered.
  EXPECT_EQ(hllm::serve::chat_messages(r.messages, r.tools, false)[1].content,
            "  Weather in Paris? ");
}

TEST(ToolOutput, ACallIsExactlyOneObjectNamingATool) {
  const auto tools = hllm::serve::parse_tools(json::parse(std::string("[") + WEATHER_TOOL + "]"));
  const auto call = hllm::serve::parse_tool_call(
      R"( {"name": "get_weather", "parameters": {"city": "Oslo"}} )", tools);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->name, "get_weather");
  EXPECT_EQ(json::parse(call->arguments), json::parse(R"({"city": "Oslo"})"));
  EXPECT_EQ(call->id.rfind("call_", 0), 0u);
  EXPECT_EQ(call->id.size(), 29u);
  EXPECT_TRUE(hllm::serve::parse_tool_call(R"({"name": "get_weather", "arguments": {}})", tools));
  for (const char* text : {R"({"name": "other", "parameters": {}})",
                           R"({"name": "get_weather", "parameters": {}, "x": 1})",
                           R"({"name": "get_weather", "parameters": "{}"})",
                           R"([{"name": "get_weather", "parameters": {}}])",
                           R"({"name": "get_weather", "parameters": {})", "Sunny."})
    EXPECT_FALSE(hllm::serve::parse_tool_call(text, tools)) << text;
  EXPECT_TRUE(hllm::serve::may_become_tool_call(""));
  EXPECT_TRUE(hllm::serve::may_become_tool_call(" \n{\"na"));
  EXPECT_FALSE(hllm::serve::may_become_tool_call(" Sure"));
}

TEST(ToolOutput, TheForcedCallSchemaNamesTheFunctionAndItsParameters) {
  const auto tools = hllm::serve::parse_tools(json::parse(
      std::string("[") + WEATHER_TOOL + R"(, {"type": "function", "function": {"name": "now"}}])"));
  const ordered_json one = hllm::serve::tool_call_schema(tools, "get_weather");
  EXPECT_EQ(one["properties"]["name"], ordered_json::parse(R"({"const": "get_weather"})"));
  EXPECT_EQ(one["properties"]["parameters"], tools[0].parameters);
  EXPECT_EQ(one["required"], ordered_json::parse(R"(["name", "parameters"])"));
  const ordered_json any = hllm::serve::tool_call_schema(tools, "");
  ASSERT_EQ(any["anyOf"].size(), 2u);
  EXPECT_EQ(any["anyOf"][1]["properties"]["parameters"]["type"], "object");  // none given
}

TEST(ChoiceOutput, AutoToolsHoldBackAWouldBeCallAndLetTextThrough) {
  const auto tools = hllm::serve::parse_tools(json::parse(std::string("[") + WEATHER_TOOL + "]"));
  const hllm::serve::TokenNames names{&tokenizer()};
  const auto run = [&](const std::string& text, std::string& streamed) {
    hllm::serve::ChoiceOutput out(names, true, {}, hllm::serve::ToolMode::automatic, &tools);
    for (int32_t id : tokenizer().encode(text, false)) streamed += out.push(id, nullptr);
    streamed += out.finish();
    return out.tool_call();
  };
  std::string streamed;
  const auto call = run(R"({"name": "get_weather", "parameters": {"city": "Rome"}})", streamed);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(streamed, "");
  streamed.clear();
  EXPECT_FALSE(run("It is sunny.", streamed));
  EXPECT_EQ(streamed, "It is sunny.");
  streamed.clear();
  EXPECT_FALSE(run(R"({"name": "unknown", "parameters": {}})", streamed));
  EXPECT_EQ(streamed, R"({"name": "unknown", "parameters": {}})");  // text after all, whole
}

TEST(ChoiceOutput, CompletionLogprobsAreFourParallelArrays) {
  hllm::serve::ChoiceOutput out({&tokenizer(), /*as_ids=*/true}, false, {"STOP"},
                                hllm::serve::ToolMode::none, nullptr);
  out.want_logprobs();
  out.add_prompt_logprob(128000, nullptr);
  const hllm::TokenLogprob lp{791, -0.5f, {{791, -0.5f}, {12, -1.25f}}};
  out.push(791, &lp);
  const json j = out.take_logprobs();
  EXPECT_EQ(j["tokens"], json::parse(R"(["token_id:128000", "token_id:791"])"));
  EXPECT_EQ(j["token_logprobs"], json::parse("[null, -0.5]"));
  EXPECT_EQ(j["top_logprobs"][0], nullptr);
  EXPECT_EQ(j["top_logprobs"][1], json::parse(R"({"token_id:791": -0.5, "token_id:12": -1.25})"));
  EXPECT_EQ(j["text_offset"].size(), 2u);
}

TEST(RequestErrors, NameTheField) {
  const json user = json::array({{{"role", "user"}, {"content", "hi"}}});
  const auto chat = [&](json extra) {
    json body = {{"messages", user}};
    body.update(extra);
    return body;
  };
  EXPECT_EQ(error_param(chat({{"messages", {{{"role", "tool"}, {"content", "x"}}}}})),
            "messages[0].tool_call_id");
  EXPECT_EQ(
      error_param(chat(
          {{"messages", {{{"role", "user"}, {"content", "x"}, {"tool_calls", json::array()}}}}})),
      "messages[0].tool_calls");
  EXPECT_EQ(error_param(chat({{"tool_choice", "required"}})), "tool_choice");
  EXPECT_EQ(
      error_param(chat({{"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
                        {"tool_choice", {{"type", "function"}, {"function", {{"name", "g"}}}}}})),
      "tool_choice");
  EXPECT_EQ(error_param(chat({{"functions", json::array()}})), "functions");
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "xml"}}}})), "response_format.type");
  EXPECT_EQ(error_param(chat({{"response_format",
                               {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}}}})),
            "response_format.json_schema.schema");
  EXPECT_EQ(error_param(chat({{"response_format", {{"type", "json_object"}}},
                              {"guided_grammar", "root ::= \"a\""}})),
            "guided_grammar");
  EXPECT_EQ(error_param(chat({{"top_logprobs", 2}})), "top_logprobs");
  EXPECT_EQ(error_param(chat({{"logprobs", true}, {"top_logprobs", 21}})), "top_logprobs");
  EXPECT_EQ(error_param(chat({{"echo", true}})), "echo");
  EXPECT_EQ(error_param(chat({{"n", 17}})), "n");
  EXPECT_EQ(error_param({{"prompt", "x"}, {"logprobs", true}}, false), "logprobs");
  EXPECT_EQ(error_param({{"prompt", "x"}, {"logprobs", 1}, {"echo", true}, {"n", 2}}, false), "n");
  EXPECT_EQ(error_param({{"prompt", {1, -2}}}, false), "prompt");
  EXPECT_EQ(error_param({{"prompt", {"a", "b"}}}, false), "prompt");
  EXPECT_EQ(error_param(chat({{"logit_bias", {{"abc", 1}}}})), "logit_bias");
  EXPECT_EQ(error_param(chat({{"logit_bias", {{"12", 101}}}})), "logit_bias");
  EXPECT_EQ(error_param(chat({{"logit_bias", json::array({1})}})), "logit_bias");
  for (const char* name : {"audio", "prediction", "reasoning_effort", "web_search_options"})
    EXPECT_EQ(error_param(chat({{name, {{"x", 1}}}})), name);
  EXPECT_EQ(error_param(chat({{"modalities", {"text", "audio"}}})), "modalities");
  EXPECT_EQ(error_param(chat({{"store", true}})), "store");
  EXPECT_EQ(error_param({{"prompt", "x"}, {"suffix", "y"}}, false), "suffix");
  EXPECT_EQ(
      error_param(chat({{"modalities", {"text"}}, {"store", false}, {"metadata", json::object()}})),
      "<none>");
  const auto r = hllm::serve::parse_completion_request(
      {{"messages", user}, {"logit_bias", {{"15", -100}, {"7", 2.5}}}}, true);
  EXPECT_EQ(r.logit_bias, (std::vector<std::pair<int32_t, float>>{{15, -100.0f}, {7, 2.5f}}));
}

TEST(RequestJson, DeepNestingIsA400NotAStackOverflow) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  try {
    hllm::serve::request_json(deep);
    ADD_FAILURE() << "no error";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 400);
    EXPECT_NE(e.message.find("deeper than"), std::string::npos) << e.message;
  }
  EXPECT_TRUE(hllm::serve::parse_json<ordered_json>(deep).is_discarded());
  const std::string fine = std::string(100, '[') + std::string(100, ']');
  EXPECT_FALSE(hllm::serve::request_json(fine).is_discarded());
  EXPECT_EQ(error_param({{"messages", {{{"role", "user"}, {"content", "x"}}}},
                         {"ignore_eos", true},
                         {"response_format", {{"type", "json_object"}}}}),
            "ignore_eos");
}

TEST(RequestFields, LogprobsPromptIdsAndChoices) {
  auto r = hllm::serve::parse_completion_request(
      {{"prompt", {{128000, 9906}}}, {"logprobs", 3}, {"echo", true}}, false);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{128000, 9906}));
  EXPECT_EQ(r.logprobs, 3);
  EXPECT_TRUE(r.echo);
  r = hllm::serve::parse_completion_request(
      {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"logprobs", true}, {"n", 4}}, true);
  EXPECT_EQ(r.logprobs, 0);
  EXPECT_EQ(r.n, 4);
  r = hllm::serve::parse_completion_request(
      {{"messages", {{{"role", "user"}, {"content", "x"}}}},
       {"response_format",
        {{"type", "json_schema"},
         {"json_schema", {{"name", "x"}, {"schema", {{"type", "object"}}}}}}}},
      true);
  EXPECT_EQ(r.format.kind, hllm::serve::ResponseFormat::Kind::json_schema);
  EXPECT_EQ(r.format.schema, ordered_json::parse(R"({"type": "object"})"));
  EXPECT_EQ(r.format.param, "response_format.json_schema.schema");
}

}  // namespace
