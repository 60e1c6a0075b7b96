// dashboard_page_test.cpp - the dashboard page is self-contained and reads metrics the server has.
//
// What a browser does with the page is checked by scripts/dashboard-screenshot.sh
// against a running server; here only its text: one complete document, no
// external resource, and every metric name it reads registered in src/.
#include "ops/dashboard.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace kiroku {
namespace {

std::string page() { return std::string(dashboard_html()); }

std::size_t count_of(const std::string& text, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The metric names the page reads: every quoted 'kiroku_...' or 'process_...'.
std::set<std::string> metric_names(const std::string& text) {
  std::set<std::string> names;
  for (const std::string_view prefix : {"'kiroku_", "'process_"}) {
    for (std::size_t at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + 1)) {
      const std::size_t end = text.find('\'', at + 1);
      if (end == std::string::npos) break;
      names.insert(text.substr(at + 1, end - at - 1));
    }
  }
  return names;
}

std::string read_sources(const std::filesystem::path& root) {
  std::string all;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".cpp") continue;
    if (entry.path().filename() == "dashboard.cpp") continue;  // the page itself
    std::ifstream in(entry.path());
    std::stringstream s;
    s << in.rdbuf();
    all += s.str();
  }
  return all;
}

TEST(DashboardPage, IsOneCompleteDocument) {
  const std::string p = page();
  EXPECT_EQ(p.rfind("<!doctype html>", 0), 0u);
  EXPECT_NE(p.find("<meta charset=\"utf-8\">"), std::string::npos);
  EXPECT_EQ(count_of(p, "<script>"), 1u);
  EXPECT_EQ(count_of(p, "</script>"), 1u);
  EXPECT_EQ(count_of(p, "<style>"), 1u);
  EXPECT_EQ(p.substr(p.size() - 8), "</html>\n");
  EXPECT_LT(p.size(), 64u * 1024) << "one small page";
  EXPECT_EQ(kDashboardContentType, "text/html; charset=utf-8");
}

TEST(DashboardPage, LoadsNothingFromAnywhere) {
  const std::string p = page();
  // No URL with a scheme or a host: the page uses no "//" at all (block
  // comments only), which also rules out protocol-relative "//host/x".
  EXPECT_EQ(p.find("//"), std::string::npos);
  for (const std::string_view banned :
       {"http:", "https:", "src=", "href=", "url(", "@import", "<link", "<img", "<iframe", "<object", "<embed",
        "import(", "importScripts", "XMLHttpRequest", "WebSocket", "EventSource", "eval(", "new Function"}) {
    EXPECT_EQ(p.find(banned), std::string::npos) << banned;
  }
  // It fetches exactly two paths, relative to its own URL.
  EXPECT_EQ(count_of(p, "fetch("), 1u) << "one fetch call, in fetchText";
  EXPECT_EQ(count_of(p, "fetchText('"), 2u);
  EXPECT_NE(p.find("fetchText('metrics')"), std::string::npos);
  EXPECT_NE(p.find("fetchText('readyz')"), std::string::npos);
  // And says so to the browser too.
  EXPECT_NE(kDashboardHeaders.find("default-src 'none'"), std::string_view::npos);
  EXPECT_NE(kDashboardHeaders.find("connect-src 'self'"), std::string_view::npos);
  EXPECT_EQ(kDashboardHeaders.substr(kDashboardHeaders.size() - 2), "\r\n");
}

TEST(DashboardPage, MarksItsChartsForTests) {
  const std::string p = page();
  EXPECT_NE(p.find("dataset.points"), std::string::npos);
  EXPECT_NE(p.find("dataset.chart"), std::string::npos);
  EXPECT_NE(p.find("<body data-polls=\"0\" data-error=\"\">"), std::string::npos);
  for (const char* id : {"throughput", "latency", "durable", "queue", "bytes", "pool", "memory", "cpu", "errors"}) {
    EXPECT_NE(p.find(std::string("id: '") + id + "'"), std::string::npos) << id;
  }
}

TEST(DashboardPage, ReadsOnlyMetricsTheServerRegisters) {
  const std::set<std::string> names = metric_names(page());
  ASSERT_GE(names.size(), 20u);
  for (const char* expected :
       {"kiroku_http_requests_total", "kiroku_http_request_seconds", "kiroku_accept_to_durable_seconds",
        "kiroku_queue_events", "kiroku_spool_bytes", "kiroku_db_open_connections", "kiroku_db_in_use_connections",
        "kiroku_db_idle_connections", "kiroku_events_accepted_total", "kiroku_events_committed_total",
        "process_resident_memory_bytes"}) {
    EXPECT_EQ(names.count(expected), 1u) << expected;
  }
  const std::string sources = read_sources(std::filesystem::path(KIROKU_SOURCE_DIR) / "src");
  for (const std::string& name : names) {
    EXPECT_NE(sources.find('"' + name + '"'), std::string::npos)
        << name << " is read by the dashboard but registered nowhere in src/";
  }
}

}  // namespace
}  // namespace kiroku
