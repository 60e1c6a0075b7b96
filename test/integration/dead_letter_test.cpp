// dead_letter_test.cpp - one bad row does not stop the pipeline: the real binary on SQLite and on
// MariaDB (scripts/with-mariadb.sh) isolates the rows the database refuses into the dead-letter
// file, stores the rest, stays ready; a table that refuses everything keeps the batch; kill -9
// while a batch is being split loses and duplicates nothing; the spool commands.
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

// Runs `kiroku ARGS` to the end; its exit status, output in `out` (stdout and stderr).
int kiroku_command(const std::string& args, std::string& out) {
  out.clear();
  FILE* p = ::popen((std::string(KIROKU_BINARY) + " " + args + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void sqlite_exec(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  char* msg = nullptr;
  const int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &msg);
  EXPECT_EQ(rc, SQLITE_OK) << (msg ? msg : "") << " in " << sql;
  sqlite3_free(msg);
  sqlite3_close(h);
}

// The kiroku table with a CHECK a client can break at will (a name of at most 5 bytes).
const char* kSqliteNarrowTable =
    "CREATE TABLE events (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, at INTEGER NOT NULL,"
    " name TEXT NOT NULL CHECK (length(name) <= 5), value INTEGER NOT NULL, client_id TEXT UNIQUE)";

// Waits until `done()` or `ms` passed; returns done().
template <typename Fn>
bool wait_for(Fn done, int ms) {
  const auto until = Clock::now() + milliseconds(ms);
  while (!done() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
  return done();
}

// Sends ok/1..3, one event named toolongname, ok/4..8, each as its own request.
void send_issue_case(int port) {
  Client c(port);
  for (int i = 1; i <= 3; ++i)
    ASSERT_EQ(c.get("/?name=ok&value=" + std::to_string(i) + "&id=ok" + std::to_string(i)).status, 204);
  ASSERT_EQ(c.get("/?name=toolongname&value=99&id=bad1").status, 204);
  for (int i = 4; i <= 8; ++i)
    ASSERT_EQ(c.get("/?name=ok&value=" + std::to_string(i) + "&id=ok" + std::to_string(i)).status, 204);
}

// The NDJSON body of `n` events, the ones at the `bad` indexes named too long.
std::string body_with_bad(int n, const std::set<int>& bad, const std::string& prefix) {
  std::string body;
  for (int i = 0; i < n; ++i) {
    body += "{\"name\":\"" + std::string(bad.count(i) ? "toolongname" : "ok") + "\",\"value\":" + std::to_string(i) +
            ",\"id\":\"" + prefix + std::to_string(i) + "\"}\n";
  }
  return body;
}

// ---------------------------------------------------------------------------
// SQLite

std::vector<std::string> sqlite_args(const TempDir& dir, const char* flush_interval = "20ms") {
  return {"--sink",           "sqlite://" + dir.path() + "/events.db",
          "--spool-dir",      dir.path() + "/spool",
          "--threads",        "1",
          "--flush-interval", flush_interval};
}

TEST(DeadLetterSqlite, OneBadRowIsDeadLetteredTheRestStoredReadinessStaysUp) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  sqlite_exec(db, kSqliteNarrowTable);
  Kiroku k(dir.path(), sqlite_args(dir));
  send_issue_case(k.port());
  ASSERT_TRUE(wait_for([&] { return sqlite_count(db) == 8; }, 10000)) << sqlite_count(db) << k.log();
  EXPECT_EQ(http_get(k.port(), "/readyz").status, 200);
  EXPECT_EQ(metric_value(k.port(), "kiroku_events_dead_lettered_total{reason=\"constraint\"}"), 1);
  const auto rows = sqlite_rows(db, "SELECT client_id FROM events ORDER BY value");
  ASSERT_EQ(rows.size(), 8u);
  for (int i = 1; i <= 8; ++i) EXPECT_EQ(rows[i - 1][0], "ok" + std::to_string(i));
  const auto dead = lines_of(read_file(dir.path() + "/spool/dead-letter.ndjson"));
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead[0].find("\"name\":\"toolongname\""), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("\"client_id\":\"bad1\""), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("\"reason\":\"constraint\""), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("CHECK constraint failed"), std::string::npos) << dead[0];
  EXPECT_EQ(k.stop(), 0) << k.log();
  std::string out;
  EXPECT_EQ(kiroku_command("spool check --spool-dir " + dir.path() + "/spool", out), 0) << out;
  EXPECT_NE(out.find("0 segments, 0 events in the spool, 1 dead-lettered"), std::string::npos) << out;
}

TEST(DeadLetterSqlite, TenThousandRowsWithThreeBadCostTenTransactions) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  sqlite_exec(db, kSqliteNarrowTable);
  auto args = sqlite_args(dir, "2s");
  args.insert(args.end(), {"--batch-max", "10000"});
  Kiroku k(dir.path(), args);
  const double writes0 = metric_value(k.port(), "kiroku_sink_writes_total");
  Client c(k.port());
  ASSERT_EQ(c.post("/events", body_with_bad(10'000, {10, 5000, 9990}, "e")).status, 202);
  ASSERT_TRUE(wait_for([&] { return sqlite_count(db) == 9997; }, 15000)) << sqlite_count(db) << k.log();
  const double writes = metric_value(k.port(), "kiroku_sink_writes_total") - writes0;
  std::printf("FIGURE dead_letter sqlite rows=10000 bad=3 sink_transactions=%.0f\n", writes);
  std::fflush(stdout);
  // SQLite names the refused row: the whole, then per refused row the rows
  // before it, it alone, and the rows after it (bisection took 64).
  EXPECT_LE(writes, 10);
  EXPECT_EQ(lines_of(read_file(dir.path() + "/spool/dead-letter.ndjson")).size(), 3u);
  EXPECT_EQ(http_get(k.port(), "/readyz").status, 200);
  EXPECT_EQ(k.stop(), 0) << k.log();
}

TEST(DeadLetterSqlite, ATableThatRefusesEveryRowKeepsTodaysBehaviour) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  // Every row breaks the CHECK: the table is at fault, not the data.
  sqlite_exec(db,
              "CREATE TABLE events (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, at INTEGER NOT NULL,"
              " name TEXT NOT NULL CHECK (length(name) > 100), value INTEGER NOT NULL, client_id TEXT UNIQUE)");
  auto args = sqlite_args(dir);
  args.insert(args.end(), {"--shutdown-timeout", "1s"});
  Kiroku k(dir.path(), args);
  Client c(k.port());
  ASSERT_EQ(c.post("/events", body_with_bad(40, {}, "all")).status, 202);
  ASSERT_TRUE(wait_for([&] { return http_get(k.port(), "/readyz").status == 503; }, 10000)) << k.log();
  const Response r = http_get(k.port(), "/readyz");
  EXPECT_NE(r.body.find("the table is at fault"), std::string::npos) << r.body;
  EXPECT_EQ(sqlite_count(db), 0);
  EXPECT_EQ(read_file(dir.path() + "/spool/dead-letter.ndjson"), "");
  EXPECT_EQ(k.stop(), 0) << k.log();
  // The events wait in the spool, whole, for the table to be fixed.
  std::string out;
  EXPECT_EQ(kiroku_command("spool dump --spool-dir " + dir.path() + "/spool", out), 0) << out;
  EXPECT_EQ(lines_of(out).size(), 40u) << out;
  EXPECT_NE(out.find("\"source\":\"spool\""), std::string::npos);
  // A dropped column: the same, with the database's own reason.
  TempDir dir2;
  const std::string db2 = dir2.path() + "/events.db";
  Kiroku k2(dir2.path(), sqlite_args(dir2));
  ASSERT_EQ(Client(k2.port()).get("/?name=a&value=1").status, 204);
  ASSERT_TRUE(wait_for([&] { return sqlite_count(db2) == 1; }, 10000));
  sqlite_exec(db2, "ALTER TABLE events DROP COLUMN at");
  ASSERT_EQ(Client(k2.port()).get("/?name=a&value=2").status, 204);
  ASSERT_TRUE(wait_for([&] { return http_get(k2.port(), "/readyz").status == 503; }, 10000)) << k2.log();
  EXPECT_NE(http_get(k2.port(), "/readyz").body.find("has no column named at"), std::string::npos);
  EXPECT_EQ(read_file(dir2.path() + "/spool/dead-letter.ndjson"), "");
  k2.kill9();
}

TEST(DeadLetterSqlite, SpoolCommandsRefuseALiveServerAndReplayAfterTheTableIsFixed) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  sqlite_exec(db,
              "CREATE TABLE events (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, at INTEGER NOT NULL,"
              " name TEXT NOT NULL, value INTEGER NOT NULL, client_id TEXT UNIQUE);"
              "CREATE TRIGGER short_names BEFORE INSERT ON events WHEN length(NEW.name) > 5"
              " BEGIN SELECT RAISE(ABORT, 'name too long'); END");
  Kiroku k(dir.path(), sqlite_args(dir));
  send_issue_case(k.port());
  ASSERT_TRUE(wait_for([&] { return sqlite_count(db) == 8; }, 10000)) << k.log();
  std::string out;
  for (const char* cmd : {"check", "dump", "replay"}) {
    EXPECT_EQ(kiroku_command(
                  std::string("spool ") + cmd + " --spool-dir " + dir.path() + "/spool --sink sqlite://" + db, out),
              2)
        << cmd;
    EXPECT_NE(out.find("in use by another process"), std::string::npos) << cmd << ": " << out;
  }
  EXPECT_EQ(k.stop(), 0) << k.log();
  // Still refused: kept, with the new error.
  EXPECT_EQ(kiroku_command("spool replay --spool-dir " + dir.path() + "/spool --sink sqlite://" + db, out), 0) << out;
  EXPECT_NE(out.find("0 events stored, 1 still refused"), std::string::npos) << out;
  // The table is fixed: the event is stored and leaves the file.
  sqlite_exec(db, "DROP TRIGGER short_names");
  EXPECT_EQ(kiroku_command("spool replay --spool-dir " + dir.path() + "/spool --sink sqlite://" + db, out), 0) << out;
  EXPECT_NE(out.find("1 events stored, 0 still refused, 0 left"), std::string::npos) << out;
  EXPECT_EQ(sqlite_count(db), 9);
  EXPECT_EQ(sqlite_rows(db, "SELECT value FROM events WHERE client_id = 'bad1'").at(0).at(0), "99");
  EXPECT_EQ(read_file(dir.path() + "/spool/dead-letter.ndjson"), "");
}

TEST(DeadLetterSqlite, KillNineWhileABatchIsSplitLosesNothingAndDuplicatesNothing) {
  constexpr int kRuns = 8;
  constexpr int kEvents = 4000;
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  sqlite_exec(db, kSqliteNarrowTable);
  auto args = sqlite_args(dir, "1s");
  // fsync: every split transaction syncs, so the split lasts long enough to be cut.
  args.insert(args.end(), {"--durability", "fsync", "--batch-max", "10000"});
  std::set<int> bad_index;
  for (int i = 37; i < kEvents; i += 397) bad_index.insert(i);  // 10 per batch
  std::set<std::string> acked_good, acked_bad;
  std::mt19937 rng(12345);
  int cut_mid_split = 0;
  for (int run = 0; run < kRuns; ++run) {
    Kiroku k(dir.path(), args);
    const std::string prefix = "r" + std::to_string(run) + "-";
    Client c(k.port(), 30000);
    const double w0 = metric_value(k.port(), "kiroku_sink_writes_total");
    ASSERT_EQ(c.post("/events", body_with_bad(kEvents, bad_index, prefix)).status, 202) << k.log();
    for (int i = 0; i < kEvents; ++i) (bad_index.count(i) ? acked_bad : acked_good).insert(prefix + std::to_string(i));
    // Kill once the isolation has made some (random) progress: it takes
    // 1 + 3 x 10 transactions (the rows before each refused one, it, the rest).
    const double target = w0 + 1 + static_cast<double>(rng() % 12);
    wait_for([&] { return metric_value(k.port(), "kiroku_sink_writes_total") >= target; }, 20000);
    cut_mid_split += metric_value(k.port(), "kiroku_events_dead_lettered_total{reason=\"constraint\"}") <= 0;
    k.kill9();
  }
  {
    Kiroku k(dir.path(), args);  // replays what was left, then stops cleanly
    EXPECT_EQ(k.stop(), 0) << k.log();
  }
  const auto rows = sqlite_rows(db, "SELECT client_id FROM events");
  std::multiset<std::string> stored;
  for (const auto& r : rows) stored.insert(r[0]);
  std::size_t lost = 0, dup = 0;
  for (const auto& id : acked_good) lost += stored.count(id) == 0;
  for (const auto& id : stored) dup += stored.count(id) > 1;
  std::multiset<std::string> dead;
  for (const auto& line : lines_of(read_file(dir.path() + "/spool/dead-letter.ndjson"))) {
    const auto p = line.find("\"client_id\":\"");
    ASSERT_NE(p, std::string::npos) << line;
    dead.insert(line.substr(p + 13, line.find('"', p + 13) - p - 13));
  }
  std::size_t dead_lost = 0, dead_dup = 0;
  for (const auto& id : acked_bad) dead_lost += dead.count(id) == 0;
  for (const auto& id : dead) dead_dup += dead.count(id) > 1;
  std::printf(
      "FIGURE dead_letter kill9_mid_split runs=%d killed_before_the_dead_letter_append=%d rows=%zu "
      "lost=%zu duplicates=%zu dead_lettered=%zu dead_lost=%zu dead_duplicates=%zu\n",
      kRuns, cut_mid_split, stored.size(), lost, dup, dead.size(), dead_lost, dead_dup);
  std::fflush(stdout);
  EXPECT_GT(cut_mid_split, 0);
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(dup, 0u);
  EXPECT_EQ(stored.size(), acked_good.size());
  EXPECT_EQ(dead_lost, 0u);
  EXPECT_EQ(dead_dup, 0u);
  EXPECT_EQ(dead.size(), acked_bad.size());
}

// ---------------------------------------------------------------------------
// MariaDB

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class DeadLetterMysql : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_MYSQL_URL");
    ctl_ = env("KIROKU_TEST_MYSQL_CTL");
    ASSERT_FALSE(url_.empty() || ctl_.empty())
        << "run under scripts/with-mariadb.sh (KIROKU_TEST_MYSQL_URL and KIROKU_TEST_MYSQL_CTL)";
    static int n = 0;
    table_ = "dl_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  }
  std::string sql(const std::string& stmt) {
    std::string out;
    FILE* p = ::popen((ctl_ + " sql \"" + stmt + "\"").c_str(), "r");
    if (!p) return out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
    return out;
  }
  long long count() { return std::atoll(sql("SELECT COUNT(*) FROM kiroku_test." + table_).c_str()); }
  // The table of the issue: kiroku's columns, with `name VARCHAR(5)`.
  void create_narrow_table() {
    sql("CREATE TABLE kiroku_test." + table_ +
        " (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
        " name VARCHAR(5) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255) NULL)");
  }
  std::vector<std::string> args(const TempDir& dir, const char* flush_interval = "20ms") {
    return {"--sink",    url_, "--table",          table_,        "--spool-dir", dir.path() + "/spool",
            "--threads", "1",  "--flush-interval", flush_interval};
  }
  std::string url_, ctl_, table_;
};

TEST_F(DeadLetterMysql, OneBadRowIsDeadLetteredTheRestStoredReadinessStaysUp) {
  create_narrow_table();
  TempDir dir;
  Kiroku k(dir.path(), args(dir));
  send_issue_case(k.port());
  ASSERT_TRUE(wait_for([&] { return count() == 8; }, 10000)) << count() << k.log();
  EXPECT_EQ(http_get(k.port(), "/readyz").status, 200);
  EXPECT_EQ(metric_value(k.port(), "kiroku_events_dead_lettered_total{reason=\"data_too_long\"}"), 1);
  EXPECT_EQ(sql("SELECT GROUP_CONCAT(client_id ORDER BY value) FROM kiroku_test." + table_),
            "ok1,ok2,ok3,ok4,ok5,ok6,ok7,ok8\n");
  const auto dead = lines_of(read_file(dir.path() + "/spool/dead-letter.ndjson"));
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead[0].find("\"name\":\"toolongname\""), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("\"reason\":\"data_too_long\""), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("Data too long for column"), std::string::npos) << dead[0];
  EXPECT_NE(dead[0].find("(1406)"), std::string::npos) << dead[0];
  EXPECT_EQ(k.stop(), 0) << k.log();
  // The table is widened: replay stores the event.
  sql("ALTER TABLE kiroku_test." + table_ + " MODIFY name VARCHAR(255) NOT NULL");
  std::string out;
  EXPECT_EQ(
      kiroku_command("spool replay --spool-dir " + dir.path() + "/spool --sink " + url_ + " --table " + table_, out), 0)
      << out;
  EXPECT_NE(out.find("1 events stored, 0 still refused, 0 left"), std::string::npos) << out;
  EXPECT_EQ(count(), 9);
}

TEST_F(DeadLetterMysql, TenThousandRowsWithThreeBadCostTenTransactions) {
  create_narrow_table();
  TempDir dir;
  auto a = args(dir, "2s");
  a.insert(a.end(), {"--batch-max", "10000"});
  Kiroku k(dir.path(), a);
  const double writes0 = metric_value(k.port(), "kiroku_sink_writes_total");
  const long long com0 = std::atoll(sql("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                                        " WHERE VARIABLE_NAME = 'COM_INSERT'")
                                        .c_str());
  Client c(k.port());
  ASSERT_EQ(c.post("/events", body_with_bad(10'000, {10, 5000, 9990}, "e")).status, 202);
  ASSERT_TRUE(wait_for([&] { return count() == 9997; }, 15000)) << count() << k.log();
  const double writes = metric_value(k.port(), "kiroku_sink_writes_total") - writes0;
  const long long com = std::atoll(sql("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS"
                                       " WHERE VARIABLE_NAME = 'COM_INSERT'")
                                       .c_str()) -
                        com0;
  std::printf(
      "FIGURE dead_letter mariadb rows=10000 bad=3 sink_transactions=%.0f com_insert_delta=%lld "
      "(global counter: other tests running at the same time add to it)\n",
      writes, com);
  std::fflush(stdout);
  // "Data too long ... at row N" names the row: 1 + 3 per refused row.
  EXPECT_LE(writes, 10);
  EXPECT_EQ(lines_of(read_file(dir.path() + "/spool/dead-letter.ndjson")).size(), 3u);
  EXPECT_EQ(http_get(k.port(), "/readyz").status, 200);
  EXPECT_EQ(k.stop(), 0) << k.log();
}

TEST_F(DeadLetterMysql, ADroppedColumnKeepsTodaysBehaviourAndRecovers) {
  TempDir dir;
  Kiroku k(dir.path(), args(dir));
  ASSERT_EQ(Client(k.port()).get("/?name=a&value=1&id=c1").status, 204);
  ASSERT_TRUE(wait_for([&] { return count() == 1; }, 10000)) << k.log();
  sql("ALTER TABLE kiroku_test." + table_ + " DROP COLUMN at");
  for (int i = 2; i <= 5; ++i)
    ASSERT_EQ(Client(k.port()).get("/?name=a&value=" + std::to_string(i) + "&id=c" + std::to_string(i)).status, 204);
  ASSERT_TRUE(wait_for([&] { return http_get(k.port(), "/readyz").status == 503; }, 10000)) << k.log();
  EXPECT_NE(http_get(k.port(), "/readyz").body.find("Unknown column"), std::string::npos);
  EXPECT_EQ(read_file(dir.path() + "/spool/dead-letter.ndjson"), "");
  sql("ALTER TABLE kiroku_test." + table_ + " ADD COLUMN at BIGINT NOT NULL DEFAULT 0");
  ASSERT_TRUE(wait_for([&] { return count() == 5; }, 20000)) << count() << k.log();
  EXPECT_TRUE(wait_for([&] { return http_get(k.port(), "/readyz").status == 200; }, 5000));
  EXPECT_EQ(read_file(dir.path() + "/spool/dead-letter.ndjson"), "");
  EXPECT_EQ(k.stop(), 0) << k.log();
}

}  // namespace
}  // namespace kiroku::test
