// log_format_test.cpp - the text and JSON log lines, and the request id in both.
#include "ops/log_format.h"

#include <gtest/gtest.h>
#include <spdlog/details/log_msg.h>
#include <nlohmann/json.hpp>

#include <string>

#include "common/request_id.h"

namespace kiroku {
namespace {

std::string line(LogFormat format, std::string_view message, spdlog::level::level_enum level = spdlog::level::warn) {
  auto f = make_log_formatter(format);
  spdlog::details::log_msg msg(spdlog::source_loc{}, "kiroku", level, message);
  spdlog::memory_buf_t out;
  f->format(msg, out);
  return std::string(out.data(), out.size());
}

TEST(LogFormat, JsonIsOneObjectPerLineWithTheMessageEscaped) {
  const std::string l = line(LogFormat::json, "sink \"db\" down:\n\ttimeout \x01 caf\xc3\xa9 \xff");
  ASSERT_FALSE(l.empty());
  EXPECT_EQ(l.back(), '\n');
  EXPECT_EQ(l.find('\n'), l.size() - 1);  // one line
  const auto j = nlohmann::json::parse(l);
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["msg"], "sink \"db\" down:\n\ttimeout \x01 caf\xc3\xa9 \xef\xbf\xbd");
  const std::string time = j["time"];
  EXPECT_EQ(time.size(), 27u) << time;  // 2026-12-03T14:26:41.123456Z
  EXPECT_EQ(time.back(), 'Z');
  EXPECT_FALSE(j.contains("request_id"));
}

TEST(LogFormat, TheRequestBeingHandledIsNamed) {
  {
    RequestIdScope scope("abc-123");
    const auto j = nlohmann::json::parse(line(LogFormat::json, "refused"));
    EXPECT_EQ(j["request_id"], "abc-123");
    EXPECT_NE(line(LogFormat::text, "refused").find(" [req abc-123] refused"), std::string::npos);
    {
      RequestIdScope inner("other");
      EXPECT_EQ(current_request_id(), "other");
    }
    EXPECT_EQ(current_request_id(), "abc-123");
  }
  EXPECT_EQ(current_request_id(), "");
  EXPECT_EQ(line(LogFormat::text, "idle").find("[req"), std::string::npos);
}

TEST(LogFormat, ParsesItsNames) {
  LogFormat f;
  EXPECT_TRUE(parse_log_format("json", f));
  EXPECT_EQ(f, LogFormat::json);
  EXPECT_TRUE(parse_log_format("text", f));
  EXPECT_EQ(f, LogFormat::text);
  EXPECT_FALSE(parse_log_format("xml", f));
}

TEST(RequestId, UsableIdsNeedNoEscaping) {
  EXPECT_TRUE(usable_request_id("0f3a-9b"));
  EXPECT_TRUE(usable_request_id(std::string(128, 'a')));
  EXPECT_FALSE(usable_request_id(std::string(129, 'a')));
  EXPECT_FALSE(usable_request_id(""));
  EXPECT_FALSE(usable_request_id("a b"));
  EXPECT_FALSE(usable_request_id("a\"b"));
  EXPECT_FALSE(usable_request_id("a\\b"));
  EXPECT_FALSE(usable_request_id("caf\xc3\xa9"));
}

}  // namespace
}  // namespace kiroku
