// clickhouse_sink_test.cpp - the ClickHouse sink against real ClickHouse
// servers (two shards, started by scripts/with-clickhouse.sh), first as a
// library (rows, replays, client ids, conflicts, leases, errors), then through
// the real binary (every durability mode, kill -9, one shard stopped under load).
//
// ClickhouseIngest.OneShardStoppedUnderLoad stops and restarts a shared
// server: run the tests one at a time (ctest's default), not in parallel.
#include "sink/clickhouse/clickhouse_sink.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"
#include "integration/harness.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

constexpr const char* kRunUnder =
    "KIROKU_TEST_CLICKHOUSE_URL is not set: run the integration tests under scripts/with-clickhouse.sh, "
    "e.g. scripts/with-clickhouse.sh ctest --test-dir build -L integration -R Clickhouse";

// Runs the control script; its standard output.
std::string ctl(const std::string& args) {
  std::string out;
  FILE* p = ::popen((env("KIROKU_TEST_CLICKHOUSE_CTL") + " " + args).c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

std::string sql(int server, const std::string& stmt) {
  return ctl("sql " + std::to_string(server) + " \"" + stmt + "\"");
}

int servers() {
  std::istringstream ports(env("KIROKU_TEST_CLICKHOUSE_PORTS"));
  int n = 0;
  for (std::string p; ports >> p;) ++n;
  return n;
}

struct Row {
  std::uint64_t id = 0;
  std::int64_t received_us = 0, at_us = 0;
  std::string name;
  std::int64_t value = 0;
  std::string client_id;  // empty: none
};

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// Event i of a varied set: multibyte and 255-byte names, quotes, tabs and NUL,
// extreme values and ids, client ids absent or of 255 bytes.
Row sample_row(std::uint64_t i) {
  Row r;
  r.id = i % 4 == 3 ? std::numeric_limits<std::uint64_t>::max() - i : 1'000'000 + i;
  r.received_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(i);
  r.at_us = i % 9 == 0 ? std::numeric_limits<std::int64_t>::min() + static_cast<std::int64_t>(i) : r.received_us - 5;
  switch (i % 6) {
    case 0: r.name = "hoge"; break;
    case 1: r.name = "計測.応答時間"; break;
    case 2: r.name = repeat("名", 85); break;
    case 3: r.name = repeat("😀", 63) + "abc"; break;
    case 4: r.name = "tab\tnew\nline\\back'quote\"pct%"; break;
    default: r.name = std::string("nul\0inside", 10); break;
  }
  r.value = i % 5 == 0 ? std::numeric_limits<std::int64_t>::min() : static_cast<std::int64_t>(i) * 7 - 3;
  if (i % 3 == 1) r.client_id = "client-" + std::to_string(i);
  if (i % 30 == 4) r.client_id = repeat("k", 250) + std::to_string(i % 100000);
  return r;
}

EventBuffer batch_of(const std::vector<Row>& rows) {
  EventBuffer b;
  for (const Row& r : rows) b.append(EventView{r.id, r.received_us, r.at_us, r.value, r.name, r.client_id});
  return b;
}

class ClickhouseSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_CLICKHOUSE_URL");
    cluster_url_ = env("KIROKU_TEST_CLICKHOUSE_CLUSTER_URL");
    ASSERT_FALSE(url_.empty() || env("KIROKU_TEST_CLICKHOUSE_CTL").empty()) << kRunUnder;
    static int n = 0;
    table_ = "ch_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  }
  void TearDown() override {
    for (int s = 1; s <= servers(); ++s) {
      sql(s, "DROP TABLE IF EXISTS kiroku_test." + table_);
      sql(s, "DROP TABLE IF EXISTS kiroku_test." + table_ + "_client_ids");
    }
  }

  std::unique_ptr<Sink> make(const std::string& url) {
    SinkOptions o;
    o.table = table_;
    auto r = make_sink(url, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? std::move(*r) : nullptr;
  }

  // Rows over every server that has the table, each event once (FINAL).
  long long count_final() {
    long long n = 0;
    for (int s = 1; s <= servers(); ++s)
      if (sql(s, "EXISTS TABLE kiroku_test." + table_) == "1\n")
        n += std::atoll(sql(s, "SELECT count() FROM kiroku_test." + table_ + " FINAL").c_str());
    return n;
  }

  std::string url_, cluster_url_, table_;
};

TEST_F(ClickhouseSinkTest, RowsRoundTripByteForByte) {
  auto sink = make(url_);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 300; ++i) rows.push_back(sample_row(i));
  EventBuffer b = batch_of(rows);
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  EXPECT_EQ(sink->last_write().stored, rows.size());
  // Read back in hex, so that every byte is compared.
  std::istringstream got(sql(1,
                             "SELECT id, received_at, at, hex(name), value, isNull(client_id), "
                             "hex(ifNull(client_id, '')) FROM kiroku_test." +
                                 table_ + " ORDER BY id"));
  std::map<std::uint64_t, Row> want;
  for (const Row& r : rows) want[r.id] = r;
  const auto hex = [](std::string_view s) {
    std::string out;
    char byte[3];
    for (unsigned char c : s) {
      std::snprintf(byte, sizeof byte, "%02X", c);
      out += byte;
    }
    return out;
  };
  std::size_t n = 0;
  for (std::string line; std::getline(got, line); ++n) {
    std::istringstream f(line);
    std::uint64_t id;
    long long received, at, value;
    std::string name, client;
    int null;
    f >> id >> received >> at >> name >> value >> null;
    std::getline(f, client);
    if (!client.empty() && client[0] == '\t') client.erase(0, 1);
    ASSERT_TRUE(want.contains(id)) << id;
    const Row& w = want[id];
    EXPECT_EQ(received, w.received_us);
    EXPECT_EQ(at, w.at_us);
    EXPECT_EQ(name, hex(w.name));
    EXPECT_EQ(value, w.value);
    EXPECT_EQ(null, w.client_id.empty() ? 1 : 0);
    EXPECT_EQ(client, hex(w.client_id));
  }
  EXPECT_EQ(n, rows.size());
  Result<std::uint64_t> max = sink->max_id();
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(*max, std::numeric_limits<std::uint64_t>::max() - 3);
  EXPECT_TRUE(sink->ping().ok());
}

TEST_F(ClickhouseSinkTest, TableIsCreatedOnEveryShardAndAWrongOneIsRefused) {
  auto sink = make(cluster_url_);
  ASSERT_TRUE(sink->open().ok());
  for (int s = 1; s <= servers(); ++s) {
    EXPECT_EQ(sql(s, "SELECT engine, sorting_key FROM system.tables WHERE database = 'kiroku_test' AND name = '" +
                         table_ + "'"),
              "ReplacingMergeTree\tid\n");
    EXPECT_EQ(sql(s, "EXISTS TABLE kiroku_test." + table_ + "_client_ids"), "1\n");
  }
  EXPECT_TRUE(sink->open().ok()) << "open() again on existing tables";
  const std::string other = table_ + "_plain";
  sql(1, "CREATE TABLE kiroku_test." + other +
             " (id UInt64, received_at Int64, at Int64, name String, value Int64, "
             "client_id Nullable(String)) ENGINE = MergeTree ORDER BY id");
  SinkOptions o;
  o.table = other;
  auto wrong = make_sink(url_, o);
  ASSERT_TRUE(wrong.ok());
  const Status s = (*wrong)->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("ReplacingMergeTree"), std::string::npos) << s.message();
  sql(1, "DROP TABLE kiroku_test." + other);
}

TEST_F(ClickhouseSinkTest, AReplayIsReportedAndLeavesOneRowUnderFinal) {
  auto sink = make(cluster_url_);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 1000; ++i) rows.push_back(sample_row(i));
  EventBuffer b = batch_of(rows);
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  EXPECT_EQ(sink->last_write().stored, 1000u);
  auto again = make(cluster_url_);  // a restarted process replaying its spool
  ASSERT_TRUE(again->write(b.view(), b.count).ok());
  EXPECT_EQ(again->last_write().replayed, 1000u);
  EXPECT_EQ(again->last_write().stored, 0u);
  EXPECT_EQ(count_final(), 1000);
  // Spread over both shards; a replayed row written twice (an answer lost after
  // the insert) is one row under FINAL.
  if (servers() >= 2) {
    for (int s = 1; s <= servers(); ++s)
      EXPECT_GT(std::atoll(sql(s, "SELECT count() FROM kiroku_test." + table_).c_str()), 300) << "server " << s;
  }
  for (int s = 1; s <= servers(); ++s)
    sql(s, "INSERT INTO kiroku_test." + table_ + " SELECT * FROM kiroku_test." + table_);
  EXPECT_EQ(count_final(), 1000);
}

// Larger than the server's default limit of 50,000 elements in a statement:
// the read-back of a large batch (--batch-max goes to 1,000,000) still runs.
TEST_F(ClickhouseSinkTest, LargeBatchesAreReadBack) {
  auto sink = make(url_);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 60'000; ++i)
    rows.push_back({(1ull << 40) + i, 1, 1, "big", 1, i % 2 == 0 ? "big-" + std::to_string(i) : std::string()});
  EventBuffer b = batch_of(rows);
  Status s = sink->write(b.view(), b.count);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(sink->last_write().stored, rows.size());
  s = sink->write(b.view(), b.count);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(sink->last_write().replayed, rows.size());
  EXPECT_EQ(count_final(), 60'000);
}

TEST_F(ClickhouseSinkTest, ClientIdsAreIdempotencyKeysFirstWins) {
  auto sink = make(cluster_url_);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> first = {
      {10, 1, 1, "a", 1, "order-1"}, {11, 1, 1, "a", 2, "order-1"}, {12, 1, 1, "a", 3, "order-2"}};
  EventBuffer b = batch_of(first);
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  EXPECT_EQ(sink->last_write().stored, 2u);
  EXPECT_EQ(sink->last_write().client_duplicates, 1u);
  // Sent again later under new ids (the client retried).
  std::vector<Row> later = {{20, 2, 2, "a", 9, "order-2"}, {21, 2, 2, "a", 9, "order-3"}};
  EventBuffer c = batch_of(later);
  ASSERT_TRUE(sink->write(c.view(), c.count).ok());
  EXPECT_EQ(sink->last_write().stored, 1u);
  EXPECT_EQ(sink->last_write().client_duplicates, 1u);
  // The first batch replayed: its stored rows are replays, the duplicate still one.
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  EXPECT_EQ(sink->last_write().replayed, 2u);
  EXPECT_EQ(sink->last_write().client_duplicates, 1u);
  EXPECT_EQ(count_final(), 3);
  long long sum = 0;
  for (int s = 1; s <= servers(); ++s)
    sum += std::atoll(sql(s, "SELECT sum(value) FROM kiroku_test." + table_ + " FINAL").c_str());
  EXPECT_EQ(sum, 1 + 3 + 9);
}

TEST_F(ClickhouseSinkTest, AnotherRowUnderTheSameIdIsAConflictHandedBack) {
  auto sink = make(url_);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows = {{100, 1, 1, "a", 1, ""}, {101, 1, 1, "b", 2, ""}};
  EventBuffer b = batch_of(rows);
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  std::vector<Row> clash = {{100, 1, 1, "a", 1, ""}, {101, 1, 1, "b", 999, ""}, {102, 1, 1, "c", 3, ""}};
  EventBuffer c = batch_of(clash);
  ASSERT_TRUE(sink->write(c.view(), c.count).ok());
  const WriteReport& r = sink->last_write();
  EXPECT_EQ(r.replayed, 1u);
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.conflicts, 1u);
  EventView e;
  std::size_t size = 0;
  ASSERT_EQ(decode_record(r.conflict_records, e, size), DecodeResult::ok);
  EXPECT_EQ(e.id, 101u);
  EXPECT_EQ(e.value, 999);
  EXPECT_EQ(sql(1, "SELECT value FROM kiroku_test." + table_ + " FINAL WHERE id = 101"), "2\n");
  EXPECT_EQ(count_final(), 3);
}

TEST_F(ClickhouseSinkTest, BadCredentialsAndUnknownDatabaseArePermanent) {
  std::string bad = url_;
  bad.replace(bad.find(":kiroku@"), 8, ":wrong@");
  auto sink = make(bad);
  Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("193"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("wrong"), std::string::npos) << "no password in messages: " << s.message();
  std::string nodb = url_;
  nodb.replace(nodb.rfind("/kiroku_test"), 12, "/no_such_db");
  s = make(nodb)->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("no_such_db"), std::string::npos) << s.message();
}

// Numbers leased at the same moment by several instances are distinct; a live
// holder's number is refused to another; a released or expired one is free.
TEST_F(ClickhouseSinkTest, InstanceLeasesAreDistinctAndExclusive) {
  ASSERT_TRUE(make(cluster_url_)->open().ok());
  constexpr int kHolders = 5;
  std::vector<std::unique_ptr<Sink>> sinks;
  for (int i = 0; i < kHolders; ++i) sinks.push_back(make(cluster_url_));
  std::vector<int> got(kHolders, -1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kHolders; ++i)
    threads.emplace_back([&, i] {
      Result<unsigned> r = sinks[i]->lease_instance("holder" + std::to_string(i), -1, 60'000);
      if (r.ok()) got[i] = static_cast<int>(*r);
      else ADD_FAILURE() << r.status().message();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<int>(got.begin(), got.end()).size(), static_cast<std::size_t>(kHolders));
  Result<unsigned> again = sinks[0]->lease_instance("holder0", -1, 60'000);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(static_cast<int>(*again), got[0]);
  Result<unsigned> clash = sinks[1]->lease_instance("intruder", got[0], 60'000);
  EXPECT_EQ(clash.status().kind(), ErrorKind::full) << clash.status().message();
  ASSERT_TRUE(sinks[0]->release_instance(static_cast<unsigned>(got[0]), "holder0").ok());
  Result<unsigned> taken = sinks[1]->lease_instance("intruder", got[0], 60'000);
  EXPECT_TRUE(taken.ok()) << taken.status().message();
  // Not renewed within the lease time (the server's clock counts seconds).
  std::this_thread::sleep_for(2100ms);
  Result<unsigned> expired = sinks[2]->lease_instance("late", got[3], 1000);
  EXPECT_TRUE(expired.ok()) << expired.status().message();
  sql(1, "ALTER TABLE kiroku_test.kiroku_instances DELETE WHERE tbl = '" + table_ + "'");
}

}  // namespace
}  // namespace kiroku

// ---- Through the real binary

namespace kiroku::test {
namespace {

class ClickhouseIngest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_CLICKHOUSE_CLUSTER_URL");
    ASSERT_FALSE(url_.empty() || env("KIROKU_TEST_CLICKHOUSE_CTL").empty()) << kRunUnder;
    static int n = 0;
    table_ = "chi_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  }

  long long count_final() {
    long long n = 0;
    for (int s = 1; s <= servers(); ++s)
      n += std::atoll(sql(s, "SELECT count() FROM kiroku_test." + table_ + " FINAL").c_str());
    return n;
  }

  // Every acknowledged client id is one row over all shards.
  void expect_each_stored_once(const std::set<std::string>& acked) {
    std::set<std::string> stored;
    long long n = 0;
    for (int s = 1; s <= servers(); ++s) {
      std::istringstream rows(sql(s, "SELECT client_id FROM kiroku_test." + table_ + " FINAL"));
      for (std::string id; rows >> id; ++n) stored.insert(id);
    }
    EXPECT_EQ(n, static_cast<long long>(stored.size())) << "duplicates under FINAL";
    long long missing = 0;
    for (const auto& a : acked) missing += stored.count(a) == 0;
    EXPECT_EQ(missing, 0) << "acknowledged events lost of " << acked.size();
  }

  // ClickHouse makes a part of every INSERT: batches of a fifth of a second
  // rather than the 20 ms the other sinks' tests use (README: ClickHouse).
  std::vector<std::string> args(const std::string& dir, const std::string& durability,
                                const std::string& flush_interval = "200ms") {
    return {"--sink",      url_,           "--table",   table_, "--durability",     durability,
            "--spool-dir", dir + "/spool", "--threads", "2",    "--flush-interval", flush_interval};
  }

  std::string url_, table_;
};

TEST_F(ClickhouseIngest, EveryDurabilityModeStoresExactlyTheAcceptedEvents) {
  for (const char* mode : {"none", "process", "fsync", "sink"}) {
    SCOPED_TRACE(mode);
    SetUp();
    TempDir dir;
    Kiroku k(dir.path(), args(dir.path(), mode, "50ms"));  // `sink` answers after each commit
    Sent sent;
    send_mix(k.port(), sent, 8, 100);
    EXPECT_EQ(k.stop(), 0) << k.log();
    EXPECT_EQ(count_final(), sent.accepted.load());
    std::map<std::string, long long> got;
    for (int s = 1; s <= servers(); ++s) {
      std::istringstream rows(sql(s, "SELECT name, sum(value) FROM kiroku_test." + table_ + " FINAL GROUP BY name"));
      std::string name;
      long long sum;
      while (rows >> name >> sum) got[name] += sum;
    }
    EXPECT_EQ(got, sent.expected);
  }
}

TEST_F(ClickhouseIngest, KillNineUnderLoadThenRestartStoresEveryAcknowledgedEventOnce) {
  TempDir dir;
  auto a = args(dir.path(), "process");
  *(std::find(a.begin(), a.end(), "--flush-interval") + 1) = "300ms";  // batches in memory when killed
  std::set<std::string> acked;
  {
    Kiroku k(dir.path(), a);
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::thread> load;
    for (int c = 0; c < 8; ++c)
      load.emplace_back([&, c] {
        Client client(k.port(), 2000);
        for (int i = 0; !stop; ++i) {
          const std::string id = std::to_string(c) + "-" + std::to_string(i);
          if (client.get("/?name=k9&value=1&id=" + id).status != 204) break;
          std::lock_guard l(mu);
          acked.insert(id);
        }
      });
    std::this_thread::sleep_for(1500ms);
    k.kill9();
    stop = true;
    for (auto& t : load) t.join();
  }
  ASSERT_GT(acked.size(), 1000u);
  {
    Kiroku k(dir.path(), a);
    EXPECT_EQ(k.stop(), 0) << k.log();
  }
  expect_each_stored_once(acked);
}

// One shard stopped for 12 s under a bounded load, then started again: the
// batches for it wait in the spool and are retried; nothing is lost or doubled.
TEST_F(ClickhouseIngest, OneShardStoppedUnderLoadLosesNothing) {
  ASSERT_GE(servers(), 2) << "needs two shards (KIROKU_CLICKHOUSE_SHARDS=2)";
  TempDir dir;
  Kiroku k(dir.path(), args(dir.path(), "process"));
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::set<std::string> acked;
  std::atomic<long long> errors{0};
  std::vector<std::thread> load;
  for (int c = 0; c < 2; ++c)
    load.emplace_back([&, c] {
      Client client(k.port(), 5000);
      for (int i = 0; !stop; ++i) {
        const std::string id = std::to_string(c) + "-" + std::to_string(i);
        if (client.get("/?name=outage&value=1&id=" + id).status == 204) {
          std::lock_guard l(mu);
          acked.insert(id);
        } else {
          ++errors;
        }
        std::this_thread::sleep_for(1ms);  // about 2 x 1000 requests/s
      }
    });
  std::this_thread::sleep_for(1s);
  const auto t0 = std::chrono::steady_clock::now();
  ctl("stop 2");
  std::printf(
      "shard 2 stopped in %lld ms\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count()));
  bool unavailable_seen = false;
  for (int i = 0; i < 12; ++i) {
    const Response r = http_get(k.port(), "/readyz");
    if (r.body.find("\"sink\":\"unavailable") != std::string::npos) unavailable_seen = true;
    std::this_thread::sleep_for(1s);
  }
  const std::size_t during = acked.size();
  EXPECT_EQ(ctl("start 2"), "");
  std::this_thread::sleep_for(2s);
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(errors.load(), 0) << "requests not answered 204 while the spool had room";
  EXPECT_TRUE(unavailable_seen) << "/readyz should report the stopped shard";
  EXPECT_GT(during, 5000u);
  expect_each_stored_once(acked);
  EXPECT_EQ(count_final(), static_cast<long long>(acked.size()));
  // The same count in one query over the cluster (README: reading every shard).
  const std::string all = "kiroku_test." + table_ + "_all";
  sql(1, "CREATE TABLE " + all + " AS kiroku_test." + table_ + " ENGINE = Distributed(kiroku, kiroku_test, " + table_ +
             ")");
  EXPECT_EQ(sql(1, "SELECT count() FROM " + all + " FINAL"), std::to_string(acked.size()) + "\n");
  sql(1, "DROP TABLE " + all);
  std::printf("one shard stopped 12 s: %zu events acknowledged, %lld rows over %d shards\n", acked.size(),
              count_final(), servers());
}

TEST_F(ClickhouseIngest, BadCredentialsFailAtStartWithOneLine) {
  TempDir dir;
  std::string bad = url_;
  bad.replace(bad.find(":kiroku@"), 8, ":wrong@");
  const std::string cmd = std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:0 --spool-dir " + dir.path() +
                          "/spool --sink '" + bad + "' 2>" + dir.path() + "/err.txt";
  const int status = std::system(cmd.c_str());
  std::ifstream f(dir.path() + "/err.txt");
  const std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(WEXITSTATUS(status), 2) << err;
  EXPECT_NE(err.find("--sink"), std::string::npos) << err;
  EXPECT_NE(err.find("Wrong password"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(err.find("wrong@"), std::string::npos) << "the password must not be printed: " << err;
}

}  // namespace
}  // namespace kiroku::test
