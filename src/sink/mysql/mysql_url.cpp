// mysql_url.cpp - parsing of mysql:// sink URLs (grammar in mysql_url.h).
#include "sink/mysql/mysql_url.h"

#include "common/percent.h"
#include "common/redact.h"
#include "common/text.h"
#include "sink/url_text.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

namespace kiroku {
namespace {

constexpr std::string_view kForm = " (expected mysql://user:password@host:port/database)";

Status bad(std::string what) { return Status::invalid("mysql URL: " + what); }

// Percent-decodes `in` into `out`. `what` names the part for the error message;
// the text itself is not shown (it may be a password).
Status percent_decode(std::string_view in, std::string_view what, std::string& out) {
  auto decoded = kiroku::percent_decode(in);
  if (!decoded)
    return bad("bad percent-encoding in " + std::string(what) + " (a '%' must be followed by two hex digits)");
  out = std::move(*decoded);
  if (out.find('\0') != std::string::npos) return bad(std::string(what) + " contains a NUL byte");
  return {};
}

bool ascii_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

constexpr std::array<std::pair<std::string_view, MysqlSslMode>, 5> kSslModes = {{
    {"DISABLED", MysqlSslMode::disabled},
    {"PREFERRED", MysqlSslMode::preferred},
    {"REQUIRED", MysqlSslMode::required},
    {"VERIFY_CA", MysqlSslMode::verify_ca},
    {"VERIFY_IDENTITY", MysqlSslMode::verify_identity},
}};

// localhost, 127.0.0.0/8 (dotted quad) or ::1: a connection that stays on this machine.
bool loopback_host(std::string_view host) {
  if (iequals(host, "localhost") || host == "::1") return true;
  if (host.substr(0, 4) != "127.") return false;
  int dots = 0;
  for (const char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

// Reads at most `limit` bytes of `path` into `out`; false with errno's text in `error`.
bool read_head(const std::string& path, std::size_t limit, std::string& out, std::string& error) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    error = std::strerror(errno);
    return false;
  }
  out.resize(limit);
  const std::size_t n = std::fread(out.data(), 1, limit, f);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  out.resize(n);
  if (failed) error = std::strerror(err);
  return !failed;
}

// One file of check_mysql_tls_files: readable and holding `marker` (and `marker2`, if any).
Status check_pem(std::string_view param, const std::string& path, std::string_view marker, std::string_view marker2,
                 std::string_view what) {
  if (path.empty()) return {};
  std::string text;
  std::string error;
  if (!read_head(path, 1u << 20, text, error))
    return bad(std::string(param) + " " + quoted_url_text(path) + ": cannot read: " + error);
  const std::size_t at = text.find(marker);
  if (at == std::string::npos || (!marker2.empty() && text.find(marker2, at + marker.size()) == std::string::npos))
    return bad(std::string(param) + " " + quoted_url_text(path) + " holds no " + std::string(what) +
               " (expected PEM text with " + std::string(marker) + "...)");
  return {};
}

}  // namespace

std::string_view ssl_mode_name(MysqlSslMode mode) {
  for (const auto& [name, m] : kSslModes) {
    if (m == mode) return name;
  }
  return "DISABLED";
}

Status check_mysql_tls_files(const MysqlUrl& url) {
  if (Status s = check_pem("ssl-ca", url.ssl_ca, "-----BEGIN CERTIFICATE-----", {}, "CA certificate"); !s) return s;
  if (Status s = check_pem("ssl-cert", url.ssl_cert, "-----BEGIN CERTIFICATE-----", {}, "certificate"); !s) return s;
  return check_pem("ssl-key", url.ssl_key, "-----BEGIN ", "PRIVATE KEY-----", "private key");
}

Result<MysqlUrl> parse_mysql_url(std::string_view url) {
  constexpr std::string_view scheme = "mysql://";
  if (url.size() < scheme.size() || !std::equal(scheme.begin(), scheme.end(), url.begin(), [](char a, char b) {
        return a == (b >= 'A' && b <= 'Z' ? b - 'A' + 'a' : b);
      }))
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
    if (Status s = percent_decode(userinfo.substr(colon + 1), "password", out.password); !s) return s;
  }

  // Host and port.
  std::optional<unsigned> port;
  if (auto problem = split_host_port(hostport, out.host, port)) return bad(*problem);
  if (port) out.port = *port;

  // Database: the path, one segment.
  const std::size_t query_at = rest.find('?');
  const std::string_view path = rest.substr(0, query_at);
  const std::string_view query = query_at == std::string_view::npos ? std::string_view{} : rest.substr(query_at + 1);
  if (path.size() <= 1) return bad("missing database name" + std::string(kForm));
  if (Status s = percent_decode(path.substr(1), "database name", out.database); !s) return s;
  if (out.database.find('/') != std::string::npos)
    return bad("database name " + quoted_url_text(out.database) + " contains '/'");
  if (out.database.size() > 64)
    return bad("database name " + quoted_url_text(out.database) + " is longer than 64 bytes");

  // Query parameters.
  std::string_view q = query;
  bool mode_given = false;
  for (QueryPair p; next_query_pair(q, p);) {
    if (p.name == "socket") {
      if (Status s = percent_decode(p.value, "socket path", out.socket); !s) return s;
      if (out.socket.empty()) return bad("empty socket path");
    } else if (p.name == "ssl-mode") {
      if (mode_given) return bad("ssl-mode given twice");
      mode_given = true;
      const auto it =
          std::find_if(kSslModes.begin(), kSslModes.end(), [&](const auto& m) { return iequals(m.first, p.value); });
      if (it == kSslModes.end())
        return bad("bad ssl-mode " + quoted_url_text(p.value) +
                   " (expected DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)");
      out.ssl_mode = it->second;
    } else if (p.name == "ssl-ca" || p.name == "ssl-cert" || p.name == "ssl-key") {
      std::string& file = p.name == "ssl-ca" ? out.ssl_ca : p.name == "ssl-cert" ? out.ssl_cert : out.ssl_key;
      if (!file.empty()) return bad(std::string(p.name) + " given twice");
      if (Status s = percent_decode(p.value, std::string(p.name) + " path", file); !s) return s;
      if (file.empty()) return bad("empty " + std::string(p.name) + " path");
    } else {
      return bad("unknown parameter " + quoted_url_text(p.name) +
                 " (understood: socket, ssl-mode, ssl-ca, ssl-cert, ssl-key)");
    }
  }

  if (out.host.empty() && out.socket.empty()) return bad("missing host (or ?socket=/path)" + std::string(kForm));

  // TLS: the default mode, then the combinations that make no sense.
  const bool files = !out.ssl_ca.empty() || !out.ssl_cert.empty() || !out.ssl_key.empty();
  if (!mode_given) {
    const bool local = !out.socket.empty() || loopback_host(out.host);
    out.ssl_mode = local && !files ? MysqlSslMode::disabled : MysqlSslMode::verify_identity;
  }
  const std::string mode = "ssl-mode=" + std::string(ssl_mode_name(out.ssl_mode));
  if (!out.socket.empty() && (files || out.ssl_mode != MysqlSslMode::disabled))
    return bad("TLS over a unix socket is not supported (drop the ssl- parameters or socket=)");
  if (out.ssl_mode == MysqlSslMode::disabled && files) return bad("ssl-ca, ssl-cert and ssl-key need TLS, but " + mode);
  if (out.ssl_cert.empty() != out.ssl_key.empty())
    return bad("ssl-cert and ssl-key go together (a client certificate and its key)");
  if (!out.ssl_ca.empty() && (out.ssl_mode == MysqlSslMode::preferred || out.ssl_mode == MysqlSslMode::required))
    return bad("ssl-ca with " + mode + " would not verify the server; use ssl-mode=VERIFY_CA or VERIFY_IDENTITY");
  if (out.ssl_ca.empty() && out.ssl_mode == MysqlSslMode::verify_ca)
    return bad("ssl-mode=VERIFY_CA needs ssl-ca=/path (the CA that signed the server's certificate)");
  return out;
}

Status validate_table_name(std::string_view table) {
  bool ok = !table.empty() && table.size() <= 64;
  for (const char c : table) {
    if (!ascii_alnum(c) && c != '_') ok = false;
  }
  if (ok) return {};
  return Status::invalid("table name " + quoted_url_text(table) +
                         " is not valid (use 1 to 64 characters of A-Z a-z 0-9 _)");
}

}  // namespace kiroku
