// An OpenAI-compatible HTTP server (cpp-httplib) over the continuous-batching Engine: what
// `hllm serve` runs, a drop-in for vLLM behind Open WebUI or any OpenAI SDK.
//
//   GET  /health               200 {"status":"ok", kv blocks, running, waiting, prefix cache};
//                              503 while loading
//   GET  /metrics              the same numbers as Prometheus text (serve/metrics.hpp)
//   GET  /v1/models            the one served model (answers while the weights still load)
//   POST /v1/chat/completions  messages -> Llama-3 chat format; stream (SSE) or one JSON
//   POST /v1/completions       prompt -> BOS + text
//
// Threads: cpp-httplib runs each connection on a pool thread (the "handler"). A completion is
// submitted to the engine; the engine thread's on_token only pushes the id into the request's
// Channel (mutex + condition variable) and never touches the network. The handler thread pulls
// ids, detokenizes (StreamDecoder), applies stop strings (StopTextFilter) and writes. A write that
// fails (client gone) aborts the engine request, so its KV blocks come back at once; while nothing
// is written for a second, a heartbeat (an SSE comment, or a JSON-insignificant space) finds out.
//
// The library never prints; the runner (tools/cmd_serve.hpp) does.
#pragma once

#include <httplib.h>

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
#include "hllm/serve/metrics.hpp"
#include "hllm/serve/request.hpp"
#include "hllm/serve/stop_text.hpp"
#include "hllm/tokenizer/chat.hpp"
#include "hllm/tokenizer/prompt.hpp"
#include "hllm/tokenizer/stream.hpp"
#include "hllm/tokenizer/tokenizer.hpp"

namespace hllm::serve {

struct ServeOptions {
  std::string model_name = "hllm";  // the id in /v1/models and in every response
  std::string api_key;              // "" = open; else every route but /health and /metrics needs it
  size_t max_body_bytes = size_t{4} << 20;  // larger request bodies get 413
  int http_threads = 0;                     // 0: max(64, 2 × max_num_seqs + 16)
  int64_t max_model_len = 0;                // reported by /v1/models until the engine runs
  // How special-token spellings in message content and completion prompts are read (both endpoints
  // alike): plain text unless the operator opts in (tokenizer/prompt.hpp).
  SpecialTokens special_tokens_in_content = SpecialTokens::text;
};

// What the server needs once the model is loaded (all owned by the caller, outliving the server).
struct ServedModel {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  std::vector<int64_t> stop_ids;  // eos ids (config + generation_config) and <|eot_id|>
  SamplingParams defaults;        // generation_config.json over the library's; seed: per request
};

namespace detail {

// One request's hand-over from the engine thread to its handler thread.
struct Channel {
  std::mutex mutex;
  std::condition_variable ready;
  std::vector<int32_t> tokens;  // generated, not yet taken by the handler
  bool finished = false;
  FinishReason reason = FinishReason::cancelled;
  int64_t completion_tokens = 0;
  std::string error;
  std::atomic<bool> cancelled{false};  // the handler gave up: on_token answers false

  bool push(int32_t id) {
    if (cancelled.load()) return false;
    std::lock_guard lock(mutex);
    tokens.push_back(id);
    ready.notify_one();
    return true;
  }
  void finish(FinishReason r, int64_t completion, const std::string& e) {
    std::lock_guard lock(mutex);
    finished = true;
    reason = r;
    completion_tokens = completion;
    error = e;
    ready.notify_one();
  }
};

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
    const size_t threads = options_.http_threads > 0
                               ? static_cast<size_t>(options_.http_threads)
                               : static_cast<size_t>(std::max<int64_t>(64, 2 * max_num_seqs + 16));
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    const int bound = port == 0 ? http_.bind_to_any_port(host) : port;
    if (bound < 0 || (port != 0 && !http_.bind_to_port(host, port)))
      fail("cannot listen on ", host, ":", port, " (in use, or not an address of this machine?)");
    return bound;
  }

  // Serves until stop() (blocking; run it on its own thread).
  void listen() { http_.listen_after_bind(); }

  // The model is loaded: completions are served from now on.
  void set_model(ServedModel model) {
    model_storage_ = std::make_unique<ServedModel>(std::move(model));
    options_.max_model_len = model_storage_->engine->options().max_model_len;
    model_.store(model_storage_.get());
  }

  // New completions get 503 from now on; streams in flight are aborted. Call before the engine
  // stops, then stop().
  void begin_shutdown() { stopping_ = true; }

  // Stops listening and waits for the handler threads.
  void stop() {
    stopping_ = true;
    if (http_.is_running()) http_.stop();
  }

  bool running() const { return http_.is_running(); }

 private:
  using Request = httplib::Request;
  using Response = httplib::Response;

  // JSON bodies carry an explicit charset. Besides being exact, it keeps cpp-httplib (up to at
  // least 0.34) from gzipping them for clients that accept gzip — it compresses only the bare
  // "application/json": a compressor would swallow the heartbeat spaces of a non-streaming
  // response, so a client that gives up would not be noticed until the whole answer was
  // generated. serve_openai checks this with a gzip-accepting client.
  static constexpr const char* JSON_TYPE = "application/json; charset=utf-8";

  static void reply(Response& res, int status, const nlohmann::json& body) {
    res.status = status;
    res.set_content(detail::dump(body), JSON_TYPE);
  }
  static void reply(Response& res, const ApiError& e) { reply(res, e.status, e.to_json()); }

  void routes() {
    http_.set_payload_max_length(options_.max_body_bytes);
    http_.set_tcp_nodelay(true);  // streamed tokens are small writes: no Nagle delay (~40 ms)
    http_.set_pre_routing_handler([this](const Request& req, Response& res) {
      if (options_.api_key.empty() || req.path == "/health" || req.path == "/metrics")
        return httplib::Server::HandlerResponse::Unhandled;
      const std::string token = detail::bearer_token(req.get_header_value("Authorization"));
      const bool ok = !token.empty() && detail::constant_time_equal(token, options_.api_key);
      if (ok) return httplib::Server::HandlerResponse::Unhandled;
      reply(res, {401, "missing or wrong API key (send 'Authorization: Bearer <key>')", "",
                  "invalid_api_key"});
      return httplib::Server::HandlerResponse::Handled;
    });
    // Errors without a body of ours (404 route, 413 from the body limit, 400 from HTTP parsing).
    http_.set_error_handler([](const Request& req, Response& res) {
      if (!res.body.empty() || res.content_provider_) return;
      std::string message = "HTTP " + std::to_string(res.status);
      if (res.status == 404) message = "no route " + req.method + " " + req.path;
      if (res.status == 413) message = "the request body is too large";
      reply(res, res.status, ApiError{res.status, message, "", ""}.to_json());
    });
    http_.set_exception_handler([](const Request&, Response& res, std::exception_ptr ep) {
      std::string message = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        message += std::string(": ") + e.what();
      } catch (...) {
      }
      reply(res, {500, message, "", "internal_error"});
    });

    http_.Get("/health", [this](const Request&, Response& res) {
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
    http_.Get("/metrics", [this](const Request&, Response& res) {
      const ServedModel* m = model_.load();
      if (m == nullptr) return reply(res, 503, {{"status", "loading"}});
      res.set_content(prometheus_metrics(m->engine->stats(), options_.model_name),
                      "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/v1/models", [this](const Request&, Response& res) {
      reply(res, 200, {{"object", "list"}, {"data", nlohmann::json::array({model_card()})}});
    });
    http_.Get(R"(/v1/models/(.+))", [this](const Request& req, Response& res) {
      if (req.matches[1] != options_.model_name)
        return reply(res, {404, "The model `" + std::string(req.matches[1]) + "` does not exist.",
                           "model", "model_not_found"});
      reply(res, 200, model_card());
    });
    http_.Post("/v1/chat/completions",
               [this](const Request& req, Response& res) { completion(req, res, true); });
    http_.Post("/v1/completions",
               [this](const Request& req, Response& res) { completion(req, res, false); });
  }

  nlohmann::json model_card() const {
    nlohmann::json card = {{"id", options_.model_name},
                           {"object", "model"},
                           {"created", started_},
                           {"owned_by", "hllm"}};
    if (options_.max_model_len > 0) card["max_model_len"] = options_.max_model_len;
    return card;
  }

  // The engine request for a parsed body. Throws ApiError.
  EngineRequest engine_request(const ServedModel& m, const CompletionRequest& r) const {
    EngineRequest e;
    try {
      const SpecialTokens special = options_.special_tokens_in_content;
      e.prompt = r.chat ? encode_prompt(*m.tokenizer, r.messages, special)
                        : encode_prompt(*m.tokenizer, r.prompt, special);
    } catch (const Error& error) {
      throw ApiError{400, error.what(), r.chat ? "messages" : "prompt", "invalid_value"};
    }
    e.sampling = r.sampling.over(m.defaults);
    if (!r.sampling.seed) e.sampling.seed = std::random_device{}();
    try {
      e.sampling.validate();
    } catch (const Error& error) {
      throw ApiError{400, error.what(), "", "invalid_value"};
    }
    const int64_t context = m.engine->options().max_model_len;
    const auto prompt = static_cast<int64_t>(e.prompt.size());
    if (r.max_tokens) {
      e.max_tokens = *r.max_tokens;
      if (prompt + e.max_tokens > context)
        throw ApiError{400,
                       "This model's maximum context length is " + std::to_string(context) +
                           " tokens. However, you requested " +
                           std::to_string(prompt + e.max_tokens) + " tokens (" +
                           std::to_string(prompt) + " in the messages, " +
                           std::to_string(e.max_tokens) +
                           " in the completion). Please reduce the length of the messages or "
                           "completion.",
                       "max_tokens", "context_length_exceeded"};
    } else {
      e.max_tokens = context - prompt;
      if (e.max_tokens < 1)
        throw ApiError{400,
                       "This model's maximum context length is " + std::to_string(context) +
                           " tokens, and the prompt alone is " + std::to_string(prompt) +
                           " tokens. Please reduce the length of the messages.",
                       r.chat ? "messages" : "prompt", "context_length_exceeded"};
    }
    e.stop_ids = m.stop_ids;
    e.ignore_eos = r.ignore_eos;
    if (!r.cache_salt.empty()) e.cache_salt = detail::salt_of(r.cache_salt);
    return e;
  }

  // One completion's state, shared by the handler's content provider and its releaser.
  struct Job {
    std::shared_ptr<detail::Channel> channel = std::make_shared<detail::Channel>();
    const ServedModel* model = nullptr;
    CompletionRequest request;
    uint64_t engine_id = 0;
    std::string id;
    int64_t created = 0;
    int64_t prompt_tokens = 0;
    bool finished = false;  // the engine said so (or the stop string ended it and was aborted)
  };

  void completion(const Request& req, Response& res, bool chat) {
    const ServedModel* m = model_.load();
    if (stopping_) return reply(res, {503, "the server is shutting down", "", "shutting_down"});
    if (m == nullptr)
      return reply(res, {503, "the model is still loading; try again shortly", "", "loading"});
    auto job = std::make_shared<Job>();
    job->model = m;
    try {
      nlohmann::json body;
      try {
        body = nlohmann::json::parse(req.body);
      } catch (const nlohmann::json::exception& e) {
        throw ApiError{400, std::string("the request body is not valid JSON: ") + e.what(), "",
                       "invalid_json"};
      }
      job->request = parse_completion_request(body, chat);
      if (!job->request.model.empty() && job->request.model != options_.model_name)
        throw ApiError{404, "The model `" + job->request.model + "` does not exist.", "model",
                       "model_not_found"};
      EngineRequest e = engine_request(*m, job->request);
      job->prompt_tokens = static_cast<int64_t>(e.prompt.size());
      e.on_token = [channel = job->channel](int32_t id) { return channel->push(id); };
      e.on_finish = [channel = job->channel](const RequestEnd& end) {
        channel->finish(end.reason, end.completion_tokens, end.error);
      };
      try {
        job->engine_id = m->engine->submit(std::move(e));
      } catch (const EngineBusy& busy) {
        throw ApiError{429, busy.what(), "", "too_many_requests"};
      } catch (const Error& error) {
        if (stopping_) throw ApiError{503, "the server is shutting down", "", "shutting_down"};
        throw ApiError{400, error.what(), "max_tokens", "invalid_value"};
      }
    } catch (const ApiError& e) {
      return reply(res, e);
    }
    job->id = detail::random_id(chat ? "chatcmpl-" : "cmpl-");
    job->created = static_cast<int64_t>(std::time(nullptr));
    if (job->request.stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
    }
    res.set_chunked_content_provider(
        job->request.stream ? "text/event-stream" : JSON_TYPE,
        [this, job](size_t, httplib::DataSink& sink) {
          if (!run(*job, sink)) return false;
          sink.done();
          return true;
        },
        [this, job](bool) {
          if (job->finished) return;
          job->channel->cancelled = true;  // on_token says stop at the next token
          job->model->engine->abort(job->engine_id);
        });
  }

  nlohmann::json chunk(const Job& job, nlohmann::json choice) const {
    return {{"id", job.id},
            {"object", job.request.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", job.created},
            {"model", options_.model_name},
            {"choices", nlohmann::json::array({std::move(choice)})}};
  }

  nlohmann::json text_choice(const Job& job, const std::string& text,
                             const nlohmann::json& finish) const {
    nlohmann::json choice = {{"index", 0}};
    if (job.request.chat) {
      choice[job.request.stream ? "delta" : "message"] =
          text.empty() && job.request.stream && !finish.is_null()
              ? nlohmann::json::object()
              : nlohmann::json{{"role", "assistant"}, {"content", text}};
      if (job.request.stream && !text.empty()) choice["delta"].erase("role");
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish;
    return choice;
  }

  // Pulls the generated ids, writes the stream or the one response. False: the client is gone.
  bool run(Job& job, httplib::DataSink& sink) {
    const bool stream = job.request.stream;
    auto last_write = std::chrono::steady_clock::now();
    const auto write = [&](const std::string& data) {
      last_write = std::chrono::steady_clock::now();
      return sink.write(data.data(), data.size());
    };
    const auto event = [&](const nlohmann::json& j) {
      return write("data: " + detail::dump(j) + "\n\n");
    };
    if (stream && job.request.chat &&
        !event(chunk(job, {{"index", 0},
                           {"delta", {{"role", "assistant"}, {"content", ""}}},
                           {"logprobs", nullptr},
                           {"finish_reason", nullptr}})))
      return false;

    StreamDecoder decoder(*job.model->tokenizer, /*skip_special=*/true);
    StopTextFilter stops(job.request.stop);
    std::string text;  // non-streaming: the whole answer
    int64_t consumed = 0;
    std::vector<int32_t> ids;
    bool finished = false;
    FinishReason reason = FinishReason::cancelled;
    std::string error;
    const auto emit = [&](const std::string& piece) {
      if (piece.empty()) return true;
      if (!stream) {
        text += piece;
        return true;
      }
      return event(chunk(job, text_choice(job, piece, nullptr)));
    };
    while (true) {
      {
        std::unique_lock lock(job.channel->mutex);
        job.channel->ready.wait_for(lock, std::chrono::milliseconds(250), [&] {
          return !job.channel->tokens.empty() || job.channel->finished;
        });
        ids.swap(job.channel->tokens);
        job.channel->tokens.clear();
        if (job.channel->finished) {
          finished = true;
          reason = job.channel->reason;
          error = job.channel->error;
        }
      }
      for (int32_t id : ids) {
        ++consumed;
        std::string piece;
        try {
          piece = decoder.push(id);
        } catch (const Error&) {  // an id the tokenizer lacks (padded vocabularies): no text
        }
        if (!emit(stops.push(piece))) return false;
        if (stops.stopped()) break;
      }
      ids.clear();
      if (stops.stopped()) {
        job.channel->cancelled = true;
        job.model->engine->abort(job.engine_id);
        job.finished = true;
        reason = FinishReason::stop;
        error.clear();
        break;
      }
      if (finished) {
        job.finished = true;
        if (!emit(stops.push(decoder.finish()))) return false;
        if (stops.stopped())
          reason = FinishReason::stop;
        else if (!emit(stops.finish()))
          return false;
        break;
      }
      if (stopping_) {
        job.channel->cancelled = true;
        job.model->engine->abort(job.engine_id);
      }
      if (std::chrono::steady_clock::now() - last_write > std::chrono::seconds(1) &&
          !write(stream ? ": keep-alive\n\n" : " "))
        return false;
    }
    if (reason == FinishReason::cancelled && error.empty())
      error = stopping_ ? "the server is shutting down" : "the request was cancelled";
    const nlohmann::json finish_reason = reason == FinishReason::length
                                             ? "length"
                                             : (reason == FinishReason::stop ? "stop" : "error");
    const nlohmann::json usage = {{"prompt_tokens", job.prompt_tokens},
                                  {"completion_tokens", consumed},
                                  {"total_tokens", job.prompt_tokens + consumed}};
    if (!error.empty()) {
      const ApiError e{500, error, "", "generation_failed"};
      if (stream) return event(e.to_json()) && write("data: [DONE]\n\n");
      return write(detail::dump(e.to_json()));
    }
    if (!stream) {
      nlohmann::json body = chunk(job, text_choice(job, text, finish_reason));
      body["object"] = job.request.chat ? "chat.completion" : "text_completion";
      body["usage"] = usage;
      return write(detail::dump(body));
    }
    if (!event(chunk(job, text_choice(job, "", finish_reason)))) return false;
    if (job.request.include_usage) {
      nlohmann::json last = chunk(job, nullptr);
      last["choices"] = nlohmann::json::array();
      last["usage"] = usage;
      if (!event(last)) return false;
    }
    return write("data: [DONE]\n\n");
  }

  ServeOptions options_;
  httplib::Server http_;
  std::unique_ptr<ServedModel> model_storage_;
  std::atomic<const ServedModel*> model_{nullptr};
  std::atomic<bool> stopping_{false};
  const int64_t started_ = static_cast<int64_t>(std::time(nullptr));
};

}  // namespace hllm::serve
