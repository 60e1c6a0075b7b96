// mysql_url.h - parsing of mysql:// sink URLs and validation of table names.
//
//   mysql://user[:password]@host[:port]/database[?socket=/path/to/socket]
//   mysql://user[:password]@host[:port]/database?ssl-mode=MODE&ssl-ca=/ca.pem
//                                                &ssl-cert=/client.pem&ssl-key=/client-key.pem
//
// User, password, database and the paths are percent-decoded; the host may be
// a name, an IPv4 address or a bracketed IPv6 address; the port defaults to
// 3306. With ?socket= the host may be left empty
// (mysql://user:pass@/db?socket=/run/mysqld/mysqld.sock) and the connection
// goes through the unix socket. Works for MariaDB and MySQL alike.
//
// TLS, named as MySQL's client names it (ssl-mode values are case-insensitive):
//   DISABLED         plain TCP
//   PREFERRED        TLS if the server offers it, else plain; the server is not verified
//   REQUIRED         TLS or no connection; the server is not verified
//   VERIFY_CA        TLS, and the server's certificate must chain to ssl-ca (required)
//   VERIFY_IDENTITY  as VERIFY_CA, and the certificate must name the URL's host;
//                    without ssl-ca the system's trusted CAs are used
// Without ssl-mode: DISABLED for a loopback host (localhost, 127.0.0.0/8, ::1)
// when no other ssl- parameter is given (nothing leaves the machine; local
// proxies and tunnels expect plain TCP), else VERIFY_IDENTITY. ssl-cert and
// ssl-key (a client certificate) go together; ssl-ca only with VERIFY_CA or
// VERIFY_IDENTITY (elsewhere it would suggest a check that is not made); none
// of them with DISABLED. With socket= only ssl-mode=DISABLED is accepted.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

enum class MysqlSslMode { disabled, preferred, required, verify_ca, verify_identity };

// "DISABLED", "PREFERRED", ...: the name the URL uses.
std::string_view ssl_mode_name(MysqlSslMode mode);

struct MysqlUrl {
  std::string user;
  std::string password;  // empty: none
  std::string host;      // empty only when socket is set
  unsigned port = 3306;
  std::string database;
  std::string socket;                              // empty: TCP
  MysqlSslMode ssl_mode = MysqlSslMode::disabled;  // the default applied (see above)
  std::string ssl_ca;    // PEM CA certificate(s); empty: none (system CAs for VERIFY_IDENTITY)
  std::string ssl_cert;  // PEM client certificate; empty: none
  std::string ssl_key;   // PEM client key; set exactly when ssl_cert is

  // The URL as given with its password hidden (redact_url), for logs and errors.
  const std::string& redacted() const { return redacted_; }

 private:
  friend Result<MysqlUrl> parse_mysql_url(std::string_view url);
  std::string redacted_;
};

// Parses a mysql:// URL. A malformed URL gives Status::invalid with a one-line
// message naming the part that is wrong; the message never contains the password.
Result<MysqlUrl> parse_mysql_url(std::string_view url);

// Checks that the files an URL names (ssl-ca, ssl-cert, ssl-key) can be read
// and hold PEM certificates / a PEM private key; Status::invalid with one line
// naming the parameter and the path otherwise. Reads the files (at most 1 MiB each).
Status check_mysql_tls_files(const MysqlUrl& url);

// Checks a table name: [A-Za-z0-9_]{1,64}. Status::invalid otherwise.
Status validate_table_name(std::string_view table);

}  // namespace kiroku
