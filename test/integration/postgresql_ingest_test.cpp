// postgresql_ingest_test.cpp - the real binary against a real PostgreSQL (started
// by scripts/with-postgres.sh): every durability mode, an outage of the
// database under load, kill -9 and restart, a start while the database is
// down, and bad credentials.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class PostgresIngest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_POSTGRES_URL");
    ctl_ = env("KIROKU_TEST_POSTGRES_CTL");
    ASSERT_FALSE(url_.empty() || ctl_.empty())
        << "run under scripts/with-postgres.sh (KIROKU_TEST_POSTGRES_URL and KIROKU_TEST_POSTGRES_CTL)";
    static int n = 0;
    table_ = "ev_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  }

  // Runs the control script; returns its standard output.
  std::string ctl(const std::string& args) {
    std::string out;
    FILE* p = ::popen((ctl_ + " " + args).c_str(), "r");
    if (!p) return out;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
    return out;
  }
  std::string sql(const std::string& stmt) { return ctl("sql \"" + stmt + "\""); }
  long long count() { return std::atoll(sql("SELECT COUNT(*) FROM " + table_).c_str()); }

  // Every acknowledged client id is a row, and no row is stored twice.
  void expect_each_stored_once(const std::set<std::string>& acked) {
    std::istringstream rows(sql("SELECT client_id FROM " + table_));
    std::set<std::string> stored;
    std::string id;
    long long n = 0;
    while (rows >> id) {
      stored.insert(id);
      ++n;
    }
    EXPECT_EQ(n, static_cast<long long>(stored.size())) << "duplicates";
    long long missing = 0;
    for (const auto& a : acked) missing += stored.count(a) == 0;
    EXPECT_EQ(missing, 0) << "acknowledged events lost of " << acked.size();
  }

  std::vector<std::string> args(const std::string& dir, const std::string& durability) {
    return {"--sink",      url_,           "--table",   table_, "--durability",     durability,
            "--spool-dir", dir + "/spool", "--threads", "2",    "--flush-interval", "20ms"};
  }

  std::string url_, ctl_, table_;
};

TEST_F(PostgresIngest, EveryDurabilityModeStoresExactlyTheAcceptedEvents) {
  for (const char* mode : {"none", "process", "fsync", "sink"}) {
    SCOPED_TRACE(mode);
    SetUp();  // a fresh table per mode
    TempDir dir;
    Kiroku k(dir.path(), args(dir.path(), mode));
    Sent sent;
    send_mix(k.port(), sent, 8, 100);
    EXPECT_EQ(k.stop(), 0) << k.log();
    EXPECT_EQ(count(), sent.accepted.load());
    std::map<std::string, long long> got;
    std::istringstream rows(sql("SELECT name, SUM(value) FROM " + table_ + " GROUP BY name"));
    std::string name;
    long long sum;
    while (rows >> name >> sum) got[name] = sum;
    EXPECT_EQ(got, sent.expected);
  }
}

TEST_F(PostgresIngest, DatabaseOutageUnderLoadLosesNothingAndMemoryStaysBounded) {
  TempDir dir;
  auto a = args(dir.path(), "process");
  a.insert(a.end(), {"--queue-max-bytes", "4MiB"});
  Kiroku k(dir.path(), a);
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::set<std::string> acked;
  std::atomic<long long> errors{0};
  std::vector<std::thread> load;
  for (int c = 0; c < 4; ++c)
    load.emplace_back([&, c] {
      Client client(k.port(), 5000);
      for (int i = 0; !stop; ++i) {
        const std::string id = std::to_string(c) + "-" + std::to_string(i);
        auto r = client.get("/?name=outage&value=1&id=" + id);
        if (r.status == 204) {
          std::lock_guard l(mu);
          acked.insert(id);
        } else {
          ++errors;
        }
        // About 4 x 1000 requests/s: enough to fill many batches, bounded in size.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ctl("stop");
  long long peak_rss = 0;
  bool not_ready_seen = false;
  for (int i = 0; i < 120; ++i) {  // 12 s of outage
    peak_rss = std::max(peak_rss, k.rss_bytes());
    if (i % 10 == 0) {  // ready while the spool has room, with the outage in the answer
      const Response r = http_get(k.port(), "/readyz");
      if (r.status == 200 && r.body.find("\"sink\":\"unavailable") != std::string::npos) not_ready_seen = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const auto during = acked.size();
  ctl("start");
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(errors.load(), 0) << "requests not answered 204 while the spool had room";
  EXPECT_TRUE(not_ready_seen) << "/readyz should stay 200 and report the sink outage";
  EXPECT_GT(during, 10000u);
  EXPECT_LT(peak_rss, 128ll << 20) << "RSS during the outage";
  expect_each_stored_once(acked);
  std::printf("outage: %zu events acknowledged (%zu during 12 s without the database), peak RSS %lld MiB\n",
              acked.size(), during, peak_rss >> 20);
}

TEST_F(PostgresIngest, KillNineUnderLoadThenRestartStoresEveryAcknowledgedEventOnce) {
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
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
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

// Started while PostgreSQL is down: one instance with --instance, one that
// remembers its leased number from an earlier run; both serve and spool, stay
// ready, and write the backlog once the database is back. A third, with a fresh
// spool directory and no number, waits without listening until it can lease one.
TEST_F(PostgresIngest, StartedWhileTheDatabaseIsDownServesFromTheSpool) {
  TempDir fixed_dir, leased_dir, fresh_dir;
  {  // an earlier run leaves its number in the spool directory
    Kiroku first(leased_dir.path(), args(leased_dir.path(), "process"));
    EXPECT_EQ(first.stop(), 0) << first.log();
  }
  ctl("stop");
  auto fixed_args = args(fixed_dir.path(), "process");
  fixed_args.insert(fixed_args.end(), {"--instance", "200"});
  Kiroku fixed(fixed_dir.path(), fixed_args);
  Kiroku leased(leased_dir.path(), args(leased_dir.path(), "process"));
  std::set<std::string> acked;
  for (Kiroku* k : {&fixed, &leased}) {
    Client c(k->port());
    for (int i = 0; i < 200; ++i) {
      const std::string id = std::to_string(k->port()) + "-" + std::to_string(i);
      if (c.get("/?name=down&value=" + std::to_string(i) + "&id=" + id).status == 204) acked.insert(id);
    }
    const Response ready = c.get("/readyz");
    EXPECT_EQ(ready.status, 200) << ready.body;
    EXPECT_NE(ready.body.find("\"sink\":\"unavailable"), std::string::npos) << ready.body;
  }
  EXPECT_EQ(acked.size(), 400u);
  // No number to keep: not listening while the database is down.
  const int fresh_port = free_port();
  const std::string cmd = std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:" + std::to_string(fresh_port) +
                          " --sink '" + url_ + "' --table " + table_ + " --spool-dir " + fresh_dir.path() +
                          "/spool > " + fresh_dir.path() + "/kiroku.log 2>&1 & echo $!";
  FILE* p = ::popen(cmd.c_str(), "r");
  int fresh_pid = 0;
  ASSERT_EQ(std::fscanf(p, "%d", &fresh_pid), 1);
  ::pclose(p);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_EQ(http_get(fresh_port, "/healthz").status, 0) << "listening without an instance number";
  ctl("start");
  int fresh_status = 0;
  for (int i = 0; i < 100 && fresh_status != 200; ++i) {
    fresh_status = http_get(fresh_port, "/healthz").status;
    if (fresh_status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(fresh_status, 200) << "the fresh instance should listen once it has a number";
  for (Kiroku* k : {&fixed, &leased})
    for (int t = 0; t < 150 && metric_value(k->port(), "kiroku_queue_events") > 0; ++t)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // Renewed (confirmed) within a tick of the lease thread once the database answers.
  for (Kiroku* k : {&fixed, &leased})
    for (int t = 0; t < 100 && metric_value(k->port(), "kiroku_instance_confirmed") != 1; ++t)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(metric_value(fixed.port(), "kiroku_instance"), 200);
  EXPECT_EQ(metric_value(fixed.port(), "kiroku_instance_confirmed"), 1);
  EXPECT_EQ(metric_value(leased.port(), "kiroku_instance_confirmed"), 1);
  const double a = metric_value(leased.port(), "kiroku_instance");
  const double b = metric_value(fresh_port, "kiroku_instance");
  EXPECT_NE(a, b);
  EXPECT_NE(b, 200);
  ::kill(fresh_pid, SIGTERM);
  EXPECT_EQ(fixed.stop(), 0) << fixed.log();
  EXPECT_EQ(leased.stop(), 0) << leased.log();
  expect_each_stored_once(acked);
  for (int i = 0; i < 50 && ::kill(fresh_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
}

TEST_F(PostgresIngest, BadCredentialsAndMissingDatabaseFailAtStartWithOneLine) {
  TempDir dir;
  const std::string port = env("KIROKU_TEST_POSTGRES_PORT");
  auto run = [&](const std::string& sink) {
    const std::string cmd = std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:0 --spool-dir " + dir.path() +
                            "/spool --sink '" + sink + "' 2>" + dir.path() + "/err.txt";
    const int status = std::system(cmd.c_str());
    std::ifstream f(dir.path() + "/err.txt");
    std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return std::make_pair(WEXITSTATUS(status), all);
  };
  auto [code, err] = run("postgresql://kiroku:wrong@127.0.0.1:" + port + "/kiroku_test");
  EXPECT_EQ(code, 2) << err;
  EXPECT_NE(err.find("--sink"), std::string::npos) << err;
  EXPECT_NE(err.find("password authentication failed"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(err.find("wrong"), std::string::npos) << "the password must not be printed: " << err;
  auto [code2, err2] = run("postgres://kiroku:kiroku@127.0.0.1:" + port + "/no_such_db");
  EXPECT_EQ(code2, 2) << err2;
  EXPECT_NE(err2.find("no_such_db"), std::string::npos) << err2;
  EXPECT_EQ(std::count(err2.begin(), err2.end(), '\n'), 1) << err2;
}

}  // namespace
}  // namespace kiroku::test
