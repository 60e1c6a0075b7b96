// json_events_test.cpp - POST /events bodies: NDJSON, arrays, and every error.
#include "ingest/json_events.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kiroku {
namespace {

struct Parsed {
  std::vector<std::string> names;
  std::vector<std::int64_t> values;
  std::vector<std::int64_t> ats;
  std::vector<std::string> ids;
  std::string error;
};

Parsed parse(JsonEventParser& p, std::string_view body) {
  Parsed r;
  r.error = p.parse(body, [&](const EventInput& e) {
    r.names.emplace_back(e.name);
    r.values.push_back(e.value);
    r.ats.push_back(e.at_us.value_or(-1));
    r.ids.emplace_back(e.client_id);
    return true;
  });
  return r;
}

TEST(JsonEvents, Ndjson) {
  JsonEventParser p;
  auto r =
      parse(p, "{\"name\":\"a\",\"value\":1}\n\n{\"value\":-2,\"name\":\"b\",\"at\":1714564800123,\"id\":\"k1\"}\r\n");
  EXPECT_EQ(r.error, "");
  ASSERT_EQ(r.names.size(), 2u);
  EXPECT_EQ(r.names[1], "b");
  EXPECT_EQ(r.values[1], -2);
  EXPECT_EQ(r.ats[1], 1714564800123000);
  EXPECT_EQ(r.ids[1], "k1");
  EXPECT_EQ(r.ats[0], -1);
}

TEST(JsonEvents, Array) {
  JsonEventParser p;
  auto r = parse(p, R"( [ {"name":"\u8a18\u9332","value":9223372036854775807,"at":"2024-05-01T12:00:00Z"},
                          {"name":"x","value":0,"id":42,"extra":{"ignored":[1,2]}} ] )");
  EXPECT_EQ(r.error, "");
  ASSERT_EQ(r.names.size(), 2u);
  EXPECT_EQ(r.names[0], "\xE8\xA8\x98\xE9\x8C\xB2");
  EXPECT_EQ(r.values[0], INT64_MAX);
  EXPECT_EQ(r.ats[0], 1714564800LL * 1000000);
  EXPECT_EQ(r.ids[1], "42");
  EXPECT_EQ(parse(p, "[]").error, "");
}

TEST(JsonEvents, Huge) {
  JsonEventParser p;
  std::string body;
  for (int i = 0; i < 100000; ++i)
    body += "{\"name\":\"n" + std::to_string(i % 100) + "\",\"value\":" + std::to_string(i) + "}\n";
  auto r = parse(p, body);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.values.size(), 100000u);
  EXPECT_EQ(r.values.back(), 99999);
}

TEST(JsonEvents, ErrorsNameTheEventAndField) {
  JsonEventParser p;
  EXPECT_EQ(parse(p, "").error, "body: no events (send NDJSON or a JSON array)");
  EXPECT_EQ(parse(p, "  \n ").error, "body: no events (send NDJSON or a JSON array)");
  EXPECT_EQ(parse(p, "{\"name\":\"a\"}").error, "event 0: value: missing");
  EXPECT_EQ(parse(p, "{\"value\":1}").error, "event 0: name: missing");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":1.5}").error, "event 0: value: must be a signed 64-bit integer");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":\"1\"}").error, "event 0: value: must be a signed 64-bit integer");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":9223372036854775808}").error,
            "event 0: value: must be a signed 64-bit integer");
  EXPECT_EQ(parse(p, "{\"name\":1,\"value\":1}").error, "event 0: name: must be a string");
  EXPECT_EQ(parse(p, "{\"name\":\"\",\"value\":1}").error, "event 0: name: must not be empty");
  EXPECT_EQ(parse(p, "{\"name\":\"" + std::string(256, 'x') + "\",\"value\":1}").error,
            "event 0: name: longer than 255 bytes");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":1,\"at\":\"noon\"}").error,
            "event 0: at: must be RFC 3339 or Unix milliseconds");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":1}\n{\"name\":\"b\",\"value\":x}").error.substr(0, 8), "event 1:");
  EXPECT_EQ(parse(p, "[{\"name\":\"a\",\"value\":1},2]").error, "event 1: must be a JSON object");
  EXPECT_EQ(parse(p, "[{\"name\":\"a\",\"value\":1}").error, "body: malformed JSON");
  EXPECT_NE(parse(p, "[{\"name\":\"a\",\"value\":1}] junk").error, "");
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":1} {\"name\":\"b\",\"value\":2}").error,
            "event 0: malformed JSON (one object per line)");
  EXPECT_EQ(parse(p, "nonsense").error, "event 0: must be a JSON object");
}

TEST(JsonEvents, ControlsAndBidiOverridesAreRefusedAsInQueries) {
  JsonEventParser p;
  const std::string control = " contains a control character (U+0000..U+001F, U+007F..U+009F)";
  const std::string bidi = " contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)";
  for (const char* c : {"\\u0000", "\\n", "\\r", "\\u001b", "\\u007f", "\\u009b"}) {
    SCOPED_TRACE(c);
    EXPECT_EQ(parse(p, std::string("{\"name\":\"a") + c + "\",\"value\":1}").error, "event 0: name:" + control);
    EXPECT_EQ(parse(p, std::string("{\"name\":\"a\",\"value\":1,\"id\":\"k") + c + "\"}").error,
              "event 0: id:" + control);
  }
  for (const char* b : {"\\u202e", "\\u202a", "\\u2066", "\\u2069", "\xE2\x80\xAE"}) {
    SCOPED_TRACE(b);
    EXPECT_EQ(parse(p, std::string("{\"name\":\"") + b + "x\",\"value\":1}").error, "event 0: name:" + bidi);
    EXPECT_EQ(parse(p, std::string("{\"name\":\"a\",\"value\":1,\"id\":\"") + b + "\"}").error, "event 0: id:" + bidi);
  }
  EXPECT_EQ(parse(p, "{\"name\":\"a\",\"value\":1,\"id\":\"\"}").error, "event 0: id: must not be empty");
  Parsed ok = parse(p, "{\"name\":\"\u05e9\u200f x\",\"value\":1,\"id\":\"k \u00a0\"}");
  EXPECT_EQ(ok.error, "");
  ASSERT_EQ(ok.ids.size(), 1u);
  EXPECT_EQ(ok.ids[0], "k \xC2\xA0");
}

TEST(JsonEvents, ReusableAfterErrors) {
  JsonEventParser p;
  EXPECT_NE(parse(p, "{broken").error, "");
  auto r = parse(p, "{\"name\":\"ok\",\"value\":3}");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.values.at(0), 3);
}

}  // namespace
}  // namespace kiroku
