// mysql_url_test.cpp - parsing of mysql:// sink URLs and table names (no database needed).
#include "sink/mysql/mysql_url.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "sink/mysql/mysql_sink.h"
#include "sink/mysql/mysql_tls.h"

namespace kiroku {
namespace {

MysqlUrl parse_ok(std::string_view url) {
  Result<MysqlUrl> r = parse_mysql_url(url);
  EXPECT_TRUE(r.ok()) << url << ": " << r.status().message();
  return r.ok() ? *r : MysqlUrl{};
}

// Expects invalid with a message containing `needle`.
void expect_invalid(std::string_view url, std::string_view needle) {
  Result<MysqlUrl> r = parse_mysql_url(url);
  ASSERT_FALSE(r.ok()) << url;
  EXPECT_EQ(r.status().kind(), ErrorKind::invalid);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << url << " gave: " << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

TEST(MysqlUrlTest, FullUrl) {
  const MysqlUrl u = parse_ok("mysql://kiroku:secret@db.example.com:3307/metrics");
  EXPECT_EQ(u.user, "kiroku");
  EXPECT_EQ(u.password, "secret");
  EXPECT_EQ(u.host, "db.example.com");
  EXPECT_EQ(u.port, 3307u);
  EXPECT_EQ(u.database, "metrics");
  EXPECT_EQ(u.socket, "");
}

TEST(MysqlUrlTest, DefaultPortAndNoPassword) {
  const MysqlUrl u = parse_ok("mysql://reader@10.0.0.5/events_db");
  EXPECT_EQ(u.user, "reader");
  EXPECT_EQ(u.password, "");
  EXPECT_EQ(u.host, "10.0.0.5");
  EXPECT_EQ(u.port, 3306u);
  EXPECT_EQ(u.database, "events_db");
}

TEST(MysqlUrlTest, PercentDecodedUserPasswordDatabase) {
  const MysqlUrl u = parse_ok("mysql://us%40er:p%40ss%3Aw%2Frd%25%3F@127.0.0.1:3306/my%2Ddb");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p@ss:w/rd%?");
  EXPECT_EQ(u.database, "my-db");
}

TEST(MysqlUrlTest, RawAtAndColonInPassword) {
  // The last '@' ends the user info and the first ':' ends the user.
  const MysqlUrl u = parse_ok("mysql://u:p@ss:w@host/db");
  EXPECT_EQ(u.user, "u");
  EXPECT_EQ(u.password, "p@ss:w");
  EXPECT_EQ(u.host, "host");
}

TEST(MysqlUrlTest, UnixSocket) {
  const MysqlUrl u = parse_ok("mysql://kiroku:pw@/kiroku?socket=/run/mysqld/mysqld.sock");
  EXPECT_EQ(u.host, "");
  EXPECT_EQ(u.socket, "/run/mysqld/mysqld.sock");
  EXPECT_EQ(u.database, "kiroku");
  const MysqlUrl v = parse_ok("mysql://root@localhost/mysql?socket=%2Ftmp%2Fa%20b.sock");
  EXPECT_EQ(v.host, "localhost");
  EXPECT_EQ(v.socket, "/tmp/a b.sock");
}

TEST(MysqlUrlTest, Ipv6Host) {
  const MysqlUrl u = parse_ok("mysql://u:p@[::1]:3310/db");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 3310u);
  const MysqlUrl v = parse_ok("mysql://u@[fe80::1]/db");
  EXPECT_EQ(v.host, "fe80::1");
  EXPECT_EQ(v.port, 3306u);
}

TEST(MysqlUrlTest, SchemeIsCaseInsensitive) { EXPECT_EQ(parse_ok("MySQL://u@h/d").host, "h"); }

TEST(MysqlUrlTest, MissingParts) {
  expect_invalid("", "must start with mysql://");
  expect_invalid("sqlite:///x.db", "must start with mysql://");
  expect_invalid("mysql://host/db", "missing user");
  expect_invalid("mysql://:pw@host/db", "missing user");
  expect_invalid("mysql://u:p@host", "missing database");
  expect_invalid("mysql://u:p@host/", "missing database");
  expect_invalid("mysql://u:p@host?socket=/s", "missing database");
  expect_invalid("mysql://u:p@/db", "missing host");
  expect_invalid("mysql://u:p@:3306/db", "missing host");
}

TEST(MysqlUrlTest, BadPort) {
  expect_invalid("mysql://u:p@host:/db", "bad port");
  expect_invalid("mysql://u:p@host:abc/db", "bad port \"abc\"");
  expect_invalid("mysql://u:p@host:0/db", "bad port");
  expect_invalid("mysql://u:p@host:65536/db", "bad port");
  expect_invalid("mysql://u:p@host:-1/db", "bad port");
  expect_invalid("mysql://u:p@host:99999999999999999999/db", "bad port");
  EXPECT_EQ(parse_ok("mysql://u:p@host:65535/db").port, 65535u);
}

TEST(MysqlUrlTest, BadHostAndOtherParts) {
  expect_invalid("mysql://u:p@ho st/db", "bad host");
  expect_invalid("mysql://u:p@[::1/db", "missing ']'");
  expect_invalid("mysql://u:p@[::1]x/db", "after IPv6 host");
  expect_invalid("mysql://u:p@host/db/extra", "contains '/'");
  expect_invalid("mysql://u:p@host/db?sslmode=on", "unknown parameter \"sslmode\"");
  expect_invalid("mysql://u:p@host/db?socket=", "empty socket path");
  expect_invalid("mysql://u%00x:p@host/db", "user contains a NUL byte");
  expect_invalid("mysql://u:p@host/" + std::string(65, 'd'), "longer than 64 bytes");
}

TEST(MysqlUrlTest, BadPercentEncodingDoesNotShowPassword) {
  Result<MysqlUrl> r = parse_mysql_url("mysql://u:hunter2%zz@host/db");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad percent-encoding in password"), std::string::npos);
  EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos);
  expect_invalid("mysql://u:p%4@host/db", "bad percent-encoding in password");
  expect_invalid("mysql://u:p@host/d%g1", "bad percent-encoding in database name");
}

TEST(MysqlUrlTest, RedactedHidesPassword) {
  const MysqlUrl u = parse_ok("mysql://kiroku:s3cret@127.0.0.1:3307/kiroku_test");
  EXPECT_EQ(u.redacted(), "mysql://kiroku:***@127.0.0.1:3307/kiroku_test");
  const MysqlUrl v = parse_ok("mysql://kiroku:s3cret@/k?socket=/tmp/m.sock");
  EXPECT_EQ(v.redacted(), "mysql://kiroku:***@/k?socket=/tmp/m.sock");
}

// The password is what the parser reads (up to the last '@' of the
// authority), and exactly that is hidden.
TEST(MysqlUrlTest, RedactedHidesAPasswordWithAnAt) {
  const MysqlUrl u = parse_ok("mysql://ku:RET@PASS@127.0.0.1:3306/db");
  EXPECT_EQ(u.password, "RET@PASS");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.redacted(), "mysql://ku:***@127.0.0.1:3306/db");
  const MysqlUrl w = parse_ok("mysql://ku:a%40b@[::1]/db");
  EXPECT_EQ(w.password, "a@b");
  EXPECT_EQ(w.redacted(), "mysql://ku:***@[::1]/db");
}

TEST(MysqlUrlTest, TableNames) {
  EXPECT_TRUE(validate_table_name("events").ok());
  EXPECT_TRUE(validate_table_name("Events_2024").ok());
  EXPECT_TRUE(validate_table_name(std::string(64, 'a')).ok());
  for (std::string_view bad : {"", "bad-name", "a b", "x;DROP TABLE y", "na\xc3\xafve", "t.x"}) {
    const Status s = validate_table_name(bad);
    EXPECT_EQ(s.kind(), ErrorKind::invalid) << bad;
    EXPECT_NE(s.message().find("table name"), std::string::npos);
  }
  EXPECT_EQ(validate_table_name(std::string(65, 'a')).kind(), ErrorKind::invalid);
  EXPECT_NE(validate_table_name("a\nb").message().find("\\x0a"), std::string::npos);
}

TEST(MysqlUrlTest, MakeSinkRejectsBadUrlAndTableWithoutConnecting) {
  SinkOptions o;
  Result<std::unique_ptr<Sink>> bad_url = make_mysql_sink("mysql://u:p@host:99999/db", o);
  ASSERT_FALSE(bad_url.ok());
  EXPECT_EQ(bad_url.status().kind(), ErrorKind::invalid);
  EXPECT_NE(bad_url.status().message().find("bad port"), std::string::npos);

  o.table = "events; DROP TABLE x";
  Result<std::unique_ptr<Sink>> bad_table = make_mysql_sink("mysql://u:p@host/db", o);
  ASSERT_FALSE(bad_table.ok());
  EXPECT_EQ(bad_table.status().kind(), ErrorKind::invalid);
  EXPECT_NE(bad_table.status().message().find("table name"), std::string::npos);

  o.table = "events";
  o.connect_timeout_ms = 0;
  EXPECT_EQ(make_mysql_sink("mysql://u:p@host/db", o).status().kind(), ErrorKind::invalid);

  // A good URL builds a sink without touching the network (nothing listens on port 1).
  o.connect_timeout_ms = 1000;
  Result<std::unique_ptr<Sink>> ok = make_mysql_sink("mysql://u:p@127.0.0.1:1/db", o);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ((*ok)->kind(), "mysql");
  EXPECT_EQ((*ok)->stats().open, 0);
  EXPECT_EQ((*ok)->stats().max_open, 4);
  const Status s = (*ok)->open();
  EXPECT_EQ(s.kind(), ErrorKind::transient) << s.message();
  EXPECT_NE(s.message().find("mysql://u:***@127.0.0.1:1/db"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(":p@"), std::string::npos) << s.message();
}

// ---- TLS parameters

TEST(MysqlUrlTest, SslModeDefaultsToVerifyIdentityExceptOnLoopback) {
  EXPECT_EQ(parse_ok("mysql://u:p@db.example.com/d").ssl_mode, MysqlSslMode::verify_identity);
  EXPECT_EQ(parse_ok("mysql://u:p@10.0.0.5:3306/d").ssl_mode, MysqlSslMode::verify_identity);
  EXPECT_EQ(parse_ok("mysql://u:p@[2001:db8::1]/d").ssl_mode, MysqlSslMode::verify_identity);
  for (std::string_view local :
       {"mysql://u:p@127.0.0.1:3306/d", "mysql://u:p@127.1.2.3/d", "mysql://u:p@localhost/d", "mysql://u:p@LocalHost/d",
        "mysql://u:p@[::1]:3306/d", "mysql://u:p@/d?socket=/s.sock"}) {
    EXPECT_EQ(parse_ok(local).ssl_mode, MysqlSslMode::disabled) << local;
  }
  // Not loopback, though they look close.
  EXPECT_EQ(parse_ok("mysql://u:p@127.example.com/d").ssl_mode, MysqlSslMode::verify_identity);
  EXPECT_EQ(parse_ok("mysql://u:p@127.0.0.1.nip.io/d").ssl_mode, MysqlSslMode::verify_identity);
  // An ssl- file asks for TLS, also on loopback.
  const MysqlUrl u = parse_ok("mysql://u:p@127.0.0.1/d?ssl-ca=/etc/ca.pem");
  EXPECT_EQ(u.ssl_mode, MysqlSslMode::verify_identity);
  EXPECT_EQ(u.ssl_ca, "/etc/ca.pem");
}

TEST(MysqlUrlTest, SslModeValuesAndFiles) {
  struct Case {
    std::string_view value;
    MysqlSslMode mode;
  };
  for (const Case c :
       {Case{"DISABLED", MysqlSslMode::disabled}, Case{"preferred", MysqlSslMode::preferred},
        Case{"Required", MysqlSslMode::required}, Case{"VERIFY_IDENTITY", MysqlSslMode::verify_identity}}) {
    const MysqlUrl u = parse_ok("mysql://u:p@db.example.com/d?ssl-mode=" + std::string(c.value));
    EXPECT_EQ(u.ssl_mode, c.mode) << c.value;
    EXPECT_EQ(ssl_mode_name(u.ssl_mode).size() > 0, true);
  }
  EXPECT_EQ(ssl_mode_name(MysqlSslMode::verify_ca), "VERIFY_CA");
  const MysqlUrl u = parse_ok(
      "mysql://u:p@db.example.com:3307/d?ssl-mode=VERIFY_CA&ssl-ca=/certs/my%20ca.pem"
      "&ssl-cert=/certs/client.pem&ssl-key=/certs/client-key.pem");
  EXPECT_EQ(u.ssl_mode, MysqlSslMode::verify_ca);
  EXPECT_EQ(u.ssl_ca, "/certs/my ca.pem");
  EXPECT_EQ(u.ssl_cert, "/certs/client.pem");
  EXPECT_EQ(u.ssl_key, "/certs/client-key.pem");
  EXPECT_EQ(u.port, 3307u);
  // A client certificate with PREFERRED or REQUIRED is fine.
  EXPECT_EQ(parse_ok("mysql://u@h/d?ssl-mode=REQUIRED&ssl-cert=/c.pem&ssl-key=/k.pem").ssl_cert, "/c.pem");
  // Plain TCP on a remote host when asked for.
  EXPECT_EQ(parse_ok("mysql://u@h/d?ssl-mode=disabled").ssl_mode, MysqlSslMode::disabled);
  // The password stays out of the redacted form, which does not change with TLS.
  EXPECT_EQ(parse_ok("mysql://u:pw@h:1/d?ssl-mode=REQUIRED").redacted(), "mysql://u:***@h:1/d?ssl-mode=REQUIRED");
}

TEST(MysqlUrlTest, BadSslParameters) {
  expect_invalid("mysql://u:p@h/d?ssl-mode=on", "bad ssl-mode \"on\" (expected DISABLED, PREFERRED");
  expect_invalid("mysql://u:p@h/d?ssl-mode=", "bad ssl-mode \"\"");
  expect_invalid("mysql://u:p@h/d?ssl-mode=REQUIRED&ssl-mode=DISABLED", "ssl-mode given twice");
  expect_invalid("mysql://u:p@h/d?ssl-ca=/a&ssl-ca=/b", "ssl-ca given twice");
  expect_invalid("mysql://u:p@h/d?ssl-ca=", "empty ssl-ca path");
  expect_invalid("mysql://u:p@h/d?ssl-ca=%zz", "bad percent-encoding in ssl-ca path");
  expect_invalid("mysql://u:p@h/d?ssl-ca=/a%00b", "ssl-ca path contains a NUL byte");
  expect_invalid("mysql://u:p@h/d?ssl_mode=REQUIRED", "unknown parameter \"ssl_mode\"");
  expect_invalid("mysql://u:p@h/d?ssl-mode=DISABLED&ssl-ca=/ca.pem", "need TLS, but ssl-mode=DISABLED");
  expect_invalid("mysql://u:p@h/d?ssl-cert=/c.pem", "ssl-cert and ssl-key go together");
  expect_invalid("mysql://u:p@h/d?ssl-key=/k.pem", "ssl-cert and ssl-key go together");
  expect_invalid("mysql://u:p@h/d?ssl-mode=REQUIRED&ssl-ca=/ca.pem",
                 "ssl-ca with ssl-mode=REQUIRED would not verify the server; use ssl-mode=VERIFY_CA");
  expect_invalid("mysql://u:p@h/d?ssl-mode=PREFERRED&ssl-ca=/ca.pem", "would not verify");
  expect_invalid("mysql://u:p@h/d?ssl-mode=VERIFY_CA", "ssl-mode=VERIFY_CA needs ssl-ca=/path");
  expect_invalid("mysql://u:p@/d?socket=/s.sock&ssl-mode=REQUIRED", "TLS over a unix socket");
  expect_invalid("mysql://u:p@/d?socket=/s.sock&ssl-ca=/ca.pem", "TLS over a unix socket");
  EXPECT_EQ(parse_ok("mysql://u:p@/d?socket=/s.sock&ssl-mode=DISABLED").socket, "/s.sock");
  // No message shows the password.
  Result<MysqlUrl> r = parse_mysql_url("mysql://u:hunter2@h/d?ssl-mode=bogus");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos);
}

class TlsFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kiroku-tls-unit.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    files_.push_back(path);
    return path;
  }
  Status check(const std::string& query) {
    Result<MysqlUrl> u = parse_mysql_url("mysql://u:secret@db.example.com/d?" + query);
    EXPECT_TRUE(u.ok()) << query << ": " << u.status().message();
    return u.ok() ? check_mysql_tls_files(*u) : u.status();
  }
  std::string dir_;
  std::vector<std::string> files_;
};

TEST_F(TlsFilesTest, ReadablePemFilesPass) {
  const std::string cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const std::string ca = write("ca.pem", "subject=CN=x\n" + cert + cert);
  const std::string c = write("client.pem", cert);
  const std::string k = write("client-key.pem", "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n");
  EXPECT_TRUE(check("ssl-ca=" + ca + "&ssl-cert=" + c + "&ssl-key=" + k).ok());
  EXPECT_TRUE(check("ssl-mode=VERIFY_IDENTITY").ok()) << "no files, nothing to check";
}

TEST_F(TlsFilesTest, MissingOrWrongFilesFailWithOneLine) {
  const Status missing = check("ssl-ca=" + dir_ + "/nope.pem");
  EXPECT_EQ(missing.kind(), ErrorKind::invalid);
  EXPECT_NE(missing.message().find("ssl-ca \"" + dir_ + "/nope.pem\": cannot read: No such file"), std::string::npos)
      << missing.message();
  EXPECT_EQ(missing.message().find("secret"), std::string::npos);
  EXPECT_EQ(missing.message().find('\n'), std::string::npos);

  const Status a_dir = check("ssl-ca=" + dir_);
  EXPECT_EQ(a_dir.kind(), ErrorKind::invalid) << a_dir.message();

  const std::string junk = write("junk.pem", "not a certificate\n");
  const Status not_pem = check("ssl-ca=" + junk);
  EXPECT_NE(not_pem.message().find("holds no CA certificate"), std::string::npos) << not_pem.message();

  const std::string cert = write("c.pem", "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
  const Status key_is_cert = check("ssl-cert=" + cert + "&ssl-key=" + cert);
  EXPECT_NE(key_is_cert.message().find("ssl-key \"" + cert + "\" holds no private key"), std::string::npos)
      << key_is_cert.message();

  if (::geteuid() != 0) {  // root reads every file
    const std::string locked = write("locked.pem", "-----BEGIN CERTIFICATE-----\n");
    ::chmod(locked.c_str(), 0);
    const Status unreadable = check("ssl-ca=" + locked);
    EXPECT_NE(unreadable.message().find("Permission denied"), std::string::npos) << unreadable.message();
  }
}

TEST_F(TlsFilesTest, MakeSinkChecksTheFilesWithoutConnecting) {
  SinkOptions o;
  Result<std::unique_ptr<Sink>> r =
      make_mysql_sink("mysql://u:p@127.0.0.1:1/d?ssl-mode=VERIFY_IDENTITY&ssl-ca=" + dir_ + "/x", o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::invalid);
  EXPECT_NE(r.status().message().find("mysql URL: ssl-ca"), std::string::npos) << r.status().message();
}

TEST(MysqlTlsTest, WhichTlsFailuresArePermanent) {
  const MysqlUrl tls = parse_ok("mysql://u:p@db.example.com/d?ssl-ca=/ca.pem");
  const MysqlUrl plain = parse_ok("mysql://u:p@db.example.com/d?ssl-mode=DISABLED");
  constexpr unsigned kSslError = 2026;  // CR_SSL_CONNECTION_ERROR
  // Configuration: a certificate that does not verify, another name, no TLS on the server.
  for (std::string_view text :
       {"TLS/SSL error: self-signed certificate in certificate chain",
        "TLS/SSL error: unable to get local issuer certificate",
        "TLS/SSL error: Validation of SSL server certificate failed",
        "TLS/SSL error: SSL is required, but the server does not support it", "TLS/SSL error: no such file"}) {
    EXPECT_TRUE(tls_failure_is_permanent(tls, kSslError, text)) << text;
  }
  // The network: an OS error or an EOF in the handshake, or any other error code.
  EXPECT_FALSE(tls_failure_is_permanent(tls, kSslError, "TLS/SSL error: Connection reset by peer (104)"));
  EXPECT_FALSE(tls_failure_is_permanent(tls, kSslError, "TLS/SSL error: unexpected eof while reading"));
  EXPECT_FALSE(tls_failure_is_permanent(tls, 2013, "Lost connection to server during query"));
  EXPECT_FALSE(tls_failure_is_permanent(plain, kSslError, "TLS/SSL error: anything"));
  EXPECT_EQ(tls_settings(tls), " (ssl-mode=VERIFY_IDENTITY, host db.example.com, ssl-ca /ca.pem)");
  EXPECT_EQ(tls_settings(parse_ok("mysql://u@h/d")), " (ssl-mode=VERIFY_IDENTITY, host h, the system's CAs)");
  EXPECT_EQ(tls_settings(parse_ok("mysql://u@h/d?ssl-mode=REQUIRED")), " (ssl-mode=REQUIRED)");
}

}  // namespace
}  // namespace kiroku
