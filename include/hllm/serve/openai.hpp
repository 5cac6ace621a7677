// An OpenAI-compatible HTTP server (serve/http/server.hpp) over the continuous-batching Engine: what
// `hllm serve` runs, a drop-in for vLLM behind Open WebUI or any OpenAI SDK.
//
//   GET  /health               200 {"status":"ok", kv blocks, running, waiting, prefix cache};
//                              503 while loading
//   GET  /metrics              the same numbers as Prometheus text (serve/metrics.hpp)
//   GET  /v1/models            the one served model (answers while the weights still load)
//   POST /v1/chat/completions  messages -> Llama-3 chat format; stream (SSE) or one JSON; tools,
//                              response_format (grammar-constrained), logprobs, n choices
//   POST /v1/completions       prompt -> BOS + text (or token ids); echo, logprobs
//   POST /v1/responses         OpenAI's Responses API over the same engine (serve/responses_api.hpp);
//   GET, DELETE /v1/responses/{id}   the ones kept in memory (serve/response_store.hpp)
//   POST /v1/tokenize, /v1/detokenize (also without /v1)  vLLM's: the prompt's ids, ids' text
//                              (serve/tokenize_api.hpp)
//   OPTIONS (any path)         CORS preflights, when --allowed-origins lists origins (serve/cors.hpp)
//
// Threads: the HTTP layer's event loop answers the quick routes itself; completions and
// tokenization run on its worker threads (the "handler"). A completion is submitted to the engine;
// the engine thread's on_token only pushes the id into the request's Channel (mutex + condition
// variable) and never touches the network. The handler thread pulls ids, detokenizes
// (StreamDecoder), applies stop strings (StopTextFilter) and writes. The client closing its
// connection, or a write that fails, aborts the engine requests, so their KV blocks come back at
// once; while nothing is written for a second, a heartbeat (an SSE comment, or a
// JSON-insignificant space) keeps proxies and clients' read timeouts from giving up.
//
// The library never prints; the runner (tools/cmd_serve.hpp) does.
#pragma once

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/engine/engine.hpp"
#include "hllm/serve/choice_output.hpp"
#include "hllm/serve/completion_run.hpp"
#include "hllm/serve/completions_writer.hpp"
#include "hllm/serve/constrained.hpp"
#include "hllm/serve/cors.hpp"
#include "hllm/serve/http/router.hpp"
#include "hllm/serve/http/server.hpp"
#include "hllm/serve/metrics.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/serve/responses_api.hpp"
#include "hllm/serve/stop_text.hpp"
#include "hllm/serve/tokenize_api.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::serve {

struct ServeOptions {
  std::string model_name = "hllm";  // the id in /v1/models and in every response
  std::string api_key;  // "" = open; else all but /health, /metrics and CORS preflights need it
  // Connection limits, deadlines and the body limit (413 above it, decoded size). Its `workers`
  // are the completions answered at once: 0 means max(64, 2 × max_num_seqs + 16).
  http::HttpLimits http{.workers = 0};
  int64_t max_model_len = 0;  // reported by /v1/models until the engine runs
  // How special-token spellings in message content and completion prompts are read (both endpoints
  // alike): plain text unless the operator opts in (tokenizer/prompt.hpp).
  SpecialTokens special_tokens_in_content = SpecialTokens::text;
  CorsPolicy cors;  // which browser origins may call the API (none: no CORS headers)
};

// What the server needs once the model is loaded (all owned by the caller, outliving the server).
struct ServedModel {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  std::vector<int64_t> stop_ids;  // eos ids (config + generation_config) and <|eot_id|>
  SamplingParams defaults;        // generation_config.json over the library's; seed: per request
};

namespace detail {

inline std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* const HEX = "0123456789abcdef";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += HEX[rng() % 16];
  return id;
}

inline std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// The credentials of an "Authorization: Bearer <token>" header: the scheme is case-insensitive and
// may be followed by several spaces (RFC 7235 §2.1, RFC 6750 §2.1); "" when the header is not a
// bearer token.
inline std::string bearer_token(std::string_view header) {
  constexpr std::string_view SCHEME = "bearer";
  if (header.size() <= SCHEME.size() || header[SCHEME.size()] != ' ') return "";
  for (size_t i = 0; i < SCHEME.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) != SCHEME[i]) return "";
  header.remove_prefix(SCHEME.size());
  while (!header.empty() && header.front() == ' ') header.remove_prefix(1);
  return std::string(header);
}

// A request's cache_salt as the engine's 64-bit salt: FNV-1a over its bytes, never 0 (0 is the
// shared cache). Two different salts colliding would only let them share blocks, as with no salt.
inline uint64_t salt_of(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  return h == 0 ? 1 : h;
}

// Compares in time independent of where the strings differ (the length may leak; the key may not).
inline bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace detail

class OpenAiServer {
 public:
  explicit OpenAiServer(ServeOptions options) : options_(std::move(options)) { routes(); }
  ~OpenAiServer() { stop(); }
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  // Binds (port 0: any free port). Returns the port; throws hllm::Error when it cannot.
  int bind(const std::string& host, int port, int64_t max_num_seqs) {
    http::HttpLimits limits = options_.http;
    if (limits.workers <= 0)
      limits.workers = static_cast<int>(std::max<int64_t>(64, 2 * max_num_seqs + 16));
    http_ = std::make_unique<http::HttpServer>(limits, application());
    return http_->bind(host, port);
  }

  // Serves until stop() (blocking; run it on its own thread).
  void listen() {
    if (http_) http_->run();
  }

  // The model is loaded: completions are served from now on.
  void set_model(ServedModel model) {
    model_storage_ = std::make_unique<ServedModel>(std::move(model));
    request_metrics_ =
        std::make_unique<RequestMetrics>(model_storage_->engine->options().max_model_len);
    grammars_.set_vocabulary(*model_storage_->tokenizer, model_storage_->stop_ids);
    model_.store(model_storage_.get());
  }

  // New completions get 503 from now on; streams in flight are aborted. Call before the engine
  // stops, then stop().
  void begin_shutdown() { stopping_ = true; }

  // Stops listening, closes idle connections and waits for the handler threads.
  void stop() {
    stopping_ = true;
    if (http_) http_->stop();
  }

  bool running() const { return http_ && http_->running(); }

 private:
  using Request = http::Request;
  using Response = http::Response;

  // Responses are never compressed: a compressor would hold back the heartbeat spaces of a
  // non-streaming response (serve_openai checks a gzip-accepting client gets plain JSON).
  static constexpr const char* JSON_TYPE = "application/json; charset=utf-8";

  static void reply(Response& res, int status, const nlohmann::json& body) {
    res.status = status;
    res.set_content(detail::dump(body), JSON_TYPE);
  }
  static void reply(Response& res, const ApiError& e) { reply(res, e.status, e.to_json()); }

  // The HTTP layer's view of this server: CORS preflights and the key first, then the routes;
  // every answer to an allowed origin carries the CORS headers (errors, 401s and streams too).
  http::Application application() {
    http::Application app;
    app.runs_on_worker = [this](Request& req) {
      const http::Router::Route* route = router_.find(req);
      return route != nullptr && route->run_on == http::RunOn::worker;
    };
    app.handle = [this](Request& req, Response& res) {
      handle(req, res);
      add_cors_headers(req, res);
    };
    app.error = [this](const Request& req, int status, const std::string& message, Response& res) {
      reply(res, {status, message, "", status == 503 ? "too_many_connections" : ""});
      add_cors_headers(req, res);
    };
    return app;
  }

  void handle(Request& req, Response& res) const {
    // CORS preflights come before the key: browsers never send credentials on them.
    const std::string origin = req.header("Origin");
    if (const auto preflight = cors_preflight(options_.cors, req.method, origin,
                                              req.header("Access-Control-Request-Method"),
                                              req.header("Access-Control-Request-Headers"))) {
      if (preflight->status == 403)
        reply(res, {403, "the origin " + origin + " is not allowed (--allowed-origins)", "",
                    "origin_not_allowed"});
      res.status = preflight->status;
      for (const auto& [name, value] : preflight->headers) res.set_header(name, value);
      return;
    }
    if (!options_.api_key.empty() && req.path != "/health" && req.path != "/metrics") {
      const std::string token = detail::bearer_token(req.header("Authorization"));
      if (token.empty() || !detail::constant_time_equal(token, options_.api_key))
        return reply(res, {401, "missing or wrong API key (send 'Authorization: Bearer <key>')", "",
                           "invalid_api_key"});
    }
    const http::Router::Route* route = router_.find(req, /*fill_matches=*/true);
    if (route == nullptr)
      return reply(res, {404, "no route " + req.method + " " + req.path, "", ""});
    route->handler(req, res);
  }

  void add_cors_headers(const Request& req, Response& res) const {
    if (res.has_header("Access-Control-Allow-Origin")) return;  // a preflight's
    for (const auto& [name, value] : cors_response_headers(options_.cors, req.header("Origin")))
      res.set_header(name, value);
  }

  void routes() {
    using http::RunOn;
    router_.add("GET", "/health", [this](Request&, Response& res) {
      const ServedModel* m = model_.load();
      if (m == nullptr) return reply(res, 503, {{"status", "loading"}});
      const EngineStats s = m->engine->stats();
      reply(res, 200,
            {{"status", "ok"},
             {"kv_blocks_total", s.kv_blocks_total},
             {"kv_blocks_free", s.kv_blocks_free},
             {"kv_blocks_cached", s.kv_blocks_cached},
             {"running", s.running},
             {"waiting", s.waiting},
             {"preemptions", s.preemptions},
             {"prefix_caching", s.prefix_caching},
             {"prefix_cache_hit_rate", s.prefix_hit_rate()}});
    });
    router_.add("GET", "/metrics", [this](Request&, Response& res) {
      const ServedModel* m = model_.load();
      if (m == nullptr) return reply(res, 503, {{"status", "loading"}});
      res.set_content(prometheus_metrics(m->engine->stats(), options_.model_name) +
                          request_metrics_->prometheus(options_.model_name),
                      "text/plain; version=0.0.4; charset=utf-8");
    });
    router_.add("GET", "/v1/models", [this](Request&, Response& res) {
      reply(res, 200, {{"object", "list"}, {"data", nlohmann::json::array({model_card()})}});
    });
    router_.add("GET", R"(/v1/models/(.+))", [this](Request& req, Response& res) {
      if (req.matches[1] != options_.model_name)
        return reply(res, {404, "The model `" + req.matches[1] + "` does not exist.", "model",
                           "model_not_found"});
      reply(res, 200, model_card());
    });
    router_.add(
        "POST", "/v1/chat/completions",
        [this](Request& req, Response& res) { completion(req, res, true); }, RunOn::worker);
    router_.add(
        "POST", "/v1/completions",
        [this](Request& req, Response& res) { completion(req, res, false); }, RunOn::worker);
    router_.add(
        "POST", "/v1/responses", [this](Request& req, Response& res) { responses(req, res); },
        RunOn::worker);
    router_.add("GET", R"(/v1/responses/([^/]+))", [this](Request& req, Response& res) {
      if (const auto stored = responses_.response(req.matches[1])) return reply(res, 200, *stored);
      reply(res, {404, "no stored response '" + req.matches[1] + "'", "response_id", "not_found"});
    });
    router_.add("DELETE", R"(/v1/responses/([^/]+))", [this](Request& req, Response& res) {
      if (!responses_.erase(req.matches[1]))
        return reply(
            res, {404, "no stored response '" + req.matches[1] + "'", "response_id", "not_found"});
      reply(res, 200, {{"id", req.matches[1]}, {"object", "response"}, {"deleted", true}});
    });
    for (const std::string prefix : {"", "/v1"}) {
      router_.add("POST", prefix + "/tokenize", tokens_route(tokenize_request), RunOn::worker);
      router_.add("POST", prefix + "/detokenize", tokens_route(detokenize_request), RunOn::worker);
    }
  }

  // A route of serve/tokenize_api.hpp: `answer(context, body)` once the model is loaded. It
  // encodes prompts with prompt_ids, as the completions do.
  template <class Answer>
  http::Handler tokens_route(Answer answer) {
    return [this, answer](Request& req, Response& res) {
      const ServedModel* m = model_.load();
      if (m == nullptr)
        return reply(res, {503, "the model is still loading; try again shortly", "", "loading"});
      const TokenizeContext context{
          *m->tokenizer, options_.model_name, m->engine->options().max_model_len,
          [this, m](const CompletionRequest& r) { return prompt_ids(*m, r); }};
      try {
        reply(res, 200, answer(context, req.body));
      } catch (const ApiError& e) {
        reply(res, e);
      } catch (const nlohmann::json::exception& e) {
        reply(res, {400, std::string("the request has a field of the wrong type: ") + e.what(), "",
                    "invalid_value"});
      } catch (const Error& e) {  // e.g. an id the tokenizer lacks (padded vocabularies)
        reply(res, {400, e.what(), "tokens", "invalid_value"});
      }
    };
  }

  nlohmann::json model_card() const {
    nlohmann::json card = {{"id", options_.model_name},
                           {"object", "model"},
                           {"created", started_},
                           {"owned_by", "hllm"}};
    const ServedModel* m = model_.load();  // until it is loaded: what the operator asked for
    const int64_t context = m ? m->engine->options().max_model_len : options_.max_model_len;
    if (context > 0) card["max_model_len"] = context;
    return card;
  }

  // The prompt ids of a parsed body. Throws ApiError.
  std::vector<int32_t> prompt_ids(const ServedModel& m, const CompletionRequest& r) const {
    if (!r.chat && !r.prompt_ids.empty()) return r.prompt_ids;  // checked by the engine
    try {
      const SpecialTokens special = options_.special_tokens_in_content;
      if (!r.chat) return encode_prompt(*m.tokenizer, r.prompt, special);
      const bool with_tools = r.tool_choice != ToolChoice::none;
      return encode_prompt(*m.tokenizer, chat_messages(r.messages, r.tools, with_tools), special);
    } catch (const Error& error) {
      throw ApiError{400, error.what(), r.chat ? "messages" : "prompt", "invalid_value"};
    }
  }

  // The engine request for a parsed body (choice `choice` of n). Throws ApiError.
  EngineRequest engine_request(const ServedModel& m, const CompletionRequest& r,
                               std::vector<int32_t> prompt, int choice) const {
    EngineRequest e;
    e.prompt = std::move(prompt);
    e.sampling = r.sampling.over(m.defaults);
    if (!r.sampling.seed) e.sampling.seed = std::random_device{}();
    e.sampling.seed += static_cast<uint64_t>(choice);  // n choices: n streams of the one seed
    try {
      e.sampling.validate();
    } catch (const Error& error) {
      throw ApiError{400, error.what(), "", "invalid_value"};
    }
    const int64_t context = m.engine->options().max_model_len;
    const auto length = static_cast<int64_t>(e.prompt.size());
    if (r.max_tokens) {
      e.max_tokens = *r.max_tokens;
      if (length + e.max_tokens > context)
        throw ApiError{400,
                       "This model's maximum context length is " + std::to_string(context) +
                           " tokens. However, you requested " +
                           std::to_string(length + e.max_tokens) + " tokens (" +
                           std::to_string(length) + " in the messages, " +
                           std::to_string(e.max_tokens) +
                           " in the completion). Please reduce the length of the messages or "
                           "completion.",
                       "max_tokens", "context_length_exceeded"};
    } else {
      e.max_tokens = context - length;
      if (e.max_tokens < 1)
        throw ApiError{400,
                       "This model's maximum context length is " + std::to_string(context) +
                           " tokens, and the prompt alone is " + std::to_string(length) +
                           " tokens. Please reduce the length of the messages.",
                       r.chat ? "messages" : "prompt", "context_length_exceeded"};
    }
    e.stop_ids = m.stop_ids;
    e.ignore_eos = r.ignore_eos;
    e.logprobs = r.logprobs;
    if (r.echo && r.logprobs >= 0 && choice == 0) e.prompt_logprobs = r.logprobs;
    if (!r.cache_salt.empty()) e.cache_salt = detail::salt_of(r.cache_salt);
    const int64_t vocab = m.engine->vocab_size();
    for (const auto& [id, bias] : r.logit_bias)
      if (id >= vocab)
        throw ApiError{400,
                       "'logit_bias' names token " + std::to_string(id) + ", beyond the " +
                           std::to_string(vocab) + "-token vocabulary",
                       "logit_bias", "invalid_value"};
    auto constraint = grammars_.constraint(r);
    if (constraint || !r.logit_bias.empty())
      e.logits_processor = logits_processor(r.logit_bias, std::move(constraint), e.max_tokens);
    return e;
  }

  // One completion's state, shared by the handler's content provider and its releaser.
  struct Job {
    const ServedModel* model = nullptr;
    CompletionRequest request;
    std::vector<int32_t> prompt;
    Generation generation;
    std::string id;
    int64_t created = 0;
    std::atomic<bool> finished{false};  // every choice ended (the engine said so, or a stop string)
  };

  // Parses the body with `parse` (a CompletionRequest from JSON and its ordered twin), encodes the
  // prompt and submits one engine request per choice. Throws ApiError.
  template <class Parse>
  std::shared_ptr<Job> submit(const Request& req, const Parse& parse) {
    const ServedModel* m = model_.load();
    if (stopping_) throw ApiError{503, "the server is shutting down", "", "shutting_down"};
    if (m == nullptr)
      throw ApiError{503, "the model is still loading; try again shortly", "", "loading"};
    auto job = std::make_shared<Job>();
    job->model = m;
    const auto body = request_json(req.body);
    const auto ordered = request_json<nlohmann::ordered_json>(req.body);  // key order: schemas
    try {
      job->request = parse(body, &ordered);
    } catch (const nlohmann::json::exception& e) {  // a field of an unexpected type, deep inside
      throw ApiError{400, std::string("the request has a field of the wrong type: ") + e.what(), "",
                     "invalid_value"};
    }
    const CompletionRequest& r = job->request;
    if (!r.model.empty() && r.model != options_.model_name)
      throw ApiError{404, "The model `" + r.model + "` does not exist.", "model",
                     "model_not_found"};
    job->prompt = prompt_ids(*m, r);
    Generation& g = job->generation;
    g.engine = m->engine;
    g.channel = std::make_shared<Channel>(static_cast<int>(r.n));
    g.stopping = &stopping_;
    std::vector<EngineRequest> requests;
    for (int choice = 0; choice < r.n; ++choice) {
      EngineRequest e = engine_request(*m, r, job->prompt, choice);
      auto times = std::make_shared<RequestMetrics::Timeline>(job->prompt.size());
      e.on_token = [channel = g.channel, choice, metrics = request_metrics_.get(),
                    times](int32_t id) {
        metrics->token(*times);
        return channel->push(choice, id);
      };
      if (e.logprobs >= 0)
        e.on_logprob = [channel = g.channel, choice](const TokenLogprob& lp) {
          channel->logprob(choice, lp);
        };
      if (e.prompt_logprobs >= 0)
        e.on_prompt_logprob = [channel = g.channel](int64_t, const TokenLogprob& lp) {
          channel->prompt_logprob(lp);
        };
      e.on_finish = [channel = g.channel, choice, metrics = request_metrics_.get(),
                     times](const RequestEnd& end) {
        RequestEnd counted = end;  // a stop string's abort ends the choice as "stop"
        if (channel->stopped_by_text(choice)) counted.reason = FinishReason::stop;
        metrics->finish(*times, counted);  // counted before the handler can answer
        channel->finish(choice, end.reason, end.error);
      };
      requests.push_back(std::move(e));
    }
    for (EngineRequest& e : requests) {
      try {
        g.engine_ids.push_back(m->engine->submit(std::move(e)));
      } catch (const EngineBusy& busy) {
        g.abort_all();
        throw ApiError{429, busy.what(), "", "too_many_requests"};
      } catch (const Error& error) {
        g.abort_all();
        if (stopping_) throw ApiError{503, "the server is shutting down", "", "shutting_down"};
        throw ApiError{400, error.what(), r.prompt_ids.empty() ? "max_tokens" : "prompt",
                       "invalid_value"};
      }
    }
    job->created = static_cast<int64_t>(std::time(nullptr));
    return job;
  }

  // Answers with `write_response(job, body)` as the body (SSE when streaming); the engine
  // requests are aborted when the client goes away first.
  template <class WriteResponse>
  static void respond(Response& res, std::shared_ptr<Job> job, WriteResponse write_response) {
    if (job->request.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
    }
    res.set_header("Content-Type", job->request.stream ? "text/event-stream" : JSON_TYPE);
    const auto cancel = [](Job& j) {
      j.generation.channel->cancelled = true;  // on_token says stop at the next token
      j.generation.abort_all();
    };
    res.stream = [job, write_response, cancel](http::BodyWriter& body) {
      bool ok = false;
      try {
        ok = write_response(*job, body);
      } catch (const std::exception&) {  // never out of the HTTP worker thread
      }
      if (!ok) {
        cancel(*job);
        return false;
      }
      job->finished = true;
      return true;
    };
    res.on_disconnect = [job, cancel] {
      if (!job->finished) cancel(*job);
    };
  }

  void completion(const Request& req, Response& res, bool chat) {
    std::shared_ptr<Job> job;
    try {
      job = submit(req, [chat](const nlohmann::json& body, const nlohmann::ordered_json* ordered) {
        return parse_completion_request(body, chat, ordered);
      });
    } catch (const ApiError& e) {
      return reply(res, e);
    }
    job->id = detail::random_id(chat ? "chatcmpl-" : "cmpl-");
    respond(res, job, [this](Job& j, http::BodyWriter& body) { return run(j, body); });
  }

  void responses(const Request& req, Response& res) {
    std::shared_ptr<Job> job;
    nlohmann::json echo;
    auto conversation = std::make_shared<ResponsesInput>();
    try {
      job = submit(req, [&](const nlohmann::json& body, const nlohmann::ordered_json* ordered) {
        echo = responses_echo(body);
        *conversation = parse_responses_request(*ordered, responses_);
        return conversation->request;
      });
    } catch (const ApiError& e) {
      return reply(res, e);
    }
    job->id = detail::random_id("resp_");
    respond(res, job, [this, echo, conversation](Job& j, http::BodyWriter& body) {
      ResponsesWriter writer(j.request, echo, j.id, j.created, options_.model_name,
                             [&body](const std::string& data) { return body.write(data); });
      std::vector<ChoiceOutput> outputs = choice_outputs(j);
      std::vector<ChoiceEnd> ends;
      // Stored before the client hears it is complete: its next request may continue it at once.
      const auto store = [&](const nlohmann::json& answer) {
        if (!conversation->store) return;
        nlohmann::ordered_json items = std::move(conversation->items);
        for (const auto& item : answer["output"])
          items.push_back(nlohmann::ordered_json::parse(item.dump()));
        responses_.put(j.id, std::move(items), answer);
      };
      return writer.begin() && drive(j.generation, outputs, writer, {}, ends) &&
             writer.finish(outputs, ends, static_cast<int64_t>(j.prompt.size()), store);
    });
  }

  // Each choice's output state.
  static std::vector<ChoiceOutput> choice_outputs(const Job& job) {
    const CompletionRequest& r = job.request;
    const ToolMode tool_mode = r.tools.empty() || r.tool_choice == ToolChoice::none ? ToolMode::none
                               : r.tool_choice == ToolChoice::automatic ? ToolMode::automatic
                                                                        : ToolMode::forced;
    std::vector<ChoiceOutput> outputs;
    for (int i = 0; i < r.n; ++i) {
      outputs.emplace_back(TokenNames{job.model->tokenizer, r.tokens_as_ids}, r.chat, r.stop,
                           tool_mode, &r.tools);
      if (r.logprobs >= 0) outputs.back().want_logprobs();
    }
    return outputs;
  }

  // chat/completions and completions: the stream or the one response. False: the client is gone.
  bool run(Job& job, http::BodyWriter& body) const {
    const CompletionRequest& r = job.request;
    CompletionsWriter writer(r, job.id, job.created, options_.model_name,
                             [&body](const std::string& data) { return body.write(data); });
    std::vector<ChoiceOutput> outputs = choice_outputs(job);
    // Completions with echo: the prompt (and its logprobs) before the generated text.
    std::function<bool(const std::vector<TokenLogprob>&)> echo;
    if (r.echo)
      echo = [&](const std::vector<TokenLogprob>& prompt_logprobs) {
        std::string text = r.prompt;
        if (!r.prompt_ids.empty()) {  // ids: their text, skipping any the tokenizer lacks
          StreamDecoder decoder(*job.model->tokenizer, /*skip_special=*/true);
          for (int32_t id : job.prompt) {
            try {
              text += decoder.push(id);
            } catch (const Error&) {
            }
          }
          text += decoder.finish();
        }
        for (size_t i = 0; i < outputs.size(); ++i) {
          if (r.logprobs >= 0)
            for (size_t p = 0; p < job.prompt.size(); ++p)
              outputs[i].add_prompt_logprob(job.prompt[p], p == 0 || p > prompt_logprobs.size()
                                                               ? nullptr
                                                               : &prompt_logprobs[p - 1]);
          if (!writer.piece(static_cast<int>(i), outputs[i].echo_prompt(text), outputs[i]))
            return false;
        }
        return true;
      };
    std::vector<ChoiceEnd> ends;
    return writer.begin() && drive(job.generation, outputs, writer, echo, ends) &&
           writer.finish(outputs, ends, static_cast<int64_t>(job.prompt.size()));
  }

  ServeOptions options_;
  GrammarCache grammars_;
  ResponseStore responses_;  // what /v1/responses answered, for continuations
  http::Router router_;
  std::unique_ptr<http::HttpServer> http_;  // made by bind()
  std::unique_ptr<ServedModel> model_storage_;
  std::atomic<const ServedModel*> model_{nullptr};
  std::unique_ptr<RequestMetrics> request_metrics_;  // made with the model (its max_model_len)
  std::atomic<bool> stopping_{false};
  const int64_t started_ = static_cast<int64_t>(std::time(nullptr));
};

}  // namespace hllm::serve
