// clickhouse_url_test.cpp - parsing of clickhouse:// sink URLs and the mapping
// of ClickHouse's answers to Status kinds (no server needed).
#include "sink/clickhouse/clickhouse_url.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "sink/clickhouse/clickhouse_http.h"
#include "sink/clickhouse/clickhouse_sink.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

ClickhouseUrl parse_ok(std::string_view url) {
  Result<ClickhouseUrl> r = parse_clickhouse_url(url);
  EXPECT_TRUE(r.ok()) << url << ": " << r.status().message();
  return r.ok() ? *r : ClickhouseUrl{};
}

void expect_invalid(std::string_view url, std::string_view needle) {
  Result<ClickhouseUrl> r = parse_clickhouse_url(url);
  ASSERT_FALSE(r.ok()) << url;
  EXPECT_EQ(r.status().kind(), ErrorKind::invalid);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << url << " gave: " << r.status().message();
  EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
}

TEST(ClickhouseUrlTest, OneServer) {
  const ClickhouseUrl u = parse_ok("clickhouse://kiroku:secret@ch.example.com:18123/metrics");
  EXPECT_EQ(u.user, "kiroku");
  EXPECT_EQ(u.password, "secret");
  EXPECT_EQ(u.database, "metrics");
  ASSERT_EQ(u.shards.size(), 1u);
  EXPECT_EQ(u.shards[0].host, "ch.example.com");
  EXPECT_EQ(u.shards[0].port, 18123u);
  EXPECT_EQ(u.shards[0].base_url(), "http://ch.example.com:18123/");
  EXPECT_EQ(u.timeout_ms, 30'000);
  EXPECT_EQ(u.redacted.find("secret"), std::string::npos);
}

TEST(ClickhouseUrlTest, DefaultsAndDecoding) {
  const ClickhouseUrl u = parse_ok("CLICKHOUSE://us%40er:p%3Ass%2Fw@127.0.0.1/db_1");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p:ss/w");
  EXPECT_EQ(u.shards[0].port, 8123u);
  EXPECT_EQ(u.database, "db_1");
  const ClickhouseUrl nopass = parse_ok("clickhouse://default@localhost/default");
  EXPECT_EQ(nopass.password, "");
}

TEST(ClickhouseUrlTest, ShardsInOrderWithDefaultPortsAndIpv6) {
  const ClickhouseUrl u =
      parse_ok("clickhouse://k:p@10.0.0.1:8123/db?shards=10.0.0.2:9123,ch3,%5B::1%5D:8124&timeout=2s");
  ASSERT_EQ(u.shards.size(), 4u);
  EXPECT_EQ(u.shards[1].name(), "10.0.0.2:9123");
  EXPECT_EQ(u.shards[2].name(), "ch3:8123");
  EXPECT_EQ(u.shards[3].host, "::1");
  EXPECT_EQ(u.shards[3].base_url(), "http://[::1]:8124/");
  EXPECT_EQ(u.timeout_ms, 2000);
  const ClickhouseUrl raw = parse_ok("clickhouse://k:p@[::1]:8125/db?shards=[::1]:8126");
  EXPECT_EQ(raw.shards[0].name(), "[::1]:8125");
  EXPECT_EQ(raw.shards[1].name(), "[::1]:8126");
}

TEST(ClickhouseUrlTest, MalformedUrlsSayWhatIsWrong) {
  expect_invalid("mysql://k:p@h/db", "must start with clickhouse://");
  expect_invalid("clickhouse://h:8123/db", "missing user");
  expect_invalid("clickhouse://:p@h/db", "missing user");
  expect_invalid("clickhouse://k:p@h:0/db", "bad port");
  expect_invalid("clickhouse://k:p@h:99999/db", "bad port");
  expect_invalid("clickhouse://k:p@h:80a/db", "bad port");
  expect_invalid("clickhouse://k:p@h/", "missing database");
  expect_invalid("clickhouse://k:p@h", "missing database");
  expect_invalid("clickhouse://k:p@h/my-db", "database name");
  expect_invalid("clickhouse://k:p@h/a%2Fb", "database name");
  expect_invalid("clickhouse://k:p@h%20x/db", "bad host");
  expect_invalid("clickhouse://k:p@[::1/db", "missing ']'");
  expect_invalid("clickhouse://k:p@h/db?shards=", "empty host");
  expect_invalid("clickhouse://k:p@h/db?shards=a:1,,b", "empty host");
  expect_invalid("clickhouse://k:p@h/db?shards=b:x", "bad port");
  expect_invalid("clickhouse://k:p@h:8123/db?shards=h", "listed twice");
  expect_invalid("clickhouse://k:p@h/db?shards=a&shards=b", "shards given twice");
  expect_invalid("clickhouse://k:p@h/db?timeout=1ms", "timeout");
  expect_invalid("clickhouse://k:p@h/db?timeout=soon", "timeout");
  expect_invalid("clickhouse://k:p@h/db?secure=1", "unknown parameter \"secure\"");
  expect_invalid("clickhouse://k:p%zz@h/db", "percent-encoding in password");
}

TEST(ClickhouseUrlTest, ThePasswordIsNeverInAMessage) {
  for (const char* url : {"clickhouse://k:hunter2@h:0/db", "clickhouse://k:hunter2@h/",
                          "clickhouse://k:hunter2@h/db?x=1", "clickhouse://k:hunter2@/db"}) {
    Result<ClickhouseUrl> r = parse_clickhouse_url(url);
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos) << r.status().message();
  }
}

TEST(ClickhouseUrlTest, MakeSinkPicksClickhouseAndChecksTheTable) {
  SinkOptions options;
  auto sink = make_sink("clickhouse://k:p@127.0.0.1:1/db", options);
  ASSERT_TRUE(sink.ok()) << sink.status().message();
  EXPECT_EQ((*sink)->kind(), "clickhouse");
  options.table = "bad-name";
  EXPECT_EQ(make_sink("clickhouse://k:p@127.0.0.1:1/db", options).status().kind(), ErrorKind::invalid);
}

TEST(ClickhouseUrlTest, AnUnreachableServerIsTransient) {
  // A port nothing listens on (bound and closed at once would race; port 1 needs root to listen).
  auto sink = make_sink("clickhouse://k:p@127.0.0.1:1/db", SinkOptions{});
  ASSERT_TRUE(sink.ok());
  const Status st = (*sink)->open();
  EXPECT_EQ(st.kind(), ErrorKind::transient) << st.message();
  EXPECT_EQ((*sink)->ping().kind(), ErrorKind::transient);
}

// ---- Answers to Status

Status answer(long http, std::string_view body, ClickhouseFailure& f) {
  return clickhouse_error("h:1", "insert", http, body, "Couldn't connect to server", f);
}

TEST(ClickhouseErrorTest, KindsFollowTheServersCode) {
  ClickhouseFailure f;
  Status s = answer(401,
                    "Code: 193, e.displayText() = DB::Exception: Wrong password for user kiroku, e.what() = "
                    "DB::Exception\n",
                    f);
  EXPECT_EQ(s.kind(), ErrorKind::permanent);
  EXPECT_EQ(f.code, 193);
  EXPECT_EQ(s.message(), "clickhouse h:1: insert: Wrong password for user kiroku (code 193)");
  EXPECT_EQ(answer(500, "Code: 192, e.displayText() = DB::Exception: Unknown user x", f).kind(), ErrorKind::permanent);
  EXPECT_EQ(answer(500, "Code: 516, e.displayText() = DB::Exception: x: Authentication failed", f).kind(),
            ErrorKind::permanent);
  EXPECT_EQ(answer(404, "Code: 81, e.displayText() = DB::Exception: Database nodb doesn't exist", f).kind(),
            ErrorKind::permanent);
  // A server starting or stopping says so of tables it has.
  EXPECT_EQ(answer(404, "Code: 60, e.displayText() = DB::Exception: Table x doesn't exist.", f).kind(),
            ErrorKind::transient);
  EXPECT_EQ(answer(500, "Code: 252, e.displayText() = DB::Exception: Too many parts (300)", f).kind(),
            ErrorKind::transient);
  EXPECT_EQ(answer(500, "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded", f).kind(),
            ErrorKind::transient);
  EXPECT_EQ(answer(503, "", f).kind(), ErrorKind::transient);
  EXPECT_EQ(answer(403, "<html>proxy says no</html>", f).kind(), ErrorKind::permanent);
  s = answer(0, "", f);
  EXPECT_EQ(s.kind(), ErrorKind::transient);
  EXPECT_EQ(s.message(), "clickhouse h:1: insert: Couldn't connect to server");
}

TEST(ClickhouseErrorTest, RefusedValuesAreInvalidWithTheirClass) {
  ClickhouseFailure f;
  EXPECT_EQ(answer(500, "Code: 27, e.displayText() = DB::Exception: Cannot parse input", f).kind(), ErrorKind::invalid);
  EXPECT_EQ(f.reason, "incorrect_value");
  EXPECT_EQ(answer(500, "Code: 53, e.displayText() = DB::Exception: Type mismatch", f).kind(), ErrorKind::invalid);
  EXPECT_EQ(f.reason, "incorrect_value");
  EXPECT_EQ(answer(500, "Code: 69, e.displayText() = DB::Exception: out of bound", f).kind(), ErrorKind::invalid);
  EXPECT_EQ(f.reason, "out_of_range");
  EXPECT_EQ(answer(500, "Code: 131, e.displayText() = DB::Exception: Too large string size", f).kind(),
            ErrorKind::invalid);
  EXPECT_EQ(f.reason, "data_too_long");
  for (std::string_view r : {"incorrect_value", "out_of_range", "data_too_long", "null"})
    EXPECT_NE(std::find(kRejectionReasons.begin(), kRejectionReasons.end(), r), kRejectionReasons.end());
}

TEST(ClickhouseErrorTest, MessagesAreOneBoundedLine) {
  ClickhouseFailure f;
  const Status s =
      answer(500, "Code: 62, e.displayText() = DB::Exception: Syntax error\nat line 2\n" + std::string(2000, 'x'), f);
  EXPECT_EQ(s.kind(), ErrorKind::permanent);
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  EXPECT_LT(s.message().size(), 500u);
}

}  // namespace
}  // namespace kiroku
