// mysql_url_test.cpp - parsing of mysql:// sink URLs and table names (no database needed).
#include "sink/mysql/mysql_url.h"

#include <gtest/gtest.h>

#include <string>

#include "sink/mysql/mysql_sink.h"

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
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << url << " gave: " << r.status().message();
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

}  // namespace
}  // namespace kiroku
