// harness.h - runs the real kiroku binary for integration tests: a free
// loopback port, a temporary directory, a raw HTTP/1.1 client, and SQLite
// row checks.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kiroku::test {

// A port that was free a moment ago on 127.0.0.1.
int free_port();

// A fresh directory under /tmp, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One kiroku process. Output goes to DIR/kiroku.log.
class Kiroku {
 public:
  // Starts `kiroku serve --listen 127.0.0.1:PORT ARGS...` and waits for
  // /healthz (fails the test after 15 s).
  // `prefix` runs before the binary (e.g. {"prlimit", "--nofile=64:64"}).
  // `port` 0 picks a free one.
  Kiroku(const std::string& dir, std::vector<std::string> args, std::vector<std::string> env = {},
         std::vector<std::string> prefix = {}, int port = 0);
  ~Kiroku();  // SIGKILL if still running

  int port() const { return port_; }
  // SIGTERM and wait; returns the exit status (or -signal).
  int stop(int signal = 15, int timeout_ms = 60000);
  void kill9();
  int pid() const { return pid_; }
  // VmRSS of the process in bytes (0 if gone).
  long long rss_bytes() const;
  bool running();
  std::string log() const;

 private:
  int pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

struct Response {
  int status = 0;       // 0: no answer (connection closed or timed out)
  std::string headers;  // raw header block, lowercase names not guaranteed
  std::string body;
  std::string header(std::string_view name) const;
};

// A blocking HTTP/1.1 client on one keep-alive connection.
class Client {
 public:
  explicit Client(int port, int timeout_ms = 10000);
  ~Client();
  bool connected() const { return fd_ >= 0; }
  // Sends raw bytes.
  bool send_raw(std::string_view bytes);
  // Reads one response (Content-Length framed).
  Response read_response();
  Response get(std::string_view target);
  Response post(std::string_view target, std::string_view body, std::string_view content_type = "application/x-ndjson");
  // True if the server closed the connection (read returns 0) within timeout.
  bool closed_by_peer(int timeout_ms);
  void close();

 private:
  int fd_ = -1;
  int timeout_ms_;
  std::string buf_;
};

// Expected content of the table after send_mix.
struct Sent {
  std::mutex mu;
  std::map<std::string, long long> expected;  // name -> sum of accepted values
  std::atomic<long long> accepted{0};
  void add(const std::string& name, long long v);
};

// `connections` keep-alive connections at once, each sending
// `per_connection` requests of every input form (GET /, /collect,
// /pixel.gif, POST /events with two events); every answer must be a 2xx.
void send_mix(int port, Sent& sent, int connections, int per_connection);

// One request on a fresh connection.
Response http_get(int port, std::string_view target);

// Rows of a SQLite query, each column as text ("NULL" for null).
std::vector<std::vector<std::string>> sqlite_rows(const std::string& db, const std::string& sql);
long long sqlite_count(const std::string& db, const std::string& table = "events");

// ---- Helpers for hostile-client and fault tests

// The p-th percentile (0..100) of `samples`, sorted in place; 0 if empty.
long long percentile(std::vector<long long>& samples, double p);

// A normal client beside an attack: on its own thread, one keep-alive
// connection sends `GET /?name=NAME&value=1` about once a millisecond and
// times each answer. An answer other than 204 counts as a failure and the
// connection is opened again.
class SteadyClient {
 public:
  struct Figures {
    long long requests = 0;
    long long failures = 0;
    long long p50_us = 0;
    long long p99_us = 0;
    long long max_us = 0;
    std::string last_failure;  // "STATUS BODY" of the last failed request, empty if none
  };
  SteadyClient(int port, std::string name = "steady");
  ~SteadyClient();  // stops
  // Starts a new measurement window.
  void reset();
  // Figures of the window since the last reset (or the start).
  Figures figures();
  // Requests answered 204 since the start (every window).
  long long served() const { return served_.load(); }
  void stop();

 private:
  void run(int port, std::string name);
  std::mutex mu_;
  std::vector<long long> samples_us_;
  long long failures_ = 0;
  std::string last_failure_;
  std::atomic<long long> served_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// User plus system CPU time of process `pid` in milliseconds; -1 if gone.
long long cpu_time_ms(int pid);

// Raises this process's open-file soft limit towards `want` (at most the hard
// limit); returns the soft limit now in force.
long long raise_nofile_limit(long long want);

// The value of the first /metrics sample whose line starts with `name` (a
// metric name, with labels if any); -1 if there is none.
double metric_value(int port, std::string_view name);

// metric_value, polled until it is at least `want` or `timeout` passed: for
// figures recorded when a transfer's last write completes, which may be just
// after the client has read the last byte. Returns the last value read.
double metric_value_reaching(int port, std::string_view name, double want,
                             std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

}  // namespace kiroku::test
