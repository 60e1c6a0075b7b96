// loopback.h - sockets for the test proxies: a listener on a loopback port,
// the address of an upstream server, an endpoint URL split into host and port.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace kiroku::test {

struct HostPort {
  std::string host;
  int port = 0;
};

// "http://HOST:PORT[/...]" (HOST numeric, e.g. KIROKU_TEST_S3_ENDPOINT) -> {HOST, PORT}.
inline HostPort split_endpoint(std::string_view endpoint) {
  const std::size_t scheme = endpoint.find("//");
  std::string_view hp = endpoint.substr(scheme == std::string_view::npos ? 0 : scheme + 2);
  hp = hp.substr(0, hp.find('/'));
  return {std::string(hp.substr(0, hp.rfind(':'))), std::stoi(std::string(hp.substr(hp.rfind(':') + 1)))};
}

// The IPv4 address of a numeric host and a port.
inline sockaddr_in ipv4_address(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  return a;
}

// A socket listening on 127.0.0.1:port (0: a free port), SO_REUSEADDR set so
// a proxy can come back on its port; the port it got goes to bound. -1 if it
// cannot listen.
inline int listen_loopback(int port, int& bound) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = ipv4_address("127.0.0.1", port);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  bound = ntohs(a.sin_port);
  return fd;
}

}  // namespace kiroku::test
