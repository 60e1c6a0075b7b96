// fake_http.h - a scripted HTTP/1.1 server on loopback in the test process
// (a fake S3, or the credential endpoints: instance metadata, container, STS):
// connections are served one at a time, each request answered by `respond`
// from its head and body, and every request kept for the test to check.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace kiroku::test {

// A scripted HTTP/1.1 server on loopback: each connection's requests are
// answered by `respond`, which gets the request head and its body.
class FakeHttpServer {
 public:
  struct Request {
    std::string head;  // request line and headers
    std::string body;
  };
  // The raw answer to write, and whether to close the connection after it.
  struct Answer {
    std::string bytes;
    bool close = false;
  };
  using Respond = std::function<Answer(const Request&, int index)>;

  explicit FakeHttpServer(Respond respond) : respond_(std::move(respond)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~FakeHttpServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  std::vector<Request> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

  int connections() const { return connections_.load(); }

 private:
  void serve() {
    while (!stop_) {
      int conn = ::accept(fd_, nullptr, nullptr);
      if (conn < 0) return;
      ++connections_;
      timeval tv{5, 0};
      ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      handle(conn);
      ::close(conn);
    }
  }

  void handle(int conn) {
    std::string buffer;
    char chunk[65536];
    while (!stop_) {
      std::size_t end;
      while ((end = buffer.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::recv(conn, chunk, sizeof chunk, 0);
        if (n <= 0) return;
        buffer.append(chunk, static_cast<std::size_t>(n));
      }
      Request request;
      request.head = buffer.substr(0, end);
      buffer.erase(0, end + 4);
      std::size_t length = 0;
      std::string lower = request.head;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (auto pos = lower.find("content-length:"); pos != std::string::npos) {
        length = std::stoul(lower.substr(pos + 15));
      }
      while (buffer.size() < length) {
        ssize_t n = ::recv(conn, chunk, sizeof chunk, 0);
        if (n <= 0) return;
        buffer.append(chunk, static_cast<std::size_t>(n));
      }
      request.body = buffer.substr(0, length);
      buffer.erase(0, length);
      int index;
      {
        std::lock_guard lock(mu_);
        requests_.push_back(request);
        index = static_cast<int>(requests_.size()) - 1;
      }
      Answer answer = respond_(request, index);
      std::size_t sent = 0;
      while (sent < answer.bytes.size()) {
        ssize_t n = ::send(conn, answer.bytes.data() + sent, answer.bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return;
        sent += static_cast<std::size_t>(n);
      }
      if (answer.close) return;
    }
  }

  Respond respond_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
  std::mutex mu_;
  std::vector<Request> requests_;
};

// An HTTP/1.1 answer with a Content-Length.
inline std::string http_response(int status, const std::string& reason, const std::string& headers,
                                 const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n" + headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The value of header `name` (any case) in a request head, "" if absent.
inline std::string header_value(std::string_view head, std::string_view name) {
  std::size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos) {
    const std::size_t begin = pos + 2;
    const std::size_t end = head.find("\r\n", begin);
    const std::string_view line = head.substr(begin, end == std::string_view::npos ? end : end - begin);
    const std::size_t colon = line.find(':');
    if (colon == name.size()) {
      bool same = true;
      for (std::size_t i = 0; i < colon && same; ++i)
        same = std::tolower(static_cast<unsigned char>(line[i])) == std::tolower(static_cast<unsigned char>(name[i]));
      if (same) {
        std::string_view v = line.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
        return std::string(v);
      }
    }
    pos = end;
  }
  return {};
}

}  // namespace kiroku::test
