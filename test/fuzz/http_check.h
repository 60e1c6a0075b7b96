// http_check.h - invariants of the HTTP engine (http/server.h) as kiroku
// drives it: one HttpServer on 127.0.0.1 (one shard, started once per
// process) with a handler that answers every request, and per input one
// connection that sends the input, shuts its write side and reads to EOF
// (from a source address of its own, see exchange()).
//
// The engine must answer or close within 2 seconds (else abort: a hang).
// What comes back must be a sequence of HTTP/1.1 answers: interim
// "100 Continue" heads, then one answer per request the handler saw, in
// order, with the status and body the handler gave (none for HEAD and 204),
// and at most one engine error (400, 413, 431) last, with Connection: close.
// The handler never sees a body above the limit it set.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "http/server.h"

namespace kiroku::fuzz {
namespace http_detail {

// Body limits the handler sets: paths under /small take 16 bytes.
inline constexpr std::uint64_t kSmallBodyLimit = 16;
inline constexpr std::uint64_t kBodyLimit = 1024;
inline constexpr std::size_t kMaxHeaderBytes = 1024;
inline constexpr auto kAnswerWithin = std::chrono::seconds(2);

struct Answer {
  http::Method method;
  int status;
  std::string body;
};

// Answers 200 with "METHOD BODY-BYTES\n" (204 with nothing when the target
// holds "204"), later from the shard's queue when it holds "defer". Every
// call runs on the one shard thread; `answers` is read by the fuzz thread
// after the connection is closed.
class EchoHandler final : public http::Handler {
 public:
  std::uint64_t body_limit(http::Method, std::string_view path) override {
    limit_ = path.starts_with("/small") ? kSmallBodyLimit : kBodyLimit;
    return limit_;
  }

  void handle(const http::Request& req, http::Reply& reply) override {
    FUZZ_REQUIRE(req.body.size() <= limit_);
    FUZZ_REQUIRE(!req.method_name.empty());
    FUZZ_REQUIRE(req.target.starts_with(req.path));
    FUZZ_REQUIRE(req.path.find('?') == std::string_view::npos);
    FUZZ_REQUIRE(req.query.empty() || req.target.ends_with(req.query));
    const int status = req.target.find("204") != std::string_view::npos ? 204 : 200;
    std::string body =
        status == 204 ? std::string() : std::string(req.method_name) + " " + std::to_string(req.body.size()) + "\n";
    {
      std::lock_guard lock(mu);
      answers.push_back({req.method, status, body});
    }
    if (req.target.find("defer") != std::string_view::npos) {
      runtime->post(req.shard, [d = reply.defer(), status, body = std::move(body)]() mutable {
        d.send(status, "text/plain", body);
      });
      return;
    }
    reply.send(status, "text/plain", body);
  }

  Runtime* runtime = nullptr;
  std::mutex mu;
  std::vector<Answer> answers;

 private:
  std::uint64_t limit_ = 0;
};

struct FuzzServer {
  Runtime runtime{1};
  EchoHandler handler;
  std::unique_ptr<http::HttpServer> server;
  std::uint16_t port = 0;
};

// Started on first use and never stopped (the process exits with it).
inline FuzzServer& fuzz_server() {
  static FuzzServer* const s = [] {
    auto* fs = new FuzzServer;
    http::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.max_header_bytes = kMaxHeaderBytes;
    o.idle_timeout = std::chrono::seconds(5);
    o.read_timeout = std::chrono::seconds(5);
    o.write_timeout = std::chrono::seconds(5);
    fs->server = std::make_unique<http::HttpServer>(fs->runtime, o, fs->handler);
    fs->handler.runtime = &fs->runtime;
    FUZZ_REQUIRE(fs->server->bind().ok());
    const std::string addr = fs->server->local_address();
    const std::string_view port = std::string_view(addr).substr(addr.rfind(':') + 1);
    FUZZ_REQUIRE(std::from_chars(port.data(), port.data() + port.size(), fs->port).ec == std::errc());
    fs->runtime.start();
    fs->server->start();
    return fs;
  }();
  return *s;
}

// Sends `input`, shuts the write side, and returns everything read until the
// server closes. Writing stops early if the server closes first.
inline std::string exchange(std::uint16_t port, std::string_view input) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FUZZ_REQUIRE(fd >= 0);
  // The server closes first, so each exchange leaves a TIME_WAIT behind for
  // a minute: tens of thousands of runs would use up the ephemeral ports of
  // one source address. Each connection comes from the next of 65,024
  // loopback addresses (127.1.0.1 to 127.1.255.254).
  static std::uint32_t next_source = 0;
  const std::uint32_t n = next_source++ % (256 * 254);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((n / 254) << 8) | (n % 254 + 1));
  FUZZ_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) == 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Non-blocking from the start: libFuzzer's timer signal would interrupt a
  // blocking connect (EINTR). The connection completes when it is writable.
  FUZZ_REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  const auto deadline = std::chrono::steady_clock::now() + kAnswerWithin;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    if (err == EINPROGRESS || err == EINTR) {
      pollfd p{fd, POLLOUT, 0};
      int ready = 0;
      do {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
      } while (ready < 0 && errno == EINTR);
      socklen_t len = sizeof err;
      if (ready <= 0) err = ETIMEDOUT;
      else FUZZ_REQUIRE(::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0);
    }
    if (err != 0) {
      std::fprintf(stderr, "connect from 127.1.%u.%u: %s\n", n / 254, n % 254 + 1, std::strerror(err));
      broken("the fuzz client could not connect", __FILE__, __LINE__);
    }
  }

  std::string got;
  std::size_t sent = 0;
  bool writing = true;
  for (;;) {
    if (writing && sent == input.size()) {
      ::shutdown(fd, SHUT_WR);
      writing = false;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) broken("the server neither answered nor closed within 2 s", __FILE__, __LINE__);
    pollfd p{fd, static_cast<short>(POLLIN | (writing ? POLLOUT : 0)), 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    FUZZ_REQUIRE(ready >= 0);
    if (writing && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t w = ::send(fd, input.data() + sent, input.size() - sent, MSG_NOSIGNAL);
      if (w > 0) {
        sent += static_cast<std::size_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        writing = false;  // the server closed: read what it said
      }
    }
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      char buf[16384];
      const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r > 0) {
        got.append(buf, static_cast<std::size_t>(r));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        break;  // EOF, or reset after an answer the server closed on
      }
    }
  }
  ::close(fd);
  return got;
}

inline std::optional<std::uint64_t> number(std::string_view s) {
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Reads `got` as a sequence of answers and matches them with `answers`.
inline void check_answers(std::string_view got, const std::vector<Answer>& answers) {
  std::size_t next = 0;  // the next answer the handler gave
  while (!got.empty()) {
    FUZZ_REQUIRE(got.starts_with("HTTP/1.1 "));
    const std::size_t head_end = got.find("\r\n\r\n");
    FUZZ_REQUIRE(head_end != std::string_view::npos);
    std::string_view head = got.substr(0, head_end + 2);
    got.remove_prefix(head_end + 4);

    // "HTTP/1.1 NNN Reason"
    const std::size_t eol = head.find("\r\n");
    const std::string_view status_line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    FUZZ_REQUIRE(status_line.size() > 13 && status_line[12] == ' ');
    const std::optional<std::uint64_t> code = number(status_line.substr(9, 3));
    FUZZ_REQUIRE(code && *code >= 100 && *code <= 599);
    const int status = static_cast<int>(*code);
    FUZZ_REQUIRE(status_line.substr(13) == http::reason_phrase(status));

    std::optional<std::uint64_t> length;
    bool close = false;
    while (!head.empty()) {
      const std::size_t end = head.find("\r\n");
      const std::string_view line = head.substr(0, end);
      head.remove_prefix(end + 2);
      const std::size_t colon = line.find(": ");
      FUZZ_REQUIRE(colon != std::string_view::npos && colon > 0);
      const std::string_view name = line.substr(0, colon), value = line.substr(colon + 2);
      if (name == "Content-Length") {
        FUZZ_REQUIRE(!length);
        length = number(value);
        FUZZ_REQUIRE(length.has_value());
      } else if (name == "Connection") {
        FUZZ_REQUIRE(value == "close");
        close = true;
      }
    }

    if (status == 100) {  // interim: a bare status line
      FUZZ_REQUIRE(!length && !close);
      continue;
    }
    if (next < answers.size() && answers[next].status == status) {
      const Answer& a = answers[next++];
      std::uint64_t body = 0;
      if (status == 204) {
        FUZZ_REQUIRE(!length);
      } else {
        FUZZ_REQUIRE(length == a.body.size());
        if (a.method != http::Method::head) body = *length;
      }
      FUZZ_REQUIRE(body <= got.size());
      FUZZ_REQUIRE(body == 0 || got.substr(0, body) == a.body);
      got.remove_prefix(body);
      if (close) FUZZ_REQUIRE(got.empty());
      continue;
    }
    // An error from the engine itself ends the connection.
    FUZZ_REQUIRE(status == 400 || status == 413 || status == 431);
    FUZZ_REQUIRE(close && length.has_value());
    FUZZ_REQUIRE(got.size() == *length);  // its whole body, and nothing after it
    // {"request_id":"<the client's or the engine's>","error":"..."}
    FUZZ_REQUIRE(got.starts_with("{\"request_id\":\"") && got.find("\",\"error\":\"") != std::string_view::npos &&
                 got.ends_with("\"}\n"));
    got = {};
  }
  FUZZ_REQUIRE(next == answers.size());
}

}  // namespace http_detail

inline void check_http(std::string_view input) {
  using namespace http_detail;
  FuzzServer& s = fuzz_server();
  {
    std::lock_guard lock(s.handler.mu);
    s.handler.answers.clear();
  }
  const std::string got = exchange(s.port, input);
  std::vector<Answer> answers;
  {
    std::lock_guard lock(s.handler.mu);
    answers.swap(s.handler.answers);
  }
  check_answers(got, answers);
}

}  // namespace kiroku::fuzz
