// The server's HTTP layer (serve/http/) on its own, with a small application and raw sockets:
// body decoding against zlib's own output, deadlines, the connection cap, keep-alive, streams and
// the client's disconnect, handler failures, and a stop with idle and half-read connections.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "hllm/serve/http/content_encoding.hpp"
#include "hllm/serve/http/router.hpp"
#include "hllm/serve/http/server.hpp"

namespace http = hllm::serve::http;
using namespace std::chrono_literals;

namespace {

// zlib's compress of `text`: gzip (window_bits 31), zlib (15) or raw deflate (-15).
std::string deflate_with(const std::string& text, int window_bits) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, text.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

int status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const http::HttpError& e) {
    return e.status;
  }
  return 0;
}

}  // namespace

TEST(ContentEncoding, NamesTheEncodingOrRefuses) {
  EXPECT_EQ(http::body_encoding(""), http::BodyEncoding::identity);
  EXPECT_EQ(http::body_encoding("identity"), http::BodyEncoding::identity);
  EXPECT_EQ(http::body_encoding(" GZip "), http::BodyEncoding::gzip);
  EXPECT_EQ(http::body_encoding("x-gzip"), http::BodyEncoding::gzip);
  EXPECT_EQ(http::body_encoding("deflate, identity"), http::BodyEncoding::deflate);
  EXPECT_EQ(status_of([] { http::body_encoding("br"); }), 415);
  EXPECT_EQ(status_of([] { http::body_encoding("zstd"); }), 415);
  EXPECT_EQ(status_of([] { http::body_encoding("gzip, gzip"); }), 415);
}

TEST(ContentEncoding, InflatesWhatZlibWrote) {
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "token " + std::to_string(i) + " ";
  EXPECT_EQ(http::decode_body(deflate_with(text, 31), http::BodyEncoding::gzip, 1 << 20), text);
  EXPECT_EQ(http::decode_body(deflate_with(text, 15), http::BodyEncoding::deflate, 1 << 20), text);
  EXPECT_EQ(http::decode_body(deflate_with(text, -15), http::BodyEncoding::deflate, 1 << 20), text);
  // Concatenated gzip members are one body (RFC 1952 §2.2).
  EXPECT_EQ(http::decode_body(deflate_with("abc", 31) + deflate_with("def", 31),
                              http::BodyEncoding::gzip, 100),
            "abcdef");
  EXPECT_EQ(http::decode_body("plain", http::BodyEncoding::identity, 100), "plain");
}

TEST(ContentEncoding, TheLimitHoldsForTheDecodedSize) {
  const std::string text(100000, 'x');
  const std::string gz = deflate_with(text, 31);
  ASSERT_LT(gz.size(), 1000u);  // a bomb in miniature: 100x
  EXPECT_EQ(http::decode_body(gz, http::BodyEncoding::gzip, text.size()).size(), text.size());
  EXPECT_EQ(status_of([&] { http::decode_body(gz, http::BodyEncoding::gzip, text.size() - 1); }),
            413);
  // 256 MiB of zeros in ~256 KiB of gzip: refused once the output passes the limit.
  std::string mib(1 << 20, '\0');
  z_stream z{};
  ASSERT_EQ(deflateInit2(&z, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string bomb(2 << 20, '\0');
  z.next_out = reinterpret_cast<Bytef*>(bomb.data());
  z.avail_out = static_cast<uInt>(bomb.size());
  for (int i = 0; i < 256; ++i) {
    z.next_in = reinterpret_cast<Bytef*>(mib.data());
    z.avail_in = static_cast<uInt>(mib.size());
    ASSERT_EQ(deflate(&z, i == 255 ? Z_FINISH : Z_NO_FLUSH), i == 255 ? Z_STREAM_END : Z_OK);
  }
  bomb.resize(z.total_out);
  deflateEnd(&z);
  EXPECT_EQ(status_of([&] { http::decode_body(bomb, http::BodyEncoding::gzip, 4 << 20); }), 413);
}

TEST(ContentEncoding, CorruptOrTruncatedIs400) {
  const std::string gz = deflate_with(std::string(5000, 'a') + "end", 31);
  EXPECT_EQ(status_of([&] {
              http::decode_body(gz.substr(0, gz.size() / 2), http::BodyEncoding::gzip, 1 << 20);
            }),
            400);
  EXPECT_EQ(status_of([] { http::decode_body("not gzip", http::BodyEncoding::gzip, 100); }), 400);
  EXPECT_EQ(status_of([&] { http::decode_body(gz + "junk", http::BodyEncoding::gzip, 1 << 20); }),
            400);
  EXPECT_EQ(status_of([] { http::decode_body("", http::BodyEncoding::gzip, 100); }), 400);
}

TEST(HttpTarget, SplitsAndDecodes) {
  EXPECT_EQ(http::split_target("/v1/models/a%20b?x=1%202"),
            (std::pair<std::string, std::string>{"/v1/models/a b", "x=1%202"}));
  EXPECT_EQ(http::split_target("http://host:8000/health").first, "/health");
  EXPECT_EQ(http::percent_decode("%zz%4"), "%zz%4");
  EXPECT_EQ(http::percent_decode("%2F%2f"), "//");
}

// ---- the server, over real sockets --------------------------------------------------------------
namespace {

// A server with a few routes on 127.0.0.1, run on its own thread.
class TestServer {
 public:
  explicit TestServer(http::HttpLimits limits) {
    router_.add("GET", "/hello", [](http::Request&, http::Response& res) {
      res.set_content("hello", "text/plain");
    });
    router_.add("POST", "/echo", [](http::Request& req, http::Response& res) {
      res.set_content(req.body, "text/plain");
    });
    // A short stream, answered on a worker (the shape of every completion).
    router_.add(
        "POST", "/short",
        [](http::Request&, http::Response& res) {
          res.set_header("Content-Type", "text/plain");
          res.stream = [](http::BodyWriter& body) { return body.write("done"); };
        },
        http::RunOn::worker);
    router_.add("GET", "/id/(.+)", [](http::Request& req, http::Response& res) {
      res.set_content(req.matches[1], "text/plain");
    });
    router_.add("GET", "/throw",
                [](http::Request&, http::Response&) { throw std::runtime_error("boom"); });
    // Streams "tick" chunks until the client leaves (or 10 s pass).
    router_.add(
        "GET", "/stream",
        [this](http::Request&, http::Response& res) {
          res.set_header("Content-Type", "text/plain");
          res.stream = [this](http::BodyWriter& body) {
            for (int i = 0; i < 1000; ++i) {
              if (!body.write("tick\n")) return false;
              std::unique_lock lock(mutex_);
              if (changed_.wait_for(lock, 10ms, [this] { return disconnected_; })) return false;
            }
            return true;
          };
          res.on_disconnect = [this] {
            std::lock_guard lock(mutex_);
            disconnected_ = true;
            changed_.notify_all();
          };
        },
        http::RunOn::worker);
    http::Application app;
    app.runs_on_worker = [this](http::Request& req) {
      const auto* route = router_.find(req);
      return route != nullptr && route->run_on == http::RunOn::worker;
    };
    app.handle = [this](http::Request& req, http::Response& res) {
      const auto* route = router_.find(req, true);
      if (route == nullptr) {
        res.status = 404;
        return res.set_content("none", "text/plain");
      }
      route->handler(req, res);
    };
    app.error = [](const http::Request&, int status, const std::string& message,
                   http::Response& res) {
      res.status = status;
      res.set_content("error: " + message, "text/plain");
    };
    server_ = std::make_unique<http::HttpServer>(limits, app);
    port_ = server_->bind("127.0.0.1", 0);
    thread_ = std::thread([this] { server_->run(); });
    while (!server_->running()) std::this_thread::sleep_for(1ms);
  }
  ~TestServer() { stop(); }

  void stop() {
    if (thread_.joinable()) {
      server_->stop();
      thread_.join();
    }
  }
  int port() const { return port_; }
  bool disconnected() {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 2s, [this] { return disconnected_; });
  }

 private:
  http::Router router_;
  std::unique_ptr<http::HttpServer> server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool disconnected_ = false;
};

// A blocking client socket to 127.0.0.1:port.
class Client {
 public:
  explicit Client(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~Client() { close(fd_); }
  bool connected() const { return connected_; }
  void send(const std::string& data) const {
    EXPECT_EQ(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  // What arrives within `wait` (until `until` appears in it, or the server closes).
  std::string receive(std::chrono::milliseconds wait, const std::string& until = "") {
    std::string got;
    const auto end = std::chrono::steady_clock::now() + wait;
    while (std::chrono::steady_clock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) {
        closed_ = true;
        break;
      }
      got.append(buffer, static_cast<size_t>(n));
      if (!until.empty() && got.find(until) != std::string::npos) break;
    }
    return got;
  }
  bool closed_by_server(std::chrono::milliseconds wait) {
    receive(wait);
    return closed_;
  }
  void shut_write() const { shutdown(fd_, SHUT_WR); }

 private:
  int fd_;
  bool connected_ = false;
  bool closed_ = false;
};

http::HttpLimits quick_limits() {
  http::HttpLimits limits;
  limits.header_timeout = 300ms;
  limits.keep_alive_timeout = 300ms;
  limits.body_timeout = 500ms;
  limits.max_body_bytes = 1000;
  limits.workers = 4;
  return limits;
}

}  // namespace

TEST(HttpServer, AnswersAndKeepsTheConnection) {
  TestServer server(quick_limits());
  Client c(server.port());
  ASSERT_TRUE(c.connected());
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string first = c.receive(2s, "hello");
  EXPECT_NE(first.find("HTTP/1.1 200 OK"), std::string::npos) << first;
  EXPECT_NE(first.find("Keep-Alive: timeout="), std::string::npos) << first;
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde");
  EXPECT_NE(c.receive(2s, "abcde").find("\r\n\r\nabcde"), std::string::npos);
  c.send("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(c.receive(2s, "none").find("404"), std::string::npos);
  // Idle past the keep-alive deadline: closed.
  EXPECT_TRUE(c.closed_by_server(2s));
}

TEST(HttpServer, ATricklingHeadIsDroppedAtTheDeadline) {
  TestServer server(quick_limits());
  Client slow(server.port());
  const auto start = std::chrono::steady_clock::now();
  slow.send("GET /hello HTTP/1.1\r\n");
  bool closed = false;
  for (int i = 0; i < 40 && !closed; ++i) {  // a header line every 50 ms, for 2 s at most
    slow.send("X-Slow: 1\r\n");
    closed = slow.closed_by_server(50ms);
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);  // the deadline is 300 ms
  // A normal client is served meanwhile and after.
  Client c(server.port());
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(c.receive(2s, "hello").find("200 OK"), std::string::npos);
}

TEST(HttpServer, OverTheConnectionCapNewOnesGet503) {
  http::HttpLimits limits = quick_limits();
  limits.header_timeout = 5s;
  limits.max_connections = 2;
  TestServer server(limits);
  Client a(server.port()), b(server.port());
  std::this_thread::sleep_for(100ms);  // both accepted
  Client c(server.port());
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string refused = c.receive(2s);
  EXPECT_TRUE(refused.empty() || refused.find("HTTP/1.1 503") == 0) << refused;
  a.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(a.receive(2s, "hello").find("200 OK"), std::string::npos);  // still served
}

TEST(HttpServer, BodiesOverTheLimitOrBadlyEncodedAreRefused) {
  TestServer server(quick_limits());
  {
    Client c(server.port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    const std::string answer = c.receive(2s, "limit");
    EXPECT_EQ(answer.find("HTTP/1.1 413"), 0u) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos);
  }
  {
    const std::string gz = deflate_with(std::string(5000, 'z'), 31);  // 1000-byte limit
    Client c(server.port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: " +
           std::to_string(gz.size()) + "\r\n\r\n" + gz);
    EXPECT_EQ(c.receive(2s, "decoded").find("HTTP/1.1 413"), 0u);
  }
  {
    const std::string gz = deflate_with("fine", 31);
    Client c(server.port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: " +
           std::to_string(gz.size()) + "\r\n\r\n" + gz);
    EXPECT_NE(c.receive(2s, "fine").find("\r\n\r\nfine"), std::string::npos);
  }
  {
    Client c(server.port());
    c.send(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc");
    EXPECT_EQ(c.receive(2s, "br").find("HTTP/1.1 415"), 0u);
  }
  {
    Client c(server.port());  // the body never comes: closed at the body deadline
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    EXPECT_TRUE(c.closed_by_server(2s));
  }
  {
    Client c(server.port());
    c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    EXPECT_EQ(c.receive(2s, "\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
    c.send("xyz");
    EXPECT_NE(c.receive(2s, "xyz").find("200 OK"), std::string::npos);
  }
  {
    Client c(server.port());
    c.send("GARBAGE\r\n\r\n");
    EXPECT_EQ(c.receive(2s, "error").find("HTTP/1.1 400"), 0u);
  }
}

TEST(HttpServer, AHandlerThatThrowsIsA500AndTheServerGoesOn) {
  TestServer server(quick_limits());
  Client c(server.port());
  c.send("GET /throw HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string answer = c.receive(2s, "boom");
  EXPECT_EQ(answer.find("HTTP/1.1 500"), 0u) << answer;
  EXPECT_NE(answer.find("boom"), std::string::npos);
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(c.receive(2s, "hello").find("200 OK"), std::string::npos);
}

TEST(HttpServer, AStreamIsChunkedAndHearsTheClientLeave) {
  TestServer server(quick_limits());
  Client c(server.port());
  c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string start = c.receive(2s, "tick");
  EXPECT_NE(start.find("Transfer-Encoding: chunked"), std::string::npos) << start;
  EXPECT_NE(start.find("5\r\ntick\n\r\n"), std::string::npos) << start;
  c.shut_write();  // the client is done: its EOF reaches on_disconnect without a failed write
  EXPECT_TRUE(server.disconnected());
}

TEST(HttpServer, StopClosesIdleAndSlowConnectionsAtOnce) {
  http::HttpLimits limits = quick_limits();
  limits.header_timeout = 30s;
  limits.keep_alive_timeout = 30s;
  TestServer server(limits);
  Client idle(server.port()), slow(server.port()), kept(server.port());
  slow.send("GET /hello HTTP/1.1\r\nX-Slow: 1\r\n");
  kept.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(kept.receive(2s, "hello").find("200 OK"), std::string::npos);
  std::this_thread::sleep_for(50ms);
  const auto start = std::chrono::steady_clock::now();
  server.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_TRUE(idle.closed_by_server(1s));
  EXPECT_TRUE(slow.closed_by_server(1s));
  EXPECT_TRUE(kept.closed_by_server(1s));
}

TEST(HttpServer, StreamsOneAfterAnotherOnOneConnection) {
  TestServer server(quick_limits());
  Client c(server.port());
  for (int i = 0; i < 200; ++i) {  // a request right behind each answer: none may be left waiting
    c.send("POST /short HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    const std::string answer = c.receive(2s, "0\r\n\r\n");
    ASSERT_NE(answer.find("4\r\ndone\r\n0\r\n\r\n"), std::string::npos) << i << ": " << answer;
  }
}

TEST(HttpServer, LongTargetsAre414AndHeadHasNoBody) {
  TestServer server(quick_limits());
  {
    Client c(server.port());
    c.send("GET /id/" + std::string(60000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(c.receive(2s, "longer").find("HTTP/1.1 414"), 0u);
  }
  Client c(server.port());
  c.send("GET /id/" + std::string(1000, 'b') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(c.receive(2s, std::string(1000, 'b')).find("200 OK"), std::string::npos);
  c.send("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const std::string head = c.receive(100ms);  // (the keep-alive deadline is 300 ms)
  // No HEAD route: a 404 whose length is told and whose body is not sent.
  EXPECT_NE(head.find("Content-Length: 4\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("none"), std::string::npos) << head;
  c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");  // the connection is still in step
  EXPECT_EQ(c.receive(2s, "hello").find("HTTP/1.1 200"), 0u);
}
