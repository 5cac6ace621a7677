// The HTTP/1.1 server under `hllm serve`: event-driven (Boost.Beast over Asio), so a connection
// costs a socket and a few KiB, not a thread, and hostile clients cannot starve the others.
//
//   accept ──► read head (deadline) ──► read body (deadline, size limit) ──► decode body
//          ──► application: on the I/O thread (quick routes) or on a worker (completions)
//          ──► write: one response, or a chunked stream fed by the worker, write by write
//          ──► keep-alive: the next head (shorter deadline), or close
//
// What holds against hostile clients (issue 16, tools/attack_serve.mjs replays each):
// - A request head must be complete within header_timeout of the connection's start
//   (keep_alive_timeout for later requests): trickling one header line at a time (slowloris) gets
//   the connection closed, and costs no thread while it lasts.
// - At most max_connections at once: beyond, a new connection gets a 503 and is closed at once,
//   and the accepted ones keep being served.
// - Bodies: Content-Length above the limit is 413 before a byte of body is read; a compressed body
//   is inflated up to the limit only (serve/http/content_encoding.hpp), then 413.
// - A streamed response stops at once when the client closes its side (a read kept pending on the
//   socket sees the EOF) or stops reading for write_timeout.
// - stop(): stops accepting, closes idle and half-read connections at once, lets the handlers in
//   progress end (the application ends its streams), then joins every thread.
//
// Why not cpp-httplib (what served before): it gives each connection a pool thread for its whole
// life and has no deadline for a whole request head (its read timeout restarts with every byte), so
// 300 connections trickling header lines left /health unanswered for 30 s and more (measured with
// tools/attack_serve.mjs on the 0.11.4 Debian ships); a response could not close its connection,
// so an unread compressed body could not be refused without desynchronizing the client; and its
// inflate of gzip bodies had no bound (a 398 KiB body peaked the process at 1.39 GB).
//
// Threads: `io_threads` run the event loop (each connection on its own strand); `workers` run the
// handlers that block. A worker's stream writes go through the connection's strand: the worker
// posts the write and waits for it to complete.
#pragma once

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hllm/core/error.hpp"
#include "hllm/serve/http/content_encoding.hpp"
#include "hllm/serve/http/message.hpp"
#include "hllm/serve/http/target.hpp"

namespace hllm::serve::http {

struct HttpLimits {
  size_t max_connections = 512;             // open at once; more are answered 503 and closed
  size_t max_header_bytes = 64 << 10;       // request line + headers; more is 431
  size_t max_body_bytes = size_t{4} << 20;  // after decoding; more is 413
  std::chrono::milliseconds header_timeout{10'000};     // a new connection's first request head
  std::chrono::milliseconds keep_alive_timeout{5'000};  // idle + head of each later request
  std::chrono::milliseconds body_timeout{60'000};       // the whole body, once the head is in
  std::chrono::milliseconds write_timeout{30'000};      // one write (a client that stops reading)
  size_t max_requests_per_connection = 10'000;
  int io_threads = 2;
  int workers = 64;  // handlers that block, at once (more wait for a free worker)
};

// What the server serves.
struct Application {
  // Whether handle() may block for this request (it then runs on a worker thread).
  std::function<bool(Request&)> runs_on_worker;
  std::function<void(Request&, Response&)> handle;
  // The response for an error the HTTP layer answers itself (400, 413, 415, 431, 500, 503);
  // `request` holds what was read of it (it may be empty).
  std::function<void(const Request&, int status, const std::string& message, Response&)> error;
};

class HttpServer {
 public:
  HttpServer(HttpLimits limits, Application app)
      : limits_(limits),
        app_(std::move(app)),
        acceptor_(boost::asio::make_strand(io_)),
        workers_(static_cast<size_t>(std::max(1, limits.workers))) {}
  ~HttpServer() { stop(); }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Listens on host:port (port 0: any free port); returns the port. Throws hllm::Error.
  int bind(const std::string& host, int port) {
    namespace net = boost::asio;
    using tcp = net::ip::tcp;
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    const auto endpoints = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || endpoints.empty())
      fail("cannot listen on ", host, ":", port, ": ", ec ? ec.message() : "no such address");
    const tcp::endpoint endpoint = endpoints.begin()->endpoint();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      fail("cannot listen on ", host, ":", port, " (", ec.message(),
           "; in use, or not an address of this machine?)");
    Response refusal;
    app_.error(Request{}, 503, "the server has too many open connections; try again shortly",
               refusal);
    refusal_ = serialize_refusal(refusal);
    return acceptor_.local_endpoint().port();
  }

  // Serves until stop() (blocking; run it on its own thread).
  void run() {
    {
      std::lock_guard lock(mutex_);
      if (stopped_) return;
      running_ = true;
    }
    accept();
    std::vector<std::thread> threads;
    for (int i = 1; i < limits_.io_threads; ++i) threads.emplace_back([this] { io_.run(); });
    io_.run();
    for (std::thread& t : threads) t.join();
    running_ = false;
  }

  bool running() const { return running_; }

  // From any thread but the server's own: stops accepting, closes connections that wait for or
  // read a request, waits for the handlers in progress (and their streams) to end, then ends run().
  void stop();

 private:
  class Connection;
  friend class Connection;

  static std::string serialize_refusal(const Response& r) {
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " Service Unavailable\r\n";
    for (const auto& [name, value] : r.headers) head += name + ": " + value + "\r\n";
    head += "Content-Length: " + std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n";
    return head + r.body;
  }

  void accept();

  // Over the connection limit: the 503, then close (a client still sending may see a reset).
  void refuse(boost::asio::ip::tcp::socket socket) {
    boost::system::error_code ignored;
    socket.non_blocking(true, ignored);
    boost::asio::write(socket, boost::asio::buffer(refusal_), ignored);
    socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  size_t connection_count() {
    std::lock_guard lock(mutex_);
    return connections_.size();
  }

  template <class F>
  void for_each_connection(F f) {
    std::vector<std::shared_ptr<Connection>> live;
    {
      std::lock_guard lock(mutex_);
      for (auto& [key, weak] : connections_)
        if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    for (auto& c : live) f(*c);
  }

  HttpLimits limits_;
  Application app_;
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(io_);
  boost::asio::ip::tcp::acceptor acceptor_;
  std::string refusal_;  // the 503 over the connection limit, ready to send
  std::mutex mutex_;
  std::unordered_map<const void*, std::weak_ptr<Connection>> connections_;
  std::atomic<bool> stopped_{false};
  std::atomic<bool> running_{false};
  // Last: destroyed first, with any connection still queued for a worker (whose destructor needs
  // the mutex and the registry above).
  boost::asio::thread_pool workers_;
};

// One client connection: its requests one after another (no pipelining: a request pipelined
// behind a streamed answer waits, buffered, until the answer ends).
class HttpServer::Connection : public std::enable_shared_from_this<HttpServer::Connection> {
  using tcp = boost::asio::ip::tcp;
  using error_code = boost::system::error_code;

 public:
  Connection(HttpServer& server, tcp::socket socket)
      : server_(server), stream_(std::move(socket)), write_timeout_(server.limits_.write_timeout) {}
  ~Connection() {
    std::lock_guard lock(server_.mutex_);
    server_.connections_.erase(this);
  }

  void start() {
    {
      std::lock_guard lock(server_.mutex_);
      if (server_.stopped_) return;
      server_.connections_.emplace(this, weak_from_this());
    }
    boost::asio::dispatch(stream_.get_executor(),
                          [self = shared_from_this()] { self->read_head(); });
  }

  // The server stops: a connection between requests, or reading one, closes now; one being
  // answered closes after its answer, or 2 s from now if its client stalls the writes (a write
  // already pending keeps its own deadline, so a timer closes the socket under it).
  void on_stop() {
    boost::asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->state_ == State::reading) return self->close();
      self->keep_alive_ = false;
      self->write_timeout_ = std::chrono::milliseconds(2000);
      self->stop_timer_.expires_after(self->write_timeout_);
      self->stop_timer_.async_wait([self](error_code ec) {
        if (!ec && self->state_ != State::closed) self->close();
      });
    });
  }

  void close() {
    boost::asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->state_ = State::closed;
      self->stop_timer_.cancel();
      error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      self->stream_.close();
    });
  }

 private:
  enum class State { reading, answering, closed };
  static constexpr size_t MAX_TARGET_BYTES = 2048;
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  const HttpLimits& limits() const { return server_.limits_; }

  // ---- reading a request -----------------------------------------------------------------------
  void read_head() {
    if (state_ == State::closed) return;
    if (server_.stopped_) return close();
    state_ = State::reading;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(limits().max_header_bytes));
    parser_->body_limit(limits().max_body_bytes);
    stream_.expires_after(served_ == 0 ? limits().header_timeout : limits().keep_alive_timeout);
    boost::beast::http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->on_head(ec); });
  }

  void on_head(error_code ec) {
    namespace http = boost::beast::http;
    if (ec) return read_failed(ec);
    const auto& head = parser_->get();
    // Routes match paths by regex, which recurses per character: bound the target well below
    // what a thread's stack holds (and no API needs more).
    if (head.target().size() > MAX_TARGET_BYTES)
      return answer_error(
          414, "the request target is longer than " + std::to_string(MAX_TARGET_BYTES) + " bytes");
    try {
      encoding_ = body_encoding(std::string(head[http::field::content_encoding]));
    } catch (const HttpError& e) {
      return answer_error(e.status, e.what());
    }
    if (head.version() >= 11 && boost::beast::iequals(head[http::field::expect], "100-continue")) {
      // curl (bodies over 1 MiB) and others wait for this before sending the body.
      static const std::string CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(limits().write_timeout);
      return boost::asio::async_write(stream_, boost::asio::buffer(CONTINUE),
                                      [self = shared_from_this()](error_code e, size_t) {
                                        if (e) return self->close();
                                        self->read_body();
                                      });
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(limits().body_timeout);
    boost::beast::http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](error_code ec, size_t) { self->on_body(ec); });
  }

  // The head or body could not be read: answer what deserves an answer, close quietly otherwise.
  void read_failed(error_code ec) {
    namespace http = boost::beast::http;
    if (ec == http::error::body_limit)
      return answer_error(413, "the request body is too large (limit " +
                                   std::to_string(limits().max_body_bytes) + " bytes)");
    if (ec == http::error::header_limit)
      return answer_error(431, "the request head is too large (limit " +
                                   std::to_string(limits().max_header_bytes) + " bytes)");
    // Socket errors, the deadline, or the client closing between or within requests: no answer.
    const bool malformed =
        ec.category() == http::make_error_code(http::error::bad_method).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message;
    if (!malformed || state_ == State::closed) return close();
    answer_error(400, "malformed HTTP request: " + ec.message());
  }

  void on_body(error_code ec) {
    if (ec) return read_failed(ec);
    namespace http = boost::beast::http;
    http::request<http::string_body> message = parser_->release();
    request_ = Request{};
    request_.method = std::string(message.method_string());
    std::tie(request_.path, request_.query) = split_target(message.target());
    for (const auto& field : message)
      request_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    try {
      request_.body = decode_body(message.body(), encoding_, limits().max_body_bytes);
    } catch (const HttpError& e) {
      return answer_error(e.status, e.what());
    }
    version_ = message.version();
    head_only_ = message.method() == http::verb::head;
    ++served_;
    keep_alive_ =
        message.keep_alive() && served_ < limits().max_requests_per_connection && !server_.stopped_;
    state_ = State::answering;
    stream_.expires_never();
    bool on_worker = false;
    try {
      on_worker = server_.app_.runs_on_worker(request_);
    } catch (const std::exception& e) {
      return answer_error(500, std::string("internal error: ") + e.what());
    }
    if (!on_worker) {
      Response response = handle();
      if (response.stream) return start_stream(std::move(response));
      return write_whole(std::move(response));
    }
    boost::asio::post(server_.workers_, [self = shared_from_this()] {
      Response response = self->handle();
      if (response.stream) return self->stream_on_worker(std::move(response));
      boost::asio::post(self->stream_.get_executor(), [self, r = std::move(response)]() mutable {
        self->write_whole(std::move(r));
      });
    });
  }

  // The application's response; never throws (an exception is a 500).
  Response handle() {
    Response response;
    try {
      server_.app_.handle(request_, response);
    } catch (const std::exception& e) {
      response = Response{};
      server_.app_.error(request_, 500, std::string("internal error: ") + e.what(), response);
    }
    return response;
  }

  // ---- writing a whole response ----------------------------------------------------------------
  boost::beast::http::response<boost::beast::http::string_body> message_of(Response& r) const {
    namespace http = boost::beast::http;
    http::response<http::string_body> m{static_cast<http::status>(r.status), version_};
    for (auto& [name, value] : r.headers) m.insert(name, value);
    m.body() = std::move(r.body);
    m.keep_alive(keep_alive_);
    if (keep_alive_) m.set("Keep-Alive", keep_alive_hint());
    m.prepare_payload();
    if (head_only_) m.body().clear();  // HEAD: the length of the body, not the body
    return m;
  }

  std::string keep_alive_hint() const {
    return "timeout=" +
           std::to_string(std::max<int64_t>(1, limits().keep_alive_timeout.count() / 1000));
  }

  void write_whole(Response r) {
    if (state_ == State::closed) return;
    auto message = std::make_shared<boost::beast::http::response<boost::beast::http::string_body>>(
        message_of(r));
    stream_.expires_after(write_timeout_);
    boost::beast::http::async_write(stream_, *message,
                                    [self = shared_from_this(), message](error_code ec, size_t) {
                                      if (ec) return self->close();
                                      self->after_answer();
                                    });
  }

  // An error the server answers itself: the request (or what was read of it) is abandoned, so the
  // connection closes after the answer.
  void answer_error(int status, const std::string& text) {
    Request partial;
    if (parser_) {
      const auto& head = parser_->get();
      partial.method = std::string(head.method_string());
      partial.path = split_target(head.target()).first;
      for (const auto& field : head)
        partial.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      version_ = head.version() == 10 ? 10 : 11;
    }
    Response r;
    server_.app_.error(partial, status, text, r);
    keep_alive_ = false;
    state_ = State::answering;
    write_whole(std::move(r));
  }

  void after_answer() {
    if (keep_alive_ && state_ != State::closed) return read_head();
    linger_close();
  }

  // Closes after the client has read the answer: shut our side, then drain what the client still
  // sends (an unread body would make the kernel reset the connection and could destroy the answer
  // before the client reads it) for at most a second.
  void linger_close() {
    state_ = State::closed;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::chrono::seconds(1));
    drain();
  }
  void drain() {
    stream_.async_read_some(boost::asio::buffer(discard_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->stream_.close();
                              self->drain();
                            });
  }

  // ---- streaming a response from a worker ------------------------------------------------------
  class ChunkWriter : public BodyWriter {
   public:
    ChunkWriter(Connection& c, bool head_sent) : c_(c), head_sent_(head_sent) {}
    bool write(std::string_view data) override {
      if (!head_sent_) return false;
      if (data.empty()) return !c_.gone_;
      return c_.write_from_worker(data, false);
    }

   private:
    Connection& c_;
    bool head_sent_;
  };

  // A stream that an I/O-thread handler returned: run on a worker.
  void start_stream(Response r) {
    boost::asio::post(server_.workers_, [self = shared_from_this(), r = std::move(r)]() mutable {
      self->stream_on_worker(std::move(r));
    });
  }

  // On a worker: the head, the body chunk by chunk, the last chunk; then back to the strand.
  void stream_on_worker(Response r) {
    // The stream runs even when the head could not go out: its writes fail at once, so what it
    // stands for (engine requests) is cancelled.
    const bool head_sent = begin_stream(r);
    ChunkWriter writer(*this, head_sent);
    bool complete = false;
    try {
      complete = r.stream(writer) && head_sent;
    } catch (const std::exception&) {
    }
    if (complete && chunked_) complete = write_from_worker({}, true);
    boost::asio::post(stream_.get_executor(),
                      [self = shared_from_this(), complete] { self->end_stream(complete); });
  }

  // Writes the head and starts watching for the client's EOF. Waits (a worker's call).
  bool begin_stream(Response& r) {
    std::promise<bool> written;
    auto done = written.get_future();
    boost::asio::post(stream_.get_executor(), [this, &r, &written] {
      namespace http = boost::beast::http;
      if (state_ == State::closed) return written.set_value(false);
      on_disconnect_ = std::move(r.on_disconnect);
      chunked_ = version_ >= 11;
      if (!chunked_) keep_alive_ = false;  // HTTP/1.0: the body ends when the connection does
      http::response<http::empty_body> head{static_cast<http::status>(r.status), version_};
      for (auto& [name, value] : r.headers) head.insert(name, value);
      head.keep_alive(keep_alive_);
      if (keep_alive_) head.set("Keep-Alive", keep_alive_hint());
      head.chunked(chunked_);
      std::ostringstream text;
      text << head.base();
      stream_head_ = text.str();
      watch();
      stream_.expires_after(write_timeout_);
      boost::asio::async_write(stream_, boost::asio::buffer(stream_head_),
                               [&written](error_code ec, size_t) { written.set_value(!ec); });
    });
    return done.get();
  }

  // One chunk (or the last, empty one) from the worker; waits for it to be written.
  bool write_from_worker(std::string_view data, bool last) {
    std::promise<bool> written;
    auto done = written.get_future();
    boost::asio::post(stream_.get_executor(), [this, data, last, &written] {
      namespace http = boost::beast::http;
      if (state_ == State::closed || gone_) return written.set_value(false);
      const auto on_written = [&written](error_code ec, size_t) { written.set_value(!ec); };
      stream_.expires_after(write_timeout_);
      if (!chunked_)
        boost::asio::async_write(stream_, boost::asio::buffer(data.data(), data.size()),
                                 on_written);
      else if (last)
        boost::asio::async_write(stream_, http::make_chunk_last(), on_written);
      else
        boost::asio::async_write(
            stream_, http::make_chunk(boost::asio::const_buffer(data.data(), data.size())),
            on_written);
    });
    return done.get();
  }

  // While a stream runs, a read stays pending on the socket: EOF or an error means the client is
  // gone (the application hears it through on_disconnect at once, not at its next write). Bytes
  // (a pipelined request) are kept for later, up to the head limit.
  void watch() {
    if (buffer_.size() >= limits().max_header_bytes) return;
    watching_ = true;
    stream_.socket().async_read_some(
        buffer_.prepare(4096), [self = shared_from_this()](error_code ec, size_t n) {
          self->watching_ = false;
          if (ec == boost::asio::error::operation_aborted && self->after_watch_) {
            return std::exchange(self->after_watch_, {})();
          }
          if (ec) {
            self->gone_ = true;
            if (auto callback = std::exchange(self->on_disconnect_, {})) callback();
            if (self->after_watch_) std::exchange(self->after_watch_, {})();
            return;
          }
          self->buffer_.commit(n);
          // The stream ended while these bytes came (its cancel came too late): go on now.
          if (self->after_watch_) return std::exchange(self->after_watch_, {})();
          self->watch();
        });
  }

  // On the strand, after the worker's last write.
  void end_stream(bool complete) {
    on_disconnect_ = nullptr;
    stream_.expires_never();
    const auto next = [self = shared_from_this(), complete] {
      if (complete && !self->gone_ && self->state_ != State::closed) return self->after_answer();
      self->close();
    };
    if (!watching_) return next();
    after_watch_ = next;
    error_code ignored;
    stream_.socket().cancel(ignored);  // ends the watch; its handler runs `next`
  }

  HttpServer& server_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  BodyEncoding encoding_ = BodyEncoding::identity;
  Request request_;
  unsigned version_ = 11;
  bool head_only_ = false;  // a HEAD request
  size_t served_ = 0;       // requests read on this connection
  bool keep_alive_ = true;
  State state_ = State::reading;
  std::chrono::milliseconds write_timeout_;
  // A stream in progress:
  bool chunked_ = true;
  std::string stream_head_;
  bool watching_ = false;
  std::atomic<bool> gone_{false};  // the client closed its side
  std::function<void()> on_disconnect_;
  std::function<void()> after_watch_;
  char discard_[4096];
  boost::asio::steady_timer stop_timer_{stream_.get_executor()};
};

inline void HttpServer::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
  }
  boost::asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
  for_each_connection([](Connection& c) { c.on_stop(); });
  workers_.join();  // the handlers end: the application ends what they wait for
  for_each_connection([](Connection& c) { c.close(); });
  work_.reset();
  // The connections' last operations end with their sockets; then run() returns.
  if (!running_) io_.stop();
}
inline void HttpServer::accept() {
  acceptor_.async_accept(boost::asio::make_strand(io_), [this](boost::system::error_code ec,
                                                               boost::asio::ip::tcp::socket s) {
    if (!acceptor_.is_open()) return;
    if (ec) {  // e.g. out of file descriptors: try again shortly instead of spinning
      auto timer = std::make_shared<boost::asio::steady_timer>(acceptor_.get_executor(),
                                                               std::chrono::milliseconds(50));
      timer->async_wait([this, timer](boost::system::error_code) { accept(); });
      return;
    }
    if (connection_count() >= limits_.max_connections) {
      refuse(std::move(s));
    } else {
      boost::system::error_code ignored;
      s.set_option(boost::asio::ip::tcp::no_delay(true), ignored);  // tokens: no Nagle delay
      std::make_shared<Connection>(*this, std::move(s))->start();
    }
    accept();
  });
}
}  // namespace hllm::serve::http
