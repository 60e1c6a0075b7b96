// text_test.cpp - the shared text helpers: case-insensitive comparison, OWS,
// UTF-8, errno text and JSON error bodies that always parse.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include <nlohmann/json.hpp>

#include "common/text.h"

namespace kiroku {
namespace {

TEST(Text, CaseInsensitiveComparisonIsAsciiOnly) {
  EXPECT_TRUE(iequals("Content-Type", "content-type"));
  EXPECT_FALSE(iequals("Content-Type", "content-typ"));
  EXPECT_FALSE(iequals("\xC3\x89", "\xC3\xA9"));  // É and é: not ASCII letters
  EXPECT_TRUE(istarts_with("Bearer abc", "bearer "));
  EXPECT_TRUE(istarts_with("MULTIPART/form-data; boundary=x", "multipart/form-data"));
  EXPECT_FALSE(istarts_with("Bear", "bearer"));
}

TEST(Text, TrimsSpacesAndTabsOnly) {
  EXPECT_EQ(trim_ows(" \t a b \t "), "a b");
  EXPECT_EQ(trim_ows("\r\na\r\n"), "\r\na\r\n");
  EXPECT_EQ(trim_ows("   "), "");
}

TEST(Text, Utf8) {
  EXPECT_TRUE(valid_utf8("計測 ok"));
  EXPECT_TRUE(valid_utf8("\xF4\x8F\xBF\xBF"));   // U+10FFFF
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(valid_utf8("\xE8\xA8"));          // cut short
}

TEST(Text, ErrnoText) { EXPECT_EQ(errno_text(ENOENT), "No such file or directory"); }

TEST(Text, JsonErrorBodiesAlwaysParseBackToTheMessage) {
  const std::string messages[] = {
      "plain", "a \"quoted\" name", "back\\slash", std::string("nul\0byte", 8), "new\nline\ttab\x1b", "\xFF not UTF-8"};
  for (const std::string& m : messages) {
    const std::string body = json_error_body(m);
    ASSERT_EQ(body.back(), '\n');
    const auto j = nlohmann::json::parse(body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << body;
    const std::string back = j.at("error").get<std::string>();
    if (valid_utf8(m)) EXPECT_EQ(back, m) << body;
    else EXPECT_EQ(back, "\xEF\xBF\xBD not UTF-8") << body;  // U+FFFD
  }
}

}  // namespace
}  // namespace kiroku
