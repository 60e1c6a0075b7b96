// postgresql_url_test.cpp - parsing of postgresql:// sink URLs (no database needed).
#include "sink/postgresql/postgresql_url.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "sink/postgresql/postgresql_sink.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

PostgresUrl parse_ok(std::string_view url) {
  Result<PostgresUrl> r = parse_postgres_url(url);
  EXPECT_TRUE(r.ok()) << url << ": " << r.status().message();
  return r.ok() ? *r : PostgresUrl{};
}

// Expects invalid with a one-line message containing `needle`.
void expect_invalid(std::string_view url, std::string_view needle) {
  Result<PostgresUrl> r = parse_postgres_url(url);
  ASSERT_FALSE(r.ok()) << url;
  EXPECT_EQ(r.status().kind(), ErrorKind::invalid);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << url << " gave: " << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

TEST(PostgresUrlTest, FullUrl) {
  const PostgresUrl u = parse_ok("postgresql://kiroku:secret@db.example.com:5433/metrics");
  EXPECT_EQ(u.user, "kiroku");
  EXPECT_EQ(u.password, "secret");
  EXPECT_EQ(u.host, "db.example.com");
  EXPECT_EQ(u.port, 5433u);
  EXPECT_EQ(u.database, "metrics");
  EXPECT_EQ(u.socket_dir, "");
  EXPECT_EQ(u.ssl_mode, PgSslMode::verify_full) << "a remote host is verified by default";
  EXPECT_EQ(u.connect_timeout_s, 0);
  EXPECT_EQ(u.application_name, "kiroku");
  EXPECT_EQ(u.redacted(), "postgresql://kiroku:***@db.example.com:5433/metrics");
}

TEST(PostgresUrlTest, PostgresSchemeDefaultPortAndNoPassword) {
  const PostgresUrl u = parse_ok("postgres://kiroku@127.0.0.1/metrics");
  EXPECT_EQ(u.port, 5432u);
  EXPECT_EQ(u.password, "");
  EXPECT_EQ(u.ssl_mode, PgSslMode::disable) << "loopback: plain by default";
  EXPECT_EQ(parse_ok("POSTGRESQL://k@localhost/d").host, "localhost");
}

TEST(PostgresUrlTest, PercentDecodingAndTheLastAtSign) {
  const PostgresUrl u = parse_ok("postgresql://us%40er:p%3Ass@w:rd@host/d%62");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p:ss@w:rd");
  EXPECT_EQ(u.host, "host");
  EXPECT_EQ(u.database, "db");
  expect_invalid("postgresql://u:%zz@h/d", "bad percent-encoding in password");
  expect_invalid("postgresql://u:p@h/d%00b", "NUL");
  // The password never shows in an error.
  Result<PostgresUrl> r = parse_postgres_url("postgresql://u:topsecret@h:99999/d");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message().find("topsecret"), std::string::npos);
}

TEST(PostgresUrlTest, Ipv6Host) {
  const PostgresUrl u = parse_ok("postgresql://u:p@[::1]:6000/d");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 6000u);
  EXPECT_EQ(u.ssl_mode, PgSslMode::disable);
  expect_invalid("postgresql://u:p@[::1/d", "missing ']'");
  expect_invalid("postgresql://u:p@[zz]/d", "bad IPv6 host");
}

TEST(PostgresUrlTest, SocketDirectory) {
  const PostgresUrl u = parse_ok("postgresql://u@/d?host=%2Fvar%2Frun%2Fpostgresql");
  EXPECT_EQ(u.socket_dir, "/var/run/postgresql");
  EXPECT_EQ(u.host, "");
  EXPECT_EQ(u.ssl_mode, PgSslMode::disable);
  expect_invalid("postgresql://u@/d?host=relative", "absolute path");
  expect_invalid("postgresql://u@h/d?host=/tmp", "both a host");
  expect_invalid("postgresql://u@/d?host=/tmp&sslmode=require", "unix socket");
}

TEST(PostgresUrlTest, SslModes) {
  EXPECT_EQ(parse_ok("postgresql://u@h/d?sslmode=disable").ssl_mode, PgSslMode::disable);
  EXPECT_EQ(parse_ok("postgresql://u@h/d?sslmode=prefer").ssl_mode, PgSslMode::prefer);
  EXPECT_EQ(parse_ok("postgresql://u@h/d?sslmode=require").ssl_mode, PgSslMode::require);
  EXPECT_EQ(parse_ok("postgresql://u@h/d?sslmode=verify-ca&sslrootcert=/ca.pem").ssl_mode, PgSslMode::verify_ca);
  EXPECT_EQ(parse_ok("postgresql://u@h/d?sslmode=VERIFY-FULL").ssl_mode, PgSslMode::verify_full);
  const PostgresUrl local = parse_ok("postgresql://u@127.0.0.1/d?sslrootcert=%2Fetc%2Fca.pem");
  EXPECT_EQ(local.ssl_mode, PgSslMode::verify_full) << "an ssl file asks for TLS even on loopback";
  EXPECT_EQ(local.ssl_root_cert, "/etc/ca.pem");
  expect_invalid("postgresql://u@h/d?sslmode=allow", "bad sslmode");
  expect_invalid("postgresql://u@h/d?sslmode=require&sslmode=disable", "given twice");
  expect_invalid("postgresql://u@h/d?sslmode=verify-ca", "needs sslrootcert");
  expect_invalid("postgresql://u@h/d?sslmode=require&sslrootcert=/ca.pem", "would not verify");
  expect_invalid("postgresql://u@h/d?sslmode=disable&sslrootcert=/ca.pem", "need TLS");
  expect_invalid("postgresql://u@h/d?sslcert=/c.pem", "go together");
  const PostgresUrl client = parse_ok("postgresql://u@h/d?sslcert=/c.pem&sslkey=/k.pem");
  EXPECT_EQ(client.ssl_cert, "/c.pem");
  EXPECT_EQ(client.ssl_key, "/k.pem");
}

TEST(PostgresUrlTest, ConnectTimeoutAndApplicationName) {
  const PostgresUrl u = parse_ok("postgresql://u@h/d?connect_timeout=7&application_name=ingest%20a");
  EXPECT_EQ(u.connect_timeout_s, 7);
  EXPECT_EQ(u.application_name, "ingest a");
  expect_invalid("postgresql://u@h/d?connect_timeout=0", "bad connect_timeout");
  expect_invalid("postgresql://u@h/d?connect_timeout=2s", "bad connect_timeout");
}

TEST(PostgresUrlTest, MalformedUrls) {
  expect_invalid("mysql://u@h/d", "must start with postgresql://");
  expect_invalid("postgresql://h/d", "missing user");
  expect_invalid("postgresql://:p@h/d", "missing user");
  expect_invalid("postgresql://u@h", "missing database");
  expect_invalid("postgresql://u@h/", "missing database");
  expect_invalid("postgresql://u@/d", "missing host");
  expect_invalid("postgresql://u@h:0/d", "bad port");
  expect_invalid("postgresql://u@h:65536/d", "bad port");
  expect_invalid("postgresql://u@h:abc/d", "bad port");
  expect_invalid("postgresql://u@h$x/d", "bad host");
  expect_invalid("postgresql://u@h/a%2Fb", "contains '/'");
  expect_invalid("postgresql://u@h/d?password=x", "unknown parameter");
}

TEST(PostgresUrlTest, TlsFilesAreCheckedWhenTheSinkIsMade) {
  SinkOptions options;
  Result<std::unique_ptr<Sink>> missing =
      make_postgres_sink("postgresql://u@h/d?sslmode=verify-ca&sslrootcert=/no/such/ca.pem", options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("sslrootcert \"/no/such/ca.pem\": cannot read"), std::string::npos)
      << missing.status().message();
  const std::string path = "/tmp/kiroku-pg-url-test-" + std::to_string(::getpid()) + ".pem";
  std::ofstream(path) << "not a certificate\n";
  Result<std::unique_ptr<Sink>> garbage =
      make_postgres_sink("postgresql://u@h/d?sslmode=verify-ca&sslrootcert=" + path, options);
  ::unlink(path.c_str());
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("holds no CA certificate"), std::string::npos);
  options.table = "bad-name";
  EXPECT_EQ(make_postgres_sink("postgresql://u@h/d", options).status().kind(), ErrorKind::invalid);
  options.table = "events";
  Result<std::unique_ptr<Sink>> ok = make_postgres_sink("postgres://u@h/d", options);
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ((*ok)->kind(), "postgresql");
}

}  // namespace
}  // namespace kiroku
