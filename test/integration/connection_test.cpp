// connection_test.cpp - the HTTP connection through the real binary, as
// clients and proxies really talk to it: chunked trailers (never merged into
// the request), uploads that end the connection (Connection: close, HTTP/1.0,
// curl), requests that came through a proxy without a token, the exact
// --max-header-bytes boundary, and the RFC rules on Authorization and Host.
// Raw sockets (harness.h's Client) and curl.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> base_args(const TempDir& dir) {
  return {"--sink",  "sqlite://" + dir.path() + "/e.db",  "--spool-dir", dir.path() + "/spool",
          "--store", "file://" + dir.path() + "/objects", "--threads",   "1"};
}

// A request with a chunked BODY (one chunk, none if empty) and TRAILER (zero or more
// "Name: value\r\n" lines) after the last chunk.
std::string chunked_with_trailer(const std::string& request_line, const std::string& headers, const std::string& body,
                                 const std::string& trailer) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const std::string chunk = body.empty() ? std::string() : size + ("\r\n" + body) + "\r\n";
  return request_line + " HTTP/1.1\r\nHost: t\r\n" + headers + "Transfer-Encoding: chunked\r\n\r\n" + chunk + "0\r\n" +
         trailer + "\r\n";
}

long long count_named(const TempDir& dir, const std::string& name) {
  return std::stoll(
      sqlite_rows(dir.path() + "/e.db", "SELECT COUNT(*) FROM events WHERE name = '" + name + "'").at(0).at(0));
}

// ---------------------------------------------------------------------------
// Chunked trailers

// Trailer fields used to be appended to the storage the request's path,
// query and credentials pointed into: past its capacity they pointed into
// freed memory (404 "no such endpoint", the freed bytes in the access log).
TEST(Connection, ChunkedTrailersAreNeverMergedIntoTheRequest) {
  TempDir dir;
  auto args = base_args(dir);
  args.insert(args.end(), {"--access-log", "1"});
  Kiroku k(dir.path(), args);
  const std::vector<std::size_t> sizes = {10, 100, 1000, 3000, 7000};
  for (const std::size_t n : sizes) {
    SCOPED_TRACE(n);
    Client c(k.port());
    const std::string name = "trailer_" + std::to_string(n);
    c.send_raw(chunked_with_trailer("POST /events", "Content-Type: application/x-ndjson\r\n",
                                    "{\"name\":\"" + name + "\",\"value\":1}\n",
                                    "Content-Type: " + std::string(n, 'A') + "\r\n"));
    const Response r = c.read_response();
    EXPECT_EQ(r.status, 202) << r.body;
    EXPECT_EQ(r.body, "{\"accepted\":1}\n");
    // The connection goes on: the next request is read from the right place.
    EXPECT_EQ(c.get("/?name=" + name + "&value=2").status, 204);
  }
  for (const std::string field : {"Authorization: Bearer ", "Range: bytes=0-", "X-Other: "}) {
    SCOPED_TRACE(field);
    for (const std::size_t n : sizes) {
      Client c(k.port());
      const Response r = c.send_raw(chunked_with_trailer("GET /?name=get_trailer&value=1", "", "",
                                                         field + std::string(n, 'B') + "\r\n"))
                             ? c.read_response()
                             : Response{};
      EXPECT_EQ(r.status, 204) << n << " " << r.body;
    }
  }
  // Several trailer fields, and a trailer section over --max-header-bytes: 431.
  {
    Client c(k.port());
    c.send_raw(chunked_with_trailer("POST /events", "", "{\"name\":\"many_trailers\",\"value\":1}",
                                    "A: 1\r\nContent-Type: text/plain\r\nAuthorization: x\r\nRange: bytes=1-\r\n"));
    EXPECT_EQ(c.read_response().status, 202);
    Client big(k.port());
    big.send_raw(chunked_with_trailer("POST /events", "", "{\"name\":\"big_trailer\",\"value\":1}",
                                      "Content-Type: " + std::string(9000, 'A') + "\r\n"));
    const Response r = big.read_response();
    EXPECT_EQ(r.status, 431) << r.body;
    EXPECT_TRUE(big.closed_by_peer(3000));
  }
  EXPECT_EQ(k.stop(), 0) << k.log();
  for (const std::size_t n : sizes) EXPECT_EQ(count_named(dir, "trailer_" + std::to_string(n)), 2) << n;
  EXPECT_EQ(count_named(dir, "get_trailer"), 3 * static_cast<long long>(sizes.size()));
  EXPECT_EQ(count_named(dir, "many_trailers"), 1);
  EXPECT_EQ(count_named(dir, "big_trailer"), 0);
  EXPECT_EQ(k.log().find(" 404 "), std::string::npos) << "an access log line with a 404";
}

// A trailer can neither supply nor replace the credentials of the head.
TEST(Connection, ATrailerCannotChangeTheAuthorization) {
  TempDir dir;
  auto args = base_args(dir);
  args.insert(args.end(), {"--auth-token", "s3cret"});
  Kiroku k(dir.path(), args);
  {
    Client c(k.port());
    c.send_raw(
        "PUT /files/t.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nContent-Length: 5\r\n\r\nhello");
    ASSERT_EQ(c.read_response().status, 201);
  }
  for (const std::size_t n : {0, 10, 1000, 7000}) {
    SCOPED_TRACE(n);
    const std::string pad = n ? "X-Pad: " + std::string(n, 'p') + "\r\n" : std::string();
    Client c(k.port());
    // No credentials in the head, the right ones in the trailer: 401.
    c.send_raw(chunked_with_trailer("GET /files/t.txt", "", "", pad + "Authorization: Bearer s3cret\r\n"));
    EXPECT_EQ(c.read_response().status, 401);
    // The right ones in the head, wrong ones in the trailer: the head's count.
    Client d(k.port());
    d.send_raw(chunked_with_trailer("GET /files/t.txt", "Authorization: Bearer s3cret\r\n", "",
                                    pad + "Authorization: Bearer wrong\r\nRange: bytes=0-0\r\n"));
    const Response r = d.read_response();
    EXPECT_EQ(r.status, 200) << r.body;  // no Range either: the whole object
    EXPECT_EQ(r.body, "hello");
  }
  EXPECT_EQ(k.stop(), 0) << k.log();
}

// ---------------------------------------------------------------------------
// Uploads on a connection that ends with the answer

std::string shell(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  ::pclose(p);
  return out;
}

// Bytes of a 100 KiB (or `size`) test file, not all alike.
std::string content(std::size_t size, char seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>(seed + i * 7 + i / 251);
  return s;
}

void write_file(const std::string& path, const std::string& data) { std::ofstream(path, std::ios::binary) << data; }

class ClosingUploads : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "s3" && (!std::getenv("KIROKU_TEST_S3_ENDPOINT") || !std::getenv("KIROKU_TEST_S3_BUCKET")))
      FAIL() << "KIROKU_TEST_S3_ENDPOINT is not set: run under scripts/with-s3rver.sh";
    prefix_ = "closing-" + std::to_string(::getpid()) + "/";
    auto args = base_args(dir_);
    if (GetParam() == "s3") {
      args[5] = "s3://" + std::string(std::getenv("KIROKU_TEST_S3_BUCKET")) +
                "?endpoint=" + std::getenv("KIROKU_TEST_S3_ENDPOINT") + "&region=us-east-1";
      args.insert(args.end(), {"--part-size", "5MiB"});
    }
    k_ = std::make_unique<Kiroku>(dir_.path(), args);
    url_ = "http://127.0.0.1:" + std::to_string(k_->port()) + "/files";
  }

  // curl ARGS; returns "STATUS" as curl saw it ("000": no answer).
  std::string curl(const std::string& args) {
    return shell("curl -s -o '" + dir_.path() + "/answer' -w '%{http_code}' --max-time 20 " + args);
  }

  std::string stored(const std::string& key) {
    Client c(k_->port());
    const Response r = c.get("/files/" + key);
    return r.status == 200 ? r.body : "(status " + std::to_string(r.status) + ")";
  }

  TempDir dir_;
  std::unique_ptr<Kiroku> k_;
  std::string prefix_, url_;
};

TEST_P(ClosingUploads, CurlUploadsWithConnectionCloseOrHttp10AreAnswered) {
  const std::string file = dir_.path() + "/100k.bin";
  const std::string data = content(100 * 1024, 'a');
  write_file(file, data);
  // curl sends Expect: 100-continue for -T: the 100 Continue must not end the connection.
  EXPECT_EQ(curl("-H 'Connection: close' -T '" + file + "' " + url_ + "/" + prefix_ + "close.bin"), "201");
  EXPECT_EQ(stored(prefix_ + "close.bin"), data);
  EXPECT_EQ(curl("--http1.0 -T '" + file + "' " + url_ + "/" + prefix_ + "http10.bin"), "201");
  EXPECT_EQ(stored(prefix_ + "http10.bin"), data);
  // Chunked, from standard input.
  EXPECT_EQ(curl("-H 'Connection: close' -H 'Transfer-Encoding: chunked' -T - " + url_ + "/" + prefix_ +
                 "chunked.bin < '" + file + "'"),
            "201");
  EXPECT_EQ(stored(prefix_ + "chunked.bin"), data);

  // A form whose file part starts after the first 8 KiB (a large field before it).
  const std::string note = dir_.path() + "/note.txt";
  write_file(note, std::string(20000, 'n'));
  for (const std::string extra : {"", "-H 'Connection: close' ", "--http1.0 "}) {
    SCOPED_TRACE(extra);
    const std::string key = prefix_ + "form" + std::to_string(extra.size()) + ".bin";
    EXPECT_EQ(curl(extra + "-F 'note=<" + note + "' -F key=" + key + " -F 'file=@" + file + "' " + url_), "201");
    EXPECT_EQ(stored(key), data);
  }
  EXPECT_EQ(k_->stop(), 0) << k_->log();
}

// The same through a raw socket: the answer comes after the whole body, then
// the connection closes; what was pipelined after it is not read.
TEST_P(ClosingUploads, RawUploadsThatCloseAreAnsweredThenClosed) {
  const std::string data = content(300 * 1024, 'r');
  struct Case {
    std::string name, head;
    bool chunked;
  };
  const std::vector<Case> cases = {
      {"keep-alive-off", "PUT /files/" + prefix_ + "raw1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", false},
      {"http10", "PUT /files/" + prefix_ + "raw2 HTTP/1.0\r\n", false},
      {"http10-keep-alive-off", "PUT /files/" + prefix_ + "raw3 HTTP/1.0\r\nConnection: close\r\n", false},
      {"chunked-close", "PUT /files/" + prefix_ + "raw4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", true},
  };
  for (const Case& cs : cases) {
    SCOPED_TRACE(cs.name);
    Client c(k_->port(), 20000);
    std::string req = cs.head;
    if (cs.chunked) {
      char size[32];
      std::snprintf(size, sizeof size, "%zx", data.size());
      req += "Transfer-Encoding: chunked\r\n\r\n" + std::string(size) + "\r\n" + data + "\r\n0\r\n\r\n";
    } else {
      req += "Content-Length: " + std::to_string(data.size()) + "\r\n\r\n" + data;
    }
    req += "GET /?name=after_close&value=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    ASSERT_TRUE(c.send_raw(req));
    const Response r = c.read_response();
    EXPECT_EQ(r.status, 201) << r.body;
    EXPECT_NE(r.headers.find("Connection: close"), std::string::npos) << r.headers;
    EXPECT_TRUE(c.closed_by_peer(5000));
  }
  EXPECT_EQ(stored(prefix_ + "raw1"), data);
  EXPECT_EQ(stored(prefix_ + "raw2"), data);
  EXPECT_EQ(stored(prefix_ + "raw3"), data);
  EXPECT_EQ(stored(prefix_ + "raw4"), data);
  EXPECT_EQ(k_->stop(), 0) << k_->log();
  EXPECT_EQ(count_named(dir_, "after_close"), 0);
}

INSTANTIATE_TEST_SUITE_P(Stores, ClosingUploads, ::testing::Values("file", "s3"),
                         [](const auto& p) { return p.param; });

// ---------------------------------------------------------------------------
// Requests through a proxy without a token

TEST(Connection, ProxiedRequestsGet403WithoutAToken) {
  TempDir dir;
  Kiroku k(dir.path(), base_args(dir));
  EXPECT_NE(k.log().find("no --auth-token"), std::string::npos) << k.log();
  const std::vector<std::string> proxied = {"X-Forwarded-For: 203.0.113.7\r\n", "x-forwarded-for: 127.0.0.1\r\n",
                                            "Forwarded: for=203.0.113.7;proto=https\r\n", "X-Real-IP: 203.0.113.7\r\n"};
  for (const std::string& h : proxied) {
    SCOPED_TRACE(h);
    for (const std::string target : {"/files/p.txt", "/files?prefix=", "/debug/pprof/heap"}) {
      Client c(k.port());
      c.send_raw("GET " + target + " HTTP/1.1\r\nHost: t\r\n" + h + "\r\n");
      const Response r = c.read_response();
      EXPECT_EQ(r.status, 403) << target;
      EXPECT_NE(r.body.find("--auth-token"), std::string::npos) << r.body;
      EXPECT_NE(r.body.find("proxy"), std::string::npos) << r.body;
    }
    Client c(k.port());
    c.send_raw("PUT /files/p.txt HTTP/1.1\r\nHost: t\r\n" + h + "Content-Length: 5\r\n\r\nhello");
    EXPECT_EQ(c.read_response().status, 403);
    // Ingestion is open to all, proxied or not.
    Client i(k.port());
    i.send_raw("GET /?name=proxied&value=1 HTTP/1.1\r\nHost: t\r\n" + h + "\r\n");
    EXPECT_EQ(i.read_response().status, 204);
  }
  // A direct loopback client is served; nothing of the proxied PUTs was stored.
  Client c(k.port());
  EXPECT_EQ(c.get("/files/p.txt").status, 404);
  c.send_raw("PUT /files/p.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(c.read_response().status, 201);
  EXPECT_EQ(k.stop(), 0) << k.log();

  // With a token the proxy headers do not matter: the token does.
  TempDir dir2;
  auto args = base_args(dir2);
  args.insert(args.end(), {"--auth-token", "s3cret"});
  Kiroku t(dir2.path(), args);
  EXPECT_EQ(t.log().find("no --auth-token"), std::string::npos);
  Client d(t.port());
  d.send_raw(
      "PUT /files/q.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n"
      "Authorization: Bearer s3cret\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_EQ(d.read_response().status, 201);
  d.send_raw("GET /files/q.txt HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n");
  EXPECT_EQ(d.read_response().status, 401);
  EXPECT_EQ(t.stop(), 0) << t.log();
}

// ---------------------------------------------------------------------------
// --max-header-bytes

// A GET head of exactly `size` bytes (request line, fields, empty line).
std::string head_of(std::size_t size, const std::string& name) {
  const std::string start = "GET /?name=" + name + "&value=1 HTTP/1.1\r\nHost: t\r\nX-Pad: ";
  const std::size_t fixed = start.size() + 4;  // and "\r\n\r\n"
  return start + std::string(size - fixed, 'p') + "\r\n\r\n";
}

// The head of LIMIT bytes is served and one of LIMIT + 1 gets 431, whether it
// arrives in one piece or in several.
void expect_limit(int port, std::size_t limit) {
  for (const std::size_t pieces : {1, 3, 10}) {
    SCOPED_TRACE(pieces);
    for (const std::size_t size : {limit - 1, limit, limit + 1, 2 * limit, 2 * limit + 100}) {
      SCOPED_TRACE(size);
      const std::string head = head_of(size, "hb");
      Client c(port);
      for (std::size_t i = 0; i < pieces; ++i) {
        const std::size_t from = head.size() * i / pieces, to = head.size() * (i + 1) / pieces;
        // Past the limit the server may have answered and closed before the last piece.
        if (!c.send_raw(std::string_view(head).substr(from, to - from))) break;
        if (pieces > 1) std::this_thread::sleep_for(20ms);
      }
      const Response r = c.read_response();
      EXPECT_EQ(r.status, size <= limit ? 204 : 431) << r.body;
      if (size > limit) {
        EXPECT_TRUE(c.closed_by_peer(3000));
      }
    }
  }
  // Many small fields count the same as one long one.
  std::string many = "GET /?name=hb&value=1 HTTP/1.1\r\nHost: t\r\n";
  while (many.size() + 9 + 2 <= limit) many += "X-A: 12\r\n";
  std::size_t left = limit - many.size() - 2;  // for the last field, before the empty line
  if (left < 6) {
    many.resize(many.size() - 9);
    left += 9;
  }
  many += "Z: " + std::string(left - 5, 'z') + "\r\n\r\n";
  ASSERT_EQ(many.size(), limit);
  Client ok(port);
  ok.send_raw(many);
  EXPECT_EQ(ok.read_response().status, 204);
  // Two heads of the limit pipelined in one send: each is its own head.
  Client two(port);
  two.send_raw(head_of(limit, "hb") + head_of(limit, "hb"));
  EXPECT_EQ(two.read_response().status, 204);
  EXPECT_EQ(two.read_response().status, 204);
}

TEST(Connection, MaxHeaderBytesIsTheLimitOfTheWholeHead) {
  {
    TempDir dir;
    Kiroku k(dir.path(), base_args(dir));  // default 8 KiB
    expect_limit(k.port(), 8192);
    // The probe's case: a 16.3 KB head used to be served.
    Client c(k.port());
    c.send_raw(head_of(16300, "hb"));
    EXPECT_EQ(c.read_response().status, 431);
    EXPECT_EQ(k.stop(), 0) << k.log();
  }
  TempDir dir;
  auto args = base_args(dir);
  args.insert(args.end(), {"--max-header-bytes", "600"});
  Kiroku k(dir.path(), args);
  expect_limit(k.port(), 600);
  EXPECT_EQ(k.stop(), 0) << k.log();
}

// ---------------------------------------------------------------------------
// Authorization and Host (RFC 9110 11.1, RFC 9112 3.2)

TEST(Connection, AuthorizationAndHostFollowTheRfcs) {
  TempDir dir;
  auto args = base_args(dir);
  args.insert(args.end(), {"--auth-token", "s3cret"});
  Kiroku k(dir.path(), args);
  auto get = [&](const std::string& request) {
    Client c(k.port());
    c.send_raw(request);
    return c.read_response();
  };
  // The scheme is case-insensitive.
  for (const std::string a : {"Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"})
    EXPECT_EQ(get("GET /files?prefix=x HTTP/1.1\r\nHost: t\r\nAuthorization: " + a + "\r\n\r\n").status, 200) << a;
  for (const std::string a : {"Bearer wrong", "Basic s3cret", "Bearers3cret", "Bearer", "s3cret"})
    EXPECT_EQ(get("GET /files?prefix=x HTTP/1.1\r\nHost: t\r\nAuthorization: " + a + "\r\n\r\n").status, 401) << a;
  // Two Authorization fields: 400, whichever comes first.
  for (const std::string pair : {"Authorization: Bearer s3cret\r\nAuthorization: Bearer wrong\r\n",
                                 "Authorization: Bearer wrong\r\nAuthorization: Bearer s3cret\r\n",
                                 "Authorization: Bearer s3cret\r\nAuthorization: Bearer s3cret\r\n"}) {
    const Response r = get("GET /files?prefix=x HTTP/1.1\r\nHost: t\r\n" + pair + "\r\n");
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("more than one Authorization"), std::string::npos) << r.body;
  }
  // Host: needed once in HTTP/1.1; optional in HTTP/1.0.
  Response r = get("GET /?name=host&value=1 HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("Host"), std::string::npos) << r.body;
  r = get("GET /?name=host&value=2 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("more than one Host"), std::string::npos) << r.body;
  EXPECT_EQ(get("GET /?name=host&value=3 HTTP/1.0\r\n\r\n").status, 204);
  EXPECT_EQ(get("GET /?name=host&value=4 HTTP/1.1\r\nhost: x\r\n\r\n").status, 204);
  EXPECT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(sqlite_rows(dir.path() + "/e.db", "SELECT group_concat(value) FROM events WHERE name = 'host'").at(0).at(0),
            "3,4");
}

}  // namespace
}  // namespace kiroku::test
