// batch_writer_test.cpp - the writer's retries, its spilling to the spool and
// its stop, against a sink in memory.
#include "ingest/batch_writer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "ingest/spool.h"
#include "ops/metrics.h"
#include "support/fake_sink.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// `n` events with ids first..first+n-1.
std::unique_ptr<EventBuffer> events(std::size_t n, std::uint64_t first) {
  auto b = std::make_unique<EventBuffer>();
  for (std::size_t i = 0; i < n; ++i)
    b->append({first + i, 1'700'000'000'000'000, 1'700'000'000'000'000, static_cast<std::int64_t>(i), "e", ""});
  return b;
}

bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
  for (auto t = std::chrono::steady_clock::now() + timeout; std::chrono::steady_clock::now() < t;) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

class Dir {
 public:
  Dir() : path_(fs::temp_directory_path() / ("kiroku-writer-" + std::to_string(::getpid()))) { fs::remove_all(path_); }
  ~Dir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

TEST(BatchWriter, RetriesWhileTheDatabaseIsAwayAndStoresEachRowOnce) {
  testing::FakeSink sink;
  sink.fail_next(3);
  Registry registry(1);
  BatchWriterHooks hooks;
  hooks.sink_errors = registry.counter("errors", "").with({});
  hooks.committed_events = registry.counter("committed", "").with({});
  std::atomic<int> done{0};
  std::atomic<bool> ok{false};
  BatchWriter w(sink, nullptr, 64 << 20, hooks);
  w.start([&](unsigned shard, std::uint64_t seq, bool good) {
    EXPECT_EQ(shard, 2u);
    EXPECT_EQ(seq, 7u);
    ok = good;
    ++done;
  });
  Batch b;
  b.shard = 2;
  b.seq = 7;
  b.events = events(100, 1);
  b.count = 100;
  w.submit(std::move(b));
  ASSERT_TRUE(wait_for([&] { return done.load() == 1; }));
  EXPECT_TRUE(ok);
  EXPECT_EQ(sink.writes(), 4u);  // three refusals, one commit
  EXPECT_EQ(sink.rows(), 100u);
  EXPECT_EQ(sink.replays(), 0u);
  EXPECT_EQ(hooks.sink_errors->value(), 3u);
  EXPECT_EQ(hooks.committed_events->value(), 100u);
  EXPECT_EQ(w.queued_events(), 0u);
  EXPECT_EQ(w.drain_and_stop(std::chrono::steady_clock::now() + 5s), 0u);
}

TEST(BatchWriter, PastItsMemoryLimitDropsSpooledBatchesFromMemoryAndReadsThemBack) {
  Dir dir;
  auto spool = std::move(*Spool::open({dir.str()}));
  testing::FakeSink sink;
  sink.set_hold(true);  // the database is slow: batches queue up
  constexpr std::uint64_t kLimit = 64 << 10;
  BatchWriter w(sink, spool.get(), kLimit, {});
  w.start();
  constexpr std::size_t kBatches = 20, kPer = 1000;
  for (std::size_t i = 0; i < kBatches; ++i) {
    auto e = events(kPer, 1 + i * kPer);
    auto seg = spool->create(0);
    ASSERT_TRUE(seg.ok());
    ASSERT_TRUE(seg->append({reinterpret_cast<const char*>(e->bytes.data()), e->bytes.size()}).ok());
    Batch b;
    b.shard = 0;
    b.seq = i;
    b.count = kPer;
    b.events = std::move(e);
    b.segment = seg->seal();
    w.submit(std::move(b));
  }
  // What waits in memory is bounded; the rest waits in its segment.
  EXPECT_LE(w.memory_bytes(), kLimit + (kPer * 64));
  EXPECT_EQ(w.queued_events() + 0, kBatches * kPer);
  sink.set_hold(false);
  ASSERT_TRUE(wait_for([&] { return sink.rows() == kBatches * kPer; }));
  EXPECT_EQ(sink.replays(), 0u);
  EXPECT_EQ(w.drain_and_stop(std::chrono::steady_clock::now() + 5s), 0u);
  EXPECT_TRUE(wait_for([&] { return spool->bytes() == 0; })) << "committed segments are removed";
}

TEST(BatchWriter, AStopPastItsDeadlineReportsWhatIsLeftAndAnswersNotOk) {
  testing::FakeSink sink;
  sink.fail_next(1'000'000);  // the database never comes back
  std::atomic<int> done{0};
  std::atomic<bool> ok{true};
  BatchWriter w(sink, nullptr, 64 << 20, {});
  w.start([&](unsigned, std::uint64_t, bool good) {
    ok = good;
    ++done;
  });
  Batch b;
  b.shard = 0;
  b.events = events(10, 1);
  b.count = 10;
  w.submit(std::move(b));
  ASSERT_TRUE(wait_for([&] { return sink.writes() >= 1; }));
  EXPECT_EQ(w.drain_and_stop(std::chrono::steady_clock::now() + 300ms), 10u);
  EXPECT_EQ(done.load(), 1);
  EXPECT_FALSE(ok);
  EXPECT_EQ(sink.rows(), 0u);
}

}  // namespace
}  // namespace kiroku
