// parse_test.cpp - query strings, percent-decoding, values and timestamps.
#include "ingest/parse.h"

#include <gtest/gtest.h>

#include "common/percent.h"

#include <string>

namespace kiroku {
namespace {

std::string decode(std::string_view in) {
  char buf[64];
  auto n = percent_decode(in, buf, sizeof buf);
  return n ? std::string(buf, *n) : std::string("<bad>");
}

TEST(Parse, PercentDecode) {
  EXPECT_EQ(decode("hoge"), "hoge");
  EXPECT_EQ(decode("a%20b+c"), "a b c");
  EXPECT_EQ(decode("%E8%A8%98%E9%8C%B2"), "\xE8\xA8\x98\xE9\x8C\xB2");
  EXPECT_EQ(decode("%41%4a%4A"), "AJJ");
  EXPECT_EQ(decode("%"), "<bad>");
  EXPECT_EQ(decode("%4"), "<bad>");
  EXPECT_EQ(decode("%zz"), "<bad>");
  EXPECT_EQ(decode("ab%"), "<bad>");
  EXPECT_EQ(decode(std::string(65, 'x')), "<bad>");  // does not fit
  EXPECT_EQ(decode(std::string(64, 'x')), std::string(64, 'x'));
}

TEST(Parse, QueryPairs) {
  std::string_view q = "a=1&&b&=x&c=d=e&";
  std::string got;
  for (QueryPair p; next_query_pair(q, p);) got += "[" + std::string(p.name) + "|" + std::string(p.value) + "]";
  EXPECT_EQ(got, "[a|1][b|][|x][c|d=e]");
  EXPECT_TRUE(q.empty());
  std::string_view none = "&&";
  QueryPair p;
  EXPECT_FALSE(next_query_pair(none, p));
}

TEST(Parse, Int64) {
  EXPECT_EQ(parse_int64("0"), 0);
  EXPECT_EQ(parse_int64("-1"), -1);
  EXPECT_EQ(parse_int64("+42"), 42);
  EXPECT_EQ(parse_int64("9223372036854775807"), INT64_MAX);
  EXPECT_EQ(parse_int64("-9223372036854775808"), INT64_MIN);
  EXPECT_FALSE(parse_int64("9223372036854775808"));
  EXPECT_FALSE(parse_int64("-9223372036854775809"));
  EXPECT_FALSE(parse_int64(""));
  EXPECT_FALSE(parse_int64("-"));
  EXPECT_FALSE(parse_int64("+-8"));  // found by fuzzing
  EXPECT_FALSE(parse_int64("+"));
  EXPECT_FALSE(parse_int64("1.5"));
  EXPECT_FALSE(parse_int64("1e3"));
  EXPECT_FALSE(parse_int64(" 1"));
  EXPECT_FALSE(parse_int64("0x10"));
  EXPECT_FALSE(parse_int64("12abc"));
}

TEST(Parse, Utf8) {
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("\xE8\xA8\x98\xE9\x8C\xB2"));
  EXPECT_TRUE(valid_utf8("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(valid_utf8("\xC0\xAF"));          // overlong
  EXPECT_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate
  EXPECT_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(valid_utf8("\xE8\xA8"));          // truncated
  EXPECT_FALSE(valid_utf8("\xFF"));
}

TEST(Parse, Timestamps) {
  EXPECT_EQ(parse_timestamp("1714564800123"), 1714564800123000);
  EXPECT_EQ(parse_timestamp("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_timestamp("2024-05-01T12:00:00Z"), 1714564800LL * 1000000);
  EXPECT_EQ(parse_timestamp("2024-05-01T12:00:00.5Z"), 1714564800LL * 1000000 + 500000);
  EXPECT_EQ(parse_timestamp("2024-05-01T12:00:00.123456789Z"), 1714564800LL * 1000000 + 123456);
  EXPECT_EQ(parse_timestamp("2024-05-01T21:00:00+09:00"), 1714564800LL * 1000000);
  EXPECT_EQ(parse_timestamp("2024-05-01T11:30:00-00:30"), 1714564800LL * 1000000);
  EXPECT_EQ(parse_timestamp("2024-02-29T00:00:00Z"), 1709164800LL * 1000000);
  EXPECT_FALSE(parse_timestamp("2023-02-29T00:00:00Z"));
  EXPECT_FALSE(parse_timestamp("2024-13-01T00:00:00Z"));
  EXPECT_FALSE(parse_timestamp("2024-05-01T12:00:00"));  // no offset
  EXPECT_FALSE(parse_timestamp("2024-05-01"));
  EXPECT_FALSE(parse_timestamp("yesterday"));
  EXPECT_FALSE(parse_timestamp("2024-05-01T12:00:00.Z"));
  EXPECT_FALSE(parse_timestamp("2024-05-01T12:00:00Zjunk"));
  EXPECT_FALSE(parse_timestamp("-5"));
}

constexpr const char* kNameControl = "name: contains a control character (U+0000..U+001F, U+007F..U+009F)";
constexpr const char* kIdControl = "id: contains a control character (U+0000..U+001F, U+007F..U+009F)";
constexpr const char* kNameBidi = "name: contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)";
constexpr const char* kIdBidi = "id: contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)";

struct Q {
  QueryBuffers buf;
  EventInput in;
  FieldError err;
  explicit Q(std::string_view q) { err = parse_event_query(q, buf, in); }
  std::string error() const { return err ? err.message : ""; }
};

TEST(Parse, QueryOk) {
  Q q("name=hoge&value=1");
  EXPECT_EQ(q.error(), "");
  EXPECT_EQ(q.in.name, "hoge");
  EXPECT_EQ(q.in.value, 1);
  EXPECT_FALSE(q.in.at_us);
  EXPECT_TRUE(q.in.client_id.empty());

  Q full("value=-7&name=%E8%A8%98+x&at=2024-05-01T12%3A00%3A00Z&id=abc-1&cb=123");
  EXPECT_EQ(full.error(), "");
  EXPECT_EQ(full.in.name, "\xE8\xA8\x98 x");
  EXPECT_EQ(full.in.value, -7);
  EXPECT_EQ(full.in.at_us, 1714564800LL * 1000000);
  EXPECT_EQ(full.in.client_id, "abc-1");
}

TEST(Parse, QueryErrorsNameTheField) {
  EXPECT_EQ(Q("value=1").error(), "name: missing");
  EXPECT_EQ(Q("name=x").error(), "value: missing");
  EXPECT_EQ(Q("name=&value=1").error(), "name: must not be empty");
  EXPECT_EQ(Q("name=x&value=abc").error(), "value: must be a signed 64-bit integer");
  EXPECT_EQ(Q("name=x&value=9223372036854775808").error(), "value: must be a signed 64-bit integer");
  EXPECT_EQ(Q("name=x&value=").error(), "value: must be a signed 64-bit integer");
  EXPECT_EQ(Q("name=x&value=1&at=soon").error(), "at: must be RFC 3339 or Unix milliseconds");
  EXPECT_EQ(Q("name=x&name=y&value=1").error(), "name: given more than once");
  EXPECT_EQ(Q("name=%FF&value=1").error(), "name: not valid UTF-8");
  EXPECT_EQ(Q("name=a%00b&value=1").error(), kNameControl);
  EXPECT_EQ(Q("name=%G1&value=1").error(), "name: bad percent-encoding or longer than 255 bytes");
  EXPECT_EQ(Q("").error(), "name: missing");
}

TEST(Parse, ControlsAndBidiOverridesAreRefusedInNamesAndIds) {
  for (const char* c : {"%00", "%01", "%0A", "%0D", "%1B", "%1F", "%7F", "%C2%80", "%C2%9B", "%C2%9F"}) {
    SCOPED_TRACE(c);
    EXPECT_EQ(Q(std::string("name=a") + c + "b&value=1").error(), kNameControl);
    EXPECT_EQ(Q(std::string("name=a&value=1&id=k") + c).error(), kIdControl);
  }
  for (const char* b : {"%E2%80%AA", "%E2%80%AB", "%E2%80%AC", "%E2%80%AD", "%E2%80%AE", "%E2%81%A6", "%E2%81%A7",
                        "%E2%81%A8", "%E2%81%A9"}) {
    SCOPED_TRACE(b);
    EXPECT_EQ(Q(std::string("name=") + b + "x&value=1").error(), kNameBidi);
    EXPECT_EQ(Q(std::string("name=x&value=1&id=") + b).error(), kIdBidi);
  }
  // Neighbours that stay allowed: space, tab-free printable ASCII, U+00A0,
  // the bidi marks U+200E/U+200F/U+061C, U+2029's neighbour U+2065, U+202F,
  // and right-to-left text itself.
  for (const char* ok : {"a+b", "%7E", "%C2%A0", "%E2%80%8E", "%E2%80%8F", "%D8%9C", "%E2%81%A5", "%E2%80%AF",
                         "%D7%A9%D7%9C%D7%95%D7%9D"}) {
    SCOPED_TRACE(ok);
    EXPECT_EQ(Q(std::string("name=") + ok + "&value=1&id=" + ok).error(), "");
  }
  EXPECT_EQ(text_fault("plain"), TextFault::none);
  EXPECT_EQ(text_fault(std::string_view("a\0b", 3)), TextFault::control);
}

TEST(Parse, AnEmptyQueryIdIsAnErrorAsInJson) {
  EXPECT_EQ(Q("name=x&value=1&id=").error(), "id: must not be empty");
  EXPECT_EQ(Q("name=x&value=1&id").error(), "id: must not be empty");
  Q none("name=x&value=1");
  EXPECT_EQ(none.error(), "");
  EXPECT_TRUE(none.in.client_id.empty());
}

TEST(Parse, QueryNameLengthLimit) {
  const std::string ok(255, 'n');
  EXPECT_EQ(Q("name=" + ok + "&value=1").error(), "");
  EXPECT_EQ(Q("name=" + ok + "n&value=1").error(), "name: longer than 255 bytes");
  std::string encoded;  // 255 bytes as %XX: still fine
  for (int i = 0; i < 85; ++i) encoded += "%E8%A8%98";
  Q enc("name=" + encoded + "&value=1");
  EXPECT_EQ(enc.error(), "");
  EXPECT_EQ(enc.in.name.size(), 255u);
}

}  // namespace
}  // namespace kiroku
