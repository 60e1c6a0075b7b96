// mysql_tls.h - the TLS side of a MySQL/MariaDB connection (the modes are in mysql_url.h).
//
// Built on MariaDB Connector/C 3.3, whose options do not map one to one onto
// MySQL's ssl-mode: MYSQL_OPT_SSL_ENFORCE asks for TLS but falls back to plain
// when the server has none, and a given CA is checked even without
// MYSQL_OPT_SSL_VERIFY_SERVER_CERT (which adds the host name check, and with no
// CA uses the system's trusted CAs). So REQUIRED and VERIFY_CA are enforced
// here after the connect (check_tls_in_use), VERIFY_IDENTITY by the connector
// before the login as well.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "sink/mysql/mysql_url.h"

struct st_mysql;  // MYSQL of <mysql.h>

namespace kiroku {

// Sets the TLS options of `url` on a handle, before mysql_real_connect().
void set_tls_options(st_mysql* m, const MysqlUrl& url);

// After a successful connect: Status::permanent when the URL's mode requires
// TLS (REQUIRED or stricter) and the session is plain (the server offers no
// TLS). `where` names the server in the message.
Status check_tls_in_use(st_mysql* m, const MysqlUrl& url, std::string_view where);

// A failed connect's error (code, text) is a TLS problem that waiting will not
// heal: a certificate that does not verify or names another host, a server
// without TLS, unusable ssl- files. A TLS handshake broken off by the network
// (an OS error, an unexpected EOF) is not.
bool tls_failure_is_permanent(const MysqlUrl& url, unsigned code, std::string_view text);

// " (ssl-mode=VERIFY_IDENTITY, host 127.0.0.1, ssl-ca /path)": the settings
// behind a TLS failure, for its message.
std::string tls_settings(const MysqlUrl& url);

}  // namespace kiroku
