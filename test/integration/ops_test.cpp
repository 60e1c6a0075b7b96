// ops_test.cpp - the operations endpoints of the real binary: the dashboard
// page, CPU and heap profiles, and their access rules.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

TEST(Ops, DashboardIsOneSelfContainedPage) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool"});
  auto r = http_get(k.port(), "/dashboard");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.header("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(r.body.find("metrics"), std::string::npos);
  EXPECT_EQ(r.body.find("http://"), std::string::npos) << "no external resources";
  EXPECT_EQ(r.body.find("https://"), std::string::npos) << "no external resources";
  EXPECT_EQ(k.stop(), 0);
}

TEST(Ops, ProfilesNeedTheTokenWhenOneIsSet) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--auth-token", "s3cret"});
  auto denied = http_get(k.port(), "/debug/pprof/profile?seconds=1");
  EXPECT_EQ(denied.status, 401);
  EXPECT_EQ(denied.header("WWW-Authenticate"), "Bearer");
  Client c(k.port(), 15000);
  c.send_raw("GET /debug/pprof/profile?seconds=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\r\n");
  auto ok = c.read_response();
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_GT(ok.body.size(), 0u);
  // A second profile while one runs is refused at once, and the connection lives on.
  Client first(k.port(), 15000);
  first.send_raw("GET /debug/pprof/profile?seconds=2 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\r\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  c.send_raw("GET /debug/pprof/profile?seconds=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\r\n");
  EXPECT_EQ(c.read_response().status, 409);
  EXPECT_EQ(first.read_response().status, 200);
  c.send_raw("GET /debug/pprof/profile?seconds=999 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\n\r\n");
  EXPECT_EQ(c.read_response().status, 400);
  EXPECT_EQ(c.get("/healthz").status, 200);  // the connection lives on
  EXPECT_EQ(k.stop(), 0);
}

TEST(Ops, AccessLogIsOffByDefaultAndSamplesWhenOn) {
  TempDir quiet_dir;
  {
    Kiroku k(quiet_dir.path(),
             {"--sink", "sqlite://" + quiet_dir.path() + "/e.db", "--spool-dir", quiet_dir.path() + "/spool"});
    for (int i = 0; i < 20; ++i) http_get(k.port(), "/?name=a&value=1");
    EXPECT_EQ(k.stop(), 0);
    EXPECT_EQ(k.log().find("access "), std::string::npos);
  }
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool", "--threads",
                        "1", "--access-log", "0.25"});
  Client c(k.port());
  for (int i = 0; i < 20; ++i) c.get("/?name=a&value=1");
  EXPECT_EQ(k.stop(), 0);
  const std::string log = k.log();
  std::size_t lines = 0;
  for (auto at = log.find("access GET /?name=a&value=1 204"); at != std::string::npos;
       at = log.find("access GET /?name=a&value=1 204", at + 1))
    ++lines;
  EXPECT_EQ(lines, 5u) << log;
}

TEST(Ops, CpuProfileUnderLoadNamesKirokusOwnFunctions) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool"});
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int t = 0; t < 4; ++t)
    load.emplace_back([&] {
      Client c(k.port());
      while (!stop) c.get("/?name=profiled&value=1");
    });
  Client c(k.port(), 20000);
  c.send_raw("GET /debug/pprof/profile?seconds=3 HTTP/1.1\r\nHost: t\r\n\r\n");
  auto r = c.read_response();
  stop = true;
  for (auto& t : load) t.join();
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string prof = dir.path() + "/cpu.prof";
  std::ofstream(prof, std::ios::binary) << r.body;
  const std::string cmd =
      "google-pprof --text " + std::string(KIROKU_BINARY) + " " + prof + " > " + dir.path() + "/pprof.txt 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(dir.path() + "/pprof.txt");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("kiroku::"), std::string::npos) << text.substr(0, 3000);
  EXPECT_EQ(k.stop(), 0);
}

TEST(Ops, ProfilesAnswerLoopbackWithoutAToken) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool"});
  auto heap = http_get(k.port(), "/debug/pprof/heap");
  // tcmalloc samples the heap only with TCMALLOC_SAMPLE_PARAMETER set; either
  // a profile or a clear 503 saying so, never a crash.
  EXPECT_TRUE(heap.status == 200 || heap.status == 503) << heap.status << heap.body;
  EXPECT_EQ(k.stop(), 0);
}

}  // namespace
}  // namespace kiroku::test

namespace kiroku::test {
namespace {

// The dashboard in a real browser (Debian's headless Chromium): after traffic
// every chart has drawn points, and the run leaves a screenshot behind
// (build/test-artifacts/dashboard.png) for a person to look at.
TEST(Ops, DashboardDrawsLiveDataInHeadlessChromium) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool"});
  std::atomic<bool> stop{false};
  std::thread traffic([&] {
    Client c(k.port());
    for (int i = 0; !stop; ++i) {
      c.get("/?name=dash&value=" + std::to_string(i));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  // File transfers for the file panels: a 1 MiB object up and down, over and over.
  std::thread files([&] {
    Client c(k.port());
    const std::string body(1 << 20, 'f');
    while (!stop) {
      c.send_raw("PUT /files/dash.bin HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\n\r\n" + body);
      c.read_response();
      c.get("/files/dash.bin");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const std::string out = std::string(KIROKU_BINARY_DIR) + "/test-artifacts";
  std::filesystem::create_directories(out);
  const std::string cmd = "DASHBOARD_SECONDS=5 " + std::string(KIROKU_SOURCE_DIR) +
                          "/scripts/dashboard-screenshot.sh http://127.0.0.1:" + std::to_string(k.port()) +
                          "/dashboard " + out + "/dashboard.png " + out + "/dashboard-dom.html > " + dir.path() +
                          "/chromium.log 2>&1";
  const int rc = std::system(cmd.c_str());
  stop = true;
  traffic.join();
  files.join();
  ASSERT_EQ(rc, 0) << "screenshot script failed";
  EXPECT_GT(std::filesystem::file_size(out + "/dashboard.png"), 10000u);
  std::ifstream f(out + "/dashboard-dom.html");
  const std::string dom((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Every chart reports how many points it drew; the throughput chart must have some.
  const auto at = dom.find("data-chart=\"throughput\"");
  ASSERT_NE(at, std::string::npos) << dom.substr(0, 2000);
  const auto pts = dom.find("data-points=\"", at);
  ASSERT_NE(pts, std::string::npos);
  EXPECT_GT(std::atoi(dom.c_str() + pts + 13), 1) << dom.substr(at, 300);
  // The file panels draw too, and the bytes moved show in their headline.
  for (const char* id : {"files-transfers", "files-throughput", "files-buffers", "files-errors"}) {
    const auto chart = dom.find(std::string("data-chart=\"") + id + "\"");
    ASSERT_NE(chart, std::string::npos) << id;
    const auto points = dom.find("data-points=\"", chart);
    ASSERT_NE(points, std::string::npos) << id;
    EXPECT_GT(std::atoi(dom.c_str() + points + 13), 1) << id << ": " << dom.substr(chart, 300);
  }
  EXPECT_EQ(k.stop(), 0);
}

}  // namespace
}  // namespace kiroku::test
