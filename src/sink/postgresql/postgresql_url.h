// postgresql_url.h - parsing of postgresql:// sink URLs.
//
//   postgresql://user[:password]@host[:port]/database[?PARAM=VALUE&...]
//   postgres://...                         (the same)
//
// User, password, database and parameter values are percent-decoded; the host
// may be a name, an IPv4 address or a bracketed IPv6 address; the port
// defaults to 5432. Parameters, named as libpq names them:
//   host=/dir            the unix socket directory (the URL's host may then be empty)
//   sslmode=MODE         disable | prefer | require | verify-ca | verify-full
//   sslrootcert=/ca.pem  CA certificate(s) the server's must chain to
//   sslcert=/c.pem, sslkey=/k.pem   a client certificate and its key (together)
//   connect_timeout=S    seconds (>= 1); overrides the sink's connect timeout
//   application_name=N   shown in pg_stat_activity (default kiroku)
// TLS modes, as libpq reads them:
//   disable      plain TCP
//   prefer       TLS if the server offers it, else plain; the server is not verified
//   require      TLS or no connection; the server is not verified
//   verify-ca    TLS, and the server's certificate must chain to sslrootcert
//   verify-full  as verify-ca, and the certificate must name the URL's host
// Without sslmode: disable for a loopback host (localhost, 127.0.0.0/8, ::1)
// or a socket when no other ssl parameter is given, else verify-full.
// verify-ca needs sslrootcert; verify-full without it uses the system's
// trusted CAs. sslrootcert only with verify-ca or verify-full (elsewhere it
// would suggest a check that is not made); no ssl file with disable.
//
// The parsed URL goes to libpq as keyword/value pairs (PQconnectdbParams), never
// as a conninfo string built from the user's text.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

enum class PgSslMode { disable, prefer, require, verify_ca, verify_full };

// "disable", "prefer", ...: the name libpq and the URL use.
std::string_view pg_ssl_mode_name(PgSslMode mode);

struct PostgresUrl {
  std::string user;
  std::string password;  // empty: none
  std::string host;      // empty only when socket_dir is set
  unsigned port = 5432;
  std::string database;
  std::string socket_dir;  // empty: TCP
  PgSslMode ssl_mode = PgSslMode::disable;
  std::string ssl_root_cert;  // empty: none (system CAs for verify-full)
  std::string ssl_cert;       // client certificate; empty: none
  std::string ssl_key;        // set exactly when ssl_cert is
  int connect_timeout_s = 0;  // 0: not given
  std::string application_name = "kiroku";

  // The URL as given with its password hidden (redact_url), for logs and errors.
  const std::string& redacted() const { return redacted_; }

 private:
  friend Result<PostgresUrl> parse_postgres_url(std::string_view url);
  std::string redacted_;
};

// Parses a postgresql:// or postgres:// URL. A malformed URL gives
// Status::invalid with a one-line message naming the part that is wrong; the
// message never contains the password.
Result<PostgresUrl> parse_postgres_url(std::string_view url);

// Checks that the files the URL names can be read and hold PEM text of the
// right kind; Status::invalid with one line naming the parameter and the path otherwise.
Status check_postgres_tls_files(const PostgresUrl& url);

}  // namespace kiroku
