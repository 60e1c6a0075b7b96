// load_run_test.cpp - the real `kiroku load` binary: what it reports against
// a real kiroku (2xx answers = rows stored) and against a server that takes a
// known 20 ms per request (percentiles, and latency counted from when each
// request was due when the server cannot keep up).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;

// Runs `kiroku load ARGS... --json --quiet` and returns its report; fails
// the test if it does not exit 0 or prints no JSON.
nlohmann::json run_load(std::vector<std::string> args) {
  args.insert(args.begin(), {KIROKU_BINARY, "load"});
  args.insert(args.end(), {"--json", "--quiet"});
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "kiroku load: status " << status;
  auto report = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(report.is_discarded()) << "kiroku load printed: " << text;
  return report;
}

// An HTTP/1.1 server on 127.0.0.1 that answers every request `200 ok` after
// sleeping `delay`, one thread per connection, so each connection is served
// one request at a time (like a single-threaded backend per connection).
class SlowServer {
 public:
  explicit SlowServer(std::chrono::milliseconds delay) : delay_(delay) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(listen_fd_, 64), 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~SlowServer() {
    stop_ = true;
    acceptor_.join();
    std::lock_guard lock(mu_);
    for (auto& t : connections_) t.join();
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  long long requests() const { return requests_.load(); }

 private:
  // Waits for `fd` to become readable, checking `stop_` every 50 ms.
  bool readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    while (!stop_) {
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }

  void accept_loop() {
    while (readable(listen_fd_)) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mu_);
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    static constexpr std::string_view kAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    std::string in;
    char buf[4096];
    while (readable(fd)) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      // Requests without a body: each ends with an empty line.
      for (size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
        in.erase(0, end + 4);
        std::this_thread::sleep_for(delay_);
        ++requests_;
        if (::write(fd, kAnswer.data(), kAnswer.size()) != static_cast<ssize_t>(kAnswer.size())) {
          ::close(fd);
          return;
        }
      }
    }
    ::close(fd);
  }

  std::chrono::milliseconds delay_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<long long> requests_{0};
  std::mutex mu_;
  std::vector<std::thread> connections_;
  std::thread acceptor_;
};

double ms(const nlohmann::json& report, const char* percentile) {
  return report["latency_ms"][percentile].get<double>();
}

TEST(LoadAgainstKiroku, AnswersCountedAre2xxAndEveryOneIsARow) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool", "--threads", "1"});
  const auto report = run_load({"--url", "http://127.0.0.1:" + std::to_string(k.port()) + "/?name={name}&value={seq}",
                                "--rate", "200", "--duration", "3s", "--connections", "4"});
  EXPECT_EQ(k.stop(), 0) << k.log();

  EXPECT_EQ(report["requests"]["scheduled"], 600);
  EXPECT_EQ(report["errors"]["total"], 0);
  const long long answered_2xx = report["status"]["2xx"].get<long long>();
  EXPECT_EQ(answered_2xx, 600);
  EXPECT_EQ(sqlite_count(db), answered_2xx);
  // The rows are those requests: {seq} ran 0..599 once each over 16 names.
  const auto sums = sqlite_rows(db, "SELECT COUNT(DISTINCT value), SUM(value), COUNT(DISTINCT name) FROM events");
  EXPECT_EQ(sums.at(0), (std::vector<std::string>{"600", "179700", "16"}));
}

TEST(LoadAgainstSlowServer, PercentilesShowTheServersTime) {
  // 10 connections at 100 requests/s: each sends every 100 ms, the server
  // takes 20 ms, so nothing queues and every request takes 20 ms and a little.
  SlowServer server(20ms);
  const auto report = run_load({"--url", "http://127.0.0.1:" + std::to_string(server.port()) + "/slow", "--rate", "100",
                                "--duration", "3s", "--connections", "10"});
  EXPECT_EQ(report["status"]["2xx"], 300);
  EXPECT_EQ(report["errors"]["total"], 0);
  EXPECT_EQ(server.requests(), 300);
  // Never faster than the server; the bulk within a few ms of it. The p99
  // bound leaves room for a thread of a busy machine waking up late.
  EXPECT_GE(ms(report, "min"), 20.0) << report.dump();
  EXPECT_GE(ms(report, "p50"), 20.0) << report.dump();
  EXPECT_LT(ms(report, "p50"), 25.0) << report.dump();
  EXPECT_LT(ms(report, "p90"), 30.0) << report.dump();
  EXPECT_GE(ms(report, "p99"), 20.0) << report.dump();
  EXPECT_LT(ms(report, "p99"), 60.0) << report.dump();
}

TEST(LoadAgainstSlowServer, OverloadShowsAsGrowingLatencyFromTheDueTime) {
  // One connection at 100 requests/s against 20 ms per answer: the server
  // manages 50/s, so request k (due at 10k ms) is answered at about
  // 20(k+1) ms and waited 10k + 20 ms. Measured from the send, every request
  // would take 20 ms; measured from the due time the waits grow to about 1 s.
  SlowServer server(20ms);
  const auto report = run_load({"--url", "http://127.0.0.1:" + std::to_string(server.port()) + "/slow", "--rate", "100",
                                "--duration", "1s", "--connections", "1", "--timeout", "5s"});
  EXPECT_EQ(report["status"]["2xx"], 100);
  EXPECT_EQ(report["errors"]["total"], 0);
  EXPECT_GE(ms(report, "min"), 20.0) << report.dump();
  EXPECT_GT(ms(report, "p50"), 400.0) << report.dump();  // about 510 ms
  EXPECT_GT(ms(report, "p90"), 800.0) << report.dump();  // about 910 ms
  EXPECT_GT(ms(report, "max"), 900.0) << report.dump();  // about 1010 ms
  EXPECT_LT(ms(report, "max"), 2000.0) << report.dump();
  // The answers came at the server's pace, not the schedule's.
  EXPECT_GT(report["throughput_rps"].get<double>(), 40.0) << report.dump();
  EXPECT_LT(report["throughput_rps"].get<double>(), 55.0) << report.dump();
}

}  // namespace
}  // namespace kiroku::test
