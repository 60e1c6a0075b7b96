// cuttable_proxy.h - a TCP proxy on loopback that a test can cut off (every
// connection dropped, new ones refused) and bring back on the same port, to
// make a server (S3) disappear in the middle of a transfer. It notes the
// request lines that pass from client to server, and counts those bytes.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "integration/loopback.h"

namespace kiroku::test {

class CuttableProxy {
 public:
  // In front of "http://HOST:PORT" (HOST numeric), e.g. KIROKU_TEST_S3_ENDPOINT.
  explicit CuttableProxy(std::string_view endpoint) {
    HostPort upstream = split_endpoint(endpoint);
    upstream_host_ = std::move(upstream.host);
    upstream_port_ = upstream.port;
  }
  ~CuttableProxy() { stop(); }

  bool start() {
    listen_fd_ = listen_loopback(port_, port_);
    if (listen_fd_ < 0) return false;
    running_ = true;
    acceptor_ = std::thread([this] { accept_loop(); });
    return true;
  }

  void stop() {
    if (!running_.exchange(false)) return;
    acceptor_.join();
    ::close(listen_fd_);
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : pumps_) t.join();
    pumps_.clear();
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::close(fd);
    fds_.clear();
  }

  int port() const { return port_; }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Bytes passed from clients to the server since the start (or the reset).
  std::uint64_t upstream_bytes() const { return upstream_bytes_.load(); }
  void reset_upstream_bytes() { upstream_bytes_ = 0; }
  std::string seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  // How many of the noted request lines contain text.
  int seen_count(std::string_view text) {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (std::size_t at = seen_.find(text); at != std::string::npos; at = seen_.find(text, at + 1)) ++n;
    return n;
  }

 private:
  void accept_loop() {
    while (running_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a = ipv4_address(upstream_host_, upstream_port_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      std::lock_guard lock(mutex_);
      fds_.push_back(client);
      fds_.push_back(server);
      pumps_.emplace_back([this, client, server] { pump(client, server); });
    }
  }

  void pump(int client, int server) {
    std::vector<char> buffer(256 * 1024);
    pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (running_) {
      if (::poll(p, 2, 50) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buffer.data(), buffer.size());
        if (n <= 0) {
          ::shutdown(client, SHUT_RDWR);
          ::shutdown(server, SHUT_RDWR);
          return;
        }
        if (i == 0) {
          note(std::string_view(buffer.data(), std::size_t(n)));
          upstream_bytes_ += std::uint64_t(n);
        }
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::send(p[1 - i].fd, buffer.data() + off, std::size_t(n - off), MSG_NOSIGNAL);
          if (w <= 0) return;
          off += w;
        }
      }
    }
  }

  // Keeps the request lines of what the client sends.
  void note(std::string_view data) {
    data = data.substr(0, 4096);
    std::lock_guard lock(mutex_);
    for (std::size_t end = data.find(" HTTP/1.1\r\n"); end != std::string_view::npos;
         end = data.find(" HTTP/1.1\r\n", end + 1)) {
      std::size_t begin = data.rfind('\n', end);
      begin = begin == std::string_view::npos ? 0 : begin + 1;
      seen_ += std::string(data.substr(begin, end - begin)) + "\n";
    }
  }

  std::string upstream_host_;
  int upstream_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> running_{false};
  std::atomic<std::uint64_t> upstream_bytes_{0};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<int> fds_;
  std::vector<std::thread> pumps_;
  std::string seen_;
};

}  // namespace kiroku::test
