// browser_test.cpp - web pages send events to kiroku from a real browser
// (Debian's headless Chromium): a page from an origin in --cors-origins sends
// with fetch() (JSON, so after a CORS preflight) and with
// navigator.sendBeacon() (text/plain), and both are rows; a page from another
// origin is refused: its fetch() by the browser (the preflight gets no
// Access-Control-Allow-Origin), its beacon by kiroku (403), and nothing of
// it is stored.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fake_http.h"
#include "harness.h"

namespace kiroku::test {
namespace {

std::string chromium() {
  for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (std::filesystem::exists(b)) return b;
  return {};
}

// The page: a beacon first (it goes out at once), then a fetch() whose answer
// it reads; the outcome lands in the body's data attributes for --dump-dom.
std::string page(int kiroku_port, const std::string& tag) {
  const std::string k = "http://127.0.0.1:" + std::to_string(kiroku_port);
  return "<!doctype html><html><head><meta charset=\"utf-8\"><title>" + tag +
         "</title></head><body data-state=\"running\"><script>\n"
         "const k = '" +
         k +
         "';\n"
         "document.body.dataset.beacon = navigator.sendBeacon(k + '/events', "
         "JSON.stringify({name: '" +
         tag +
         "-beacon', value: 2})) ? 'queued' : 'not queued';\n"
         "(async () => {\n"
         "  try {\n"
         "    const r = await fetch(k + '/events', {method: 'POST', headers: {'Content-Type': 'application/json'},\n"
         "                                          body: JSON.stringify([{name: '" +
         tag +
         "-fetch', value: 1}])});\n"
         "    document.body.dataset.fetch = r.status + ' ' + (await r.text()).trim();\n"
         "  } catch (e) {\n"
         "    document.body.dataset.fetch = 'refused ' + e.name;\n"
         "  }\n"
         "  document.body.dataset.state = 'done';\n"
         "})();\n"
         "</script></body></html>";
}

// Loads url in headless Chromium until the page's network settles; the DOM.
std::string load(const std::string& browser, const std::string& url, const std::string& dir) {
  const std::string profile = dir + "/profile-" + std::to_string(std::rand());
  const std::string out = dir + "/dom.html";
  const std::string cmd = "timeout 60 " + browser +
                          " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
                          " --disable-component-update --disable-sync --disable-extensions --user-data-dir=" +
                          profile + " --virtual-time-budget=5000 --dump-dom '" + url + "' > " + out + " 2> " + dir +
                          "/chromium.log";
  std::system(cmd.c_str());
  std::ifstream f(out);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

std::string attribute(const std::string& dom, const std::string& name) {
  const std::string key = "data-" + name + "=\"";
  const auto at = dom.find(key);
  if (at == std::string::npos) return "(none)";
  const auto end = dom.find('"', at + key.size());
  return dom.substr(at + key.size(), end - at - key.size());
}

TEST(Browser, AllowedPagesSendWithFetchAndBeaconsOthersAreRefused) {
  const std::string browser = chromium();
  ASSERT_FALSE(browser.empty()) << "Debian's chromium is needed (scripts/setup.sh installs it)";
  TempDir dir;
  // Two page servers: two origins (the port is part of an origin). The pages
  // need kiroku's port and kiroku the allowed origin: the servers are bound
  // first, their pages written once kiroku runs.
  std::string allowed_html, refused_html;
  FakeHttpServer allowed([&](const FakeHttpServer::Request&, int) {
    return FakeHttpServer::Answer{"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " +
                                      std::to_string(allowed_html.size()) + "\r\nConnection: close\r\n\r\n" +
                                      allowed_html,
                                  true};
  });
  FakeHttpServer refused([&](const FakeHttpServer::Request&, int) {
    return FakeHttpServer::Answer{"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " +
                                      std::to_string(refused_html.size()) + "\r\nConnection: close\r\n\r\n" +
                                      refused_html,
                                  true};
  });
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--cors-origins", allowed.endpoint()});
  allowed_html = page(k.port(), "allowed");
  refused_html = page(k.port(), "refused");

  const std::string ok_dom = load(browser, allowed.endpoint() + "/", dir.path());
  EXPECT_EQ(attribute(ok_dom, "state"), "done") << ok_dom;
  EXPECT_EQ(attribute(ok_dom, "beacon"), "queued");
  EXPECT_EQ(attribute(ok_dom, "fetch"), "202 {&quot;accepted&quot;:1}") << ok_dom;

  const std::string no_dom = load(browser, refused.endpoint() + "/", dir.path());
  EXPECT_EQ(attribute(no_dom, "state"), "done") << no_dom;
  EXPECT_EQ(attribute(no_dom, "fetch"), "refused TypeError") << no_dom;

  // What the browser sent: the preflight and the beacon of the refused page
  // reached kiroku and were answered 403.
  EXPECT_GE(metric_value_reaching(k.port(), "kiroku_http_requests_total{route=\"events\",status=\"403\"}", 2,
                                  std::chrono::milliseconds(10000)),
            2.0);
  ASSERT_EQ(k.stop(), 0);
  const auto rows = sqlite_rows(dir.path() + "/e.db", "SELECT name, value FROM events ORDER BY name");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"allowed-beacon", "2"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"allowed-fetch", "1"}));
}

// The same rules without a browser: a held answer (durability process)
// carries the header too, a refused origin stores nothing, and without
// --cors-origins nothing changes (Origin ignored, OPTIONS a 405).
TEST(Browser, CorsAnswersWithoutABrowser) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--durability", "process", "--cors-origins", "https://a.example"});
  Client c(k.port());
  auto send = [&](const std::string& head) {
    c.send_raw(head);
    return c.read_response();
  };
  auto pre = send(
      "OPTIONS /events HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n"
      "Access-Control-Request-Method: POST\r\n\r\n");
  EXPECT_EQ(pre.status, 204);
  EXPECT_EQ(pre.header("Access-Control-Allow-Origin"), "https://a.example");
  EXPECT_EQ(pre.header("Access-Control-Allow-Methods"), "GET, POST, OPTIONS");
  auto ok = send("GET /?name=cors&value=1 HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\r\n");
  EXPECT_EQ(ok.status, 204);
  EXPECT_EQ(ok.header("Access-Control-Allow-Origin"), "https://a.example");
  EXPECT_EQ(ok.header("Vary"), "Origin");
  auto no = send("GET /pixel.gif?name=evil&value=1 HTTP/1.1\r\nHost: x\r\nOrigin: https://b.example\r\n\r\n");
  EXPECT_EQ(no.status, 403);
  EXPECT_NE(no.body.find("origin not allowed"), std::string::npos) << no.body;
  auto plain = send("GET /collect?name=cors&value=2 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(plain.status, 204);
  EXPECT_EQ(plain.header("Access-Control-Allow-Origin"), "");
  ASSERT_EQ(k.stop(), 0);
  const auto rows = sqlite_rows(dir.path() + "/e.db", "SELECT name, value FROM events ORDER BY value");
  EXPECT_EQ(rows, (std::vector<std::vector<std::string>>{{"cors", "1"}, {"cors", "2"}}));

  TempDir off_dir;
  Kiroku off(off_dir.path(), {"--sink", "sqlite://" + off_dir.path() + "/e.db"});
  Client d(off.port());
  d.send_raw("OPTIONS /events HTTP/1.1\r\nHost: x\r\nOrigin: https://a.example\r\n\r\n");
  EXPECT_EQ(d.read_response().status, 405);
  d.send_raw("GET /?name=any&value=1 HTTP/1.1\r\nHost: x\r\nOrigin: https://b.example\r\n\r\n");
  auto any = d.read_response();
  EXPECT_EQ(any.status, 204);
  EXPECT_EQ(any.header("Access-Control-Allow-Origin"), "");
  EXPECT_EQ(off.stop(), 0);
}

}  // namespace
}  // namespace kiroku::test
