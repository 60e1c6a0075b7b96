// postgresql_url.cpp - parsing of postgresql:// sink URLs (grammar in postgresql_url.h).
#include "sink/postgresql/postgresql_url.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <utility>

#include "common/percent.h"
#include "common/redact.h"
#include "common/text.h"
#include "sink/url_text.h"

namespace kiroku {
namespace {

constexpr std::string_view kForm = " (expected postgresql://user:password@host:port/database)";

Status bad(std::string what) { return Status::invalid("postgresql URL: " + what); }

// Percent-decodes `in`; `what` names the part (its text is not shown: it may be a password).
Status decode(std::string_view in, std::string_view what, std::string& out) {
  auto decoded = percent_decode(in);
  if (!decoded)
    return bad("bad percent-encoding in " + std::string(what) + " (a '%' must be followed by two hex digits)");
  out = std::move(*decoded);
  if (out.find('\0') != std::string::npos) return bad(std::string(what) + " contains a NUL byte");
  return {};
}

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

constexpr std::array<std::pair<std::string_view, PgSslMode>, 5> kModes = {{
    {"disable", PgSslMode::disable},
    {"prefer", PgSslMode::prefer},
    {"require", PgSslMode::require},
    {"verify-ca", PgSslMode::verify_ca},
    {"verify-full", PgSslMode::verify_full},
}};

// Parses 1..max decimal digits; false otherwise.
bool parse_number(std::string_view text, unsigned long max, unsigned long& out) {
  if (text.empty() || text.size() > 9) return false;
  out = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    out = out * 10 + static_cast<unsigned>(c - '0');
  }
  return out >= 1 && out <= max;
}

Status check_pem(std::string_view param, const std::string& path, std::string_view marker, std::string_view marker2,
                 std::string_view what) {
  if (path.empty()) return {};
  std::ifstream f(path, std::ios::binary);
  if (!f) return bad(std::string(param) + " " + quoted_url_text(path) + ": cannot read: " + errno_text(errno));
  std::string text(1u << 20, '\0');
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(f.gcount()));
  const std::size_t at = text.find(marker);
  if (at == std::string::npos || (!marker2.empty() && text.find(marker2, at + marker.size()) == std::string::npos))
    return bad(std::string(param) + " " + quoted_url_text(path) + " holds no " + std::string(what) +
               " (expected PEM text with " + std::string(marker) + "...)");
  return {};
}

}  // namespace

std::string_view pg_ssl_mode_name(PgSslMode mode) {
  for (const auto& [name, m] : kModes) {
    if (m == mode) return name;
  }
  return "disable";
}

Status check_postgres_tls_files(const PostgresUrl& url) {
  if (Status s = check_pem("sslrootcert", url.ssl_root_cert, "-----BEGIN CERTIFICATE-----", {}, "CA certificate"); !s)
    return s;
  if (Status s = check_pem("sslcert", url.ssl_cert, "-----BEGIN CERTIFICATE-----", {}, "certificate"); !s) return s;
  return check_pem("sslkey", url.ssl_key, "-----BEGIN ", "PRIVATE KEY-----", "private key");
}

Result<PostgresUrl> parse_postgres_url(std::string_view url) {
  std::string_view rest;
  if (istarts_with(url, "postgresql://")) {
    rest = url.substr(13);
  } else if (istarts_with(url, "postgres://")) {
    rest = url.substr(11);
  } else {
    return bad("must start with postgresql:// or postgres://" + std::string(kForm));
  }
  PostgresUrl out;
  out.redacted_ = redact_url(url);

  // Authority: up to the first '/' or '?'; userinfo: up to its last '@'.
  const std::size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return bad("missing user" + std::string(kForm));
  const std::string_view userinfo = authority.substr(0, at);
  const std::string_view hostport = authority.substr(at + 1);
  const std::size_t colon = userinfo.find(':');
  if (Status s = decode(userinfo.substr(0, colon), "user", out.user); !s) return s;
  if (out.user.empty()) return bad("missing user" + std::string(kForm));
  if (colon != std::string_view::npos) {
    if (Status s = decode(userinfo.substr(colon + 1), "password", out.password); !s) return s;
  }

  // Host and port.
  std::optional<unsigned> port;
  if (auto problem = split_host_port(hostport, out.host, port)) return bad(*problem);
  if (port) out.port = *port;

  // Database: the path, one segment.
  const std::size_t query_at = rest.find('?');
  const std::string_view path = rest.substr(0, query_at);
  std::string_view query = query_at == std::string_view::npos ? std::string_view{} : rest.substr(query_at + 1);
  if (path.size() <= 1) return bad("missing database name" + std::string(kForm));
  if (Status s = decode(path.substr(1), "database name", out.database); !s) return s;
  if (out.database.find('/') != std::string::npos)
    return bad("database name " + quoted_url_text(out.database) + " contains '/'");
  if (out.database.size() > 63)
    return bad("database name " + quoted_url_text(out.database) + " is longer than 63 bytes");

  bool mode_given = false;
  bool timeout_given = false;
  bool name_given = false;
  for (QueryPair p; next_query_pair(query, p);) {
    std::string value;
    if (Status s = decode(p.value, std::string(p.name), value); !s) return s;
    if (p.name == "host") {
      if (!out.socket_dir.empty()) return bad("host given twice");
      if (value.empty() || value.front() != '/')
        return bad("parameter host must be a unix socket directory (an absolute path), got " + quoted_url_text(value));
      out.socket_dir = value;
    } else if (p.name == "sslmode") {
      if (mode_given) return bad("sslmode given twice");
      mode_given = true;
      const auto it =
          std::find_if(kModes.begin(), kModes.end(), [&](const auto& m) { return iequals(m.first, value); });
      if (it == kModes.end())
        return bad("bad sslmode " + quoted_url_text(value) +
                   " (expected disable, prefer, require, verify-ca or verify-full)");
      out.ssl_mode = it->second;
    } else if (p.name == "sslrootcert" || p.name == "sslcert" || p.name == "sslkey") {
      std::string& file = p.name == "sslrootcert" ? out.ssl_root_cert
                          : p.name == "sslcert"   ? out.ssl_cert
                                                  : out.ssl_key;
      if (!file.empty()) return bad(std::string(p.name) + " given twice");
      if (value.empty()) return bad("empty " + std::string(p.name) + " path");
      file = value;
    } else if (p.name == "connect_timeout") {
      if (timeout_given) return bad("connect_timeout given twice");
      timeout_given = true;
      unsigned long s = 0;
      if (!parse_number(value, 3600, s))
        return bad("bad connect_timeout " + quoted_url_text(value) + " (expected whole seconds, 1-3600)");
      out.connect_timeout_s = static_cast<int>(s);
    } else if (p.name == "application_name") {
      if (name_given) return bad("application_name given twice");
      name_given = true;
      if (value.size() > 63 || !valid_utf8(value)) return bad("bad application_name (1-63 bytes of UTF-8)");
      out.application_name = value;
    } else {
      return bad("unknown parameter " + quoted_url_text(p.name) +
                 " (understood: host, sslmode, sslrootcert, sslcert, sslkey, connect_timeout, application_name)");
    }
  }
  if (out.host.empty() && out.socket_dir.empty())
    return bad("missing host (or ?host=/socket/dir)" + std::string(kForm));
  if (!out.host.empty() && !out.socket_dir.empty())
    return bad("both a host and ?host=/socket/dir given: use one (TCP or the unix socket)");

  // TLS: the default mode, then the combinations that make no sense.
  const bool files = !out.ssl_root_cert.empty() || !out.ssl_cert.empty() || !out.ssl_key.empty();
  if (!mode_given) {
    const bool local = !out.socket_dir.empty() || loopback_host(out.host);
    out.ssl_mode = local && !files ? PgSslMode::disable : PgSslMode::verify_full;
  }
  const std::string mode = "sslmode=" + std::string(pg_ssl_mode_name(out.ssl_mode));
  if (!out.socket_dir.empty() && (files || out.ssl_mode != PgSslMode::disable))
    return bad("TLS over a unix socket is not supported (drop the ssl parameters or host=)");
  if (out.ssl_mode == PgSslMode::disable && files) return bad("sslrootcert, sslcert and sslkey need TLS, but " + mode);
  if (out.ssl_cert.empty() != out.ssl_key.empty())
    return bad("sslcert and sslkey go together (a client certificate and its key)");
  if (!out.ssl_root_cert.empty() && (out.ssl_mode == PgSslMode::prefer || out.ssl_mode == PgSslMode::require))
    return bad("sslrootcert with " + mode + " would not verify the server; use sslmode=verify-ca or verify-full");
  if (out.ssl_root_cert.empty() && out.ssl_mode == PgSslMode::verify_ca)
    return bad("sslmode=verify-ca needs sslrootcert=/path (the CA that signed the server's certificate)");
  return out;
}

}  // namespace kiroku
