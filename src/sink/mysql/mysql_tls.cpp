// mysql_tls.cpp - TLS options of a MySQL/MariaDB connection (contract in mysql_tls.h).
#include "sink/mysql/mysql_tls.h"

#include <errmsg.h>
#include <mysql.h>

namespace kiroku {

void set_tls_options(MYSQL* m, const MysqlUrl& url) {
  if (url.ssl_mode == MysqlSslMode::disabled) return;
  const my_bool yes = 1;
  mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &yes);
  if (!url.ssl_ca.empty()) mysql_optionsv(m, MYSQL_OPT_SSL_CA, url.ssl_ca.c_str());
  if (!url.ssl_cert.empty()) mysql_optionsv(m, MYSQL_OPT_SSL_CERT, url.ssl_cert.c_str());
  if (!url.ssl_key.empty()) mysql_optionsv(m, MYSQL_OPT_SSL_KEY, url.ssl_key.c_str());
  if (url.ssl_mode == MysqlSslMode::verify_identity) {
    mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &yes);
  }
}

Status check_tls_in_use(MYSQL* m, const MysqlUrl& url, std::string_view where) {
  if (url.ssl_mode == MysqlSslMode::disabled || url.ssl_mode == MysqlSslMode::preferred) return {};
  if (mysql_get_ssl_cipher(m) != nullptr) return {};
  return Status::permanent("mysql: connect to " + std::string(where) + ": the server does not offer TLS" +
                           tls_settings(url));
}

bool tls_failure_is_permanent(const MysqlUrl& url, unsigned code, std::string_view text) {
  if (url.ssl_mode == MysqlSslMode::disabled || code != CR_SSL_CONNECTION_ERROR) return false;
  // Every such text starts "TLS/SSL error: "; an OS error in the handshake
  // ends in its errno: "TLS/SSL error: Connection reset by peer (104)".
  // OpenSSL 3 reports a peer that went away as "unexpected eof while reading".
  if (text.find("unexpected eof") != std::string_view::npos) return false;
  std::size_t end = text.size();
  if (end < 4 || text[end - 1] != ')') return true;
  std::size_t digits = 0;
  for (--end; end > 0 && text[end - 1] >= '0' && text[end - 1] <= '9'; --end) ++digits;
  const bool os_error = digits > 0 && end >= 2 && text[end - 1] == '(' && text[end - 2] == ' ';
  return !os_error;
}

std::string tls_settings(const MysqlUrl& url) {
  std::string out = " (ssl-mode=" + std::string(ssl_mode_name(url.ssl_mode));
  if (url.ssl_mode == MysqlSslMode::verify_identity) out += ", host " + url.host;
  if (!url.ssl_ca.empty()) {
    out += ", ssl-ca " + url.ssl_ca;
  } else if (url.ssl_mode == MysqlSslMode::verify_identity) {
    out += ", the system's CAs";
  }
  out += ")";
  return out;
}

}  // namespace kiroku
