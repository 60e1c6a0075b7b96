// mysql_url.h - parsing of mysql:// sink URLs and validation of table names.
//
//   mysql://user[:password]@host[:port]/database[?socket=/path/to/socket]
//
// User, password, database and the socket path are percent-decoded; the host
// may be a name, an IPv4 address or a bracketed IPv6 address; the port
// defaults to 3306. With ?socket= the host may be left empty
// (mysql://user:pass@/db?socket=/run/mysqld/mysqld.sock) and the connection
// goes through the unix socket. Works for MariaDB and MySQL alike.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

struct MysqlUrl {
  std::string user;
  std::string password;  // empty: none
  std::string host;      // empty only when socket is set
  unsigned port = 3306;
  std::string database;
  std::string socket;  // empty: TCP

  // The URL as given with its password hidden (redact_url), for logs and errors.
  const std::string& redacted() const { return redacted_; }

 private:
  friend Result<MysqlUrl> parse_mysql_url(std::string_view url);
  std::string redacted_;
};

// Parses a mysql:// URL. A malformed URL gives Status::invalid with a one-line
// message naming the part that is wrong; the message never contains the password.
Result<MysqlUrl> parse_mysql_url(std::string_view url);

// Checks a table name: [A-Za-z0-9_]{1,64}. Status::invalid otherwise.
Status validate_table_name(std::string_view table);

}  // namespace kiroku
