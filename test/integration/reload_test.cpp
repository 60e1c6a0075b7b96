// reload_test.cpp - SIGHUP on the real binary: the auth token rotated under
// load, a failed reload keeping the running values, the log level changed,
// and HUP never stopping the server (TERM does).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;

// Replaces `path` whole (write and rename), as an operator's tooling would.
void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << text;
  std::filesystem::rename(tmp, path);
}

// Polls the log until `needle` appears `count` times (at most 10 s).
bool log_shows(const Kiroku& k, const std::string& needle, int count = 1) {
  for (int i = 0; i < 200; ++i) {
    const std::string log = k.log();
    int n = 0;
    for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    if (n >= count) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

Response guarded_get(Client& c, const std::string& target, const std::string& token) {
  c.send_raw("GET " + target + " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + token + "\r\n\r\n");
  return c.read_response();
}

// Four clients, each on one keep-alive connection, alternate a listing with
// the old token, one with the new token and an event; the token file is
// replaced and SIGHUP sent in the middle. Every answer is 200/401 (listings)
// or 204 (events): none fails otherwise. On each connection the old token
// goes from 200 to 401 once and the new one from 401 to 200 once, and after
// the reload the old token is refused and the new one served.
TEST(Reload, TokenRotationUnderLoad) {
  TempDir dir;
  const std::string token_file = dir.path() + "/token";
  write_atomically(token_file, "old-token\n");
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool", "--store",
                        "file://" + dir.path() + "/objects", "--auth-token-file", token_file, "--threads", "2"});

  struct Seen {
    std::vector<int> old_token, new_token;
    long long events = 0, failures = 0;
    std::string last_failure;
  };
  constexpr int kClients = 4;
  std::vector<Seen> seen(kClients);
  std::atomic<bool> stop{false};
  std::atomic<bool> reloaded{false};
  std::atomic<int> after_reload_rounds{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kClients; ++t) {
    clients.emplace_back([&, t] {
      Client c(k.port());
      Seen& s = seen[t];
      for (int round = 0; !stop.load(); ++round) {
        const bool after = reloaded.load();
        const Response a = guarded_get(c, "/files?limit=1", "old-token");
        const Response b = guarded_get(c, "/files?limit=1", "new-token");
        c.send_raw("GET /?name=reload&value=1 HTTP/1.1\r\nHost: t\r\n\r\n");
        const Response e = c.read_response();
        s.old_token.push_back(a.status);
        s.new_token.push_back(b.status);
        if (e.status == 204) ++s.events;
        for (const Response* r : {&a, &b, &e}) {
          if (r->status == 200 || r->status == 401 || r->status == 204) continue;
          ++s.failures;
          s.last_failure = std::to_string(r->status) + " " + r->body;
        }
        if (after) after_reload_rounds.fetch_add(1);
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  std::this_thread::sleep_for(300ms);
  write_atomically(token_file, "new-token\n");
  ASSERT_EQ(::kill(k.pid(), SIGHUP), 0);
  ASSERT_TRUE(log_shows(k, "SIGHUP: configuration reloaded: auth token replaced")) << k.log();
  reloaded.store(true);
  for (int i = 0; i < 200 && after_reload_rounds.load() < 40 * kClients; ++i) std::this_thread::sleep_for(10ms);
  stop.store(true);
  for (auto& th : clients) th.join();

  long long events = 0;
  for (int t = 0; t < kClients; ++t) {
    const Seen& s = seen[t];
    EXPECT_EQ(s.failures, 0) << "client " << t << ": " << s.last_failure;
    ASSERT_FALSE(s.old_token.empty());
    // 200... then 401..., once; and the reverse for the new token.
    const auto flips = [](const std::vector<int>& v) {
      int n = 0;
      for (std::size_t i = 1; i < v.size(); ++i) n += v[i] != v[i - 1];
      return n;
    };
    EXPECT_EQ(s.old_token.front(), 200) << "client " << t;
    EXPECT_EQ(s.old_token.back(), 401) << "client " << t;
    EXPECT_EQ(flips(s.old_token), 1) << "client " << t;
    EXPECT_EQ(s.new_token.front(), 401) << "client " << t;
    EXPECT_EQ(s.new_token.back(), 200) << "client " << t;
    EXPECT_EQ(flips(s.new_token), 1) << "client " << t;
    events += s.events;
  }
  EXPECT_GT(after_reload_rounds.load(), 0);
  EXPECT_TRUE(k.running()) << "SIGHUP must not stop the server";
  EXPECT_EQ(k.stop(), 0);
  EXPECT_EQ(sqlite_count(dir.path() + "/e.db"), events);
}

// A reload that fails (the token file unreadable) logs one line and keeps
// every running value; a config file's new log level applies at once.
TEST(Reload, AFailedReloadKeepsTheRunningValuesAndTheLogLevelChanges) {
  TempDir dir;
  const std::string token_file = dir.path() + "/token";
  write_atomically(token_file, "first\n");
  const std::string config = dir.path() + "/kiroku.toml";
  const std::string common = "sink = \"sqlite://" + dir.path() + "/e.db\"\nspool-dir = \"" + dir.path() +
                             "/spool\"\nstore = \"file://" + dir.path() + "/objects\"\naccess-log = 1\n" +
                             "auth-token-file = \"" + token_file + "\"\n";
  write_atomically(config, common + "log-level = \"info\"\n");
  Kiroku k(dir.path(), {"--config", config});
  Client c(k.port());
  EXPECT_EQ(guarded_get(c, "/files", "first").status, 200);

  // The token file gone: one error line, the old token still served.
  std::filesystem::remove(token_file);
  ASSERT_EQ(::kill(k.pid(), SIGHUP), 0);
  ASSERT_TRUE(log_shows(k, "SIGHUP: reload failed")) << k.log();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(occurrences(k.log(), "reload failed"), 1) << k.log();
  EXPECT_NE(k.log().find("reload failed, the running configuration stays: auth-token-file in " + config +
                         ": cannot read '" + token_file + "'"),
            std::string::npos)
      << k.log();
  EXPECT_EQ(guarded_get(c, "/files", "first").status, 200);
  EXPECT_TRUE(k.running());

  // A new token and log level warn: the access log (info) goes quiet; an
  // option that needs a restart is named.
  write_atomically(token_file, "second\n");
  write_atomically(config, common + "log-level = \"warn\"\nbatch-max = 500\n");
  ASSERT_EQ(::kill(k.pid(), SIGHUP), 0);
  ASSERT_TRUE(log_shows(k, "log-level warn (was info)")) << k.log();
  EXPECT_NE(k.log().find("auth token replaced; changed but taking effect at the next start only: batch-max"),
            std::string::npos)
      << k.log();
  const std::size_t quiet_from = k.log().size();
  EXPECT_EQ(guarded_get(c, "/files", "first").status, 401);
  EXPECT_EQ(guarded_get(c, "/files", "second").status, 200);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(k.log().find("access GET", quiet_from), std::string::npos) << k.log().substr(quiet_from);

  // Back to info: the access log again.
  write_atomically(config, common + "log-level = \"info\"\n");
  ASSERT_EQ(::kill(k.pid(), SIGHUP), 0);
  ASSERT_TRUE(log_shows(k, "log-level info (was warn)")) << k.log();
  const int logged = occurrences(k.log(), "access GET /files 200");
  EXPECT_EQ(guarded_get(c, "/files", "second").status, 200);
  EXPECT_TRUE(log_shows(k, "access GET /files 200", logged + 1)) << k.log();
  EXPECT_TRUE(k.running());
  EXPECT_EQ(k.stop(SIGINT), 0);
}

// The CORS origins and the log format change on SIGHUP: a page origin
// refused before is served after (and the one it replaced refused), held
// answers included, and the lines after the reload are JSON.
TEST(Reload, CorsOriginsAndTheLogFormatChange) {
  TempDir dir;
  const std::string config = dir.path() + "/kiroku.toml";
  write_atomically(config, "cors-origins = \"https://a.example\"\n");
  Kiroku k(dir.path(), {"--config", config, "--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir",
                        dir.path() + "/spool", "--durability", "process"});
  Client c(k.port());
  auto from = [&](const std::string& origin) {
    c.send_raw("GET /?name=reload&value=1 HTTP/1.1\r\nHost: t\r\nOrigin: " + origin + "\r\n\r\n");
    return c.read_response();
  };
  EXPECT_EQ(from("https://a.example").status, 204);
  EXPECT_EQ(from("https://b.example").status, 403);

  write_atomically(config, "cors-origins = \"https://b.example\"\nlog-format = \"json\"\n");
  ASSERT_EQ(::kill(k.pid(), SIGHUP), 0);
  ASSERT_TRUE(log_shows(k, "CORS origins https://b.example")) << k.log();
  const std::size_t after = k.log().size();
  // Each shard takes the new policy from its queue: at most a moment later.
  Response b;
  for (int i = 0; i < 50 && (b = from("https://b.example")).status != 204; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(b.status, 204);
  EXPECT_EQ(b.header("Access-Control-Allow-Origin"), "https://b.example");
  EXPECT_EQ(from("https://a.example").status, 403);
  ASSERT_EQ(k.stop(), 0);
  // Every line written after the reload is one JSON object.
  const std::string tail = k.log().substr(after);
  int lines = 0;
  for (std::size_t at = 0, end; (end = tail.find('\n', at)) != std::string::npos; at = end + 1) {
    const std::string line = tail.substr(at, end - at);
    if (line.empty()) continue;
    ++lines;
    EXPECT_TRUE(line.starts_with("{\"time\":\"") && line.ends_with("}")) << line;
  }
  EXPECT_GT(lines, 0) << tail;
}

}  // namespace
}  // namespace kiroku::test
