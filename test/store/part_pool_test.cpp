// part_pool_test.cpp - the part pool stays bounded, hands parts to waiters on
// release, never allocates buffers after construction; transfer threads and
// the running SHA-256.
#include "store/part_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <set>
#include <thread>
#include <vector>

namespace kiroku {
namespace {

TEST(StorePartPool, BoundedAndReturnsOnRelease) {
  PartPool pool(4096, 3);
  EXPECT_EQ(pool.part_size(), 4096u);
  std::vector<PartPool::Part> parts;
  for (int i = 0; i < 3; ++i) {
    auto p = pool.try_acquire();
    ASSERT_TRUE(p);
    EXPECT_EQ(p.bytes().size(), 4096u);
    EXPECT_TRUE(pool.owns(p.bytes().data()));
    EXPECT_TRUE(pool.owns(p.bytes().data() + 4095));
    parts.push_back(std::move(p));
  }
  EXPECT_FALSE(pool.try_acquire());
  EXPECT_EQ(pool.in_use(), 3u);
  EXPECT_EQ(pool.high_water(), 3u);
  std::set<const std::byte*> distinct;
  for (auto& p : parts) distinct.insert(p.bytes().data());
  EXPECT_EQ(distinct.size(), 3u);
  parts.pop_back();  // the destructor gives it back
  EXPECT_EQ(pool.in_use(), 2u);
  auto again = pool.try_acquire();
  EXPECT_TRUE(again);
  again.release();
  again.release();  // idempotent
  EXPECT_EQ(pool.in_use(), 2u);
  parts.clear();
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.high_water(), 3u);
  pool.reset_high_water();
  EXPECT_EQ(pool.high_water(), 0u);
}

TEST(StorePartPool, WaitersGetPartsInOrderOnTheReleasingThread) {
  PartPool pool(1024, 1);
  auto held = pool.try_acquire();
  ASSERT_TRUE(held);
  std::vector<int> order;
  std::vector<PartPool::Part> received;
  std::thread::id ran_on;
  PartPool::WaitId id1 = 0, id2 = 0, id3 = 0;
  EXPECT_FALSE(pool.acquire_or_wait(
      [&](PartPool::Part p) {
        order.push_back(1);
        ran_on = std::this_thread::get_id();
        received.push_back(std::move(p));
      },
      &id1));
  EXPECT_FALSE(pool.acquire_or_wait([&](PartPool::Part) { order.push_back(2); }, &id2));
  EXPECT_FALSE(pool.acquire_or_wait(
      [&](PartPool::Part p) {
        order.push_back(3);
        (void)p;
      },
      &id3));
  EXPECT_EQ(pool.waiting(), 3u);
  EXPECT_TRUE(pool.cancel_wait(id2));
  EXPECT_FALSE(pool.cancel_wait(id2));

  std::thread releaser([&] { held.release(); });
  releaser.join();
  ASSERT_EQ(order, std::vector<int>{1});
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(pool.in_use(), 1u);  // handed over, not freed
  // Waiter 3 drops its part at once, which frees it.
  received.clear();
  EXPECT_EQ(order, (std::vector<int>{1, 3}));
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.waiting(), 0u);
  EXPECT_FALSE(pool.cancel_wait(id1));
  // A free part comes back at once and the callback is dropped unused.
  bool called = false;
  auto now = pool.acquire_or_wait([&](PartPool::Part) { called = true; });
  EXPECT_TRUE(now);
  EXPECT_FALSE(called);
}

// acquire_within: a part that comes in time is handed over and the timeout
// does nothing; one that does not come gets an empty Part from the timeout
// and the waiter is gone (a later release does not call it again).
TEST(StorePartPool, AcquireWithinGivesUpAfterItsLimit) {
  using namespace std::chrono_literals;
  PartPool pool(4096, 1);
  TransferThreads threads(1);
  auto held = pool.try_acquire();
  ASSERT_TRUE(held);

  std::atomic<int> calls{0};
  std::promise<bool> got;
  PartPool::WaitId id = 0;
  auto none = pool.acquire_within(
      100ms, threads,
      [&](PartPool::Part p) {
        ++calls;
        got.set_value(static_cast<bool>(p));
      },
      &id);
  EXPECT_FALSE(none);
  EXPECT_NE(id, 0u);
  const auto t0 = std::chrono::steady_clock::now();
  auto f = got.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_FALSE(f.get());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 50ms);
  EXPECT_EQ(pool.waiting(), 0u);
  held.release();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(pool.in_use(), 0u);

  // In time: the part comes from the release, the timeout finds no waiter.
  held = pool.try_acquire();
  std::promise<PartPool::Part> part;
  auto later = pool.acquire_within(200ms, threads, [&](PartPool::Part p) {
    ++calls;
    part.set_value(std::move(p));
  });
  EXPECT_FALSE(later);
  held.release();
  auto pf = part.get_future();
  ASSERT_EQ(pf.wait_for(5s), std::future_status::ready);
  PartPool::Part p = pf.get();
  EXPECT_TRUE(p);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(calls.load(), 2);
  p.release();

  // Free at once: returned directly, no callback.
  auto direct = pool.acquire_within(1ms, threads, [&](PartPool::Part) { ++calls; });
  EXPECT_TRUE(direct);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.load(), 2);
}

TEST(StorePartPool, NoBufferIsAllocatedAfterConstruction) {
  // Every part handed out, over many cycles and threads, is one of the
  // part_count buffers made at construction.
  PartPool pool(64 * 1024, 4);
  std::mutex mutex;
  std::set<const std::byte*> seen;
  std::atomic<std::size_t> max_in_use{0};
  std::atomic<bool> outside{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        std::promise<PartPool::Part> got;
        auto future = got.get_future();
        auto part = pool.acquire_or_wait([&got](PartPool::Part p) { got.set_value(std::move(p)); });
        if (!part) part = future.get();
        if (!pool.owns(part.bytes().data())) outside = true;
        part.bytes()[0] = std::byte{1};
        std::size_t n = pool.in_use();
        std::size_t m = max_in_use.load();
        while (n > m && !max_in_use.compare_exchange_weak(m, n)) {}
        std::lock_guard lock(mutex);
        seen.insert(part.bytes().data());
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(outside);
  EXPECT_GE(seen.size(), 1u);
  EXPECT_LE(seen.size(), 4u);
  EXPECT_LE(max_in_use.load(), 4u);
  EXPECT_LE(pool.high_water(), 4u);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(StorePartPool, TransferThreadsRunEverythingPostedBeforeStopping) {
  std::atomic<int> ran{0};
  {
    TransferThreads threads(3);
    for (int i = 0; i < 1000; ++i) {
      threads.post([&] {
        ++ran;
        if (ran % 100 == 0) std::this_thread::yield();
      });
    }
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(StorePartPool, DelayedTasksRunInTimeOrderAndAreDroppedAtStop) {
  std::mutex mutex;
  std::vector<int> order;
  std::promise<void> second;
  auto start = std::chrono::steady_clock::now();
  std::atomic<bool> late_ran{false};
  {
    TransferThreads threads(2);
    threads.post_after(std::chrono::milliseconds(80), [&] {
      std::lock_guard lock(mutex);
      order.push_back(2);
      second.set_value();
    });
    threads.post_after(std::chrono::milliseconds(20), [&] {
      std::lock_guard lock(mutex);
      order.push_back(1);
    });
    threads.post_after(std::chrono::hours(1), [&] { late_ran = true; });
    ASSERT_EQ(second.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(80));
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_FALSE(late_ran);
}

TEST(StorePartPool, Sha256StreamMatchesKnownDigests) {
  Sha256Stream empty;
  EXPECT_EQ(empty.finish_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256Stream abc;
  std::string a = "a", bc = "bc";
  abc.update(std::as_bytes(std::span(a.data(), a.size())));
  abc.update(std::as_bytes(std::span(bc.data(), bc.size())));
  EXPECT_EQ(abc.finish_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace kiroku
