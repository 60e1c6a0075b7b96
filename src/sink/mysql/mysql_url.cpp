// mysql_url.cpp - parsing of mysql:// sink URLs (grammar in mysql_url.h).
#include "sink/mysql/mysql_url.h"

#include "common/percent.h"
#include "common/redact.h"

#include <algorithm>
#include <cstdio>

namespace kiroku {
namespace {

constexpr std::string_view kForm = " (expected mysql://user:password@host:port/database)";

Status bad(std::string what) { return Status::invalid("mysql URL: " + what); }

// Quotes user-supplied text for an error message, escaping what a terminal
// would not show.
std::string quoted(std::string_view s) {
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
  out += '"';
  return out;
}

// Percent-decodes `in` into `out`. `what` names the part for the error message;
// the text itself is not shown (it may be a password).
Status percent_decode(std::string_view in, std::string_view what, std::string& out) {
  auto decoded = kiroku::percent_decode(in);
  if (!decoded)
    return bad("bad percent-encoding in " + std::string(what) +
               " (a '%' must be followed by two hex digits)");
  out = std::move(*decoded);
  if (out.find('\0') != std::string::npos) return bad(std::string(what) + " contains a NUL byte");
  return {};
}

bool ascii_alnum(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool host_char(char c) { return ascii_alnum(c) || c == '.' || c == '-' || c == '_'; }

}  // namespace

Result<MysqlUrl> parse_mysql_url(std::string_view url) {
  constexpr std::string_view scheme = "mysql://";
  if (url.size() < scheme.size() ||
      !std::equal(scheme.begin(), scheme.end(), url.begin(),
                  [](char a, char b) { return a == (b >= 'A' && b <= 'Z' ? b - 'A' + 'a' : b); }))
    return bad("must start with mysql://" + std::string(kForm));
  std::string_view rest = url.substr(scheme.size());

  // Authority: up to the first '/' or '?'; userinfo: up to its last '@'.
  const std::size_t authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);

  MysqlUrl out;
  out.redacted_ = redact_url(url);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return bad("missing user" + std::string(kForm));
  const std::string_view userinfo = authority.substr(0, at);
  std::string_view hostport = authority.substr(at + 1);
  const std::size_t colon = userinfo.find(':');
  if (Status s = percent_decode(userinfo.substr(0, colon), "user", out.user); !s) return s;
  if (out.user.empty()) return bad("missing user" + std::string(kForm));
  if (colon != std::string_view::npos) {
    if (Status s = percent_decode(userinfo.substr(colon + 1), "password", out.password); !s)
      return s;
  }

  // Host and port.
  std::string_view port_text;
  bool has_port = false;
  if (!hostport.empty() && hostport.front() == '[') {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) return bad("missing ']' after IPv6 host");
    out.host = std::string(hostport.substr(1, close - 1));
    for (const char c : out.host) {
      if (hex_value(c) < 0 && c != ':' && c != '.') return bad("bad IPv6 host " + quoted(out.host));
    }
    if (out.host.empty()) return bad("empty IPv6 host");
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("unexpected text after IPv6 host");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t pc = hostport.find(':');
    out.host = std::string(hostport.substr(0, pc));
    if (pc != std::string_view::npos) {
      port_text = hostport.substr(pc + 1);
      has_port = true;
    }
    for (const char c : out.host) {
      if (!host_char(c)) return bad("bad host " + quoted(out.host));
    }
  }
  if (has_port) {
    unsigned long port = 0;
    bool digits = !port_text.empty() && port_text.size() <= 5;
    for (const char c : port_text) {
      if (c < '0' || c > '9') digits = false;
      if (digits) port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (!digits || port == 0 || port > 65535)
      return bad("bad port " + quoted(port_text) + " (expected 1-65535)");
    out.port = static_cast<unsigned>(port);
  }

  // Database: the path, one segment.
  const std::size_t query_at = rest.find('?');
  const std::string_view path = rest.substr(0, query_at);
  const std::string_view query =
      query_at == std::string_view::npos ? std::string_view{} : rest.substr(query_at + 1);
  if (path.size() <= 1) return bad("missing database name" + std::string(kForm));
  if (Status s = percent_decode(path.substr(1), "database name", out.database); !s) return s;
  if (out.database.find('/') != std::string::npos)
    return bad("database name " + quoted(out.database) + " contains '/'");
  if (out.database.size() > 64)
    return bad("database name " + quoted(out.database) + " is longer than 64 bytes");

  // Query parameters: only socket= is understood.
  std::string_view q = query;
  for (QueryPair p; next_query_pair(q, p);) {
    if (p.name != "socket")
      return bad("unknown parameter " + quoted(p.name) + " (only socket= is understood)");
    if (Status s = percent_decode(p.value, "socket path", out.socket); !s) return s;
    if (out.socket.empty()) return bad("empty socket path");
  }

  if (out.host.empty() && out.socket.empty())
    return bad("missing host (or ?socket=/path)" + std::string(kForm));
  return out;
}

Status validate_table_name(std::string_view table) {
  bool ok = !table.empty() && table.size() <= 64;
  for (const char c : table) {
    if (!ascii_alnum(c) && c != '_') ok = false;
  }
  if (ok) return {};
  return Status::invalid("table name " + quoted(table) +
                         " is not valid (use 1 to 64 characters of A-Z a-z 0-9 _)");
}

}  // namespace kiroku
