// url_text.cpp - host, port and quoting for the sinks' URL parsers.
#include "sink/url_text.h"

#include <cstdio>

#include "common/percent.h"

namespace kiroku {
namespace {

bool host_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_';
}

}  // namespace

std::string quoted_url_text(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '"' || c == '\\') {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out + '"';
}

std::optional<std::string> split_host_port(std::string_view hostport, std::string& host,
                                           std::optional<unsigned>& port) {
  std::string_view port_text;
  bool has_port = false;
  if (!hostport.empty() && hostport.front() == '[') {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) return "missing ']' after IPv6 host";
    host = std::string(hostport.substr(1, close - 1));
    if (host.empty()) return "empty IPv6 host";
    for (const char c : host)
      if (hex_value(c) < 0 && c != ':' && c != '.') return "bad IPv6 host " + quoted_url_text(host);
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return "unexpected text after IPv6 host";
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t colon = hostport.find(':');
    host = std::string(hostport.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = hostport.substr(colon + 1);
      has_port = true;
    }
    for (const char c : host)
      if (!host_char(c)) return "bad host " + quoted_url_text(host);
  }
  if (has_port) {
    unsigned long n = 0;
    bool digits = !port_text.empty() && port_text.size() <= 5;
    for (const char c : port_text) {
      if (c < '0' || c > '9') digits = false;
      if (digits) n = n * 10 + static_cast<unsigned>(c - '0');
    }
    if (!digits || n == 0 || n > 65535) return "bad port " + quoted_url_text(port_text) + " (expected 1-65535)";
    port = static_cast<unsigned>(n);
  }
  return std::nullopt;
}

}  // namespace kiroku
