// clickhouse_row_binary_test.cpp - the RowBinary encoder and reader, and the
// choice of shard (no server needed; the server's reading of these rows is
// checked by test/integration/clickhouse_sink_test.cpp).
#include "sink/clickhouse/row_binary.h"

#include <gtest/gtest.h>

#include <array>
#include <limits>
#include <string>

namespace kiroku {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

TEST(RowBinaryTest, EncodesTheColumnsLittleEndianWithLeb128Lengths) {
  EventView e;
  e.id = 0x0102030405060708ull;
  e.received_us = -1;
  e.at_us = 256;
  e.name = "ab";
  e.value = std::numeric_limits<std::int64_t>::min();
  std::string out;
  append_event_row(out, e);
  const std::string want = bytes({8,    7,    6,    5,    4,    3,    2,    1,     // id
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // received_at
                                  0,    1,    0,    0,    0,    0,    0,    0,     // at
                                  2,    'a',  'b',                                 // name
                                  0,    0,    0,    0,    0,    0,    0,    0x80,  // value
                                  1});                                             // client_id NULL
  EXPECT_EQ(out, want);
  e.client_id = "c";
  out.clear();
  append_event_row(out, e);
  EXPECT_EQ(out.substr(want.size() - 1), bytes({0, 1, 'c'}));
}

TEST(RowBinaryTest, LongStringsTakeTwoLengthBytes) {
  std::string out;
  append_client_row(out, std::string(200, 'x'), 7);
  EXPECT_EQ(out.substr(0, 2), bytes({0xc8, 0x01}));  // 200 = 0x48 | 0x80, then 1
  EXPECT_EQ(out.size(), 2 + 200 + 8u);
  std::string one;
  append_client_row(one, std::string(127, 'y'), 0);
  EXPECT_EQ(static_cast<unsigned char>(one[0]), 127);
}

TEST(RowBinaryTest, RoundTripsExtremesAndUtf8) {
  const std::string name255 = [] {
    std::string s;
    for (int i = 0; i < 85; ++i) s += "名";
    return s;
  }();
  const std::string client255(255, 'c');  // outlives the views below
  const std::array<EventView, 3> events = {{
      {std::numeric_limits<std::uint64_t>::max(), std::numeric_limits<std::int64_t>::min(),
       std::numeric_limits<std::int64_t>::max(), -1, name255, std::string_view("\0\x01'\\", 4)},
      {0, 0, 0, 0, "a", {}},
      {1ull << 63, 1, -1, 42, std::string_view("nul\0in", 6), client255},
  }};
  std::string out;
  for (const EventView& e : events) append_event_row(out, e);
  RowBinaryReader r(out);
  for (const EventView& want : events) {
    EventView got;
    bool null = false;
    ASSERT_TRUE(read_event_row(r, got, null));
    EXPECT_EQ(got.id, want.id);
    EXPECT_EQ(got.received_us, want.received_us);
    EXPECT_EQ(got.at_us, want.at_us);
    EXPECT_EQ(got.value, want.value);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.client_id, want.client_id);
    EXPECT_EQ(null, want.client_id.empty());
  }
  EXPECT_TRUE(r.done());
}

TEST(RowBinaryTest, TruncatedOrMalformedInputIsRefused) {
  EventView e{5, 1, 2, 3, "name", "client"};
  std::string out;
  append_event_row(out, e);
  for (std::size_t cut = 0; cut < out.size(); ++cut) {
    RowBinaryReader r(std::string_view(out).substr(0, cut));
    EventView got;
    bool null = false;
    EXPECT_FALSE(read_event_row(r, got, null)) << "cut at " << cut;
  }
  std::string bad_flag = out;
  bad_flag[8 * 3 + 1 + 4 + 8] = 2;  // the Nullable flag must be 0 or 1
  RowBinaryReader r(bad_flag);
  EventView got;
  bool null = false;
  EXPECT_FALSE(read_event_row(r, got, null));
  const std::string huge = bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01});
  RowBinaryReader h(huge);
  std::string_view s;
  EXPECT_FALSE(h.string(s));
}

TEST(ShardOfTest, StableSpreadAndClientIdsTogether) {
  std::array<int, 3> per{};
  for (std::uint64_t id = 1; id <= 30'000; ++id) {
    EventView e;
    e.id = id << 23;  // ids differ in their high bits mostly, as real ones (ingest/id.h)
    ++per[shard_of(e, 3)];
  }
  for (int n : per) EXPECT_NEAR(n, 10'000, 500);
  EventView a{1, 0, 0, 0, "x", "order-17"};
  EventView b{999, 5, 5, 5, "y", "order-17"};
  for (std::size_t n = 1; n <= 8; ++n) EXPECT_EQ(shard_of(a, n), shard_of(b, n));
  EventView one{12345, 0, 0, 0, "x", {}};
  EXPECT_EQ(shard_of(one, 1), 0u);
  // Pinned: where rows live must not change between versions.
  EXPECT_EQ(shard_of(one, 2), shard_of(EventView{12345, 9, 9, 9, "other", {}}, 2));
  std::array<std::size_t, 4> pinned{};
  for (std::uint64_t i = 0; i < 4; ++i) pinned[i] = shard_of(EventView{i, 0, 0, 0, "x", {}}, 4);
  EXPECT_EQ(pinned, (std::array<std::size_t, 4>{0, 1, 2, 0}));
}

}  // namespace
}  // namespace kiroku
