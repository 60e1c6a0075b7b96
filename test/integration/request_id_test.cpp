// request_id_test.cpp - one id follows a request: the client's X-Request-Id
// (or one kiroku makes) is echoed in the answer, named in JSON errors and in
// the access log; with --log-format json every log line is one JSON object.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <sstream>
#include <string>

#include "harness.h"

namespace kiroku::test {
namespace {

TEST(RequestId, EchoedInAnswersErrorsAndTheJsonAccessLog) {
  TempDir dir;
  Kiroku k(dir.path(), {"--sink", "sqlite://" + dir.path() + "/e.db", "--spool-dir", dir.path() + "/spool",
                        "--log-format", "json", "--access-log", "1"});
  Client c(k.port());
  auto send = [&](const std::string& head) {
    c.send_raw(head);
    return c.read_response();
  };
  auto given = send("GET /?name=rid&value=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-42\r\n\r\n");
  EXPECT_EQ(given.status, 204);
  EXPECT_EQ(given.header("X-Request-Id"), "trace-42");

  // No id (or one that cannot be used as given): kiroku makes one, different each time.
  std::set<std::string> made;
  for (const char* extra : {"", "X-Request-Id: has space\r\n", ""}) {
    auto r = send(std::string("GET /collect?name=rid&value=2 HTTP/1.1\r\nHost: x\r\n") + extra + "\r\n");
    EXPECT_EQ(r.status, 204);
    const std::string id = r.header("X-Request-Id");
    EXPECT_EQ(id.size(), 16u) << id;
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos) << id;
    made.insert(id);
  }
  EXPECT_EQ(made.size(), 3u);

  auto bad = send("GET /?name=&value=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-43\r\n\r\n");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(bad.header("X-Request-Id"), "trace-43");
  const auto body = nlohmann::json::parse(bad.body);
  EXPECT_EQ(body["request_id"], "trace-43");
  EXPECT_TRUE(body.contains("error")) << bad.body;

  // An error of the engine itself (no Host: refused before any handler).
  Client raw(k.port());
  raw.send_raw("GET / HTTP/1.1\r\nX-Request-Id: trace-44\r\n\r\n");
  auto engine = raw.read_response();
  EXPECT_EQ(engine.status, 400);
  EXPECT_EQ(nlohmann::json::parse(engine.body)["request_id"], engine.header("X-Request-Id"));

  ASSERT_EQ(k.stop(), 0);
  // Every log line is a JSON object; the access lines name their request.
  std::istringstream log(k.log());
  std::string line;
  int lines = 0;
  bool saw_42 = false, saw_43 = false;
  while (std::getline(log, line)) {
    if (line.empty()) continue;
    ++lines;
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << line;
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j.contains("msg")) << line;
    if (j.value("request_id", "") == "trace-42") saw_42 = std::string(j["msg"]).starts_with("access GET /?name=rid");
    if (j.value("request_id", "") == "trace-43") saw_43 = true;
  }
  EXPECT_GT(lines, 5);
  EXPECT_TRUE(saw_42) << k.log();
  EXPECT_TRUE(saw_43);
}

}  // namespace
}  // namespace kiroku::test
