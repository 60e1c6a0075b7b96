// collector_test.cpp - each durability mode of the collector, and what it
// refuses, against a sink in memory: when a request is answered, with what,
// and that what it accepted is stored.
#include "ingest/collector.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ops/metrics.h"
#include "support/fake_sink.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;

// The answers the collector gives to held requests, in order.
class RecordingAnswers final : public Answers {
 public:
  struct Answered {
    std::uint32_t ticket;
    Outcome outcome;
    std::uint32_t events;
  };
  void answer(unsigned, std::uint32_t ticket, Outcome outcome, std::uint32_t events) override {
    {
      std::lock_guard lock(mu_);
      got_.push_back({ticket, outcome, events});
    }
    cv_.notify_all();
  }
  // Waits until `n` answers came (or `timeout`); returns them.
  std::vector<Answered> wait(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return got_.size() >= n; });
    return got_;
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return got_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Answered> got_;
};

class Tickets final : public Holder {
 public:
  std::uint32_t hold() override { return next_++; }

 private:
  std::uint32_t next_ = 100;
};

struct Options {
  Durability durability = Durability::none;
  std::size_t batch_max = 1000;
  std::chrono::milliseconds flush_interval = 20ms;
  std::chrono::milliseconds sink_wait_timeout = 10s;
  std::uint64_t queue_max_bytes = 64 << 20;
  std::uint64_t spool_max_bytes = 1 << 30;
};

// A collector on one shard, its writer, a spool when the mode has one.
class Rig {
 public:
  explicit Rig(Options o)
      : dir_(std::filesystem::temp_directory_path() / ("kiroku-collector-" + std::to_string(::getpid()))),
        registry_(1) {
    std::filesystem::remove_all(dir_);
    if (o.durability == Durability::process || o.durability == Durability::fsync)
      spool_ = std::move(*Spool::open({(dir_ / "spool").string(), o.spool_max_bytes}));
    writer_ = std::make_unique<BatchWriter>(sink, spool_.get(), o.queue_max_bytes, BatchWriterHooks{});
    CollectorOptions co;
    co.durability = o.durability;
    co.batch_max = o.batch_max;
    co.flush_interval = o.flush_interval;
    co.sink_wait_timeout = o.sink_wait_timeout;
    CollectorMetrics cm;
    cm.accepted = accepted = registry_.counter("accepted", "").with({});
    collector_ = std::make_unique<Collector>(co, runtime_, *writer_, spool_.get(), cm, answers);
    runtime_.start();
    writer_->start([this](unsigned shard, std::uint64_t seq, bool ok) { collector_->on_batch_done(shard, seq, ok); });
    collector_->start();
  }
  ~Rig() {
    sink.set_hold(false);
    collector_->flush_all();
    writer_->drain_and_stop(std::chrono::steady_clock::now() + 10s);
    runtime_.stop();
    collector_.reset();
    writer_.reset();
    spool_.reset();
    std::filesystem::remove_all(dir_);
  }

  // take_query / take_batch on the shard's thread.
  struct Result {
    Taken taken;
    std::string error;
  };
  Result query(const std::string& q) {
    return on_shard([&] { return collector_->take_query(0, q, now_us(), tickets_); });
  }
  Result batch(const std::string& body) {
    return on_shard([&] { return collector_->take_batch(0, body, now_us(), tickets_); });
  }

  // Waits until the sink holds `n` rows.
  bool rows(std::size_t n) {
    for (int i = 0; i < 2000 && sink.rows() < n; ++i) std::this_thread::sleep_for(5ms);
    return sink.rows() == n;
  }

  Collector& collector() { return *collector_; }
  Spool* spool() { return spool_.get(); }

  testing::FakeSink sink;
  RecordingAnswers answers;
  Counter* accepted = nullptr;

 private:
  template <class F>
  Result on_shard(F f) {
    std::promise<Result> p;
    runtime_.post(0, [&] {
      Result r;
      r.taken = f();
      r.error = std::string(r.taken.error);
      p.set_value(std::move(r));
    });
    return p.get_future().get();
  }
  static std::int64_t now_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  std::filesystem::path dir_;
  Registry registry_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<BatchWriter> writer_;
  Runtime runtime_{1};
  std::unique_ptr<Collector> collector_;
  Tickets tickets_;
};

TEST(Collector, NoneAnswersAtOnceAndStoresWithinTheFlushInterval) {
  Rig rig({.durability = Durability::none});
  const auto r = rig.query("name=a&value=1");
  EXPECT_FALSE(r.taken.held);
  EXPECT_EQ(r.taken.outcome, Outcome::accepted);
  EXPECT_EQ(r.taken.events, 1u);
  EXPECT_TRUE(rig.rows(1));
  EXPECT_EQ(rig.sink.stored().begin()->second, "a");
  EXPECT_EQ(rig.answers.count(), 0u);
}

TEST(Collector, BadInputIsRefusedWithTheFieldNamedAndNothingKept) {
  Rig rig({.durability = Durability::process});
  auto r = rig.query("value=1");
  EXPECT_FALSE(r.taken.held);
  EXPECT_EQ(r.taken.outcome, Outcome::invalid);
  EXPECT_NE(r.error.find("name"), std::string::npos) << r.error;
  // A batch with one bad line keeps none of its events.
  r = rig.batch("{\"name\":\"x\",\"value\":1}\n{\"name\":\"y\",\"value\":\"two\"}\n");
  EXPECT_EQ(r.taken.outcome, Outcome::invalid);
  EXPECT_NE(r.error.find("value"), std::string::npos) << r.error;
  r = rig.batch("{\"name\":\"z\",\"value\":3}\n");
  EXPECT_TRUE(r.taken.held);
  const auto got = rig.answers.wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].outcome, Outcome::accepted);
  EXPECT_EQ(got[0].events, 1u);
  EXPECT_TRUE(rig.rows(1));
  EXPECT_EQ(rig.sink.stored().begin()->second, "z");
}

// process and fsync answer once the spool holds the events, whether or not
// the database is there.
class SpooledModes : public ::testing::TestWithParam<Durability> {};
INSTANTIATE_TEST_SUITE_P(Collector, SpooledModes, ::testing::Values(Durability::process, Durability::fsync),
                         [](const auto& p) { return std::string(to_string(p.param)); });

TEST_P(SpooledModes, AnswersAfterTheSpoolWriteWithoutTheDatabase) {
  Rig rig({.durability = GetParam()});
  rig.sink.set_hold(true);  // the database does not commit
  const auto r = rig.query("name=a&value=1");
  EXPECT_TRUE(r.taken.held);
  const auto b = rig.batch("{\"name\":\"b\",\"value\":2}\n{\"name\":\"c\",\"value\":3}\n");
  EXPECT_TRUE(b.taken.held);
  const auto got = rig.answers.wait(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].ticket, 100u);
  EXPECT_EQ(got[0].outcome, Outcome::accepted);
  EXPECT_EQ(got[0].events, 1u);
  EXPECT_EQ(got[1].ticket, 101u);
  EXPECT_EQ(got[1].events, 2u);
  EXPECT_GT(rig.spool()->bytes(), 0u);
  EXPECT_EQ(rig.sink.rows(), 0u);
  rig.sink.set_hold(false);
  EXPECT_TRUE(rig.rows(3));
}

TEST_P(SpooledModes, RefusesPastTheSpoolLimitAndStoresWhatItAccepted) {
  Rig rig({.durability = GetParam(), .spool_max_bytes = 4096});
  rig.sink.set_hold(true);
  std::size_t taken = 0;
  Outcome refused = Outcome::accepted;
  for (int i = 0; i < 1000 && refused == Outcome::accepted; ++i) {
    const auto r = rig.query("name=n" + std::to_string(i) + "&value=1");
    if (r.taken.held) ++taken;
    else refused = r.taken.outcome;
  }
  EXPECT_EQ(refused, Outcome::spool_full);
  EXPECT_GT(taken, 0u);
  const auto got = rig.answers.wait(taken);
  ASSERT_EQ(got.size(), taken);
  for (const auto& a : got) EXPECT_EQ(a.outcome, Outcome::accepted);
  rig.sink.set_hold(false);
  EXPECT_TRUE(rig.rows(taken));
}

TEST(Collector, SinkAnswersOnlyAfterTheCommit) {
  Rig rig({.durability = Durability::sink});
  rig.sink.set_hold(true);
  const auto r = rig.query("name=a&value=1");
  EXPECT_TRUE(r.taken.held);
  std::this_thread::sleep_for(200ms);  // ten flush intervals
  EXPECT_EQ(rig.answers.count(), 0u) << "answered before the database committed";
  rig.sink.set_hold(false);
  const auto got = rig.answers.wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].outcome, Outcome::accepted);
  EXPECT_EQ(rig.sink.rows(), 1u);
}

TEST(Collector, SinkAnswersTimeoutWhenTheCommitIsLateAndStoresLater) {
  Rig rig({.durability = Durability::sink, .sink_wait_timeout = 100ms});
  rig.sink.set_hold(true);
  EXPECT_TRUE(rig.query("name=a&value=1").taken.held);
  const auto got = rig.answers.wait(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].outcome, Outcome::commit_timeout);
  rig.sink.set_hold(false);
  EXPECT_TRUE(rig.rows(1));
}

TEST(Collector, WithoutASpoolRefusesWhenTheBacklogIsFullAndLosesNothingAccepted) {
  Rig rig({.durability = Durability::none, .batch_max = 1, .queue_max_bytes = 1});
  rig.sink.set_hold(true);
  std::size_t taken = 0;
  Outcome refused = Outcome::accepted;
  for (int i = 0; i < 1000 && refused == Outcome::accepted; ++i) {
    const auto r = rig.query("name=n&value=" + std::to_string(i));
    if (r.taken.outcome == Outcome::accepted) ++taken;
    else refused = r.taken.outcome;
  }
  EXPECT_EQ(refused, Outcome::backlog_full);
  rig.sink.set_hold(false);
  EXPECT_TRUE(rig.rows(taken));
  EXPECT_EQ(rig.accepted->value(), taken);
}

TEST(Collector, FlushAllHandsOverTheBatchesBeforeTheirInterval) {
  Rig rig({.durability = Durability::process, .flush_interval = std::chrono::minutes(10)});
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(rig.query("name=a&value=" + std::to_string(i)).taken.held);
  rig.answers.wait(5);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(rig.sink.rows(), 0u);
  rig.collector().flush_all();
  EXPECT_TRUE(rig.rows(5));
}

TEST(Collector, BatchMaxHandsOverAtOnce) {
  Rig rig({.durability = Durability::none, .batch_max = 3, .flush_interval = std::chrono::minutes(10)});
  for (int i = 0; i < 3; ++i) rig.query("name=a&value=" + std::to_string(i));
  EXPECT_TRUE(rig.rows(3));
}

}  // namespace
}  // namespace kiroku
