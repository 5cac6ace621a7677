// `hllm serve [-m MODEL_DIR] [--host 127.0.0.1] [--port 8000] [--api-key KEY] ...`
// An OpenAI-compatible server (include/hllm/serve/openai.hpp) over the continuous-batching engine.
// It listens at once (GET /v1/models answers, /health says "loading") and loads the model, then
// prints "hllm: serving NAME on http://HOST:PORT/v1" on stderr. Ctrl-C / SIGTERM stop it cleanly:
// new requests get 503, running ones end, the engine and the HTTP threads are joined — within
// --shutdown-timeout seconds, after which it exits anyway with status 1 (a client trickling its
// headers or an idle keep-alive connection cannot hold it up). A second Ctrl-C / SIGTERM exits at
// once (status 128 + the signal).
#pragma once

#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "hllm/engine/engine.hpp"
#include "hllm/serve/openai.hpp"
#include "text_model.hpp"

namespace hllm::tools {

inline volatile std::sig_atomic_t serve_stop_requested = 0;

// SIGINT / SIGTERM: the first asks for a clean stop, a second one exits now (only
// async-signal-safe calls here).
inline void on_serve_stop_signal(int signal) {
  if (serve_stop_requested != 0) {
    constexpr char MESSAGE[] = "hllm: second stop signal: exiting now\n";
    [[maybe_unused]] const ssize_t written = write(STDERR_FILENO, MESSAGE, sizeof MESSAGE - 1);
    _exit(128 + signal);  // the shell's convention for "ended by this signal"
  }
  serve_stop_requested = 1;
}

// The model id clients see: the model folder's name ("Meta-Llama-3-8B-Instruct").
inline std::string default_served_name(const std::string& model_dir) {
  std::string dir = model_dir;
  if (dir.empty() && std::getenv("HLLM_MODEL") != nullptr) dir = std::getenv("HLLM_MODEL");
  if (dir.empty()) return "hllm-demo";
  std::filesystem::path p(dir);
  if (!p.has_filename()) p = p.parent_path();  // "models/llama/"
  const std::string name = p.filename().string();
  return name.empty() || name == "." ? "hllm" : name;
}

// Each connection is a file descriptor: raises the soft limit to the hard one, and returns how many
// connections fit beside the model's files (`wanted` when all do).
inline size_t connection_limit(int64_t wanted) {
  constexpr rlim_t RESERVED = 64;  // model files, the listening socket, stdio, ...
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return static_cast<size_t>(wanted);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= static_cast<rlim_t>(wanted) + RESERVED)
    return static_cast<size_t>(wanted);
  const auto fits = static_cast<int64_t>(limit.rlim_cur > 2 * RESERVED ? limit.rlim_cur - RESERVED
                                                                       : limit.rlim_cur / 2);
  std::fprintf(stderr,
               "hllm: --max-connections %lld lowered to %lld (the open-file limit is %llu; raise "
               "it with `ulimit -n`)\n",
               static_cast<long long>(wanted), static_cast<long long>(fits),
               static_cast<unsigned long long>(limit.rlim_cur));
  return static_cast<size_t>(fits);
}

inline void add_serve_command(CLI::App& app) {
  struct Options {
    TextModelOptions model;
    std::string host = "127.0.0.1";
    int port = 8000;
    std::string api_key;
    std::string allowed_origins;
    std::string served_name;
    int64_t max_num_seqs = 32;
    int64_t max_model_len = 0;
    int64_t kv_cache_tokens = 0;
    int64_t max_waiting = 256;
    int64_t max_num_batched_tokens = 0;
    bool no_prefix_caching = false;
    double max_body_mib = 4.0;
    double shutdown_timeout = 10.0;
    int64_t max_connections = 512;
    double header_timeout = 10.0;
  };
  auto o = std::make_shared<Options>();
  CLI::App* command =
      app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/chat/completions, ...)");
  command->add_option(
      "-m,--model", o->model.model_dir,
      "HF model folder or .gguf file (default: $HLLM_MODEL, else the bundled tiny demo model)");
  command->add_option("--tokenizer", o->model.tokenizer,
                      "tokenizer.json (default: the model folder's)");
  command->add_option("-t,--threads", o->model.threads,
                      "CPU threads (default: all hardware threads)");
  add_cpu_matmul_option(*command, o->model.int4_matmul, CpuMatmul::int8);
  add_kv_cache_option(*command, o->model.kv_cache);
  add_lm_head_option(*command, o->model.lm_head, LmHead::automatic);
  command
      ->add_option("--device", o->model.device,
                   "cuda, cpu, or auto (cuda when a GPU is present and this build has CUDA)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  command->add_option(
      "--host", o->host,
      "address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)");
  command->add_option("--port", o->port, "TCP port (0: any free port)")
      ->check(CLI::Range(0, 65535));
  command->add_option("--api-key", o->api_key,
                      "require 'Authorization: Bearer KEY' on every route but /health "
                      "(default: $HLLM_API_KEY, else open)");
  command->add_option("--allowed-origins", o->allowed_origins,
                      "browser origins that may call the API (CORS): comma-separated, e.g. "
                      "http://localhost:3000, or * for any (default: none)");
  command->add_option("--served-model-name", o->served_name,
                      "model id in /v1/models and responses (default: the model folder's name)");
  command->add_option("--max-num-seqs", o->max_num_seqs, "requests decoded together at most")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  command
      ->add_option("--max-model-len", o->max_model_len,
                   "prompt + completion tokens per request (default: the model's, <= 8192)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  command
      ->add_option("--kv-cache-tokens", o->kv_cache_tokens,
                   "KV cache size in tokens (default: max-num-seqs x 1024); blocks are taken as "
                   "sequences grow, and the newest is preempted (recomputed later) when it is full")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  command
      ->add_option("--max-num-batched-tokens", o->max_num_batched_tokens,
                   "tokens per engine step: decodes first, then prompt chunks (default: 256 on "
                   "the CPU, 2048 on a GPU; at least max-num-seqs)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  command->add_flag("--no-prefix-caching", o->no_prefix_caching,
                    "compute every prompt from the start (default: requests that share a prefix, "
                    "such as each turn of a chat, share its KV blocks)");
  command
      ->add_option("--max-waiting", o->max_waiting, "queued requests beyond which new ones get 429")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command->add_option("--max-body-mib", o->max_body_mib, "request body limit in MiB (413 above)")
      ->check(CLI::Range(0.001, 1024.0));
  command
      ->add_option("--max-connections", o->max_connections,
                   "open connections at once; more are answered 503 and closed")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  command
      ->add_option("--header-timeout", o->header_timeout,
                   "seconds a new connection has to send its whole request head (a client "
                   "trickling it is dropped); idle keep-alive connections close after half that")
      ->check(CLI::Range(0.1, 3600.0));
  command
      ->add_option("--shutdown-timeout", o->shutdown_timeout,
                   "seconds a clean stop (Ctrl-C, SIGTERM) may take before the server exits anyway")
      ->check(CLI::Range(0.0, 3600.0));
  add_special_tokens_flag(*command, o->model.allow_special_tokens);
  command->callback([o] {
    if (o->api_key.empty() && std::getenv("HLLM_API_KEY") != nullptr)
      o->api_key = std::getenv("HLLM_API_KEY");
    serve::ServeOptions serve_options;
    serve_options.model_name =
        o->served_name.empty() ? default_served_name(o->model.model_dir) : o->served_name;
    serve_options.api_key = o->api_key;
    serve_options.cors = serve::parse_allowed_origins(o->allowed_origins);
    serve_options.http.max_body_bytes = static_cast<size_t>(o->max_body_mib * 1024 * 1024);
    serve_options.http.max_connections = connection_limit(o->max_connections);
    serve_options.http.header_timeout =
        std::chrono::milliseconds(static_cast<int64_t>(o->header_timeout * 1000));
    serve_options.http.keep_alive_timeout = serve_options.http.header_timeout / 2;
    serve_options.max_model_len = o->max_model_len;
    serve_options.special_tokens_in_content = o->model.special_tokens();
    std::signal(SIGPIPE, SIG_IGN);

    // Listen first: /v1/models and /health answer while the weights load.
    serve::OpenAiServer server(serve_options);
    const int port = server.bind(o->host, o->port, o->max_num_seqs);
    std::thread listener([&] { server.listen(); });
    const auto stop_listening = [&] {
      for (int i = 0; i < 100 && !server.running(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      server.stop();
      listener.join();
    };

    std::unique_ptr<TextModel> m;
    std::unique_ptr<Engine> engine;
    try {
      m = std::make_unique<TextModel>(load_text_model(o->model));
      EngineOptions engine_options;
      engine_options.max_num_seqs = o->max_num_seqs;
      engine_options.max_model_len = o->max_model_len;
      engine_options.kv_cache_tokens = o->kv_cache_tokens;
      engine_options.max_waiting = o->max_waiting;
      engine_options.max_num_batched_tokens = o->max_num_batched_tokens;
      engine_options.prefix_caching = !o->no_prefix_caching;
      engine = std::make_unique<Engine>(m->loaded->model, engine_options);
    } catch (...) {
      stop_listening();
      throw;
    }
    serve::ServedModel served;
    served.engine = engine.get();
    served.tokenizer = &m->tokenizer();
    served.stop_ids = m->stop_ids();
    served.defaults = m->sampling;
    server.set_model(std::move(served));

    struct sigaction action {};
    action.sa_handler = on_serve_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);

    const std::string shown_host =
        o->host.find(':') != std::string::npos ? "[" + o->host + "]" : o->host;
    const EngineStats pool = engine->stats();
    std::fprintf(stderr,
                 "hllm: serving %s on http://%s:%d/v1 (%s, max_model_len %lld, KV cache %lld "
                 "tokens, prefix caching %s%s)\n",
                 serve_options.model_name.c_str(), shown_host.c_str(), port,
                 m->loaded->backend_description().c_str(),
                 static_cast<long long>(engine->options().max_model_len),
                 static_cast<long long>(pool.kv_blocks_total * KvCache::KV_BLOCK_SIZE),
                 pool.prefix_caching ? "on" : "off",
                 o->api_key.empty() ? "" : ", API key required");
    std::fflush(stderr);
    while (serve_stop_requested == 0 && server.running())
      std::this_thread::sleep_for(std::chrono::milliseconds(100));

    std::fprintf(stderr, "hllm: stopping (at most %g s; a second Ctrl-C exits now)\n",
                 o->shutdown_timeout);
    std::fflush(stderr);
    std::thread([seconds = o->shutdown_timeout] {
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
      std::fprintf(stderr,
                   "hllm: the clean stop is still waiting on connections after %g s: exiting\n",
                   seconds);
      std::fflush(stderr);
      std::_Exit(1);  // not a clean stop: say so to whoever supervises the process
    }).detach();
    server.begin_shutdown();  // new completions: 503; streams in flight end
    engine->stop();           // everything still running finishes (cancelled)
    stop_listening();
  });
}

}  // namespace hllm::tools
