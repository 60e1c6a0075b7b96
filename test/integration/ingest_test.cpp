// ingest_test.cpp - the real binary on SQLite: every input form, every
// durability mode, bad input, limits, a graceful stop and a kill -9.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <signal.h>
#include <sys/wait.h>
#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

void expect_stored(const std::string& db, Sent& sent) {
  EXPECT_EQ(sqlite_count(db), sent.accepted.load());
  auto rows = sqlite_rows(db, "SELECT name, SUM(value) FROM events GROUP BY name");
  std::map<std::string, long long> got;
  for (auto& r : rows) got[r[0]] = std::stoll(r[1]);
  EXPECT_EQ(got, sent.expected);
  auto dup = sqlite_rows(db, "SELECT COUNT(*) - COUNT(DISTINCT id) FROM events");
  EXPECT_EQ(dup.at(0).at(0), "0");
}

class Durability : public ::testing::TestWithParam<std::string> {};

TEST_P(Durability, StoresExactlyTheAcceptedEvents) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--durability", GetParam(), "--spool-dir", dir.path() + "/spool",
                        "--threads", "2", "--flush-interval", "20ms"});
  Sent sent;
  send_mix(k.port(), sent, 16, 200);
  EXPECT_EQ(k.stop(), 0) << k.log();
  expect_stored(db, sent);
  EXPECT_NE(k.log().find("nothing left behind"), std::string::npos) << k.log();
}

INSTANTIATE_TEST_SUITE_P(Ingest, Durability, ::testing::Values("none", "process", "fsync", "sink"));

TEST(Ingest, StoredRowMatchesTheRequest) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool"});
  EXPECT_EQ(http_get(k.port(), "/?name=%E8%A8%98%E9%8C%B2&value=-42&at=2024-05-01T12:00:00.5Z&id=req-1").status, 204);
  Client c(k.port());
  auto r = c.post("/events", R"([{"name":"arr","value":9223372036854775807,"at":1714564800123,"id":"req-2"}])",
                  "application/json");
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.body, "{\"accepted\":1}\n");
  auto gif = http_get(k.port(), "/pixel.gif?name=px&value=0");
  EXPECT_EQ(gif.status, 200);
  EXPECT_EQ(gif.header("Content-Type"), "image/gif");
  EXPECT_EQ(gif.header("Cache-Control"), "no-store");
  EXPECT_EQ(gif.body.size(), 43u);
  EXPECT_EQ(k.stop(), 0);
  auto rows = sqlite_rows(db, "SELECT name, value, at, client_id, received_at > 0 FROM events ORDER BY received_at");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"\xE8\xA8\x98\xE9\x8C\xB2", "-42", "1714564800500000", "req-1", "1"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"arr", "9223372036854775807", "1714564800123000", "req-2", "1"}));
  EXPECT_EQ(rows[2][0], "px");
  EXPECT_EQ(rows[2][3], "NULL");
}

TEST(Ingest, BadInputGets4xxAndStoresNothing) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool", "--max-body-bytes", "4096",
                        "--max-header-bytes", "2048"});
  Client c(k.port());
  auto expect = [&](Response r, int status, std::string_view fragment) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("Content-Type"), "application/json");
    EXPECT_NE(r.body.find(fragment), std::string::npos) << r.body;
  };
  expect(c.get("/?name=x&value=abc"), 400, "value");
  expect(c.get("/?value=1"), 400, "name");
  expect(c.get("/collect?name=x&value=1.5"), 400, "value");
  expect(c.get("/?name=x&value=1&at=tomorrow"), 400, "at");
  expect(c.get("/?name=" + std::string(256, 'n') + "&value=1"), 400, "name");
  expect(c.post("/events", "{\"name\":\"ok\",\"value\":1}\n{\"name\":\"bad\",\"value\":\"x\"}\n"), 400,
         "event 1: value");
  expect(c.post("/events", "[{\"name\":\"ok\",\"value\":1},"), 400, "malformed");
  expect(c.post("/events", ""), 400, "no events");
  expect(c.get("/nowhere"), 404, "no such endpoint");
  auto r405 = c.post("/collect", "x");
  expect(r405, 405, "GET");
  EXPECT_EQ(r405.header("Allow"), "GET");
  expect(c.get("/events"), 405, "POST");
  // Still one healthy keep-alive connection after all that.
  EXPECT_EQ(c.get("/healthz").status, 200);

  Client big(k.port());
  expect(big.post("/events", std::string(5000, ' ')), 413, "too large");
  Client head(k.port());
  expect(head.get("/?name=x&value=1&pad=" + std::string(4000, 'p')), 431, "header");
  Client junk(k.port());
  junk.send_raw("THIS IS NOT HTTP\r\n\r\n");
  expect(junk.read_response(), 400, "malformed");
  Client smuggle(k.port());
  smuggle.send_raw(
      "POST /events HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(smuggle.read_response().status, 400);

  EXPECT_EQ(k.stop(), 0);
  EXPECT_EQ(sqlite_count(db), 0);
}

TEST(Ingest, PipelinedRequestsAnsweredInOrder) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool"});
  Client c(k.port());
  std::string burst;
  for (int i = 0; i < 50; ++i)
    burst += i % 10 == 9 ? "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n"
                         : "GET /?name=p&value=" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\n\r\n";
  ASSERT_TRUE(c.send_raw(burst));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(c.read_response().status, i % 10 == 9 ? 404 : 204) << i;
  // A request pipelined after "Connection: close" is neither answered nor stored.
  c.send_raw(
      "GET /?name=p&value=100 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
      "GET /?name=p&value=101 HTTP/1.1\r\nHost: t\r\n\r\n");
  auto last = c.read_response();
  EXPECT_EQ(last.status, 204);
  EXPECT_EQ(last.header("Connection"), "close");
  EXPECT_TRUE(c.closed_by_peer(2000));
  EXPECT_EQ(k.stop(), 0);
  EXPECT_EQ(sqlite_count(db), 46);
}

TEST(Ingest, SlowClientsAreTimedOut) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--read-timeout", "300ms", "--idle-timeout", "600ms"});
  Client slow(k.port());
  slow.send_raw("GET /?name=x&val");  // never finishes its head
  Client idle(k.port());
  Client fine(k.port());
  EXPECT_EQ(fine.get("/healthz").status, 200);
  EXPECT_TRUE(slow.closed_by_peer(3000));
  EXPECT_TRUE(idle.closed_by_peer(3000));
  EXPECT_EQ(http_get(k.port(), "/healthz").status, 200);
  EXPECT_EQ(k.stop(), 0);
}

// Keep-alive connections idle for a few seconds give their read buffers back
// (the engine parks them), so that memory serves the next connections, and
// they are served as before when they speak again. RSS does not fall (the
// allocator keeps freed pages), so the test checks that it does not grow.
TEST(Ingest, IdleConnectionsReleaseTheirBuffersAndStillServe) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--durability", "none"});
  constexpr int kBatch = 2000;
  raise_nofile_limit(2 * kBatch + 100);
  std::vector<std::unique_ptr<Client>> clients;
  auto open_batch = [&] {
    for (int i = 0; i < kBatch; ++i) {
      clients.push_back(std::make_unique<Client>(k.port()));
      ASSERT_EQ(clients.back()->get("/?name=idle&value=1").status, 204) << i;
    }
  };
  open_batch();
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // > 2 s idle: parked
  const long long before = k.rss_bytes();
  open_batch();
  const long long after = k.rss_bytes();
  // Without parking this grew by 11 MiB here; with it, by 2.4 MiB.
  std::printf("FIGURE idle-parking rss_before=%lld rss_after_2000_more=%lld\n", before, after);
  EXPECT_LT(after - before, 6ll << 20) << "before " << before << " after " << after;
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));
  for (auto& c : clients) ASSERT_EQ(c->get("/?name=idle&value=2").status, 204);
  clients.clear();
  EXPECT_EQ(k.stop(), 0);
  EXPECT_EQ(sqlite_count(dir.path() + "/e.db"), 2 * 2 * kBatch);
}

TEST(Ingest, ConnectionLimitClosesExtraConnectionsCleanly) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--max-connections", "4", "--threads", "1"});
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<Client>(k.port()));
    EXPECT_EQ(held.back()->get("/healthz").status, 200);
  }
  Client extra(k.port());
  EXPECT_TRUE(extra.closed_by_peer(2000));
  held.pop_back();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(http_get(k.port(), "/healthz").status, 200);
  EXPECT_EQ(k.stop(), 0);
}

TEST(Ingest, KillNineLosesNoAcknowledgedEventInProcessMode) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  const std::vector<std::string> args{
      "--sink",  "sqlite://" + db,   "--spool-dir", dir.path() + "/spool", "--durability",
      "process", "--flush-interval", "500ms",       "--threads",           "2"};
  std::set<std::string> acked;
  {
    Kiroku k(dir.path(), args);
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::thread> threads;
    for (int c = 0; c < 8; ++c)
      threads.emplace_back([&, c] {
        Client client(k.port(), 2000);
        for (int i = 0; !stop; ++i) {
          const std::string id = std::to_string(c) + "-" + std::to_string(i);
          auto r = client.get("/?name=k&value=1&id=" + id);
          if (r.status != 204) break;
          std::lock_guard l(mu);
          acked.insert(id);
        }
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    k.kill9();
    stop = true;
    for (auto& t : threads) t.join();
  }
  ASSERT_GT(acked.size(), 100u);
  {
    Kiroku k(dir.path(), args);  // replays the spool
    EXPECT_EQ(k.stop(), 0) << k.log();
    EXPECT_NE(k.log().find("replaying"), std::string::npos);
  }
  auto rows = sqlite_rows(db, "SELECT client_id FROM events");
  std::set<std::string> stored;
  for (auto& r : rows) stored.insert(r[0]);
  EXPECT_EQ(rows.size(), stored.size()) << "duplicates";
  for (const auto& id : acked) ASSERT_TRUE(stored.count(id)) << "acknowledged event " << id << " lost";
}

TEST(Ingest, SpoolFullAnswers503WithRetryAfterAndLosesNothing) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  {
    // Create the table, then hold the database locked so no batch commits.
    Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool"});
    EXPECT_EQ(k.stop(), 0);
  }
  sqlite3* lock = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &lock), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(lock, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool", "--spool-max-bytes", "1MiB",
                        "--flush-interval", "10ms"});
  Client c(k.port());
  long long ok = 0;
  Response r;
  for (int i = 0; i < 100000; ++i) {
    r = c.get("/?name=full&value=1");
    if (r.status != 204) break;
    ++ok;
  }
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("Retry-After"), "5");
  EXPECT_NE(r.body.find("spool full"), std::string::npos);
  EXPECT_GT(ok, 1000);
  // The writer notices within its busy wait (5 s for SQLite) and /readyz follows.
  Response ready;
  for (int i = 0; i < 100 && ready.status != 503; ++i) {
    ready = http_get(k.port(), "/readyz");
    if (ready.status != 503) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_NE(ready.body.find("sink unavailable"), std::string::npos) << ready.body;
  sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(lock);
  EXPECT_EQ(k.stop(), 0) << k.log();
  EXPECT_EQ(sqlite_count(db), ok);
}

TEST(Ingest, OperationsEndpoints) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool"});
  for (int i = 0; i < 10; ++i) http_get(k.port(), "/?name=ops&value=1");
  EXPECT_EQ(http_get(k.port(), "/healthz").status, 200);
  EXPECT_EQ(http_get(k.port(), "/readyz").status, 200);
  EXPECT_EQ(http_get(k.port(), "/nowhere").status, 404);
  {
    Client bad(k.port());
    ASSERT_TRUE(bad.send_raw("NOT HTTP AT ALL\r\n\r\n"));
    EXPECT_EQ(bad.read_response().status, 400);
  }
  auto m = http_get(k.port(), "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("kiroku_events_accepted_total 10"), std::string::npos) << m.body;
  // Answers by route and exact status, the engine's own errors included.
  EXPECT_NE(m.body.find("kiroku_http_requests_total{route=\"ingest\",status=\"204\"} 10\n"), std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("kiroku_http_requests_total{route=\"not_found\",status=\"404\"} 1\n"), std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("kiroku_http_requests_total{route=\"malformed\",status=\"400\"} 1\n"), std::string::npos)
      << m.body;
  // Every answer is timed, by route: the 10 ingests; /healthz, /readyz and
  // the harness's /healthz polls at start as operations.
  EXPECT_NE(m.body.find("kiroku_http_request_seconds_count{route=\"ingest\"} 10\n"), std::string::npos) << m.body;
  const std::string ops = "kiroku_http_request_seconds_count{route=\"operations\"} ";
  const auto at = m.body.find(ops);
  ASSERT_NE(at, std::string::npos) << m.body;
  EXPECT_GE(std::stoll(m.body.substr(at + ops.size())), 2);
  EXPECT_NE(m.body.find("kiroku_http_request_seconds_count{route=\"files_upload\"} 0\n"), std::string::npos);
  // The build, and every field of the pool's statistics.
  EXPECT_NE(m.body.find("kiroku_build_info{version=\"" KIROKU_VERSION "\"} 1\n"), std::string::npos) << m.body;
  for (const char* reason : {"max_idle", "max_idle_time", "max_lifetime"})
    EXPECT_NE(m.body.find(std::string("kiroku_db_closed_connections_total{reason=\"") + reason + "\"} 0\n"),
              std::string::npos)
        << reason;
  EXPECT_NE(m.body.find("# TYPE kiroku_accept_to_durable_seconds histogram"), std::string::npos);
  auto s = http_get(k.port(), "/stats");
  EXPECT_EQ(s.status, 200);
  EXPECT_EQ(s.body.front(), '{');
  EXPECT_EQ(k.stop(), 0);
}

TEST(Ingest, StopSignalTurnsReadyzOffWhileServingDuringTheDrainDelay) {
  TempDir dir;
  const std::string db = dir.path() + "/events.db";
  Kiroku k(dir.path(), {"--sink", "sqlite://" + db, "--spool-dir", dir.path() + "/spool", "--drain-delay", "1500ms"});
  Client c(k.port());
  EXPECT_EQ(c.get("/readyz").status, 200);
  ::kill(k.pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto r = c.get("/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("draining"), std::string::npos);
  EXPECT_EQ(c.get("/?name=late&value=1").status, 204);               // still served
  EXPECT_EQ(http_get(k.port(), "/?name=late&value=2").status, 204);  // new connections too
  EXPECT_EQ(k.stop(SIGTERM), 0) << k.log();
  EXPECT_EQ(sqlite_count(db), 2);
}

TEST(Ingest, RunningOutOfDescriptorsNeitherCrashesNorSpins) {
  TempDir dir;
  // 64 descriptors in all: the listener, the database, the spool and a few
  // clients fit; the rest of the connections below meet EMFILE in accept.
  Kiroku k(dir.path(),
           {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool", "--threads", "1"}, {},
           {"prlimit", "--nofile=64:64"});
  std::vector<std::unique_ptr<Client>> flood;
  for (int i = 0; i < 100; ++i) flood.push_back(std::make_unique<Client>(k.port(), 500));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_TRUE(k.running()) << k.log();
  flood.clear();  // descriptors come back
  Response r;
  for (int i = 0; i < 50 && r.status != 204; ++i) {
    r = http_get(k.port(), "/?name=after&value=1");
    if (r.status != 204) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(k.stop(), 0) << k.log();
  // Paused, not spinning: a handful of warnings, not thousands of lines.
  const std::string log = k.log();
  EXPECT_LT(std::count(log.begin(), log.end(), '\n'), 50) << log;
}

TEST(Ingest, BadConfigurationFailsWithOneLineAndExit2) {
  TempDir dir;
  auto run = [&](std::vector<std::string> args) {
    std::string cmd = std::string(KIROKU_BINARY) + " serve";
    for (auto& a : args) cmd += " '" + a + "'";
    cmd += " 2>" + dir.path() + "/err.txt";
    const int status = std::system(cmd.c_str());
    std::ifstream f(dir.path() + "/err.txt");
    std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return std::make_pair(WEXITSTATUS(status), all);
  };
  auto [code, err] = run({"--threads", "lots"});
  EXPECT_EQ(code, 2);
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("--threads"), std::string::npos);
  auto [code2, err2] = run({"--sink", "sqlite:///proc/forbidden/x.db"});
  EXPECT_EQ(code2, 2) << err2;
  EXPECT_NE(err2.find("--sink"), std::string::npos);
  auto [code3, err3] = run({"--durability", "eventually"});
  EXPECT_EQ(code3, 2);
  EXPECT_NE(err3.find("--durability"), std::string::npos);
}

}  // namespace
}  // namespace kiroku::test
