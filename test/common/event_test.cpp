// event_test.cpp - the record codec and the id generator.
#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "common/event.h"
#include "ingest/id.h"

namespace kiroku {
namespace {

TEST(EventRecord, Crc32cKnownValue) { EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u); }

TEST(EventRecord, RoundTrip) {
  EventBuffer b;
  const std::string long_name(255, 'x');
  const std::string long_id(255, 'y');
  b.append({1, 10, 11, -5, "a", ""});
  b.append({2, 20, 21, INT64_MAX, long_name, long_id});
  b.append({3, 30, 31, INT64_MIN, "\xE8\xA8\x98", "k"});
  EXPECT_EQ(b.count, 3u);
  EXPECT_EQ(b.oldest_received_us, 10);
  RecordReader r(b.view());
  EventView e;
  ASSERT_TRUE(r.next(e));
  EXPECT_EQ(e.id, 1u);
  EXPECT_EQ(e.value, -5);
  EXPECT_EQ(e.name, "a");
  EXPECT_TRUE(e.client_id.empty());
  ASSERT_TRUE(r.next(e));
  EXPECT_EQ(e.name, long_name);
  EXPECT_EQ(e.client_id, long_id);
  EXPECT_EQ(e.value, INT64_MAX);
  ASSERT_TRUE(r.next(e));
  EXPECT_EQ(e.id, 3u);
  EXPECT_EQ(e.received_us, 30);
  EXPECT_EQ(e.at_us, 31);
  EXPECT_FALSE(r.next(e));
}

TEST(EventRecord, TornAndCorrupt) {
  EventBuffer b;
  b.append({1, 2, 3, 4, "name", "id"});
  const std::string bytes(b.view());
  EventView e;
  std::size_t size = 0;
  for (std::size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_EQ(decode_record(std::string_view(bytes).substr(0, cut), e, size), DecodeResult::need_more) << cut;
  EXPECT_EQ(decode_record(bytes, e, size), DecodeResult::ok);
  EXPECT_EQ(size, bytes.size());
  for (std::size_t i = 4; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x01;
    EXPECT_EQ(decode_record(bad, e, size), DecodeResult::corrupt) << i;
  }
  std::string bad_len = bytes;
  bad_len[0] = 1;
  EXPECT_EQ(decode_record(bad_len, e, size), DecodeResult::corrupt);
}

TEST(EventId, IncreasingAndUniqueWithinShard) {
  IdGenerator g(3, 5);
  std::uint64_t last = 0;
  const std::int64_t now = 1'800'000'000'000;
  for (int i = 0; i < 5000; ++i) {  // 5000 ids in one millisecond: borrows ahead
    const auto id = g.next(now);
    EXPECT_GT(id, last);
    last = id;
  }
  EXPECT_GE(id_unix_ms(last), now);
  EXPECT_GT(g.next(now + 100), last);
}

TEST(EventId, UniqueAcrossShardsAndInstances) {
  std::vector<std::vector<std::uint64_t>> per(8);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      IdGenerator g(t / 4, t % 4);
      const std::int64_t now = 1'800'000'000'000;
      for (int i = 0; i < 20000; ++i) per[t].push_back(g.next(now + i / 1000));
    });
  for (auto& t : threads) t.join();
  std::set<std::uint64_t> all;
  for (auto& v : per) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 8u * 20000u);
}

TEST(EventId, FloorSurvivesAClockGoingBack) {
  const std::int64_t before_restart = 1'800'000'000'000;
  IdGenerator first(0, 0);
  const auto last = first.next(before_restart);
  // After a restart the wall clock reads earlier; the floor from the sink wins.
  IdGenerator second(0, 0, id_unix_ms(last));
  EXPECT_GT(second.next(before_restart - 60'000), last);
}

}  // namespace
}  // namespace kiroku
