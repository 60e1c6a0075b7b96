// load_test.cpp - `kiroku load` against a small in-test HTTP server: schedule and
// counts, latency from the due time (coordinated omission), errors, response
// parsing, URL templates, options and the report.
#include "load/load.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <nlohmann/json.hpp>

namespace kiroku {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------
// A one-thread HTTP/1.1 server on 127.0.0.1:0. Paths (the part before '?'):
//   /fast     204 at once            /slow     200 "ok" after 50 ms (timer)
//   /chunked  200, chunked body      /close    200 with Connection: close
//   /big      200, 100 KB body       /missing  404 with a body
//   /http10   HTTP/1.0 200, body until close
//   /hang     never answers          /echo     200 with the request body
// With stall_at = n, the thread sleeps `stall` when the n-th request arrives:
// nothing is accepted or answered meanwhile.
class TestServer {
 public:
  explicit TestServer(std::uint64_t stall_at = 0, std::chrono::milliseconds stall = 300ms)
      : acceptor_(io_, tcp::endpoint(asio::ip::address_v4::loopback(), 0)), stall_at_(stall_at), stall_(stall) {
    accept();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    io_.stop();
    thread_.join();
  }

  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + std::string(path);
  }
  std::uint64_t requests() const { return requests_.load(); }
  std::vector<std::string> targets() const {
    std::lock_guard lock(mutex_);
    return targets_;
  }
  std::vector<std::string> bodies() const {
    std::lock_guard lock(mutex_);
    return bodies_;
  }

 private:
  struct Session : std::enable_shared_from_this<Session> {
    Session(TestServer& s, tcp::socket sock) : server(s), socket(std::move(sock)), timer(socket.get_executor()) {}

    void read() {
      socket.async_read_some(asio::buffer(buf),
                             [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                               if (ec) return;
                               self->pending.append(self->buf, n);
                               self->process();
                             });
    }

    void process() {
      const std::size_t end = pending.find("\r\n\r\n");
      if (end == std::string::npos) {
        read();
        return;
      }
      std::string head = pending.substr(0, end);
      std::size_t body_length = 0;
      std::string lowered = head;
      std::transform(lowered.begin(), lowered.end(), lowered.begin(), ::tolower);
      if (auto at = lowered.find("content-length:"); at != std::string::npos) {
        body_length = std::stoul(lowered.substr(at + 15));
      }
      if (pending.size() < end + 4 + body_length) {
        read();
        return;
      }
      std::string body = pending.substr(end + 4, body_length);
      pending.erase(0, end + 4 + body_length);

      const std::size_t sp1 = head.find(' ');
      const std::size_t sp2 = head.find(' ', sp1 + 1);
      const std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
      const std::string path = target.substr(0, target.find('?'));
      {
        std::lock_guard lock(server.mutex_);
        server.targets_.push_back(target);
        server.bodies_.push_back(body);
      }
      const std::uint64_t n = ++server.requests_;
      if (server.stall_at_ != 0 && n == server.stall_at_) std::this_thread::sleep_for(server.stall_);

      if (path == "/fast") {
        respond("HTTP/1.1 204 No Content\r\n\r\n");
      } else if (path == "/slow") {
        timer.expires_after(50ms);
        timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
          if (!ec) self->respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        });
      } else if (path == "/chunked") {
        respond(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n");
      } else if (path == "/close") {
        respond("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", true);
      } else if (path == "/big") {
        respond("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + std::string(100000, 'x'));
      } else if (path == "/missing") {
        respond("HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found");
      } else if (path == "/http10") {
        respond("HTTP/1.0 200 OK\r\n\r\nall of it until the close", true);
      } else if (path == "/echo") {
        respond("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
      } else {  // /hang: read (and drop) until the client goes away
        discard();
      }
    }

    void respond(std::string text, bool close_after = false) {
      out = std::move(text);
      asio::async_write(socket, asio::buffer(out),
                        [self = shared_from_this(), close_after](boost::system::error_code ec, std::size_t) {
                          if (ec) return;
                          if (close_after) {
                            self->socket.shutdown(tcp::socket::shutdown_both, ec);
                            self->socket.close(ec);
                            return;
                          }
                          self->process();
                        });
    }

    void discard() {
      socket.async_read_some(asio::buffer(buf), [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
        if (!ec) self->discard();
      });
    }

    TestServer& server;
    tcp::socket socket;
    asio::steady_timer timer;
    char buf[4096];
    std::string pending;
    std::string out;
  };

  void accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec) return;
      std::make_shared<Session>(*this, std::move(socket))->process();
      accept();
    });
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
  const std::uint64_t stall_at_;
  const std::chrono::milliseconds stall_;
  std::atomic<std::uint64_t> requests_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> targets_;
  std::vector<std::string> bodies_;
};

LoadOptions quiet_options(std::string url, double rate, std::chrono::nanoseconds duration, unsigned connections) {
  LoadOptions o;
  o.url = std::move(url);
  o.rate = rate;
  o.duration = duration;
  o.connections = connections;
  o.quiet = true;
  return o;
}

LoadReport run_ok(const LoadOptions& o) {
  auto r = run_load(o, nullptr);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return LoadReport{};
  const LoadReport& report = r.value();
  // Every due request ends as exactly one answer or one error.
  EXPECT_EQ(report.scheduled, report.answered + report.errors()) << format_report(report, false);
  EXPECT_EQ(report.answered,
            report.status_2xx + report.status_3xx + report.status_4xx + report.status_5xx + report.status_other);
  EXPECT_EQ(report.latency.count(), report.answered);
  return report;
}

std::uint64_t query_value(const std::string& target, const std::string& key) {
  const std::size_t at = target.find(key + "=");
  EXPECT_NE(at, std::string::npos) << target;
  if (at == std::string::npos) return 0;
  std::uint64_t v = 0;
  const char* begin = target.data() + at + key.size() + 1;
  std::from_chars(begin, target.data() + target.size(), v);
  return v;
}

// ---------------------------------------------------------------------------
// Runs against the test server

TEST(LoadRun, SendsRateTimesDurationRequestsAndTheServerSeesThemAll) {
  TestServer server;
  const auto o = quiet_options(server.url("/fast?seq={seq}&value={rand}&name={name}"), 200, 2s, 8);
  const LoadReport r = run_ok(o);
  EXPECT_EQ(r.scheduled, 400u);
  EXPECT_EQ(r.sent, 400u);
  EXPECT_EQ(r.answered, 400u);
  EXPECT_EQ(r.status_2xx, 400u);
  EXPECT_EQ(r.errors(), 0u);
  EXPECT_EQ(server.requests(), 400u);
  EXPECT_GT(r.elapsed, 1900ms);
  EXPECT_LT(r.elapsed, 2300ms);
  EXPECT_NEAR(r.throughput(), 200, 15);
  // Loopback answers within microseconds; the bound leaves room for a busy machine.
  EXPECT_LT(r.latency.value_at_percentile(50), 50ms);

  // {seq} takes every value once; {rand} stays below 2^31; {name} cycles with seq.
  std::set<std::uint64_t> seqs;
  for (const std::string& t : server.targets()) {
    const std::uint64_t seq = query_value(t, "seq");
    seqs.insert(seq);
    EXPECT_LT(query_value(t, "value"), std::uint64_t{1} << 31);
    EXPECT_NE(t.find("name=m" + std::to_string(seq % 16)), std::string::npos) << t;
  }
  EXPECT_EQ(seqs.size(), 400u);
  EXPECT_EQ(*seqs.rbegin(), 399u);
}

TEST(LoadRun, ThreadsShareOneSchedule) {
  TestServer server;
  auto o = quiet_options(server.url("/fast?seq={seq}"), 200, 1s, 4);
  o.threads = 2;
  const LoadReport r = run_ok(o);
  EXPECT_EQ(r.scheduled, 200u);
  EXPECT_EQ(r.status_2xx, 200u);
  EXPECT_EQ(r.errors(), 0u);
  EXPECT_EQ(server.requests(), 200u);
  std::set<std::uint64_t> seqs;
  for (const std::string& t : server.targets()) seqs.insert(query_value(t, "seq"));
  EXPECT_EQ(seqs.size(), 200u);
}

TEST(LoadRun, SlowAnswersShowInLatency) {
  TestServer server;
  const LoadReport r = run_ok(quiet_options(server.url("/slow"), 200, 1s, 16));
  EXPECT_EQ(r.status_2xx, 200u);
  EXPECT_EQ(r.errors(), 0u);
  EXPECT_GE(r.latency.value_at_percentile(50), 50ms);
  EXPECT_GE(r.latency.min(), 50ms);
  EXPECT_LT(r.latency.value_at_percentile(50), 150ms);
}

TEST(LoadRun, ServerStallShowsInEveryRequestDueMeanwhile) {
  // 200 requests/s over 8 connections; the server stops for 300 ms at the
  // 150th request. About 60 requests come due during the stall; measured from
  // their due times they wait from 300 ms down to 0, so the top 5% are all
  // above 150 ms. A tool that measured from the send would see one slow
  // request per connection (8 of 400, 2%) and a small p95.
  TestServer server(150, 300ms);
  const LoadReport r = run_ok(quiet_options(server.url("/fast"), 200, 2s, 8));
  EXPECT_EQ(r.answered, 400u);
  EXPECT_EQ(r.errors(), 0u);
  EXPECT_EQ(server.requests(), 400u);
  EXPECT_GE(r.latency.max(), 290ms);
  EXPECT_GE(r.latency.value_at_percentile(95), 150ms) << format_report(r, false);
  EXPECT_LT(r.latency.value_at_percentile(50), 50ms);
}

TEST(LoadRun, ClosedLoopRunsAsFastAsAnswered) {
  for (unsigned pipeline : {1u, 4u}) {
    TestServer server;
    auto o = quiet_options(server.url("/fast"), 0, 500ms, 4);
    o.pipeline = pipeline;
    const LoadReport r = run_ok(o);
    EXPECT_GT(r.answered, 500u) << "pipeline " << pipeline;
    EXPECT_EQ(r.errors(), 0u);
    EXPECT_EQ(r.sent, r.answered);
    EXPECT_EQ(r.status_2xx, r.answered);
    EXPECT_EQ(server.requests(), r.answered);
    EXPECT_LT(r.elapsed, 1s);
  }
}

TEST(LoadRun, UnansweredRequestsTimeOutAndTheConnectionIsReopened) {
  TestServer server;
  // Each connection sends one request every 200 ms; each times out after 150 ms.
  auto o = quiet_options(server.url("/hang"), 10, 500ms, 2);
  o.timeout = 150ms;
  const LoadReport r = run_ok(o);
  EXPECT_EQ(r.scheduled, 5u);
  EXPECT_EQ(r.sent, 5u);
  EXPECT_EQ(r.timeout_errors, 5u);
  EXPECT_EQ(r.answered, 0u);
  EXPECT_EQ(server.requests(), 5u);  // each after the first on a reopened connection
  EXPECT_LT(r.elapsed, 1s);
  EXPECT_EQ(exit_code(r, o), 0);
  o.fail_on_error = true;
  EXPECT_EQ(exit_code(r, o), 1);
}

TEST(LoadRun, RefusedConnectionsAreConnectErrors) {
  std::uint16_t port = 0;
  {
    asio::io_context io;
    tcp::acceptor probe(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    port = probe.local_endpoint().port();
  }  // closed: nothing listens there now
  auto o = quiet_options("http://127.0.0.1:" + std::to_string(port) + "/", 50, 200ms, 2);
  o.timeout = 500ms;
  const LoadReport r = run_ok(o);
  EXPECT_EQ(r.scheduled, 10u);
  EXPECT_EQ(r.connect_errors, 10u);
  EXPECT_EQ(r.sent, 0u);
  EXPECT_EQ(r.answered, 0u);
}

TEST(LoadRun, ParsesChunkedClosingLargeAndErrorAnswers) {
  TestServer server;
  struct Case {
    const char* path;
    std::uint64_t LoadReport::*counter;
  };
  const Case cases[] = {{"/chunked", &LoadReport::status_2xx},
                        {"/close", &LoadReport::status_2xx},
                        {"/big", &LoadReport::status_2xx},
                        {"/http10", &LoadReport::status_2xx},
                        {"/missing", &LoadReport::status_4xx}};
  for (const Case& c : cases) {
    auto o = quiet_options(server.url(c.path), 100, 300ms, 3);
    o.pipeline = 2;
    o.timeout = 10000ms;  // generous: sanitizer builds on a busy machine are slow
    const LoadReport r = run_ok(o);
    EXPECT_EQ(r.answered, 30u) << c.path << "\n" << format_report(r, false);
    EXPECT_EQ(r.*(c.counter), 30u) << c.path;
    EXPECT_EQ(r.errors(), 0u) << c.path;
  }
  EXPECT_EQ(server.requests(), 150u);
}

TEST(LoadRun, PostsABodyFileWithPlaceholders) {
  TestServer server;
  const auto path =
      std::filesystem::temp_directory_path() / ("kiroku_load_test_body_" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream f(path);
    f << R"({"name":"{name}","value":{seq},"other":{"x":1}})";
  }
  auto o = quiet_options(server.url("/echo"), 50, 200ms, 2);
  o.method = "POST";
  o.body_file = path.string();
  o.headers = {"Content-Type: application/json", "X-Request: {seq}"};
  const LoadReport r = run_ok(o);
  std::filesystem::remove(path);
  EXPECT_EQ(r.status_2xx, 10u);
  std::set<std::string> bodies;
  for (const std::string& b : server.bodies()) bodies.insert(b);
  EXPECT_EQ(bodies.size(), 10u);
  EXPECT_EQ(bodies.count(R"({"name":"m3","value":3,"other":{"x":1}})"), 1u);
}

TEST(LoadRun, BadOptionsAreInvalid) {
  auto expect_invalid = [](LoadOptions o, const char* what) {
    o.quiet = true;
    auto r = run_load(o, nullptr);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().kind(), ErrorKind::invalid) << what;
  };
  const LoadOptions good = quiet_options("http://127.0.0.1:1/", 10, 1s, 2);
  LoadOptions o = good;
  o.rate = -1;
  expect_invalid(o, "negative rate");
  o = good;
  o.connections = 0;
  expect_invalid(o, "no connections");
  o = good;
  o.threads = 3;
  expect_invalid(o, "more threads than connections");
  o = good;
  o.pipeline = kMaxLoadPipeline + 1;
  expect_invalid(o, "deep pipeline");
  o = good;
  o.duration = 0s;
  expect_invalid(o, "zero duration");
  o = good;
  o.url = "https://127.0.0.1/";
  expect_invalid(o, "https");
  o = good;
  o.url = "http://127.0.0.1/?x={sequence}";
  expect_invalid(o, "unknown placeholder");
  o = good;
  o.body_file = "/nonexistent/kiroku/body";
  expect_invalid(o, "missing body file");
  o = good;
  o.headers = {"no colon here"};
  expect_invalid(o, "bad header");
  o = good;
  o.method = "GE T";
  expect_invalid(o, "bad method");
}

TEST(LoadRun, ProgressLineEachSecond) {
  TestServer server;
  auto o = quiet_options(server.url("/fast"), 100, 1200ms, 2);
  o.quiet = false;
  std::ostringstream progress;
  auto r = run_load(o, &progress);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(progress.str().find("answered"), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("rate"), std::string::npos);
  o.quiet = true;
  std::ostringstream silent;
  ASSERT_TRUE(run_load(o, &silent).ok());
  EXPECT_EQ(silent.str(), "");
}

// ---------------------------------------------------------------------------
// Response parser

struct Parsed {
  std::vector<int> statuses;
  std::vector<bool> keep_alive;
  bool error = false;
  bool closed_answer = false;
};

// Feeds `text` in pieces of `step` bytes through a caller-style buffer.
Parsed feed(const std::string& text, std::size_t step, bool head = false, bool close_at_end = false) {
  ResponseParser p;
  p.start(head);
  Parsed out;
  std::string buffer;
  for (std::size_t at = 0; at < text.size() && !out.error; at += step) {
    buffer.append(text, at, step);
    for (;;) {
      std::size_t used = 0;
      const auto s = p.parse(buffer.data(), buffer.size(), used);
      buffer.erase(0, used);
      if (s == ResponseParser::Step::error) {
        out.error = true;
        break;
      }
      if (s == ResponseParser::Step::need_more) break;
      out.statuses.push_back(p.status());
      out.keep_alive.push_back(p.keep_alive());
      p.start(head);
    }
  }
  if (close_at_end && !out.error && p.finish() == ResponseParser::Step::answer) {
    out.statuses.push_back(p.status());
    out.keep_alive.push_back(p.keep_alive());
    out.closed_answer = true;
  }
  return out;
}

TEST(LoadResponseParser, EveryFramingAtEverySplit) {
  const std::string text =
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
      "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 201 Created\r\ncontent-length:  3 \r\n\r\nabc"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=v\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
      "HTTP/1.1 500 Oops\nContent-Length: 1\n\nx"  // bare LF line ends
      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
      "HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno";
  const std::vector<int> want = {200, 204, 201, 200, 304, 500, 200, 503};
  const std::vector<bool> want_keep = {true, true, true, true, true, true, true, false};
  for (std::size_t step = 1; step <= text.size(); ++step) {
    const Parsed p = feed(text, step);
    ASSERT_FALSE(p.error) << "step " << step;
    ASSERT_EQ(p.statuses, want) << "step " << step;
    ASSERT_EQ(p.keep_alive, want_keep) << "step " << step;
  }
}

TEST(LoadResponseParser, BodyUntilCloseAndHead) {
  Parsed p = feed("HTTP/1.0 200 OK\r\n\r\nbody runs to the close", 7, false, true);
  EXPECT_FALSE(p.error);
  ASSERT_EQ(p.statuses, std::vector<int>{200});
  EXPECT_TRUE(p.closed_answer);
  EXPECT_FALSE(p.keep_alive[0]);

  // HEAD: Content-Length describes a body that is not sent.
  p = feed("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 7\r\n\r\n", 5, true);
  EXPECT_FALSE(p.error);
  EXPECT_EQ(p.statuses, (std::vector<int>{200, 404}));

  // A close in the middle of a length-framed body is no answer.
  ResponseParser parser;
  parser.start(false);
  const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
  std::size_t used = 0;
  EXPECT_EQ(parser.parse(partial.data(), partial.size(), used), ResponseParser::Step::need_more);
  EXPECT_EQ(parser.finish(), ResponseParser::Step::error);
  EXPECT_NE(parser.error(), nullptr);
}

TEST(LoadResponseParser, RejectsMalformedAnswers) {
  const char* bad[] = {
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1 2x0 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "SSH-2.0-OpenSSH\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n",
      "HTTP/1.1 101 Switching Protocols\r\n\r\n",
  };
  for (const char* text : bad) {
    EXPECT_TRUE(feed(text, 1000).error) << text;
    EXPECT_TRUE(feed(text, 1).error) << text;
  }
}

// ---------------------------------------------------------------------------
// URL, request template, durations, options, report

TEST(LoadUrl, Parts) {
  auto t = parse_load_url("http://127.0.0.1:8080/?name={name}&value=1");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->host, "127.0.0.1");
  EXPECT_EQ(t->port, 8080);
  EXPECT_EQ(t->target, "/?name={name}&value=1");
  EXPECT_EQ(t->host_header, "127.0.0.1:8080");

  t = parse_load_url("http://example.test");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->port, 80);
  EXPECT_EQ(t->target, "/");
  EXPECT_EQ(t->host_header, "example.test");

  t = parse_load_url("HTTP://[::1]:9000?x=1#frag");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->host, "::1");
  EXPECT_EQ(t->port, 9000);
  EXPECT_EQ(t->target, "/?x=1");
  EXPECT_EQ(t->host_header, "[::1]:9000");

  for (const char* bad : {"https://h/", "ftp://h/", "h:80/", "http://", "http://:80/", "http://h:0/", "http://h:70000/",
                          "http://h:x/", "http://u@h/", "http://h/a b", "http://[::1/", "http://h:/"}) {
    auto r = parse_load_url(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().kind(), ErrorKind::invalid);
    }
  }
}

TEST(LoadRequestTemplate, RendersPlaceholdersWithoutAllocating) {
  LoadOptions o;
  o.headers = {"X-Seq: {seq}"};
  auto target = parse_load_url("http://h:1/p?s={seq}&brace={");
  ASSERT_TRUE(target.ok());
  EXPECT_FALSE(RequestTemplate::make(o, *target, "").ok());  // a lone brace in the URL is a typo
  target = parse_load_url("http://h:1/p?s={seq}&r={rand}&n={name}");
  ASSERT_TRUE(target.ok());
  auto t = RequestTemplate::make(o, *target, "");
  ASSERT_TRUE(t.ok()) << t.status().message();

  std::string out;
  out.reserve(t->max_size());
  const std::size_t capacity = out.capacity();
  t->render(out, 42, 7, 16);
  EXPECT_EQ(out,
            "GET /p?s=42&r=7&n=m10 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: kiroku-load\r\n"
            "X-Seq: 42\r\n\r\n");
  // The widest values still fit the reserved capacity: no allocation.
  out.clear();
  t->render(out, ~std::uint64_t{0}, (1u << 31) - 1, 0xffffffffu);
  EXPECT_LE(out.size(), t->max_size());
  EXPECT_EQ(out.capacity(), capacity);

  o.method = "POST";
  t = RequestTemplate::make(o, *target, R"({"v":{rand},"n":"{name}"})");
  ASSERT_TRUE(t.ok());
  out.clear();
  t->render(out, 3, 12345, 2);
  EXPECT_NE(out.find("Content-Length: 20\r\n\r\n{\"v\":12345,\"n\":\"m1\"}"), std::string::npos) << out;
}

TEST(LoadOptionsCli, RegistersEveryFlag) {
  CLI::App app;
  LoadOptions o;
  add_load_options(app, o);
  app.parse(
      "--url http://127.0.0.1:8080/ --rate 30000 --duration 1m --connections 64 --threads 2 "
      "--timeout 500ms --pipeline 4 --json --quiet --fail-on-error --header 'A: b' --names 4",
      false);
  EXPECT_EQ(o.url, "http://127.0.0.1:8080/");
  EXPECT_EQ(o.rate, 30000);
  EXPECT_EQ(o.duration, 60s);
  EXPECT_EQ(o.connections, 64u);
  EXPECT_EQ(o.threads, 2u);
  EXPECT_EQ(o.timeout, 500ms);
  EXPECT_EQ(o.pipeline, 4u);
  EXPECT_TRUE(o.json);
  EXPECT_TRUE(o.quiet);
  EXPECT_TRUE(o.fail_on_error);
  EXPECT_EQ(o.headers, std::vector<std::string>{"A: b"});
  EXPECT_EQ(o.names, 4u);

  CLI::App bad;
  LoadOptions ignored;
  add_load_options(bad, ignored);
  EXPECT_THROW(bad.parse("--url http://h/ --duration 10parsecs", false), CLI::ParseError);
  CLI::App missing;
  add_load_options(missing, ignored);
  EXPECT_THROW(missing.parse("--rate 5", false), CLI::ParseError);
}

TEST(LoadReportFormat, TextAndJson) {
  LoadReport r;
  r.url = "http://h/";
  r.rate = 100;
  r.duration = 2s;
  r.connections = 4;
  r.threads = 1;
  r.elapsed = 2s;
  r.scheduled = 200;
  r.sent = 200;
  r.answered = 199;
  r.status_2xx = 198;
  r.status_5xx = 1;
  r.timeout_errors = 1;
  for (int i = 1; i <= 199; ++i) r.latency.record(std::chrono::microseconds(i * 10));

  const std::string text = format_report(r, false);
  EXPECT_NE(text.find("200 due, 200 sent, 199 answered"), std::string::npos) << text;
  EXPECT_NE(text.find("5xx 1"), std::string::npos) << text;
  EXPECT_NE(text.find("timeout 1"), std::string::npos) << text;
  EXPECT_NE(text.find("p99.9"), std::string::npos) << text;

  const auto j = nlohmann::json::parse(format_report(r, true));
  EXPECT_EQ(j["requests"]["answered"], 199);
  EXPECT_EQ(j["status"]["2xx"], 198);
  EXPECT_EQ(j["errors"]["total"], 1);
  EXPECT_EQ(j["errors"]["timeout"], 1);
  EXPECT_DOUBLE_EQ(j["throughput_rps"].get<double>(), 99.5);
  EXPECT_NEAR(j["latency_ms"]["max"].get<double>(), 1.99, 1e-9);
  EXPECT_NEAR(j["latency_ms"]["p50"].get<double>(), 1.0, 0.01);
  for (const char* key : {"min", "mean", "p50", "p90", "p99", "p99_9", "max"}) {
    EXPECT_TRUE(j["latency_ms"].contains(key)) << key;
  }

  LoadOptions o;
  EXPECT_EQ(exit_code(r, o), 0);
  o.fail_on_error = true;
  EXPECT_EQ(exit_code(r, o), 1);
  r.status_5xx = 0;
  r.status_2xx = 199;
  r.timeout_errors = 0;
  EXPECT_EQ(exit_code(r, o), 0);
}

}  // namespace
}  // namespace kiroku
