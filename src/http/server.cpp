// server.cpp - shards, acceptors and connections of the HTTP/1.1 engine.
//
// The only translation unit that includes Beast's parser. Layout:
//   1. Shard: io_context, acceptor, the list of its connections, the sweep
//      timer that enforces timeouts and refreshes the Date header.
//   2. Connection: read -> parse -> handle -> write, in order, one request at
//      a time, with pipelined requests taken from the same read buffer.
//   3. HttpServer: binding, graceful stop (the threads are the Runtime's).
#include "http/server.h"

#include "runtime/op_memory.h"

#include "common/memory.h"
#include "common/request_id.h"
#include "common/text.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <array>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <charconv>
#include <chrono>
#include <ctime>
#include <future>
#include <limits>
#include <optional>
#include <random>
#include <thread>

namespace kiroku::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using beast::error_code;

namespace {

constexpr std::size_t kReadChunk = 8192;
// Read size while a body streams to a BodyReader (file uploads): fewer,
// larger reads; a connection's read buffer may grow to this once it has
// streamed a body (64 KiB reads cost 8-15 % more CPU per uploaded GiB).
constexpr std::size_t kStreamReadChunk = 256 * 1024;
// A request body buffer larger than this is released after its request, so
// one large POST does not pin memory on an idle keep-alive connection.
constexpr std::size_t kKeepBodyCapacity = 256 * 1024;
// A body answered before it was read (401, 400...) is read and dropped up to
// this many bytes so that the client sees the answer; past it the connection
// is closed.
constexpr std::uint64_t kDiscardMax = 4 * 1024 * 1024;
// A streamed answer is written in pieces of at most this size, each with its
// own write deadline: a client must take 256 KiB per --write-timeout. A
// piece goes to the kernel in one send when the socket takes it (asio's own
// completion conditions stop each send at 64 KiB).
constexpr std::size_t kStreamPiece = 256 * 1024;
// How long a connection may wait for a handler: a deferred answer (always
// sent, see Deferred) or a paused upload body (the store's own timeouts end it).
constexpr std::chrono::minutes kWaitForHandler{10};
// A keep-alive connection idle this long gives its buffers back and waits for
// readability without one (10,000 idle connections then hold no read buffers).
constexpr std::chrono::seconds kParkAfter{2};

// async_write's completion condition for a streamed piece: each send offers
// all that is left of it (the head and the piece).
std::size_t whole_piece(const error_code& ec, std::size_t) { return ec ? 0 : std::numeric_limits<std::size_t>::max(); }

Method to_method(beast::http::verb v) {
  using beast::http::verb;
  switch (v) {
    case verb::get: return Method::get;
    case verb::head: return Method::head;
    case verb::post: return Method::post;
    case verb::put: return Method::put;
    case verb::delete_: return Method::delete_;
    case verb::options: return Method::options;
    default: return Method::other;
  }
}

std::int64_t unix_us_now() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_loopback(const tcp::endpoint& ep) {
  const auto a = ep.address();
  if (a.is_v4()) return a.to_v4().is_loopback();
  const auto v6 = a.to_v6();
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).is_loopback();
  return v6.is_loopback();
}

}  // namespace

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
  }
}

std::uint64_t raise_open_file_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  return rl.rlim_cur;
}

// ---------------------------------------------------------------------------
// Handler memory

// `handler` with its operation's memory in `m` (a connection has at most one
// read or readiness wait and one write in flight: op_memory.h).
template <class Handler>
auto in(OpMemory& m, Handler&& handler) {
  return asio::bind_allocator(OpAllocator<int>(m), std::forward<Handler>(handler));
}

// ---------------------------------------------------------------------------
// Shard

class Shard {
 public:
  Shard(HttpServer& owner, unsigned i)
      : server(owner), index(i), ctx(owner.runtime_.context(i)), acceptor(ctx), sweep_timer(ctx), accept_pause(ctx) {
    refresh_date();
    std::random_device rd;
    next_request_id = (std::uint64_t{rd()} << 32) ^ rd();
  }

  // A fresh request id: 16 hex digits of a per-shard counter that starts at
  // a random value (unique within the process, and across processes but by
  // a 1 in 2^64 chance).
  void new_request_id(std::array<char, 16>& out) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::uint64_t v = next_request_id++;
    for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kHex[v & 0xF];
  }

  void start_accepting() {
    do_accept();
    sweep();
  }
  void do_accept();
  void sweep();
  void refresh_date() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    date_len = std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  }
  void drain();  // on the shard thread
  void close_all();

  HttpServer& server;
  const unsigned index;
  asio::io_context& ctx;
  tcp::acceptor acceptor;
  asio::steady_timer sweep_timer;
  asio::steady_timer accept_pause;
  Connection* connections = nullptr;  // intrusive list, shard thread only
  char date[40] = {};
  std::size_t date_len = 0;
  bool draining = false;
  std::uint64_t next_request_id = 0;
  Clock::time_point now = Clock::now();  // refreshed by the sweep
};

// ---------------------------------------------------------------------------
// Connection

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Shard& shard, tcp::socket socket, bool loopback)
      : shard_(shard), socket_(std::move(socket)), loopback_(loopback) {
    next_ = shard_.connections;
    if (next_) next_->prev_ = this;
    shard_.connections = this;
    shard_.server.counters_.open_connections.fetch_add(1, std::memory_order_relaxed);
    rbuf_.max_size(std::max<std::size_t>(shard_.server.options_.max_header_bytes + kReadChunk, 64 * 1024));
  }

  ~Connection() {
    if (prev_) prev_->next_ = next_;
    else shard_.connections = next_;
    if (next_) next_->prev_ = prev_;
    shard_.server.counters_.open_connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void start() {
    set_deadline(shard_.server.options_.idle_timeout);
    idle_since_ = shard_.now;
    // No read buffer until the client has sent something. Parked from the
    // start, so that the sweep does not cancel this wait (which would close it).
    parked_ = true;
    wait_readable();
  }

  // Called by the sweep when the deadline has passed.
  void expire() {
    shard_.server.counters_.timeouts.fetch_add(1, std::memory_order_relaxed);
    close();
  }
  bool expired(Clock::time_point now) const { return deadline_ < now; }
  // Idle between requests: nothing buffered, nothing being answered.
  bool idle() const { return state_ == State::reading && !parser_ && rbuf_.size() == 0; }
  bool idle_since(Clock::time_point t) const { return idle() && !parked_ && idle_since_ < t; }
  // Idle for a while: cancel the pending read; on_read then releases the
  // buffers and waits for readability instead.
  void park() {
    if (parked_ || !idle()) return;
    parked_ = true;
    error_code ignored;
    socket_.cancel(ignored);
  }
  // Streams (Deferred::begin/write/end), on the shard thread.
  void stream_begin(int status, std::string_view content_type, std::uint64_t content_length,
                    std::string_view extra_headers);
  void stream_write(std::span<const std::byte> data, std::function<void(bool)> done);
  void stream_end();
  // BodyControl::resume.
  void resume_body() {
    if (body_mode_ != Body::paused || state_ == State::closed) return;
    body_mode_ = Body::streamed;
    auto self = std::move(paused_self_);
    if (state_ == State::reading) process();
  }
  Connection* next() const { return next_; }

  void close() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    if (reader_) {
      auto reader = std::move(reader_);
      reader->on_abort();
    }
    paused_self_.reset();
  }

  void append_response(int status, std::string_view content_type, std::string_view body,
                       std::string_view extra_headers);
  // The status line and headers; content_length nullopt: none (no body).
  void append_head(int status, std::string_view content_type, std::optional<std::uint64_t> content_length,
                   std::string_view extra_headers);
  void resume_after_deferred();
  Shard& shard() { return shard_; }

 private:
  friend class Reply;
  enum class State { reading, waiting_reply, writing, closed };
  // What becomes of the current request's body: kept in body_ for handle();
  // streamed to reader_ (paused: reader_ took less than offered, until
  // resume_body()); or read and dropped (answered before its body).
  enum class Body { buffered, streamed, paused, discarding };

  // Beast's parser, feeding callbacks straight into this connection.
  class Parser final : public beast::http::basic_parser<true> {
   public:
    explicit Parser(Connection& c) : c_(c) {}

   private:
    void on_request_impl(beast::http::verb method, beast::string_view method_str, beast::string_view target,
                         int version, error_code& ec) override {
      (void)ec;
      c_.on_request_line(method, std::string_view(method_str), std::string_view(target), version);
      body_limit(c_.body_limit_);
    }
    void on_response_impl(int, beast::string_view, int, error_code&) override {}
    void on_field_impl(beast::http::field name, beast::string_view name_str, beast::string_view value,
                       error_code& ec) override {
      // After the head, fields are the trailer of a chunked body: they are
      // never merged into the request (RFC 9110 6.5.1), and the head's
      // storage, which the Request's views point into, is not touched again.
      if (is_header_done()) c_.on_trailer_field(name_str.size() + value.size() + 4, ec);
      else c_.on_field(name, std::string_view(name_str), std::string_view(value));
    }
    void on_header_impl(error_code& ec) override {
      // RFC 9112 6.3: a Transfer-Encoding that does not end in chunked leaves
      // the length unknown (Beast would read no body): 400 and close.
      if (c_.transfer_encoding_ && !chunked()) {
        ec = beast::http::error::bad_transfer_encoding;
        return;
      }
      // RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with
      // more than one, is a 400.
      if (c_.hosts_ > 1) c_.head_error_ = "more than one Host header";
      else if (c_.hosts_ == 0 && c_.version_ >= 11) c_.head_error_ = "an HTTP/1.1 request needs a Host header";
      if (!c_.head_error_.empty()) {
        ec = beast::http::error::bad_value;
        return;
      }
      c_.on_head();
    }
    void on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code&) override {
      if (c_.body_mode_ != Body::buffered) return;
      if (length && *length <= c_.body_limit_) c_.body_.reserve(static_cast<std::size_t>(*length));
    }
    std::size_t on_body_impl(beast::string_view body, error_code&) override {
      return c_.on_body(std::string_view(body.data(), body.size()));
    }
    void on_chunk_header_impl(std::uint64_t, beast::string_view, error_code&) override {}
    std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view body, error_code&) override {
      return c_.on_body(std::string_view(body.data(), body.size()));
    }
    void on_finish_impl(error_code&) override {}

    Connection& c_;
  };

  struct Span {
    std::uint32_t off = 0, len = 0;
  };

  Span store(std::string_view s) {
    Span sp{static_cast<std::uint32_t>(head_.size()), static_cast<std::uint32_t>(s.size())};
    head_.append(s);
    return sp;
  }
  std::string_view view(Span s) const { return std::string_view(head_).substr(s.off, s.len); }

  void on_request_line(beast::http::verb method, std::string_view method_str, std::string_view target, int version) {
    head_.clear();
    content_type_ = authorization_ = range_ = Span{};
    if_none_match_ = if_modified_since_ = if_range_ = origin_ = request_id_ = Span{};
    expect_continue_ = false;
    transfer_encoding_ = false;
    forwarded_ = false;
    hosts_ = 0;
    version_ = version;
    head_error_ = {};
    trailer_bytes_ = 0;
    seen_authorization_ = false;
    method_ = to_method(method);
    method_name_ = store(method_str);
    target_ = store(target);
    const auto q = target.find('?');
    body_limit_ = shard_.server.handler_.body_limit(method_, target.substr(0, q));
  }

  // The head is complete: fill req_ (all but the body) and let the handler
  // take the body as a stream, answer at once, or have it read whole.
  std::string_view generate_request_id() {
    shard_.new_request_id(generated_id_);
    return std::string_view(generated_id_.data(), generated_id_.size());
  }

  void on_head() {
    head_started_ = false;
    Request& r = req_;
    r.method = method_;
    r.method_name = view(method_name_);
    r.target = view(target_);
    const auto q = r.target.find('?');
    r.path = r.target.substr(0, q);
    r.query = q == std::string_view::npos ? std::string_view{} : r.target.substr(q + 1);
    r.content_type = view(content_type_);
    r.authorization = view(authorization_);
    r.range = view(range_);
    r.forwarded = forwarded_;
    r.if_none_match = view(if_none_match_);
    r.if_modified_since = view(if_modified_since_);
    r.if_range = view(if_range_);
    r.origin = view(origin_);
    r.request_id = view(request_id_);
    if (!usable_request_id(r.request_id)) r.request_id = generate_request_id();
    r.body = {};
    const auto len = parser_->content_length();
    r.content_length = len ? std::optional<std::uint64_t>(*len) : std::nullopt;
    r.keep_alive = parser_->keep_alive();
    r.peer_loopback = loopback_;
    r.shard = shard_.index;
    r.received_us = unix_us_now();

    Reply reply(*this);
    RequestIdScope scope(r.request_id);
    try {
      reader_ = shard_.server.handler_.stream_body(r, reply);
    } catch (const std::exception& e) {
      spdlog::error("request {} {}: {}", r.method_name, r.path, e.what());
      reader_.reset();
      if (!reply.sent_) reply.error(500, "internal error");
    }
    if (reply.sent_ || reply.deferred_) {
      // Answered before the body: drop the body, then close.
      reader_.reset();
      body_mode_ = Body::discarding;
      discarded_ = 0;
      close_after_ = true;
      expect_continue_ = false;
    } else if (reader_) {
      body_mode_ = Body::streamed;
      // A request without keep-alive closes after its answer, which comes
      // once the body is read (end_stream): not before.
      if (rbuf_.max_size() < kStreamReadChunk) rbuf_.max_size(kStreamReadChunk);
      // One body piece per put(), so that a pause stops the parser at once.
      parser_->eager(false);
    }
  }

  std::size_t on_body(std::string_view data) {
    switch (body_mode_) {
      case Body::discarding: discarded_ += data.size(); return data.size();
      case Body::paused: return 0;
      case Body::streamed: {
        const std::size_t n = reader_->on_body(data);
        if (n < data.size()) body_mode_ = Body::paused;
        return std::min(n, data.size());
      }
      case Body::buffered: break;
    }
    body_.append(data);
    return data.size();
  }

  void on_field(beast::http::field name, std::string_view name_str, std::string_view value) {
    using beast::http::field;
    switch (name) {
      case field::content_type: content_type_ = store(value); break;
      case field::authorization:
        // Two credentials: which one a proxy checked is unknown (the last
        // one would win here).
        if (seen_authorization_) head_error_ = "more than one Authorization header";
        seen_authorization_ = true;
        authorization_ = store(value);
        break;
      case field::range: range_ = store(value); break;
      case field::if_none_match: if_none_match_ = store(value); break;
      case field::if_modified_since: if_modified_since_ = store(value); break;
      case field::if_range: if_range_ = store(value); break;
      case field::origin: origin_ = store(value); break;
      case field::transfer_encoding: transfer_encoding_ = true; break;
      case field::host: ++hosts_; break;
      case field::forwarded: forwarded_ = true; break;
      case field::expect: expect_continue_ = beast::iequals(value, "100-continue"); break;
      case field::unknown:
        if (beast::iequals(name_str, "x-forwarded-for") || beast::iequals(name_str, "x-real-ip")) forwarded_ = true;
        else if (beast::iequals(name_str, "x-request-id")) request_id_ = store(value);
        break;
      default: break;
    }
  }

  // A trailer field of `bytes` (name, value, ": " and CRLF): only counted,
  // against the same limit as the head.
  void on_trailer_field(std::size_t bytes, error_code& ec) {
    trailer_bytes_ += bytes;
    if (trailer_bytes_ > shard_.server.options_.max_header_bytes) ec = beast::http::error::header_limit;
  }

  void set_deadline(std::chrono::milliseconds d) { deadline_ = shard_.now + d; }

  void do_read() {
    if (state_ == State::closed) return;
    state_ = State::reading;
    const bool partial = parser_ || rbuf_.size() > 0;
    if (!partial && shard_.draining) {
      close();
      return;
    }
    if (!partial) {
      set_deadline(shard_.server.options_.idle_timeout);
      idle_since_ = shard_.now;
      head_started_ = false;
    } else if (parser_ && parser_->is_header_done()) {
      set_deadline(shard_.server.options_.read_timeout);  // a body: the most time between reads
    } else if (!head_started_) {
      head_started_ = true;  // a head: the whole of it within the read timeout
      set_deadline(shard_.server.options_.read_timeout);
    }
    const std::size_t room = rbuf_.max_size() - rbuf_.size();
    if (room == 0) {
      // A line (chunk size, trailer) longer than the buffer: reading zero
      // bytes would complete at once, forever.
      fail(beast::http::error::bad_chunk);
      flush_or_read();
      return;
    }
    std::size_t chunk = reader_ ? kStreamReadChunk : kReadChunk;
    if (const std::size_t cap = shard_.server.options_.max_read_bytes; cap > 0) chunk = std::min(chunk, cap);
    socket_.async_read_some(
        rbuf_.prepare(std::min(chunk, room)),
        in(read_memory_, [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); }));
  }

  void on_read(error_code ec, std::size_t n) {
    if (state_ == State::closed) return;
    if (ec == asio::error::operation_aborted && parked_) {
      rbuf_.clear();
      rbuf_.shrink_to_fit();
      std::string().swap(out_);
      std::string().swap(head_);
      wait_readable();
      return;
    }
    parked_ = false;
    if (ec) {
      close();
      return;
    }
    rbuf_.commit(n);
    process();
  }

  // Parked: read again once there is something to read. Bytes that came in
  // since the cancel are seen by available(); later ones wake the wait.
  void wait_readable() {
    error_code ec;
    if (socket_.available(ec) > 0 || ec) {
      parked_ = false;
      do_read();
      return;
    }
    socket_.async_wait(tcp::socket::wait_read, in(read_memory_, [self = shared_from_this()](error_code e) {
                         if (self->state_ == State::closed) return;
                         self->parked_ = false;
                         if (e) {
                           self->close();
                           return;
                         }
                         self->do_read();
                       }));
  }

  // Parses and answers every complete request in the read buffer, then
  // writes the answers, then reads again.
  void process() {
    while (state_ == State::reading && body_mode_ != Body::paused) {
      if (rbuf_.size() == 0) break;
      if (!parser_ && close_after_) {
        // The last answer closes the connection: what the client sent after
        // that request is not read.
        rbuf_.consume(rbuf_.size());
        break;
      }
      if (!parser_) {
        parser_.emplace(*this);
        // The engine enforces --max-header-bytes on the whole head itself
        // (check_head); Beast's own limit counts per call, not per head.
        parser_->header_limit(std::numeric_limits<std::uint32_t>::max());
        parser_->eager(true);
        body_mode_ = Body::buffered;
        req_.request_id = {};  // set by on_head
        body_.clear();
        head_consumed_ = 0;
      }
      error_code ec;
      const bool in_head = !parser_->is_header_done();
      if (in_head && !check_head(ec)) {
        fail(ec);
        break;
      }
      const std::size_t used = parser_->put(rbuf_.data(), ec);
      if (in_head) head_consumed_ += used;
      rbuf_.consume(used);
      if (state_ == State::closed) return;
      if (ec == beast::http::error::need_more) {
        maybe_continue();
        break;
      }
      if (ec) {
        fail(ec);
        break;
      }
      if (body_mode_ == Body::discarding && discarded_ > kDiscardMax) {
        close();
        return;
      }
      if (parser_->is_done()) {
        if (body_mode_ == Body::discarding) finish_discard();
        else if (body_mode_ == Body::buffered) dispatch();
        else end_stream();
        continue;
      }
      maybe_continue();
      // A streamed body is parsed one piece per put(); go on while bytes are left.
      if (used == 0) break;
    }
    if (state_ == State::reading) flush_or_read();
  }

  // The body of a request answered early has been read: the connection closes
  // once the answer is out.
  void finish_discard() {
    body_mode_ = Body::buffered;
    parser_.reset();
    rbuf_.consume(rbuf_.size());
  }

  void end_stream() {
    auto reader = std::move(reader_);
    if (!req_.keep_alive) close_after_ = true;
    parser_.reset();
    body_mode_ = Body::buffered;
    Reply reply(*this);
    RequestIdScope scope(req_.request_id);
    try {
      reader->on_end(reply);
      if (!reply.sent_ && !reply.deferred_) reply.error(500, "the request was not answered");
    } catch (const std::exception& e) {
      spdlog::error("request {} {}: {}", req_.method_name, req_.path, e.what());
      if (!reply.sent_ && !reply.deferred_) reply.error(500, "internal error");
    }
    if (reply.deferred_ && !reply.sent_) wait_for_reply();
  }

  void wait_for_reply() {
    // A Deferred answered before the handler returned needs no waiting.
    if (std::exchange(answered_early_, false)) return;
    state_ = State::waiting_reply;
    set_deadline(kWaitForHandler);
  }

  // Checks the rest of the current head in the read buffer (complete or not)
  // before the parser sees it: the whole head, with what the parser already
  // took (it takes whole lines), must fit --max-header-bytes (else 431), and
  // no field may be folded over two lines (RFC 9112 5.2: rejected rather
  // than unfolded). False with `ec` set if the head is refused.
  bool check_head(error_code& ec) const {
    const auto d = rbuf_.data();
    const std::string_view b(static_cast<const char*>(d.data()), d.size());
    const std::size_t limit = shard_.server.options_.max_header_bytes;
    // Length of the head's rest in b: up to and including the empty line.
    std::size_t rest = std::string_view::npos;
    if (head_consumed_ > 0 && b.starts_with("\r\n")) rest = 2;
    else if (const std::size_t e = b.find("\r\n\r\n"); e != std::string_view::npos) rest = e + 4;
    const std::size_t known = rest == std::string_view::npos ? b.size() + 1 : rest;  // at least one more byte
    if (head_consumed_ + known > limit) {
      ec = beast::http::error::header_limit;
      return false;
    }
    const std::string_view head = b.substr(0, rest);
    if (head.find("\n ") != std::string_view::npos || head.find("\n\t") != std::string_view::npos) {
      ec = beast::http::error::bad_obs_fold;
      return false;
    }
    return true;
  }

  // Answers "Expect: 100-continue" once the head is accepted.
  void maybe_continue() {
    if (parser_ && parser_->is_header_done() && expect_continue_) {
      expect_continue_ = false;
      out_.append("HTTP/1.1 100 Continue\r\n\r\n");
    }
  }

  void fail(error_code ec) {
    using he = beast::http::error;
    shard_.server.counters_.parse_errors.fetch_add(1, std::memory_order_relaxed);
    int status = 400;
    std::string_view msg = "malformed HTTP request";
    if (ec == he::header_limit) {
      status = 431;
      msg = "request header too large";
    } else if (ec == he::body_limit) {
      status = 413;
      msg = "request body too large";
    } else if (ec == he::bad_content_length || ec == he::bad_transfer_encoding) {
      msg = "bad Content-Length or Transfer-Encoding";
    } else if (ec == he::bad_value && !head_error_.empty()) {
      msg = head_error_;
    }
    head_error_ = {};
    // After a framing error the rest of the stream cannot be trusted.
    close_after_ = true;
    body_mode_ = Body::buffered;
    if (reader_) {
      auto reader = std::move(reader_);
      reader->on_abort();
    }
    if (!(parser_ && parser_->is_header_done())) {
      // The head was not read: nothing of req_ (a previous request's) applies.
      req_.method_name = req_.target = req_.path = req_.query = {};
      req_.content_type = req_.authorization = req_.range = req_.body = {};
      req_.if_none_match = req_.if_modified_since = req_.if_range = req_.origin = {};
      req_.shard = shard_.index;
      req_.peer_loopback = loopback_;
      req_.received_us = 0;
    }
    // A head refused before on_head has no id yet.
    if (req_.request_id.empty()) req_.request_id = generate_request_id();
    parser_.reset();
    rbuf_.consume(rbuf_.size());
    // The engine's errors always carry their JSON body, even for a HEAD (the
    // connection closes after it): not the method of an earlier request.
    req_.method = Method::other;
    append_response(status, "application/json", json_error_body(msg), {});
  }

  void dispatch() {
    Request& r = req_;  // filled by on_head
    r.body = body_;
    if (!r.keep_alive) close_after_ = true;
    parser_.reset();

    Reply reply(*this);
    RequestIdScope scope(r.request_id);
    try {
      shard_.server.handler_.handle(r, reply);
      if (!reply.sent_ && !reply.deferred_) reply.error(500, "the request was not answered");
    } catch (const std::exception& e) {
      spdlog::error("request {} {}: {}", r.method_name, r.path, e.what());
      if (!reply.sent_ && !reply.deferred_) reply.error(500, "internal error");
    }
    if (reply.deferred_ && !reply.sent_) wait_for_reply();
  }

  void flush_or_read() {
    if (state_ == State::closed) return;
    if (!out_.empty()) {
      do_write();
      return;
    }
    if (close_after_ && body_mode_ != Body::discarding) {
      close();
      return;
    }
    if (body_mode_ == Body::paused) {
      // No read is pending to keep this connection alive while it waits.
      paused_self_ = shared_from_this();
      set_deadline(kWaitForHandler);
      return;
    }
    do_read();
  }

  void do_write() {
    state_ = State::writing;
    set_deadline(shard_.server.options_.write_timeout);
    asio::async_write(socket_, asio::buffer(out_),
                      in(write_memory_, [self = shared_from_this()](error_code ec, std::size_t) {
                        if (self->state_ == State::closed) return;
                        if (ec) {
                          self->close();
                          return;
                        }
                        self->out_.clear();
                        if (self->body_.capacity() > kKeepBodyCapacity) {
                          std::string().swap(self->body_);
                          note_large_free();
                        }
                        if (self->close_after_ && self->body_mode_ != Body::discarding) {
                          self->close();
                          return;
                        }
                        self->state_ = State::reading;
                        self->process();
                      }));
  }

  Shard& shard_;
  // Before the socket: destroyed after it, whose destruction ends the
  // operations that use them.
  OpMemory read_memory_;
  OpMemory write_memory_;
  tcp::socket socket_;
  const bool loopback_;
  beast::flat_buffer rbuf_;
  std::string out_;
  std::string head_;  // request line and kept header values of the current request
  std::string body_;
  std::optional<Parser> parser_;
  Request req_;
  std::shared_ptr<BodyReader> reader_;  // the current request's body is streamed to it
  Body body_mode_ = Body::buffered;
  std::shared_ptr<Connection> paused_self_;  // held while paused
  bool answered_early_ = false;              // a Deferred was sent before its handler returned
  bool parked_ = false;                      // idle without buffers (park())
  Clock::time_point idle_since_{};
  std::uint64_t discarded_ = 0;
  std::uint64_t stream_left_ = 0;  // body bytes a streamed answer still owes
  Method method_ = Method::other;
  Span method_name_, target_, content_type_, authorization_, range_;
  Span if_none_match_, if_modified_since_, if_range_, origin_, request_id_;
  std::array<char, 16> generated_id_{};  // the current request's id when the client sent none
  std::uint64_t body_limit_ = 0;
  bool expect_continue_ = false;
  bool transfer_encoding_ = false;  // the current request has a Transfer-Encoding field
  bool forwarded_ = false;          // ... Forwarded, X-Forwarded-For or X-Real-IP
  bool seen_authorization_ = false;
  unsigned hosts_ = 0;             // Host fields in the head
  int version_ = 11;               // 10 or 11
  std::string_view head_error_;    // why the head is refused (400), static text
  std::size_t head_consumed_ = 0;  // bytes of the current head the parser has taken
  std::size_t trailer_bytes_ = 0;  // of the current chunked body's trailer
  bool head_started_ = false;      // the read deadline of the current head is set
  bool close_after_ = false;
  State state_ = State::reading;
  Clock::time_point deadline_{};
  Connection* prev_ = nullptr;
  Connection* next_ = nullptr;
};

void Connection::append_head(int status, std::string_view content_type, std::optional<std::uint64_t> content_length,
                             std::string_view extra_headers) {
  if (shard_.draining) close_after_ = true;
  const std::int64_t took = req_.received_us ? unix_us_now() - req_.received_us : 0;
  shard_.server.handler_.answered(req_, status, took > 0 ? static_cast<std::uint64_t>(took) : 0);
  // Appended piece by piece: a format string parsed per answer was 3% of
  // the CPU of an ingest request (perf, BENCHMARKS.md "CPU per event").
  char digits[24];
  out_.append("HTTP/1.1 ");
  out_.append(digits, std::to_chars(digits, digits + sizeof(digits), status).ptr);
  out_.push_back(' ');
  out_.append(reason_phrase(status));
  out_.append("\r\nServer: kiroku\r\nDate: ");
  out_.append(shard_.date, shard_.date_len);
  if (!req_.request_id.empty()) {
    out_.append("\r\nX-Request-Id: ");
    out_.append(req_.request_id);
  }
  out_.append("\r\n");
  if (content_length) {
    out_.append("Content-Length: ");
    out_.append(digits, std::to_chars(digits, digits + sizeof(digits), *content_length).ptr);
    out_.append("\r\n");
  }
  if (!content_type.empty()) {
    out_.append("Content-Type: ");
    out_.append(content_type);
    out_.append("\r\n");
  }
  if (close_after_) out_.append("Connection: close\r\n");
  out_.append(extra_headers);
  out_.append("\r\n");
}

void Connection::append_response(int status, std::string_view content_type, std::string_view body,
                                 std::string_view extra_headers) {
  const bool no_body = status == 204 || status == 304 || status < 200;
  // A JSON error names its request: {"request_id":"...", then the rest.
  const bool tagged = status >= 400 && !no_body && !req_.request_id.empty() && body.starts_with('{') &&
                      content_type == "application/json";
  constexpr std::string_view kTag = "{\"request_id\":\"";
  const std::uint64_t length = body.size() + (tagged ? kTag.size() + req_.request_id.size() + 2 - 1 : 0);
  append_head(status, content_type, no_body ? std::nullopt : std::optional<std::uint64_t>(length), extra_headers);
  if (no_body || req_.method == Method::head) return;
  if (!tagged) {
    out_.append(body);
    return;
  }
  out_.append(kTag);
  out_.append(req_.request_id);
  out_.append("\",");
  out_.append(body.substr(1));
}

void Connection::stream_begin(int status, std::string_view content_type, std::uint64_t content_length,
                              std::string_view extra_headers) {
  append_head(status, content_type, content_length, extra_headers);
  stream_left_ = req_.method == Method::head ? 0 : content_length;
}

void Connection::stream_write(std::span<const std::byte> data, std::function<void(bool)> done) {
  // `done` never runs inside this call: the caller may be holding its own state.
  if (state_ == State::closed || data.size() > stream_left_) {
    close();
    asio::post(shard_.ctx, [done = std::move(done)] { done(false); });
    return;
  }
  if (req_.method == Method::head || data.empty()) {
    asio::post(shard_.ctx, [done = std::move(done)] { done(true); });
    return;
  }
  stream_left_ -= data.size();
  const std::size_t piece = std::min(data.size(), kStreamPiece);
  set_deadline(shard_.server.options_.write_timeout);
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(out_), asio::buffer(data.data(), piece)};
  asio::async_write(socket_, bufs, whole_piece,
                    in(write_memory_, [self = shared_from_this(), data, piece, done = std::move(done)](
                                          error_code ec, std::size_t) mutable {
                      if (self->state_ == State::closed || ec) {
                        self->close();
                        done(false);
                        return;
                      }
                      self->out_.clear();
                      self->set_deadline(kWaitForHandler);
                      if (piece == data.size()) {
                        done(true);
                        return;
                      }
                      // The rest of this piece; stream_left_ already counts it.
                      self->stream_left_ += data.size() - piece;
                      self->stream_write(data.subspan(piece), std::move(done));
                    }));
}

void Connection::stream_end() {
  if (stream_left_ > 0) {
    // Fewer bytes than the Content-Length announced: only closing tells the client.
    close();
    return;
  }
  resume_after_deferred();
}

void Connection::resume_after_deferred() {
  if (state_ != State::waiting_reply) {
    // Sent inside the handler's own call: dispatch() goes on by itself.
    if (state_ != State::closed) answered_early_ = true;
    return;
  }
  state_ = State::reading;
  if (rbuf_.size() == 0) {
    flush_or_read();
    return;
  }
  // Pipelined requests are handled in a later turn: the sender may be
  // answering a list of waiters and must not be called back from send().
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    if (self->state_ == State::reading) self->process();
  });
}

// ---------------------------------------------------------------------------
// Reply and Deferred

void Reply::send(int status, std::string_view content_type, std::string_view body, std::string_view extra_headers) {
  if (sent_ || deferred_) return;
  sent_ = true;
  status_ = status;
  conn_.append_response(status, content_type, body, extra_headers);
}

void Reply::error(int status, std::string_view message, std::string_view extra_headers) {
  send(status, "application/json", json_error_body(message), extra_headers);
}

Deferred Reply::defer() {
  deferred_ = true;
  return Deferred(conn_.shared_from_this());
}

BodyControl Reply::body_control() { return BodyControl(conn_.weak_from_this()); }

void BodyControl::resume() const {
  if (auto c = conn_.lock()) c->resume_body();
}

Deferred::Deferred(std::shared_ptr<Connection> c) : conn_(std::move(c)) {}

Deferred& Deferred::operator=(Deferred&& o) noexcept {
  if (this != &o) {
    drop();
    conn_ = std::move(o.conn_);
    begun_ = std::exchange(o.begun_, false);
  }
  return *this;
}

Deferred::~Deferred() { drop(); }

void Deferred::drop() noexcept {
  if (!conn_) return;
  asio::io_context& ctx = conn_->shard().ctx;
  if (!ctx.get_executor().running_in_this_thread()) {
    // Dropped on another thread (a store callback let go of it): the
    // connection is only touched on its own shard thread.
    Deferred moved;
    moved.conn_ = std::move(conn_);
    moved.begun_ = std::exchange(begun_, false);
    if (ctx.stopped()) {
      moved.conn_.reset();  // shutting down: the socket closes with the context
      return;
    }
    asio::post(ctx, [d = std::move(moved)]() mutable { d.drop(); });
    return;
  }
  if (begun_) {
    auto c = std::move(conn_);
    begun_ = false;
    c->close();
  } else {
    send(500, "application/json", "{\"error\":\"the request was not answered\"}\n");
  }
}

void Deferred::begin(int status, std::string_view content_type, std::uint64_t content_length,
                     std::string_view extra_headers) {
  if (!conn_ || begun_) return;
  begun_ = true;
  conn_->stream_begin(status, content_type, content_length, extra_headers);
}

void Deferred::write(std::span<const std::byte> data, std::function<void(bool)> done) {
  if (!conn_ || !begun_) {
    done(false);
    return;
  }
  conn_->stream_write(data, std::move(done));
}

void Deferred::end() {
  if (!conn_ || !begun_) return;
  auto c = std::move(conn_);
  begun_ = false;
  c->stream_end();
}

void Deferred::send(int status, std::string_view content_type, std::string_view body, std::string_view extra_headers) {
  if (!conn_ || begun_) return;
  auto c = std::move(conn_);
  c->append_response(status, content_type, body, extra_headers);
  c->resume_after_deferred();
}

// ---------------------------------------------------------------------------
// Shard

void Shard::do_accept() {
  acceptor.async_accept([this](error_code ec, tcp::socket socket) {
    if (!acceptor.is_open()) return;
    auto& c = server.counters_;
    if (ec) {
      c.accept_errors.fetch_add(1, std::memory_order_relaxed);
      const int e = ec.value();
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        // Out of descriptors: pause instead of spinning on a ready listener.
        static std::atomic<std::int64_t> last_log{0};
        const auto sec = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
        if (last_log.exchange(sec) != sec) spdlog::warn("accept: {} (pausing 100 ms)", ec.message());
        accept_pause.expires_after(std::chrono::milliseconds(100));
        accept_pause.async_wait([this](error_code e2) {
          if (!e2) do_accept();
        });
        return;
      }
      do_accept();
      return;
    }
    if (c.open_connections.load(std::memory_order_relaxed) >=
        static_cast<std::int64_t>(server.options_.max_connections)) {
      c.rejected_over_limit.fetch_add(1, std::memory_order_relaxed);
      error_code ignored;
      socket.close(ignored);
      do_accept();
      return;
    }
    c.accepted.fetch_add(1, std::memory_order_relaxed);
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const auto peer = socket.remote_endpoint(ignored);
    auto conn = std::make_shared<Connection>(*this, std::move(socket), !ignored && is_loopback(peer));
    conn->start();
    do_accept();
  });
}

void Shard::sweep() {
  now = Clock::now();
  refresh_date();
  const auto park_before = now - kParkAfter;
  for (Connection* c = connections; c;) {
    Connection* next = c->next();
    if (c->expired(now) || (draining && c->idle())) c->expire();
    else if (c->idle_since(park_before)) c->park();
    c = next;
  }
  sweep_timer.expires_after(std::chrono::milliseconds(250));
  sweep_timer.async_wait([this](error_code ec) {
    if (!ec) sweep();
  });
}

void Shard::drain() {
  draining = true;
  error_code ignored;
  acceptor.close(ignored);
  accept_pause.cancel();
  for (Connection* c = connections; c;) {
    Connection* next = c->next();
    if (c->idle()) c->close();
    c = next;
  }
}

void Shard::close_all() {
  sweep_timer.cancel();
  for (Connection* c = connections; c;) {
    Connection* next = c->next();
    c->close();
    c = next;
  }
}

// ---------------------------------------------------------------------------
// HttpServer

HttpServer::HttpServer(Runtime& runtime, ServerOptions options, Handler& handler)
    : runtime_(runtime), options_(std::move(options)), handler_(handler) {
  for (unsigned i = 0; i < runtime_.shards(); ++i) shards_.push_back(std::make_unique<Shard>(*this, i));
}

HttpServer::~HttpServer() { stop(); }

Status HttpServer::bind() {
  const std::string& l = options_.listen;
  const auto colon = l.rfind(':');
  std::string host = l.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = static_cast<unsigned>(std::stoul(l.substr(colon + 1)));
  error_code ec;
  asio::ip::address addr;
  if (host == "localhost") addr = asio::ip::make_address("127.0.0.1");
  else if (host == "*" || host.empty()) addr = asio::ip::make_address("0.0.0.0");
  else addr = asio::ip::make_address(host, ec);
  if (ec) return Status::permanent(fmt::format("--listen: '{}' is not an IP address", host));

  using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
  for (auto& s : shards_) {
    tcp::endpoint ep(addr, static_cast<std::uint16_t>(port));
    auto& a = s->acceptor;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) a.set_option(reuse_port(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Status::permanent(fmt::format("--listen: cannot listen on {}: {}", l, ec.message()));
    if (port == 0) port = a.local_endpoint().port();  // the other shards share it
  }
  const auto ep = shards_[0]->acceptor.local_endpoint();
  bound_ = ep.address().is_v6() ? fmt::format("[{}]:{}", ep.address().to_string(), ep.port())
                                : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  return {};
}

std::string HttpServer::local_address() const { return bound_; }

void HttpServer::start() {
  for (auto& s : shards_) {
    Shard* sh = s.get();
    asio::post(sh->ctx, [sh] { sh->start_accepting(); });
  }
}

void HttpServer::stop_accepting() {
  for (auto& s : shards_) {
    Shard* sh = s.get();
    asio::post(sh->ctx, [sh] { sh->drain(); });
  }
}

void HttpServer::close_connections() {
  if (!runtime_.running()) {
    // Nothing runs the loops: close from here.
    for (auto& s : shards_) {
      s->drain();
      s->close_all();
    }
    return;
  }
  std::vector<std::promise<void>> closed(shards_.size());
  for (std::size_t i = 0; i < shards_.size(); ++i) {
    Shard* sh = shards_[i].get();
    asio::post(sh->ctx, [sh, p = &closed[i]] {
      sh->drain();
      sh->close_all();
      p->set_value();
    });
  }
  for (auto& p : closed) p.get_future().wait();
}

void HttpServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  close_connections();
  if (!runtime_.running()) return;
  // Closing cancels the connections' operations: their handlers, which hold
  // the connections, run next on the shards. None may outlive the shards.
  for (int i = 0; i < 200 && counters_.open_connections.load() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (const auto n = counters_.open_connections.load(); n > 0)
    spdlog::warn("{} connections still held at stop (an answer not sent)", n);
}

}  // namespace kiroku::http
