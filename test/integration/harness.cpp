// harness.cpp - process control, raw HTTP and SQLite checks for integration tests.
#include "integration/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace kiroku::test {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/kiroku-test-XXXXXX";
  path_ = ::mkdtemp(tmpl);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Kiroku::Kiroku(const std::string& dir, std::vector<std::string> args, std::vector<std::string> env,
               std::vector<std::string> prefix, int port)
    : dir_(dir) {
  port_ = port != 0 ? port : free_port();
  std::vector<std::string> argv = prefix;
  for (const char* a : {KIROKU_BINARY, "serve", "--listen"}) argv.emplace_back(a);
  argv.push_back("127.0.0.1:" + std::to_string(port_));
  argv.insert(argv.end(), args.begin(), args.end());
  const std::string log = dir + "/kiroku.log";
  pid_ = ::fork();
  if (pid_ == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    for (auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) break;
    if (http_get(port_, "/healthz").status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "kiroku did not start; log:\n" << this->log();
}

Kiroku::~Kiroku() {
  if (pid_ > 0) kill9();
}

bool Kiroku::running() {
  if (pid_ <= 0) return false;
  int status;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int Kiroku::stop(int sig, int timeout_ms) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ADD_FAILURE() << "kiroku did not stop in time";
  kill9();
  return -9;
}

void Kiroku::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string Kiroku::log() const {
  std::ifstream f(dir_ + "/kiroku.log");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string Response::header(std::string_view name) const {
  std::istringstream in(headers);
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    if (key.size() != name.size()) continue;
    bool eq = true;
    for (std::size_t i = 0; i < key.size(); ++i)
      if (std::tolower(key[i]) != std::tolower(name[i])) eq = false;
    if (!eq) continue;
    std::string v = line.substr(colon + 1);
    while (!v.empty() && (v.front() == ' ')) v.erase(v.begin());
    while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
    return v;
  }
  return {};
}

Client::Client(int port, int timeout_ms) : timeout_ms_(timeout_ms) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

Client::~Client() { close(); }

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Client::send_raw(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

Response Client::read_response() {
  Response r;
  auto fill = [&]() -> bool {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms_) <= 0) return false;
    char tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t end;
  for (;;) {
    // Skip interim 100 Continue answers.
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return r;
    if (buf_.compare(0, 12, "HTTP/1.1 100") == 0) {
      buf_.erase(0, end + 4);
      continue;
    }
    break;
  }
  r.headers = buf_.substr(0, end + 2);
  r.status = std::atoi(buf_.c_str() + 9);
  buf_.erase(0, end + 4);
  const std::string cl = r.header("Content-Length");
  const std::size_t len = cl.empty() ? 0 : std::stoul(cl);
  while (buf_.size() < len)
    if (!fill()) {
      r.status = 0;
      return r;
    }
  r.body = buf_.substr(0, len);
  buf_.erase(0, len);
  return r;
}

Response Client::get(std::string_view target) {
  std::string req = "GET " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n\r\n";
  if (!send_raw(req)) return {};
  return read_response();
}

Response Client::post(std::string_view target, std::string_view body, std::string_view content_type) {
  std::string req = "POST " + std::string(target) +
                    " HTTP/1.1\r\nHost: t\r\nContent-Type: " + std::string(content_type) +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
  if (!send_raw(req)) return {};
  return read_response();
}

bool Client::closed_by_peer(int timeout_ms) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  char c;
  return ::recv(fd_, &c, 1, 0) <= 0;
}

void Sent::add(const std::string& name, long long v) {
  std::lock_guard l(mu);
  expected[name] += v;
}

void send_mix(int port, Sent& sent, int connections, int per_connection) {
  std::vector<std::thread> threads;
  for (int c = 0; c < connections; ++c)
    threads.emplace_back([&, c] {
      Client client(port);
      ASSERT_TRUE(client.connected());
      for (int i = 0; i < per_connection; ++i) {
        const std::string name = "m" + std::to_string((c + i) % 7);
        const long long v = c * 1000 + i;
        Response r;
        switch (i % 4) {
          case 0: r = client.get("/?name=" + name + "&value=" + std::to_string(v)); break;
          case 1: r = client.get("/collect?name=" + name + "&value=" + std::to_string(v)); break;
          case 2: r = client.get("/pixel.gif?name=" + name + "&value=" + std::to_string(v)); break;
          case 3:
            r = client.post("/events", "{\"name\":\"" + name + "\",\"value\":" + std::to_string(v) + "}\n{\"name\":\"" +
                                           name + "\",\"value\":1}\n");
            break;
        }
        const int want = i % 4 == 2 ? 200 : i % 4 == 3 ? 202 : 204;
        ASSERT_EQ(r.status, want) << r.body;
        sent.add(name, v + (i % 4 == 3 ? 1 : 0));
        sent.accepted += i % 4 == 3 ? 2 : 1;
      }
    });
  for (auto& t : threads) t.join();
}

long long Kiroku::rss_bytes() const {
  if (pid_ <= 0) return 0;
  std::ifstream f("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

Response http_get(int port, std::string_view target) {
  Client c(port, 2000);
  if (!c.connected()) return {};
  return c.get(target);
}

std::vector<std::vector<std::string>> sqlite_rows(const std::string& db, const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << db;
    sqlite3_close(h);
    return rows;
  }
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sqlite3_errmsg(h) << " in " << sql;
    sqlite3_close(h);
    return rows;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(st); ++i) {
      const auto* t = sqlite3_column_text(st, i);
      row.emplace_back(t ? reinterpret_cast<const char*>(t) : "NULL");
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rows;
}

long long sqlite_count(const std::string& db, const std::string& table) {
  auto rows = sqlite_rows(db, "SELECT COUNT(*) FROM " + table);
  return rows.empty() ? -1 : std::stoll(rows[0][0]);
}

// ---- Helpers for hostile-client and fault tests

long long percentile(std::vector<long long>& samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  const auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(samples.size() - 1) + 0.5);
  return samples[std::min(rank, samples.size() - 1)];
}

SteadyClient::SteadyClient(int port, std::string name)
    : thread_([this, port, name = std::move(name)] { run(port, name); }) {}

SteadyClient::~SteadyClient() { stop(); }

void SteadyClient::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void SteadyClient::reset() {
  std::lock_guard l(mu_);
  samples_us_.clear();
  failures_ = 0;
  last_failure_.clear();
}

SteadyClient::Figures SteadyClient::figures() {
  std::vector<long long> s;
  Figures f;
  {
    std::lock_guard l(mu_);
    s = samples_us_;
    f.failures = failures_;
    f.last_failure = last_failure_;
  }
  f.requests = static_cast<long long>(s.size()) + f.failures;
  f.p50_us = percentile(s, 50);
  f.p99_us = percentile(s, 99);
  f.max_us = s.empty() ? 0 : s.back();
  return f;
}

void SteadyClient::run(int port, std::string name) {
  using Clock = std::chrono::steady_clock;
  const std::string target = "/?name=" + name + "&value=1";
  auto client = std::make_unique<Client>(port, 5000);
  while (!stop_) {
    const auto t0 = Clock::now();
    const Response r = client->get(target);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
    {
      std::lock_guard l(mu_);
      if (r.status == 204) {
        samples_us_.push_back(us);
      } else {
        ++failures_;
        last_failure_ = std::to_string(r.status) + " " + r.body;
      }
    }
    if (r.status == 204) served_++;
    else client = std::make_unique<Client>(port, 5000);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

long long cpu_time_ms(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start past the last ')'.
  const auto close = all.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream in(all.substr(close + 2));
  std::vector<std::string> fields;
  std::string x;
  while (in >> x) fields.push_back(x);
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (from 1).
  if (fields.size() < 13) return -1;
  const long long ticks = std::stoll(fields[11]) + std::stoll(fields[12]);
  return ticks * 1000 / ::sysconf(_SC_CLK_TCK);
}

long long raise_nofile_limit(long long want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  const rlim_t target = std::min<rlim_t>(static_cast<rlim_t>(want), rl.rlim_max);
  if (rl.rlim_cur < target) {
    rl.rlim_cur = target;
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return static_cast<long long>(rl.rlim_cur);
}

double metric_value(int port, std::string_view name) {
  const Response r = http_get(port, "/metrics");
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() <= name.size() || line.compare(0, name.size(), name) != 0) continue;
    if (line[name.size()] != ' ') continue;
    return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

double metric_value_reaching(int port, std::string_view name, double want, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const double v = metric_value(port, name);
    if (v >= want || std::chrono::steady_clock::now() >= until) return v;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace kiroku::test
