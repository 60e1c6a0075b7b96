// sqlite_sink_test.cpp - the SQLite sink's accounting of every record and its
// instance leases (an embedded database: runs anywhere).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>

#include <set>
#include <string>
#include <vector>

#include "common/event.h"
#include "ingest/id.h"
#include "sink/instance_lease_table.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/kiroku-sink-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string path_;
};

EventView event(std::uint64_t id, std::int64_t value, std::string_view client = {}) {
  return EventView{id,    1'700'000'000'000'000 + static_cast<std::int64_t>(id), 1'700'000'000'000'000, value, "n",
                   client};
}

std::unique_ptr<Sink> open_sink(const std::string& dir) {
  SinkOptions o;
  auto s = make_sink("sqlite://" + dir + "/e.db", o);
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE((*s)->open().ok());
  return std::move(*s);
}

TEST(SqliteSink, ReportsReplaysClientDuplicatesAndConflicts) {
  TempDir dir;
  auto sink = open_sink(dir.path());
  EventBuffer first;
  for (std::uint64_t i = 1; i <= 10; ++i) first.append(event(i, 1, i == 1 ? "k1" : ""));
  ASSERT_TRUE(sink->write(first.view(), first.count).ok());
  EXPECT_EQ(sink->last_write().stored, 10u);
  EventBuffer second;
  second.append(event(1, 1, "k1"));   // replay
  second.append(event(2, 1));         // replay
  second.append(event(11, 5, "k1"));  // client id stored before
  second.append(event(3, 99));        // a different event under id 3
  second.append(event(12, 1));        // new
  ASSERT_TRUE(sink->write(second.view(), second.count).ok());
  const WriteReport& r = sink->last_write();
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.replayed, 2u);
  EXPECT_EQ(r.client_duplicates, 1u);
  EXPECT_EQ(r.conflicts, 1u);
  RecordReader back(r.conflict_records);
  EventView e;
  ASSERT_TRUE(back.next(e));
  EXPECT_EQ(e.id, 3u);
  EXPECT_EQ(e.value, 99);
  EXPECT_FALSE(back.next(e));
}

// A refused row (here a trigger's RAISE) is named: the batch writer stores
// the rows around it without bisecting the batch.
TEST(SqliteSink, NamesTheRefusedRow) {
  TempDir dir;
  auto sink = open_sink(dir.path());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir.path() + "/e.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db,
                         "CREATE TRIGGER no_negative BEFORE INSERT ON events WHEN NEW.value < 0"
                         " BEGIN SELECT RAISE(ABORT, 'negative value'); END",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  EventBuffer b;
  for (std::uint64_t i = 1; i <= 100; ++i) b.append(event(i, i == 42 || i == 77 ? -1 : 1));
  const Status st = sink->write(b.view(), b.count);
  EXPECT_EQ(st.kind(), ErrorKind::invalid) << st.message();
  EXPECT_EQ(sink->rejection_reason(), "constraint");
  EXPECT_EQ(sink->refused_row(), 41u);
  EventBuffer good;
  good.append(event(1, 1));
  ASSERT_TRUE(sink->write(good.view(), good.count).ok());
  EXPECT_EQ(sink->refused_row(), Sink::kNoRow);
}

TEST(SqliteSink, InstanceLeases) {
  TempDir dir;
  auto a = open_sink(dir.path());
  auto b = open_sink(dir.path());
  std::set<unsigned> seen;
  for (int i = 0; i < 5; ++i) {
    auto r = (i % 2 ? a : b)->lease_instance("h" + std::to_string(i), -1, 60'000);
    ASSERT_TRUE(r.ok()) << r.status().message();
    seen.insert(*r);
  }
  EXPECT_EQ(seen.size(), 5u);
  auto own = a->lease_instance("h3", -1, 60'000);
  ASSERT_TRUE(own.ok());
  auto clash = b->lease_instance("other", static_cast<int>(*own), 60'000);
  EXPECT_EQ(clash.status().kind(), ErrorKind::full);
  ASSERT_TRUE(a->release_instance(*own, "h3").ok());
  EXPECT_TRUE(b->lease_instance("other", static_cast<int>(*own), 60'000).ok());
}

TEST(InstanceChoice, PrefersOwnThenNeverUsedThenLongestExpired) {
  std::vector<LeaseRow> rows;
  for (unsigned i = 0; i < kLeasableInstances; ++i) rows.push_back({i, "h" + std::to_string(i), 1000 + i});
  // All held and live: nothing for a newcomer.
  EXPECT_EQ(choose_instance(rows, "new", -1, 1100, 10'000).status().kind(), ErrorKind::full);
  // Its own number for a holder.
  EXPECT_EQ(*choose_instance(rows, "h7", -1, 1100, 10'000), 7u);
  // All expired: the one that expired first.
  EXPECT_EQ(*choose_instance(rows, "new", -1, 1'000'000, 10'000), 0u);
  rows[0].renewed_at_ms = 999'999;
  EXPECT_EQ(*choose_instance(rows, "new", -1, 1'000'000, 10'000), 1u);
  // A gap: a number never leased comes first.
  rows.erase(rows.begin() + 40);
  EXPECT_EQ(*choose_instance(rows, "new", -1, 1100, 10'000), 40u);
  // A fixed number: refused while another holds it, else granted.
  EXPECT_EQ(choose_instance(rows, "new", 5, 1100, 10'000).status().kind(), ErrorKind::full);
  EXPECT_EQ(*choose_instance(rows, "new", 5, 1'000'000, 10'000), 5u);
  EXPECT_EQ(choose_instance(rows, "new", 256, 1100, 10'000).status().kind(), ErrorKind::invalid);
}

TEST(IdGenerator, SetInstanceChangesTheInstanceBitsAndNeverGoesBack) {
  IdGenerator g(3, 5, 0);
  const std::int64_t now = kIdEpochMs + 10'000;
  const std::uint64_t a = g.next(now);
  g.set_instance(9, 0);
  const std::uint64_t b = g.next(now);
  EXPECT_GT(b >> (kIdInstanceBits + kIdShardBits + kIdSequenceBits),
            (a >> (kIdInstanceBits + kIdShardBits + kIdSequenceBits)) - 1);
  EXPECT_EQ((b >> (kIdShardBits + kIdSequenceBits)) & 0xff, 9u);
  EXPECT_EQ((b >> kIdSequenceBits) & 0x3f, 5u);
  g.set_instance(9, now + 5000);  // above the sink's largest id
  EXPECT_GT(id_unix_ms(g.next(now)), now + 5000);
}

}  // namespace
}  // namespace kiroku
