// duration_test.cpp - the one duration parser of flags and config files.
#include "common/duration.h"

#include <gtest/gtest.h>

namespace kiroku {
namespace {

using namespace std::chrono_literals;

TEST(Duration, Units) {
  for (const BareNumber bare : {BareNumber::refused, BareNumber::seconds}) {
    EXPECT_EQ(*parse_duration("500ms", bare), 500ms);
    EXPECT_EQ(*parse_duration("10s", bare), 10s);
    EXPECT_EQ(*parse_duration("1.5s", bare), 1500ms);
    EXPECT_EQ(*parse_duration(" 1m\t", bare), 60s);
    EXPECT_EQ(*parse_duration("2h", bare), 7200s);
    EXPECT_EQ(*parse_duration("250us", bare), 250us);
    EXPECT_EQ(*parse_duration("7ns", bare), 7ns);
    for (const char* bad : {"", "s", "abc", "10x", "-1s", "1e30h", "1e3s", "0x10s", "inf", "nans"})
      EXPECT_FALSE(parse_duration(bad, bare).ok()) << bad;
  }
  EXPECT_EQ(*parse_duration("3", BareNumber::seconds), 3s);
  auto refused = parse_duration("3", BareNumber::refused);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("without a unit"), std::string::npos);
}

}  // namespace
}  // namespace kiroku
