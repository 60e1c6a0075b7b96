// sink_conformance_test.cpp - one contract for every sink (sink/sink.h), run
// through the Sink interface alone against each real database the suite
// starts: SQLite in a temporary directory, MariaDB (scripts/with-mariadb.sh),
// PostgreSQL (scripts/with-postgres.sh) and ClickHouse
// (scripts/with-clickhouse.sh). A sink whose server is not there fails and
// says which script starts it.
//
// What every sink must do: create a missing table; store a batch and say so;
// store a replayed batch once and report it as replayed; keep the first of
// two events with one client id; refuse and hand back a different event under
// a stored id; keep the extreme ids apart and report the largest; lease
// instance numbers to one holder at a time, give them back, and let an
// expired lease go; refuse bad credentials as a permanent error.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

struct Backend {
  std::string name;
  const char* env;     // the URL's variable; nullptr: SQLite in a temporary directory
  const char* script;  // what sets it
};

std::string env(const char* name) {
  const char* v = name ? std::getenv(name) : nullptr;
  return v ? v : "";
}

std::string unique_table() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "conf_" + std::to_string(rng() % 1000000000);
}

class SinkContract : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    const Backend& b = GetParam();
    if (b.env) {
      url_ = env(b.env);
      ASSERT_FALSE(url_.empty()) << b.env << " is not set: run the integration tests under " << b.script;
    } else {
      dir_ = std::filesystem::temp_directory_path() /
             ("kiroku-conf-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device{}()));
      std::filesystem::create_directories(dir_);
      url_ = "sqlite://" + (dir_ / "events.db").string();
    }
    table_ = unique_table();
    sink_ = open_sink(url_, table_);
    ASSERT_TRUE(sink_);
  }
  void TearDown() override {
    sink_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static std::unique_ptr<Sink> open_sink(const std::string& url, const std::string& table) {
    SinkOptions o;
    o.table = table;
    auto made = make_sink(url, o);
    EXPECT_TRUE(made.ok()) << made.status().message();
    if (!made.ok()) return nullptr;
    Status s = (*made)->open();
    EXPECT_TRUE(s.ok()) << s.message();
    if (!s.ok()) return nullptr;
    return std::move(*made);
  }

  struct Batch {
    std::vector<std::byte> bytes;
    std::size_t count = 0;
    void add(std::uint64_t id, std::string_view name, std::int64_t value, std::string_view client = {}) {
      EventView e;
      e.id = id;
      // A function of the id: the same event written again is equal.
      e.received_us = 1'764'770'000'000'000 + static_cast<std::int64_t>(id % 1'000'000);
      e.at_us = e.received_us - 1000;
      e.value = value;
      e.name = name;
      e.client_id = client;
      append_record(bytes, e);
      ++count;
    }
    std::string_view view() const { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }
  };

  // The sink's largest id; fails the test and gives 1 if it cannot say.
  std::uint64_t max_id() {
    auto m = sink_->max_id();
    EXPECT_TRUE(m.ok()) << m.status().message();
    return m.ok() ? *m : 1;
  }

  WriteReport write(const Batch& b) {
    Status s = sink_->write(b.view(), b.count);
    EXPECT_TRUE(s.ok()) << s.message();
    return sink_->last_write();
  }

  // Ids of this test: apart from other tests' in a shared table (there is
  // none: each test has its own table), and growing.
  std::uint64_t id(std::uint64_t n) const { return (std::uint64_t{1} << 40) + n; }

  std::string url_, table_;
  std::filesystem::path dir_;
  std::unique_ptr<Sink> sink_;
};

TEST_P(SinkContract, StoresABatchAndReportsTheLargestId) {
  EXPECT_EQ(max_id(), 0u);  // a new table is empty
  Batch b;
  for (std::uint64_t i = 1; i <= 500; ++i) b.add(id(i), "conf.stored", static_cast<std::int64_t>(i));
  const WriteReport r = write(b);
  EXPECT_EQ(r.stored, 500u);
  EXPECT_EQ(r.replayed + r.client_duplicates + r.conflicts, 0u);
  EXPECT_EQ(max_id(), id(500));
  EXPECT_TRUE(sink_->ping().ok());
  EXPECT_FALSE(sink_->kind().empty());
}

TEST_P(SinkContract, AReplayedBatchIsStoredOnce) {
  Batch b;
  for (std::uint64_t i = 1; i <= 200; ++i) b.add(id(i), "conf.replay", 7);
  EXPECT_EQ(write(b).stored, 200u);
  const WriteReport again = write(b);  // a spool replay after a crash
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(again.replayed, 200u);
  // Half old, half new: each is told apart.
  Batch mixed;
  for (std::uint64_t i = 101; i <= 300; ++i) mixed.add(id(i), "conf.replay", 7);
  const WriteReport m = write(mixed);
  EXPECT_EQ(m.stored, 100u);
  EXPECT_EQ(m.replayed, 100u);
}

TEST_P(SinkContract, TheFirstEventOfAClientIdIsKept) {
  Batch first;
  first.add(id(1), "conf.client", 1, "order-1");
  first.add(id(2), "conf.client", 2, "order-2");
  EXPECT_EQ(write(first).stored, 2u);
  Batch second;  // the client sent order-1 again (a retry): a new event id
  second.add(id(3), "conf.client", 1, "order-1");
  second.add(id(4), "conf.client", 4, "order-4");
  const WriteReport r = write(second);
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.client_duplicates, 1u);
  Batch twice;  // twice in one batch: the first wins
  twice.add(id(5), "conf.client", 5, "order-5");
  twice.add(id(6), "conf.client", 6, "order-5");
  const WriteReport t = write(twice);
  EXPECT_EQ(t.stored, 1u);
  EXPECT_EQ(t.client_duplicates, 1u);
}

TEST_P(SinkContract, ADifferentEventUnderAStoredIdIsHandedBack) {
  Batch b;
  b.add(id(1), "conf.conflict", 1);
  EXPECT_EQ(write(b).stored, 1u);
  Batch other;
  other.add(id(1), "conf.conflict", 999);  // same id, another value
  other.add(id(2), "conf.conflict", 2);
  const WriteReport r = write(other);
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.conflicts, 1u);
  RecordReader reader(r.conflict_records);
  EventView e;
  ASSERT_TRUE(reader.next(e));
  EXPECT_EQ(e.id, id(1));
  EXPECT_EQ(e.value, 999);
  EXPECT_FALSE(reader.next(e));
}

TEST_P(SinkContract, TheExtremeIdsAreKeptApart) {
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  constexpr std::uint64_t kHalf = std::uint64_t{1} << 63;
  Batch b;
  for (std::uint64_t v : {std::uint64_t{1}, kHalf - 1, kHalf, kHalf + 1, kMax - 1, kMax})
    b.add(v, "conf.extreme", static_cast<std::int64_t>(v % 1000));
  EXPECT_EQ(write(b).stored, 6u);
  EXPECT_EQ(max_id(), kMax);
  EXPECT_EQ(write(b).replayed, 6u);
}

TEST_P(SinkContract, InstanceNumbersGoToOneHolderAtATime) {
  const std::int64_t ttl = 60'000;
  auto a = sink_->lease_instance("conf-a-" + table_, -1, ttl);
  ASSERT_TRUE(a.ok()) << a.status().message();
  auto again = sink_->lease_instance("conf-a-" + table_, -1, ttl);  // a renewal keeps it
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *a);
  auto b = sink_->lease_instance("conf-b-" + table_, -1, ttl);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(*b, *a);
  auto taken = sink_->lease_instance("conf-b-" + table_, static_cast<int>(*a), ttl);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.status().kind(), ErrorKind::full);
  EXPECT_TRUE(sink_->release_instance(*a, "conf-a-" + table_).ok());
  auto freed = sink_->lease_instance("conf-c-" + table_, static_cast<int>(*a), ttl);
  ASSERT_TRUE(freed.ok()) << freed.status().message();
  EXPECT_EQ(*freed, *a);
  // A lease not renewed within the ttl (the one every instance uses) can be
  // taken. 3 s: ClickHouse keeps lease times in whole seconds and a claim
  // there waits up to 1 s to read back.
  auto short_lived = sink_->lease_instance("conf-d-" + table_, -1, 3000);
  ASSERT_TRUE(short_lived.ok());
  EXPECT_EQ(sink_->lease_instance("conf-e-" + table_, static_cast<int>(*short_lived), 3000).status().kind(),
            ErrorKind::full);
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  auto took_over = sink_->lease_instance("conf-e-" + table_, static_cast<int>(*short_lived), 3000);
  ASSERT_TRUE(took_over.ok()) << took_over.status().message();
  EXPECT_EQ(*took_over, *short_lived);
  for (auto [n, holder] : {std::pair{*b, "conf-b-"}, {*freed, "conf-c-"}, {*took_over, "conf-e-"}})
    sink_->release_instance(n, holder + table_);
}

TEST_P(SinkContract, BadCredentialsArePermanent) {
  if (!GetParam().env) return;  // SQLite has none
  std::string url = url_;
  const auto scheme = url.find("://");
  const auto at = url.rfind('@');
  ASSERT_NE(at, std::string::npos) << "the test URL has no credentials";
  const auto colon = url.find(':', scheme + 3);
  const std::string wrong = url.substr(0, colon < at ? colon : at) + ":certainly-wrong" + url.substr(at);
  SinkOptions o;
  o.table = table_;
  auto made = make_sink(wrong, o);
  ASSERT_TRUE(made.ok()) << made.status().message();
  Status s = (*made)->open();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_EQ(s.message().find("certainly-wrong"), std::string::npos) << "the password leaked: " << s.message();
}

INSTANTIATE_TEST_SUITE_P(
    Sinks, SinkContract,
    ::testing::Values(Backend{"sqlite", nullptr, ""},
                      Backend{"mariadb", "KIROKU_TEST_MYSQL_URL", "scripts/with-mariadb.sh"},
                      Backend{"postgresql", "KIROKU_TEST_POSTGRES_URL", "scripts/with-postgres.sh"},
                      Backend{"clickhouse", "KIROKU_TEST_CLICKHOUSE_CLUSTER_URL", "scripts/with-clickhouse.sh"}),
    [](const auto& p) { return p.param.name; });

}  // namespace
}  // namespace kiroku
