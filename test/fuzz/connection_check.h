// connection_check.h - invariants of a whole HTTP connection (http/server.h):
// a stream of requests in, the answers out, through every way a handler
// takes a request: read whole and answered at once or later, a body streamed
// to a BodyReader that pauses and resumes, and an answer before the body
// (which is then dropped and the connection closed).
//
// Three servers on 127.0.0.1 (one shard each, started once per process)
// differ in the largest read they make: whole reads, 7 bytes and 200 bytes,
// so that heads, chunk lines, trailers and bodies are split at every place.
// The input's size picks the server. Each input is sent on one connection,
// which the client then half-closes and reads to the end (http_check.h's
// exchange()).
//
// A small reference parser reads the input as a strict, unambiguous subset
// of HTTP/1.1 (below). For the requests it reads, up to the first it cannot,
// the check is exact: the handler sees each of them in order, with the
// method, target, Content-Type, Authorization, Range, proxy fields and body
// of its head and body (a trailer never changes them), each gets its own
// answer, and the connection ends after a request that does not keep it
// alive. Whatever follows is checked as in http_check.h: a well-formed
// sequence of answers, at most one engine error (400, 413, 431) last.
#pragma once

#include <charconv>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "fuzz/http_check.h"
#include "http/server.h"

namespace kiroku::fuzz {
namespace connection_detail {

inline constexpr std::size_t kMaxHeaderBytes = 1024;
inline constexpr std::uint64_t kBodyLimit = 1024;           // bodies read whole
inline constexpr std::uint64_t kStreamBodyLimit = 1 << 20;  // streamed bodies
inline constexpr std::size_t kReadCaps[] = {0, 7, 200};

inline std::string fnv(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (const unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  char out[17];
  for (int i = 15; i >= 0; --i, h >>= 4) out[i] = "0123456789abcdef"[h & 15];
  return std::string(out, 16);
}

// What a handler saw, as the text of its answer: KIND (W whole body, S
// streamed, E answered before the body), the head's parts, the body.
inline std::string describe(char kind, const http::Request& r, std::string_view body) {
  std::string d(1, kind);
  for (std::string_view part : {r.method_name, r.target, r.path, r.query, r.content_type, r.authorization, r.range}) {
    d += ' ';
    d += part;
  }
  d += r.forwarded ? " F" : " -";
  d += r.keep_alive ? " K" : " C";
  d += ' ' + std::to_string(body.size()) + ':' + fnv(body) + '\n';
  return d;
}

// Targets: /s... streams its body (/s...pause takes at most 3 bytes a call
// and resumes from the queue), /early... is answered 401 before its body
// (at once: Handler::stream_body answers at once or not at all), anything
// else is read whole; ...defer answers from the queue.
class ConnectionHandler final : public http::Handler {
 public:
  std::uint64_t body_limit(http::Method, std::string_view path) override {
    return path.starts_with("/s") ? kStreamBodyLimit : kBodyLimit;
  }

  void handle(const http::Request& req, http::Reply& reply) override {
    FUZZ_REQUIRE(req.body.size() <= kBodyLimit);
    answer(req, reply, describe('W', req, req.body), 200);
  }

  std::shared_ptr<http::BodyReader> stream_body(const http::Request& req, http::Reply& reply) override {
    if (req.path.starts_with("/early")) {
      answer(req, reply, describe('E', req, {}), 401, false);
      return nullptr;
    }
    if (!req.path.starts_with("/s")) return nullptr;
    return std::make_shared<Reader>(*this, req, reply.body_control());
  }

  std::vector<Runtime*> runtimes;  // one shard each, one per server
  std::mutex mu;
  std::vector<http_detail::Answer> answers;

 private:
  // The request's views stay valid until its answer: read again at the end.
  class Reader final : public http::BodyReader {
   public:
    Reader(ConnectionHandler& h, const http::Request& req, http::BodyControl control)
        : h_(h), req_(req), control_(std::move(control)), pause_(req.target.find("pause") != std::string_view::npos) {}
    std::size_t on_body(std::string_view data) override {
      FUZZ_REQUIRE(!ended_);
      std::size_t n = data.size();
      if (pause_ && n > 3) {
        n = 3;
        h_.runtime_of(req_).post(req_.shard, [c = control_] { c.resume(); });
      }
      body_.append(data.substr(0, n));
      FUZZ_REQUIRE(body_.size() <= kStreamBodyLimit);
      return n;
    }
    void on_end(http::Reply& reply) override {
      FUZZ_REQUIRE(!ended_);
      ended_ = true;
      h_.answer(req_, reply, describe('S', req_, body_), 201);
    }
    void on_abort() override {
      FUZZ_REQUIRE(!ended_);
      ended_ = true;
    }

   private:
    ConnectionHandler& h_;
    const http::Request& req_;
    http::BodyControl control_;
    const bool pause_;
    bool ended_ = false;
    std::string body_;
  };

  Runtime& runtime_of(const http::Request& req) {
    // The runtime of the server whose thread runs this call.
    for (Runtime* r : runtimes)
      if (r->on_shard(req.shard)) return *r;
    broken("a handler call off every shard thread", __FILE__, __LINE__);
  }

  void answer(const http::Request& req, http::Reply& reply, std::string body, int status, bool may_defer = true) {
    {
      std::lock_guard lock(mu);
      answers.push_back({req.method, status, body});
    }
    if (may_defer && req.target.find("defer") != std::string_view::npos) {
      runtime_of(req).post(req.shard, [d = reply.defer(), status, body = std::move(body)]() mutable {
        d.send(status, "text/plain", body);
      });
      return;
    }
    reply.send(status, "text/plain", body);
  }
};

struct ConnectionServers {
  std::vector<std::unique_ptr<Runtime>> runtimes;
  ConnectionHandler handler;
  std::vector<std::unique_ptr<http::HttpServer>> servers;
  std::vector<std::uint16_t> ports;
};

// Started on first use and never stopped (the process exits with them).
inline ConnectionServers& connection_servers() {
  static ConnectionServers* const s = [] {
    auto* cs = new ConnectionServers;
    for (const std::size_t cap : kReadCaps) {
      http::ServerOptions o;
      o.listen = "127.0.0.1:0";
      o.max_header_bytes = kMaxHeaderBytes;
      o.max_read_bytes = cap;
      o.idle_timeout = std::chrono::seconds(5);
      o.read_timeout = std::chrono::seconds(5);
      o.write_timeout = std::chrono::seconds(5);
      cs->runtimes.push_back(std::make_unique<Runtime>(1));
      cs->handler.runtimes.push_back(cs->runtimes.back().get());
      auto server = std::make_unique<http::HttpServer>(*cs->runtimes.back(), o, cs->handler);
      FUZZ_REQUIRE(server->bind().ok());
      const std::string addr = server->local_address();
      const std::string_view port = std::string_view(addr).substr(addr.rfind(':') + 1);
      std::uint16_t p = 0;
      FUZZ_REQUIRE(std::from_chars(port.data(), port.data() + port.size(), p).ec == std::errc());
      cs->ports.push_back(p);
      cs->servers.push_back(std::move(server));
    }
    for (auto& r : cs->runtimes) r->start();
    for (auto& server : cs->servers) server->start();
    return cs;
  }();
  return *s;
}

// ---------------------------------------------------------------------------
// The reference: a strict subset of HTTP/1.1 requests.
//
// Request line "METHOD SP TARGET SP HTTP/1.x CRLF": GET, HEAD, POST, PUT or
// DELETE; a target of '/' and [A-Za-z0-9/?&=._~%+-]. Fields "Name: value" or
// "Name:value", names of [A-Za-z0-9-], values of visible ASCII with inner
// spaces. The whole head within kMaxHeaderBytes. At most one of Host (exactly
// one in HTTP/1.1), Content-Length (digits, no leading zero), Transfer-Encoding
// ("chunked", HTTP/1.1 only, never with Content-Length), Connection ("close" or
// "keep-alive"), Authorization, Content-Type, Range; no Upgrade or
// Proxy-Connection. Chunks: 1-6 hex digits, an optional ";name" or
// ";name=value" ([a-z0-9]), CRLF, data, CRLF; the last chunk then trailer
// fields of the same grammar (none of the framing fields), their bytes
// (name, value and 4) within kMaxHeaderBytes. The body within the limit.

struct Expected {
  std::string description;  // as describe() makes it
  int status = 0;
  bool closes = false;  // the connection ends after its answer
};

struct Reference {
  std::vector<Expected> requests;  // read exactly, in order
  bool ended = false;              // the last of them closes the connection
};

inline bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

inline bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

inline bool is_target_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::string_view("/?&=._~%+-").find(c) != std::string_view::npos;
}

// "Name: value" or "Name:value"; false if outside the subset.
inline bool split_field(std::string_view line, std::string_view& name, std::string_view& value) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  name = line.substr(0, colon);
  for (const char c : name)
    if (!is_name_char(c)) return false;
  value = line.substr(colon + 1);
  if (value.starts_with(' ')) value.remove_prefix(1);
  if (value.empty() || value.front() == ' ' || value.back() == ' ') return false;
  for (const char c : value)
    if (c < 0x20 || c > 0x7e) return false;
  return true;
}

inline bool parse_hex(std::string_view s, std::uint64_t& v) {
  if (s.empty() || s.size() > 6) return false;
  v = 0;
  for (const char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return false;
    v = v * 16 + static_cast<unsigned>(d);
  }
  return true;
}

// Reads one chunked body from `in` (after the head); false if outside the
// subset or cut short. `in` is left after the body.
inline bool read_chunked(std::string_view& in, std::string& body) {
  for (;;) {
    const std::size_t eol = in.find("\r\n");
    if (eol == std::string_view::npos) return false;
    std::string_view line = in.substr(0, eol);
    in.remove_prefix(eol + 2);
    const std::size_t semi = line.find(';');
    if (semi != std::string_view::npos) {
      std::string_view ext = line.substr(semi + 1);
      line = line.substr(0, semi);
      const std::size_t eq = ext.find('=');
      for (std::string_view part : {ext.substr(0, eq), eq == std::string_view::npos ? "x" : ext.substr(eq + 1)}) {
        if (part.empty() || part.size() > 8) return false;
        for (const char c : part)
          if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
      }
    }
    std::uint64_t size = 0;
    if (!parse_hex(line, size)) return false;
    if (size == 0) break;
    if (in.size() < size + 2 || in.substr(size, 2) != "\r\n") return false;
    body.append(in.substr(0, size));
    in.remove_prefix(size + 2);
  }
  std::size_t trailer_bytes = 0;
  for (;;) {
    const std::size_t eol = in.find("\r\n");
    if (eol == std::string_view::npos) return false;
    const std::string_view line = in.substr(0, eol);
    in.remove_prefix(eol + 2);
    if (line.empty()) return trailer_bytes <= kMaxHeaderBytes;
    std::string_view name, value;
    if (!split_field(line, name, value)) return false;
    for (std::string_view framing :
         {"content-length", "transfer-encoding", "connection", "proxy-connection", "upgrade"})
      if (iequal(name, framing)) return false;
    trailer_bytes += name.size() + value.size() + 4;
  }
}

inline Reference reference(std::string_view in) {
  Reference ref;
  while (!in.empty()) {
    const std::size_t head_end = in.find("\r\n\r\n");
    if (head_end == std::string_view::npos || head_end + 4 > kMaxHeaderBytes) return ref;
    std::string_view head = in.substr(0, head_end + 2);
    std::string_view rest = in.substr(head_end + 4);

    // Request line.
    const std::size_t eol = head.find("\r\n");
    const std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    const std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp1 == sp2) return ref;
    const std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                           version = line.substr(sp2 + 1);
    bool known_method = false;
    for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "DELETE"}) known_method |= method == m;
    if (!known_method || target.empty() || target[0] != '/') return ref;
    for (const char c : target)
      if (!is_target_char(c)) return ref;
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return ref;
    const bool v11 = version == "HTTP/1.1";

    // Fields.
    int hosts = 0, lengths = 0, encodings = 0, connections = 0, auths = 0, types = 0, ranges = 0;
    std::string_view content_type, authorization, range;
    std::uint64_t length = 0;
    bool forwarded = false, close = !v11;
    while (!head.empty()) {
      const std::size_t e = head.find("\r\n");
      std::string_view name, value;
      if (!split_field(head.substr(0, e), name, value)) return ref;
      head.remove_prefix(e + 2);
      if (iequal(name, "host")) {
        ++hosts;
      } else if (iequal(name, "content-length")) {
        ++lengths;
        if (value.size() > 7 || (value.size() > 1 && value[0] == '0')) return ref;
        for (const char c : value)
          if (c < '0' || c > '9') return ref;
        (void)std::from_chars(value.data(), value.data() + value.size(), length);
      } else if (iequal(name, "transfer-encoding")) {
        ++encodings;
        if (value != "chunked") return ref;
      } else if (iequal(name, "connection")) {
        ++connections;
        if (value == "close") close = true;
        else if (value == "keep-alive") close = false;
        else return ref;
      } else if (iequal(name, "authorization")) {
        ++auths;
        authorization = value;
      } else if (iequal(name, "content-type")) {
        ++types;
        content_type = value;
      } else if (iequal(name, "range")) {
        ++ranges;
        range = value;
      } else if (iequal(name, "forwarded") || iequal(name, "x-forwarded-for") || iequal(name, "x-real-ip")) {
        forwarded = true;
      } else if (iequal(name, "upgrade") || iequal(name, "proxy-connection")) {
        return ref;
      }
    }
    if (hosts > 1 || (v11 && hosts == 0) || lengths > 1 || encodings > 1 || (lengths && encodings) ||
        (encodings && !v11) || connections > 1 || auths > 1 || types > 1 || ranges > 1)
      return ref;

    const std::size_t q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    http::Request r;
    r.method_name = method;
    r.target = target;
    r.path = path;
    r.query = query;
    r.content_type = content_type;
    r.authorization = authorization;
    r.range = range;
    r.forwarded = forwarded;
    r.keep_alive = !close;

    if (path.starts_with("/early")) {
      // Answered at its head; the body is dropped and the connection ends.
      ref.requests.push_back({describe('E', r, {}), 401, true});
      ref.ended = true;
      return ref;
    }
    std::string body;
    if (encodings) {
      if (!read_chunked(rest, body)) return ref;
    } else if (lengths) {
      if (rest.size() < length) return ref;
      body = rest.substr(0, length);
      rest.remove_prefix(length);
    }
    const bool streamed = path.starts_with("/s");
    if (body.size() > (streamed ? kStreamBodyLimit : kBodyLimit)) return ref;
    ref.requests.push_back({describe(streamed ? 'S' : 'W', r, body), streamed ? 201 : 200, close});
    if (close) {
      ref.ended = true;
      return ref;
    }
    in = rest;
  }
  return ref;
}

}  // namespace connection_detail

inline void check_connection(std::string_view input) {
  using namespace connection_detail;
  ConnectionServers& s = connection_servers();
  {
    std::lock_guard lock(s.handler.mu);
    s.handler.answers.clear();
  }
  const std::string got = http_detail::exchange(s.ports[input.size() % s.ports.size()], input);
  std::vector<http_detail::Answer> answers;
  {
    std::lock_guard lock(s.handler.mu);
    answers.swap(s.handler.answers);
  }
  // What came back is a well-formed sequence of the handler's answers.
  http_detail::check_answers(got, answers);
  // The requests the reference read were seen exactly, in order, and answered.
  const Reference ref = reference(input);
  FUZZ_REQUIRE(answers.size() >= ref.requests.size());
  for (std::size_t i = 0; i < ref.requests.size(); ++i) {
    if (answers[i].body != ref.requests[i].description) {
      std::fprintf(stderr, "request %zu: the handler saw\n  %sthe reference read\n  %s", i, answers[i].body.c_str(),
                   ref.requests[i].description.c_str());
      broken("the handler saw another request than was sent", __FILE__, __LINE__);
    }
    FUZZ_REQUIRE(answers[i].status == ref.requests[i].status);
  }
  // Nothing is read after a request that ends the connection.
  if (ref.ended) FUZZ_REQUIRE(answers.size() == ref.requests.size());
}

}  // namespace kiroku::fuzz
