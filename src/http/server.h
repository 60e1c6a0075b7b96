// server.h - the HTTP/1.1 engine: shard-per-core listeners and connections.
//
// Each shard of the Runtime (one thread, one io_context) gets its own
// SO_REUSEPORT acceptor; a connection lives on the shard that accepted it. Requests are
// parsed with Beast's basic_parser straight out of a per-connection read
// buffer, and answers are formatted into a per-connection write buffer; both
// are reused, so a keep-alive request allocates nothing on the IO thread in
// steady state (test/http/alloc_test.cpp counts it).
// Pipelined requests are answered in order. The engine knows nothing of
// routes: it hands each complete request to a Handler.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "runtime/runtime.h"

namespace kiroku::http {

enum class Method : std::uint8_t { get, head, post, put, delete_, options, other };

// One complete request. Every view points into connection-owned storage and
// is valid until the reply is sent (Reply::send or a Deferred's send).
struct Request {
  Method method = Method::other;
  std::string_view method_name;
  std::string_view target;  // path?query as received
  std::string_view path;    // still percent-encoded
  std::string_view query;   // after '?', empty if none
  std::string_view content_type;
  std::string_view authorization;  // from the head only: trailer fields are never merged
  std::string_view range;
  std::string_view if_none_match;  // conditional GET / HEAD (the file API)
  std::string_view if_modified_since;
  std::string_view if_range;
  std::string_view origin;  // a browser's Origin (CORS), empty when none
  // The client's X-Request-Id when usable (common/request_id.h), else one the
  // engine made; echoed in the answer's X-Request-Id and in JSON errors.
  std::string_view request_id;
  std::string_view body;  // whole body (bounded by the handler's body limit); empty when streamed
  // Content-Length as sent; nullopt for a chunked body (or none).
  std::optional<std::uint64_t> content_length;
  bool keep_alive = true;
  bool peer_loopback = false;
  // The head carries Forwarded, X-Forwarded-For or X-Real-IP: a proxy passed it on.
  bool forwarded = false;
  unsigned shard = 0;
  std::int64_t received_us = 0;  // Unix microseconds when the head was complete
};

class Connection;
class Reply;

// Resumes a connection whose BodyReader took fewer bytes than offered. Call
// resume() on the connection's shard thread; a no-op once the connection is
// gone or when it is not paused.
class BodyControl {
 public:
  BodyControl() = default;
  explicit BodyControl(std::weak_ptr<Connection> c) : conn_(std::move(c)) {}
  void resume() const;

 private:
  std::weak_ptr<Connection> conn_;
};

// Takes a request body as it arrives (uploads), instead of the engine reading
// it whole. Every call runs on the connection's shard thread, in order:
// on_body zero or more times, then on_end once, or on_abort once if the
// connection fails first (client gone, timeout, bad framing).
class BodyReader {
 public:
  virtual ~BodyReader() = default;
  // Like write(2), may take fewer bytes than offered (0 included): the engine
  // then reads nothing more until BodyControl::resume(), and offers the rest
  // again. The view is valid only during the call.
  virtual std::size_t on_body(std::string_view data) = 0;
  // The whole body was taken: answer with reply (send, or defer and send later).
  virtual void on_end(Reply& reply) = 0;
  // The request will never be answered; drop what was started.
  virtual void on_abort() = 0;
};

// An answer that a handler sends later (after a commit or an fsync). Holding
// it keeps the connection alive; send() must be called on the shard thread
// that produced it (Runtime::post to request.shard). Sending twice or
// never is a bug: a Deferred destroyed unsent answers 500. send() and end()
// never call back into the handler (pipelined requests wait for a later turn). It may be
// destroyed on any thread: the connection is then finished on its own.
class Deferred {
 public:
  Deferred() = default;
  explicit Deferred(std::shared_ptr<Connection> c);
  Deferred(Deferred&&) noexcept = default;
  Deferred& operator=(Deferred&&) noexcept;
  ~Deferred();
  explicit operator bool() const { return conn_ != nullptr; }
  void send(int status, std::string_view content_type, std::string_view body, std::string_view extra_headers = {});

  // A streamed answer instead of send(): begin() sends the head with the
  // Content-Length to come, write() sends the next piece of the body, end()
  // finishes after the last piece; never from inside the handler's own call. One write at a time: `done` runs on the
  // shard thread once the piece is in the socket (the bytes must stay valid
  // until then), with false if the connection failed (stop writing then).
  // A HEAD request gets the head only: write() just calls done(true).
  // Dropping the Deferred after begin() without end(), or end() before
  // content_length bytes, closes the connection (the client sees a short body).
  void begin(int status, std::string_view content_type, std::uint64_t content_length,
             std::string_view extra_headers = {});
  void write(std::span<const std::byte> data, std::function<void(bool)> done);
  void end();

 private:
  // Answers 500 (or closes a begun stream) if unanswered; from any thread.
  void drop() noexcept;

  std::shared_ptr<Connection> conn_;
  bool begun_ = false;
};

// The answer to one request. `extra_headers` is zero or more complete
// "Name: value\r\n" lines. Content-Length, Date, Server and Connection are
// added by the engine. HEAD answers omit the body.
class Reply {
 public:
  explicit Reply(Connection& c) : conn_(c) {}
  void send(int status, std::string_view content_type, std::string_view body, std::string_view extra_headers = {});
  // A JSON error body {"error": message} with the given status.
  void error(int status, std::string_view message, std::string_view extra_headers = {});
  // Answer later; the connection reads nothing more until then.
  Deferred defer();
  // For Handler::stream_body: resumes a paused body (see BodyReader::on_body).
  BodyControl body_control();
  bool sent() const { return sent_; }
  // The status sent, 0 if none yet (deferred or unanswered).
  int status() const { return status_; }

 private:
  friend class Connection;
  Connection& conn_;
  bool sent_ = false;
  bool deferred_ = false;
  int status_ = 0;
};

// Routes requests. Called on the connection's shard thread; must not block.
class Handler {
 public:
  virtual ~Handler() = default;
  // Largest body accepted for this request line (413 beyond). Called before
  // the headers are read.
  virtual std::uint64_t body_limit(Method method, std::string_view path) = 0;
  // Answers `req` with reply.send/error, or reply.defer() and later send.
  virtual void handle(const Request& req, Reply& reply) = 0;
  // Called once the head is complete, before any of the body: a reader to
  // take the body as it arrives (handle() is not called then; the reader
  // answers in on_end), or nullptr to read the body whole and call handle().
  // It may also answer at once with `reply` (401, 400...): the body is then
  // read and dropped (up to a few MiB, else the connection is closed) and the
  // connection closes after the answer. `req.body` is empty here.
  virtual std::shared_ptr<BodyReader> stream_body(const Request& req, Reply& reply) {
    (void)req;
    (void)reply;
    return nullptr;
  }
  // The answer's head is queued: once per request, deferred answers and the
  // engine's own errors (400, 413, 431) included. `took_us` runs from the
  // complete head (or, for a head that could not be read, is 0). For a
  // head that could not be read, req.path is empty.
  virtual void answered(const Request& req, int status, std::uint64_t took_us) {
    (void)req;
    (void)status;
    (void)took_us;
  }
};

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";
  unsigned max_connections = 10000;
  // The whole request head: request line, fields and the empty line (431 beyond).
  std::size_t max_header_bytes = 8 * 1024;
  // Largest single read from a socket; 0: the engine's own sizes. For tests
  // and fuzzing, which split requests at every place with small reads.
  std::size_t max_read_bytes = 0;
  std::chrono::milliseconds idle_timeout{75'000};
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{30'000};
};

// Counters the engine keeps; read from any thread.
struct ServerCounters {
  std::atomic<std::int64_t> open_connections{0};
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> rejected_over_limit{0};  // closed at once: --max-connections
  std::atomic<std::uint64_t> accept_errors{0};        // EMFILE and friends
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> parse_errors{0};
};

class Shard;

class HttpServer {
 public:
  // One listener per shard of `runtime`, which outlives the server.
  HttpServer(Runtime& runtime, ServerOptions options, Handler& handler);
  ~HttpServer();  // stop()

  // Opens the listening sockets (one per shard, SO_REUSEPORT). Port 0 picks a
  // free port once and every shard shares it. Errors are permanent.
  Status bind();
  // The bound address, "127.0.0.1:8080".
  std::string local_address() const;

  // Starts accepting on every shard (once the runtime runs); returns at once.
  void start();
  unsigned shards() const { return static_cast<unsigned>(shards_.size()); }
  Runtime& runtime() { return runtime_; }

  // Graceful stop, step 1: close the listening sockets; open connections
  // finish the request in progress and close (idle ones at once).
  void stop_accepting();
  // Connections still open (any thread).
  std::int64_t open_connections() const { return counters_.open_connections.load(); }
  // Step 2: closes the remaining connections; returns once every shard did.
  void close_connections();
  // Step 3: close_connections(), then waits (up to 2 s) until the answers
  // still held (Deferred) are gone too; stop the runtime after this.
  // Idempotent; the destructor calls it.
  void stop();

  const ServerCounters& counters() const { return counters_; }

 private:
  friend class Shard;
  friend class Connection;
  Runtime& runtime_;
  ServerOptions options_;
  Handler& handler_;
  ServerCounters counters_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::string bound_;
  bool stopped_ = false;
};

// Status line text for a code ("Not Found").
std::string_view reason_phrase(int status);

// Raises the open-file soft limit to the hard limit; returns the new limit.
std::uint64_t raise_open_file_limit();

}  // namespace kiroku::http
