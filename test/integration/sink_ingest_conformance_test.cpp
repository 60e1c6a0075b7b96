// sink_ingest_conformance_test.cpp - the same promises through the real binary
// for every sink: SQLite, MariaDB (scripts/with-mariadb.sh), PostgreSQL
// (scripts/with-postgres.sh) and ClickHouse on two shards
// (scripts/with-clickhouse.sh). Rows are counted with each database's own
// client (the wrappers' CTL scripts; ClickHouse with FINAL, over both shards).
//
// Every durability mode stores exactly what was accepted; a table that is
// missing is created; a client id sent twice is one row; kill -9 and a
// restart store each acknowledged event once; bad credentials stop the start
// with one line and exit 2; and (the database servers) the database stopped
// for 20 s under load loses nothing while memory stays bounded. The per-sink
// test files keep what only one sink has (TLS modes, SQLSTATE classes, shard
// choice...).
//
// The outage test stops and starts the shared servers: run the integration
// tests one at a time (as scripts/test.sh does).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;

struct Backend {
  std::string name;
  const char* url_env;  // nullptr: SQLite in the test's directory
  const char* ctl_env;
  const char* script;
};

std::string getenv_or_empty(const char* name) {
  const char* v = name ? std::getenv(name) : nullptr;
  return v ? v : "";
}

// Runs a shell command; its standard output, trimmed.
std::string sh(const std::string& cmd) {
  std::string out;
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

class SinkIngest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    const Backend& b = GetParam();
    if (b.url_env) {
      url_ = getenv_or_empty(b.url_env);
      ctl_ = getenv_or_empty(b.ctl_env);
      ASSERT_FALSE(url_.empty() || ctl_.empty()) << b.url_env << " is not set: run under " << b.script;
    }
    static std::mt19937_64 rng{std::random_device{}()};
    table_ = "ingest_" + std::to_string(rng() % 1000000000);
  }

  std::string sink_url(const std::string& dir) const { return url_.empty() ? "sqlite://" + dir + "/e.db" : url_; }

  std::vector<std::string> args(const std::string& dir, const std::string& durability) const {
    return {"--sink",      sink_url(dir),  "--table",          table_, "--durability", durability,
            "--spool-dir", dir + "/spool", "--flush-interval", "50ms"};
  }

  // Rows in the table now (ClickHouse: as a query with FINAL sees them, all shards).
  long long rows(const std::string& dir) const {
    const std::string& n = GetParam().name;
    if (n == "sqlite") return sqlite_count(dir + "/e.db", table_);
    if (n == "mariadb") return std::atoll(sh(ctl_ + " sql 'SELECT COUNT(*) FROM kiroku_test." + table_ + "'").c_str());
    if (n == "postgresql") return std::atoll(sh(ctl_ + " sql 'SELECT COUNT(*) FROM " + table_ + "'").c_str());
    long long total = 0;  // clickhouse
    for (int shard : {1, 2})
      total += std::atoll(
          sh(ctl_ + " sql " + std::to_string(shard) + " 'SELECT count() FROM kiroku_test." + table_ + " FINAL'")
              .c_str());
    return total;
  }

  // Polls rows() until it is `want` (at most 30 s); the last count.
  long long rows_reaching(const std::string& dir, long long want) const {
    long long n = -1;
    for (int i = 0; i < 300 && (n = rows(dir)) != want; ++i) std::this_thread::sleep_for(100ms);
    return n;
  }

  // Stops and starts the database (ClickHouse: the first shard).
  void database(const char* what) const {
    const std::string cmd = ctl_ + " " + what + (GetParam().name == "clickhouse" ? " 1" : "") + " > /dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  }

  std::string url_, ctl_, table_;
};

TEST_P(SinkIngest, EveryDurabilityModeStoresExactlyTheAcceptedEventsInATableItCreates) {
  for (const char* mode : {"none", "process", "fsync", "sink"}) {
    SetUp();  // a new table: created by kiroku
    TempDir dir;
    Kiroku k(dir.path(), args(dir.path(), mode));
    Sent sent;
    send_mix(k.port(), sent, 4, 40);
    ASSERT_EQ(k.stop(), 0) << k.log();
    EXPECT_EQ(rows_reaching(dir.path(), sent.accepted.load()), sent.accepted.load()) << mode;
  }
}

TEST_P(SinkIngest, AClientIdSentTwiceIsOneRow) {
  TempDir dir;
  Kiroku k(dir.path(), args(dir.path(), "process"));
  Client c(k.port());
  EXPECT_EQ(c.post("/events", "{\"name\":\"order\",\"value\":1,\"id\":\"order-77\"}\n").status, 202);
  EXPECT_EQ(c.get("/?name=order&value=1&id=order-77").status, 204);  // the client's retry
  EXPECT_EQ(c.post("/events", "{\"name\":\"order\",\"value\":2,\"id\":\"order-78\"}\n").status, 202);
  ASSERT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(rows_reaching(dir.path(), 2), 2);
}

TEST_P(SinkIngest, KillNineThenRestartStoresEachAcknowledgedEventOnce) {
  TempDir dir;
  auto a = args(dir.path(), "process");
  a[a.size() - 1] = "500ms";  // batches still in memory when killed
  std::atomic<long long> acked{0};
  {
    Kiroku k(dir.path(), a);
    std::atomic<bool> stop{false};
    std::vector<std::thread> load;
    for (int c = 0; c < 2; ++c)
      load.emplace_back([&, c] {
        Client client(k.port(), 5000);
        for (int i = 0; !stop; ++i) {
          if (client.get("/?name=kill&value=1&id=" + std::to_string(c) + "-" + std::to_string(i)).status == 204)
            ++acked;
          else break;  // the server is gone
        }
      });
    std::this_thread::sleep_for(1500ms);
    k.stop(SIGKILL);
    stop = true;
    for (auto& t : load) t.join();
  }
  ASSERT_GT(acked.load(), 100);
  Kiroku again(dir.path(), a);  // replays the spool
  ASSERT_EQ(again.stop(), 0) << again.log();
  // Every acknowledged event once; a request spooled whose answer the kill
  // cut off (at most one per connection) may be stored too.
  const long long stored = rows(dir.path());
  EXPECT_GE(stored, acked.load());
  EXPECT_LE(stored, acked.load() + 2);
}

TEST_P(SinkIngest, BadCredentialsStopTheStartWithOneLine) {
  TempDir dir;
  std::string bad = "sqlite:///proc/kiroku-cannot-write-here/e.db";
  if (!url_.empty()) {
    const auto scheme = url_.find("://");
    const auto at = url_.rfind('@');
    const auto colon = url_.find(':', scheme + 3);
    bad = url_.substr(0, colon < at ? colon : at) + ":not-the-password" + url_.substr(at);
  }
  const std::string cmd = std::string("timeout 60 ") + KIROKU_BINARY + " serve --listen 127.0.0.1:0 --sink '" + bad +
                          "' --table " + table_ + " --spool-dir " + dir.path() + "/spool 2>&1; echo \"exit=$?\"";
  const std::string out = sh(cmd);
  EXPECT_NE(out.find("exit=2"), std::string::npos) << out;
  const std::string message = out.substr(0, out.rfind("exit="));
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 1) << "one line:\n" << out;
  EXPECT_NE(message.find("kiroku: --sink"), std::string::npos) << out;
  EXPECT_EQ(message.find("not-the-password"), std::string::npos) << "the password leaked: " << out;
}

INSTANTIATE_TEST_SUITE_P(Sinks, SinkIngest,
                         ::testing::Values(Backend{"sqlite", nullptr, nullptr, ""},
                                           Backend{"mariadb", "KIROKU_TEST_MYSQL_URL", "KIROKU_TEST_MYSQL_CTL",
                                                   "scripts/with-mariadb.sh"},
                                           Backend{"postgresql", "KIROKU_TEST_POSTGRES_URL", "KIROKU_TEST_POSTGRES_CTL",
                                                   "scripts/with-postgres.sh"},
                                           Backend{"clickhouse", "KIROKU_TEST_CLICKHOUSE_CLUSTER_URL",
                                                   "KIROKU_TEST_CLICKHOUSE_CTL", "scripts/with-clickhouse.sh"}),
                         [](const auto& p) { return p.param.name; });

// The database servers only: SQLite is a file in the process.
class SinkOutage : public SinkIngest {};

TEST_P(SinkOutage, DatabaseOutageUnderLoadLosesNothingAndMemoryStaysBounded) {
  TempDir dir;
  auto a = args(dir.path(), "process");
  a.insert(a.end(), {"--queue-max-bytes", "4MiB"});
  Kiroku k(dir.path(), a);
  std::atomic<bool> stop{false};
  std::atomic<long long> acked{0}, errors{0};
  std::vector<std::thread> load;
  for (int c = 0; c < 4; ++c)
    load.emplace_back([&, c] {
      Client client(k.port(), 5000);
      for (int i = 0; !stop; ++i) {
        const auto r = client.get("/?name=outage&value=1&id=" + std::to_string(c) + "-" + std::to_string(i));
        (r.status == 204 ? acked : errors)++;
        std::this_thread::sleep_for(1ms);  // about 4 x 1000 requests/s
      }
    });
  std::this_thread::sleep_for(1s);
  database("stop");
  long long peak_rss = 0;
  for (int i = 0; i < 200; ++i) {  // 20 s without the database
    peak_rss = std::max(peak_rss, k.rss_bytes());
    std::this_thread::sleep_for(100ms);
  }
  const long long during = acked.load();
  database("start");
  std::this_thread::sleep_for(2s);
  stop = true;
  for (auto& t : load) t.join();
  ASSERT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(errors.load(), 0) << "requests not answered 204 while the spool had room";
  EXPECT_GT(during, 10000);
  EXPECT_LT(peak_rss, 128ll << 20) << "RSS during the outage";
  EXPECT_EQ(rows_reaching(dir.path(), acked.load()), acked.load());
}

INSTANTIATE_TEST_SUITE_P(Sinks, SinkOutage,
                         ::testing::Values(Backend{"mariadb", "KIROKU_TEST_MYSQL_URL", "KIROKU_TEST_MYSQL_CTL",
                                                   "scripts/with-mariadb.sh"},
                                           Backend{"postgresql", "KIROKU_TEST_POSTGRES_URL", "KIROKU_TEST_POSTGRES_CTL",
                                                   "scripts/with-postgres.sh"},
                                           Backend{"clickhouse", "KIROKU_TEST_CLICKHOUSE_CLUSTER_URL",
                                                   "KIROKU_TEST_CLICKHOUSE_CTL", "scripts/with-clickhouse.sh"}),
                         [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace kiroku::test
