// cors_test.cpp - which Origin gets which CORS answer.
#include "app/cors.h"

#include <gtest/gtest.h>

namespace kiroku {
namespace {

TEST(Cors, OffWithoutOrigins) {
  CorsPolicy off;
  EXPECT_FALSE(off.enabled());
  EXPECT_EQ(off.check("https://any.example"), CorsPolicy::kNone);
}

TEST(Cors, ExactOriginsAreEchoedOthersRefused) {
  CorsPolicy p({"https://a.example", "http://b.example:8000"});
  ASSERT_TRUE(p.enabled());
  EXPECT_EQ(p.check(""), CorsPolicy::kNone);  // not from a browser page
  const int a = p.check("https://a.example");
  ASSERT_GE(a, 0);
  EXPECT_EQ(p.headers(a), "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n");
  EXPECT_NE(p.preflight_headers(a).find("Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"), std::string::npos);
  EXPECT_NE(p.preflight_headers(a).find("Access-Control-Allow-Headers: Content-Type"), std::string::npos);
  EXPECT_GE(p.check("http://b.example:8000"), 0);
  EXPECT_EQ(p.check("http://b.example"), CorsPolicy::kRefused);  // the port is part of the origin
  EXPECT_EQ(p.check("https://a.example.evil"), CorsPolicy::kRefused);
  EXPECT_EQ(p.check("null"), CorsPolicy::kRefused);
}

TEST(Cors, AStarAllowsEveryOrigin) {
  CorsPolicy p({"https://a.example", "*"});
  EXPECT_EQ(p.headers(p.check("https://a.example")),
            "Access-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n");
  const int other = p.check("https://other.example");
  ASSERT_GE(other, 0);
  EXPECT_EQ(p.headers(other), "Access-Control-Allow-Origin: *\r\n");
}

}  // namespace
}  // namespace kiroku
