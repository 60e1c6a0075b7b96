// faulty_s3_proxy.h - an HTTP/1.1 proxy on loopback in front of a real S3
// server (s3rver) whose faults a test sets at run time: answer requests with
// an S3 error (a status and an XML <Error> body, e.g. 503 SlowDown), for ever
// or for the next N of them, or hang (read the request, never answer). Each
// fault is a rule with an optional filter on the request line (e.g. only
// UploadPart); rules are tried in the order added, the first one that matches
// and has requests left applies, and a request no rule takes passes through.
// It keeps the request lines (and heads) in arrival order and counts the faults.
//
// Framing: requests are read by their head and Content-Length (what
// S3Client sends; no chunked request bodies). A faulted request's body is read
// and dropped before the answer and the connection stays open for the next
// one. A passed request goes to the server on a fresh connection with
// `Connection: close`; its answer is copied back until the server closes,
// and then this connection closes too (curl, told so by the answer, opens
// another), so a rule change takes effect at the very next request.
// One thread per connection; stop() (or the destructor) ends them all.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "integration/loopback.h"

namespace kiroku::test {

class FaultyS3Proxy {
 public:
  // Upstream: "http://HOST:PORT" (KIROKU_TEST_S3_ENDPOINT), HOST numeric.
  explicit FaultyS3Proxy(std::string_view endpoint) {
    HostPort upstream = split_endpoint(endpoint);
    upstream_host_ = std::move(upstream.host);
    upstream_port_ = upstream.port;
  }
  ~FaultyS3Proxy() { stop(); }
  FaultyS3Proxy(const FaultyS3Proxy&) = delete;
  FaultyS3Proxy& operator=(const FaultyS3Proxy&) = delete;

  // Listens on a free loopback port; false if it cannot.
  bool start() {
    listen_fd_ = listen_loopback(0, port_);
    if (listen_fd_ < 0) return false;
    started_ = std::chrono::steady_clock::now();
    running_ = true;
    acceptor_ = std::thread([this] { accept_loop(); });
    return true;
  }

  // Drops every connection (hung ones included) and joins the threads.
  void stop() {
    if (!running_.exchange(false)) return;
    acceptor_.join();
    ::close(listen_fd_);
    listen_fd_ = -1;
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // ---- Rules (from any thread; they apply to requests whose head arrives later)

  using Match = std::function<bool(std::string_view request_line)>;  // "PUT /bucket/key?... "

  // Removes every rule: all requests pass.
  void pass() {
    std::lock_guard lock(mutex_);
    rules_.clear();
  }
  // Matching requests get `status` with an S3 <Error><Code>code</Code>... body.
  void fail_all(int status, std::string code, Match match = {}) {
    add({std::move(match), Mode::fail, -1, status, std::move(code)});
  }
  // The next n matching requests get the error; later ones go on to the next rule.
  void fail_next(int n, int status, std::string code, Match match = {}) {
    add({std::move(match), Mode::fail, n, status, std::move(code)});
  }
  // Matching requests are read and never answered; the connection stays open.
  void hang(Match match = {}) { add({std::move(match), Mode::hang, -1, 0, {}}); }

  // ---- What it saw

  int requests() {
    std::lock_guard lock(mutex_);
    return static_cast<int>(lines_.size());
  }
  int faults() {
    std::lock_guard lock(mutex_);
    return faults_;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  // The request heads (request line and headers), in arrival order.
  std::vector<std::string> heads() {
    std::lock_guard lock(mutex_);
    return heads_;
  }
  // Request lines that contain every one of `parts`.
  int count(std::initializer_list<std::string_view> parts) {
    std::lock_guard lock(mutex_);
    return static_cast<int>(std::count_if(lines_.begin(), lines_.end(), [&](const std::string& l) {
      return std::all_of(parts.begin(), parts.end(),
                         [&](std::string_view p) { return l.find(p) != std::string::npos; });
    }));
  }
  // Every request line, one a line, after the milliseconds since start(), for failure messages.
  std::string dump() {
    std::lock_guard lock(mutex_);
    std::string out;
    for (std::size_t i = 0; i < lines_.size(); ++i) out += std::to_string(times_ms_[i]) + " " + lines_[i] + "\n";
    return out;
  }

 private:
  enum class Mode { pass, fail, hang };
  struct Action {
    Mode mode = Mode::pass;
    int status = 0;
    std::string code;
  };
  struct Rule {
    Match match;  // empty: every request
    Mode mode;
    int remaining;  // requests still to take; -1: all
    int status;
    std::string code;
  };

  void add(Rule rule) {
    std::lock_guard lock(mutex_);
    rules_.push_back(std::move(rule));
  }

  Action decide(const std::string& line, const std::string& head) {
    std::lock_guard lock(mutex_);
    lines_.push_back(line);
    heads_.push_back(head);
    times_ms_.push_back(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count());
    for (Rule& r : rules_) {
      if (r.remaining == 0 || (r.match && !r.match(line))) continue;
      if (r.remaining > 0) --r.remaining;
      ++faults_;
      return {r.mode, r.status, r.code};
    }
    return {};
  }

  void accept_loop() {
    while (running_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mutex_);
      fds_.insert(fd);
      threads_.emplace_back([this, fd] {
        serve(fd);
        release(fd);
      });
    }
  }

  // Shut down and closed under the lock, so stop() never touches a reused number.
  void release(int fd) {
    std::lock_guard lock(mutex_);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    fds_.erase(fd);
  }

  // Waits for fd to be readable (or closed); false when stopping.
  bool wait_readable(int fd) {
    while (running_) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0) return true;
    }
    return false;
  }

  // Appends what arrives on fd to buf; false on end of stream, error or stop.
  bool read_some(int fd, std::string& buf) {
    if (!wait_readable(fd)) return false;
    char tmp[64 * 1024];
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  bool send_all(int fd, std::string_view data) {
    while (!data.empty()) {
      pollfd p{fd, POLLOUT, 0};
      if (!running_) return false;
      if (::poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // The value of header `name` (lower case) in a head, "" if absent.
  static std::string header(std::string_view head, std::string_view name) {
    for (std::size_t pos = head.find("\r\n"); pos != std::string_view::npos && pos + 2 < head.size();) {
      const std::size_t begin = pos + 2;
      const std::size_t end = head.find("\r\n", begin);
      const std::string_view line = head.substr(begin, end - begin);
      pos = end;
      const std::size_t colon = line.find(':');
      if (colon != name.size()) continue;
      bool same = true;
      for (std::size_t i = 0; i < colon; ++i)
        same = same && std::tolower(static_cast<unsigned char>(line[i])) == name[i];
      if (!same) continue;
      std::string_view v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      return std::string(v);
    }
    return {};
  }

  // The head without `Connection` and `Expect`, with `Connection: close`.
  static std::string closing_head(std::string_view head) {
    std::string out;
    std::size_t begin = 0;
    while (begin < head.size()) {
      std::size_t end = head.find("\r\n", begin);
      if (end == std::string_view::npos) end = head.size();
      const std::string_view line = head.substr(begin, end - begin);
      std::string lower(line.substr(0, line.find(':')));
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!line.empty() && lower != "connection" && lower != "expect") out.append(line).append("\r\n");
      begin = end + 2;
    }
    return out + "Connection: close\r\n\r\n";
  }

  // One client connection: request after request until it closes.
  void serve(int client) {
    std::string buf;
    while (running_) {
      std::size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos)
        if (buf.size() > 64 * 1024 || !read_some(client, buf)) return;
      const std::string head = buf.substr(0, end + 2);  // through the last header's CRLF
      buf.erase(0, end + 4);
      const std::string line = head.substr(0, head.find(" HTTP/1.1"));
      const std::string length = header(head, "content-length");
      const std::uint64_t body = length.empty() ? 0 : std::stoull(length);
      const bool is_head = line.rfind("HEAD ", 0) == 0;
      const Action action = decide(line, head);

      if (action.mode == Mode::hang) {
        std::string sink;
        while (read_some(client, sink)) sink.clear();
        return;
      }
      if (header(head, "expect") == "100-continue" && !send_all(client, "HTTP/1.1 100 Continue\r\n\r\n")) return;
      if (action.mode == Mode::fail) {
        while (buf.size() < body)
          if (!read_some(client, buf)) return;
        buf.erase(0, body);
        if (!send_all(client, error_answer(action, is_head))) return;
        continue;
      }
      forward(client, head, buf, body);
      return;
    }
  }

  std::string error_answer(const Action& a, bool is_head) {
    const std::string text = a.status == 503   ? "Service Unavailable"
                             : a.status == 500 ? "Internal Server Error"
                                               : "Error";
    const std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + a.code +
                            "</Code><Message>injected by FaultyS3Proxy</Message><RequestId>FAULT" +
                            std::to_string(faults()) + "</RequestId></Error>";
    return "HTTP/1.1 " + std::to_string(a.status) + " " + text +
           "\r\nContent-Type: application/xml\r\nContent-Length: " + std::to_string(xml.size()) +
           "\r\nx-amz-request-id: FAULT\r\n\r\n" + (is_head ? std::string() : xml);
  }

  // Sends the request (head, then `body` bytes: what is in buf, then the rest
  // from the client) to the server and its answer back.
  void forward(int client, const std::string& head, std::string& buf, std::uint64_t body) {
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    {
      std::lock_guard lock(mutex_);
      fds_.insert(server);
    }
    sockaddr_in a = ipv4_address(upstream_host_, upstream_port_);
    bool ok = ::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && send_all(server, closing_head(head));
    std::uint64_t left = body;
    while (ok && left > 0) {
      if (buf.empty() && !read_some(client, buf)) ok = false;
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      if (ok && !send_all(server, std::string_view(buf).substr(0, n))) ok = false;
      buf.erase(0, n);
      left -= n;
    }
    // The answer, until the server closes (it was asked to).
    std::string answer;
    while (ok && read_some(server, answer)) {
      if (!send_all(client, answer)) break;
      answer.clear();
    }
    release(server);
  }

  std::string upstream_host_;
  int upstream_port_ = 0;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> running_{false};
  std::thread acceptor_;

  std::mutex mutex_;
  std::set<int> fds_;
  std::vector<std::thread> threads_;
  std::vector<Rule> rules_;
  int faults_ = 0;
  std::vector<std::string> lines_;
  std::vector<std::string> heads_;   // of lines_: request line and headers
  std::vector<long long> times_ms_;  // of lines_, since started_
  std::chrono::steady_clock::time_point started_;
};

}  // namespace kiroku::test
