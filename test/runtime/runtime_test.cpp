// runtime_test.cpp - Task (inline and on the heap, move-only), the shards'
// order of posted work, and Timer.
#include "runtime/runtime.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <future>
#include <memory>
#include <vector>

namespace kiroku {
namespace {

using namespace std::chrono_literals;

TEST(Task, RunsSmallAndLargeMoveOnlyCallablesAndDestroysThemOnce) {
  auto counted = std::make_shared<int>(0);
  int ran = 0;
  {
    Task small([&ran, p = std::make_unique<int>(1)] { ran += *p; });
    std::array<char, 200> big{};
    big[199] = 2;
    Task large([&ran, big, c = counted] { ran += big[199]; });
    EXPECT_EQ(counted.use_count(), 2);
    Task moved = std::move(large);
    EXPECT_FALSE(large);  // NOLINT(bugprone-use-after-move): moved-from is empty
    small();
    moved();
    Task assigned;
    assigned = std::move(small);
    assigned();
  }
  EXPECT_EQ(ran, 4);
  EXPECT_EQ(counted.use_count(), 1) << "the heap callable was not destroyed once";
}

TEST(Runtime, RunsEachShardsTasksInOrderOnItsOwnThread) {
  Runtime rt(2);
  rt.start();
  std::vector<int> order[2];
  std::atomic<int> wrong_thread{0};
  for (int i = 0; i < 1000; ++i) {
    const unsigned shard = static_cast<unsigned>(i % 2);
    rt.post(shard, [&, shard, i] {
      if (!rt.on_shard(shard) || rt.on_shard(1 - shard)) ++wrong_thread;
      order[shard].push_back(i);
    });
  }
  std::promise<void> p0, p1;
  rt.post(0, [&] { p0.set_value(); });
  rt.post(1, [&] { p1.set_value(); });
  p0.get_future().wait();
  p1.get_future().wait();
  EXPECT_EQ(wrong_thread.load(), 0);
  for (auto& o : order) {
    ASSERT_EQ(o.size(), 500u);
    for (std::size_t i = 1; i < o.size(); ++i) EXPECT_LT(o[i - 1], o[i]);
  }
  EXPECT_FALSE(rt.on_shard(0));
  rt.stop();
  EXPECT_FALSE(rt.running());
}

TEST(Runtime, StopRunsWhatWasPostedBefore) {
  Runtime rt(1);
  rt.start();
  std::atomic<int> ran{0};
  for (int i = 0; i < 100; ++i) rt.post(0, [&] { ++ran; });
  rt.stop();
  EXPECT_EQ(ran.load(), 100);
}

TEST(Timer, FiresOnItsShardAndNotOnceCancelledOrReplaced) {
  Runtime rt(1);
  rt.start();
  std::atomic<int> fired{0}, cancelled{0}, replaced{0};
  std::promise<bool> on_shard;
  std::unique_ptr<Timer> t1, t2;
  std::promise<void> made;
  rt.post(0, [&] {
    t1 = std::make_unique<Timer>(rt, 0);
    t2 = std::make_unique<Timer>(rt, 0);
    t1->after(100ms, [&] { ++replaced; });
    t1->after(20ms, [&] {
      ++fired;
      on_shard.set_value(rt.on_shard(0));
    });
    t2->after(50ms, [&] { ++cancelled; });
    t2->cancel();
    made.set_value();
  });
  made.get_future().wait();
  EXPECT_TRUE(on_shard.get_future().get());
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(fired.load(), 1);
  EXPECT_EQ(replaced.load(), 0);
  EXPECT_EQ(cancelled.load(), 0);
  rt.stop();
}

}  // namespace
}  // namespace kiroku
