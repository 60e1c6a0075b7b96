// part_engine_test.cpp - the part engine every store shares (UploadParts,
// ReadAhead), driven through the in-memory store: part boundaries, the
// declared size held to, a writer told when there is room, a failed part,
// abort, a download that holds at most its share of the pool while its
// consumer holds chunks, cancel, and a pool that stays busy.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "support/memory_store.h"
#include "support/store_harness.h"

namespace kiroku::testing {
namespace {

constexpr std::size_t kPart = 1024;
constexpr std::size_t kCap = 3;

StoreOptions small_options() {
  StoreOptions o;
  o.part_size = kPart;
  o.part_count = 8;
  o.parts_per_transfer = kCap;
  o.threads = 2;
  o.first_buffer_wait = 200ms;
  return o;
}

std::string pattern(std::uint64_t seed, std::uint64_t from, std::uint64_t to) {
  std::string out(to - from, '\0');
  fill_pattern(seed, from, std::as_writable_bytes(std::span(out)));
  return out;
}

bool drained(const ObjectStore& store) {
  for (int i = 0; i < 200 && store.pool().in_use() != 0; ++i) std::this_thread::sleep_for(5ms);
  return store.pool().in_use() == 0;
}

// A download whose consumer keeps its chunks until told to let them go.
struct HeldDownload {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Chunk> chunks;
  std::string bytes;
  int done_calls = 0;
  Status status;

  GetSink sink() {
    GetSink s;
    s.on_chunk = [this](Chunk c) {
      std::lock_guard lock(mutex);
      bytes.append(reinterpret_cast<const char*>(c.data().data()), c.data().size());
      chunks.push_back(std::move(c));
      cv.notify_all();
    };
    s.on_done = [this](Status st) {
      std::lock_guard lock(mutex);
      ++done_calls;
      status = std::move(st);
      cv.notify_all();
    };
    return s;
  }
  // Waits until `n` chunks are held (or the download ended).
  std::size_t wait_for_held(std::size_t n) {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, 5s, [&] { return chunks.size() >= n || done_calls > 0; });
    return chunks.size();
  }
  void release_all() {
    std::vector<Chunk> out;
    {
      std::lock_guard lock(mutex);
      out.swap(chunks);
    }
  }
  bool wait_done() {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 5s, [&] { return done_calls > 0; });
  }
};

TEST(PartEngine, RoundTripsAroundThePartSize) {
  MemoryStore store(small_options());
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, kPart - 1, kPart, kPart + 1, 3 * kPart + 5}) {
    for (std::size_t piece : {std::size_t{100}, std::size_t{4096}}) {
      const std::string key = "o/" + std::to_string(size) + "-" + std::to_string(piece);
      std::string sha;
      auto put = put_pattern(store, key, size, size, &sha, piece);
      ASSERT_TRUE(put.ok()) << key << ": " << put.status().message();
      EXPECT_EQ(put->size, size);
      EXPECT_EQ(put->sha256_hex, pattern_sha(size, size)) << key;
      ASSERT_EQ(store.object(key), pattern(size, 0, size)) << key;
      Got got = get_all(store, key);
      ASSERT_TRUE(got.status.ok()) << got.status.message();
      EXPECT_TRUE(got.in_order);
      EXPECT_LE(got.max_chunk, kPart);
      EXPECT_EQ(std::string(reinterpret_cast<const char*>(got.data.data()), got.data.size()), pattern(size, 0, size));
    }
  }
  ASSERT_TRUE(put_pattern(store, "ranged", 7, 5 * kPart).ok());
  Got part = get_all(store, "ranged", ByteRange{10, 2999, 0});
  ASSERT_TRUE(part.status.ok());
  EXPECT_EQ(part.start.offset, 10u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(part.data.data()), part.data.size()), pattern(7, 10, 3000));
  Got outside = get_all(store, "ranged", ByteRange{5 * kPart, std::nullopt, 0});
  EXPECT_TRUE(outside.status.ok());
  EXPECT_TRUE(outside.start.range_unsatisfiable);
  EXPECT_EQ(outside.bytes, 0u);
  EXPECT_EQ(get_all(store, "missing").status.kind(), ErrorKind::not_found);
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, TheDeclaredSizeIsHeldToAsBytesArrive) {
  MemoryStore store(small_options());
  {
    Feeder feeder;
    auto upload = store.begin_put("long", 2000, feeder.callback());
    ASSERT_TRUE(upload.ok());
    const std::string body = pattern(1, 0, 2001);
    auto first = (*upload)->write(std::as_bytes(std::span(body).first(1500)));
    ASSERT_TRUE(first.ok());
    EXPECT_EQ(*first, 1500u);
    // The write that overruns the declared size is refused, whole.
    auto over = (*upload)->write(std::as_bytes(std::span(body).subspan(1500)));
    ASSERT_FALSE(over.ok());
    EXPECT_EQ(over.status().kind(), ErrorKind::invalid);
    EXPECT_NE(over.status().message().find("longer than the 2000 bytes announced"), std::string::npos);
    auto put = finish(**upload);
    ASSERT_FALSE(put.ok());
    EXPECT_EQ(put.status().kind(), ErrorKind::invalid);
  }
  {
    Feeder feeder;
    auto upload = store.begin_put("short", 2000, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 1, 0, 1999).ok());
    auto put = finish(**upload);
    ASSERT_FALSE(put.ok());
    EXPECT_NE(put.status().message().find("upload of 1999 bytes, 2000 expected"), std::string::npos);
  }
  EXPECT_FALSE(store.object("long"));
  EXPECT_FALSE(store.object("short"));
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, AWriterWaitsForRoomAndIsToldWhenThereIsSome) {
  MemoryStore store(small_options());
  store.close_gate();  // the store takes no part until the gate opens
  Feeder feeder;
  auto upload = store.begin_put("slow", std::nullopt, feeder.callback());
  ASSERT_TRUE(upload.ok());
  const std::string body = pattern(3, 0, 10 * kPart);
  auto took = (*upload)->write(std::as_bytes(std::span(body)));
  ASSERT_TRUE(took.ok());
  // At most its share of the pool: the parts queued, being stored, filling.
  EXPECT_LE(*took, kCap * kPart);
  EXPECT_GE(*took, kPart);
  EXPECT_LE(store.pool().in_use(), kCap);
  auto again = (*upload)->write(std::as_bytes(std::span(body).subspan(*took)));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 0u);
  std::thread opener([&] {
    std::this_thread::sleep_for(50ms);
    store.open_gate();
  });
  ASSERT_TRUE(feeder.feed(**upload, 3, *took, body.size()).ok());
  opener.join();
  auto put = finish(**upload);
  ASSERT_TRUE(put.ok()) << put.status().message();
  EXPECT_EQ(store.object("slow"), body);
  EXPECT_GE(feeder.wakeups, 1);
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, APartThatFailsFailsTheUploadAndStoresNothing) {
  MemoryStore store(small_options());
  store.fail_part(2, Status::transient("disk full"));
  Feeder feeder;
  auto upload = store.begin_put("failing", std::nullopt, feeder.callback());
  ASSERT_TRUE(upload.ok());
  const Status fed = feeder.feed(**upload, 4, 0, 6 * kPart);
  auto put = finish(**upload);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().kind(), ErrorKind::transient);
  EXPECT_EQ(put.status().message(), "disk full");
  if (!fed.ok()) {
    EXPECT_EQ(fed.message(), "disk full");
  }
  EXPECT_FALSE(store.object("failing"));
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, AbortAndDropStoreNothingAndFinishAnswersOnce) {
  MemoryStore store(small_options());
  {
    Feeder feeder;
    auto upload = store.begin_put("aborted", std::nullopt, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 5, 0, 2 * kPart + 3).ok());
    (*upload)->abort();
    auto write = (*upload)->write(std::as_bytes(std::span("x", 1)));
    ASSERT_FALSE(write.ok());
    EXPECT_EQ(write.status().message(), "cancelled");
    auto put = finish(**upload);
    ASSERT_FALSE(put.ok());
    EXPECT_EQ(put.status().message(), "cancelled");
    EXPECT_EQ(finish(**upload).status().message(), "upload already finished");
  }
  {
    Feeder feeder;
    auto upload = store.begin_put("dropped", std::nullopt, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 5, 0, kPart + 3).ok());
  }  // the handle goes: the upload is aborted
  {
    Feeder feeder;
    auto upload = store.begin_put("twice", std::nullopt, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 5, 0, 10).ok());
    ASSERT_TRUE(finish(**upload).ok());
    EXPECT_EQ(finish(**upload).status().message(), "upload already finished");
    auto late = (*upload)->write(std::as_bytes(std::span("x", 1)));
    EXPECT_FALSE(late.ok());
  }
  EXPECT_TRUE(drained(store));
  EXPECT_FALSE(store.object("aborted"));
  EXPECT_FALSE(store.object("dropped"));
  EXPECT_EQ(store.object("twice"), pattern(5, 0, 10));
}

TEST(PartEngine, ADownloadHoldsItsShareWhileTheConsumerHoldsChunks) {
  MemoryStore store(small_options());
  ASSERT_TRUE(put_pattern(store, "big", 6, 10 * kPart + 7).ok());
  HeldDownload held;
  auto download = store.get("big", std::nullopt, held.sink());
  ASSERT_TRUE(download.ok());
  EXPECT_EQ(held.wait_for_held(kCap), kCap);
  std::this_thread::sleep_for(50ms);  // nothing more comes while they are held
  {
    std::lock_guard lock(held.mutex);
    EXPECT_EQ(held.chunks.size(), kCap);
    EXPECT_EQ(held.done_calls, 0);
  }
  EXPECT_EQ(store.pool().in_use(), kCap);
  while (!held.wait_done() || !held.chunks.empty()) {
    held.release_all();
    held.wait_for_held(1);
    std::lock_guard lock(held.mutex);
    if (held.done_calls > 0 && held.chunks.empty()) break;
  }
  held.release_all();
  EXPECT_EQ(held.done_calls, 1);
  EXPECT_TRUE(held.status.ok()) << held.status.message();
  EXPECT_EQ(held.bytes, pattern(6, 0, 10 * kPart + 7));
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, CancelEndsADownloadOnceWithCancelled) {
  MemoryStore store(small_options());
  ASSERT_TRUE(put_pattern(store, "big", 6, 10 * kPart).ok());
  HeldDownload held;
  auto download = store.get("big", std::nullopt, held.sink());
  ASSERT_TRUE(download.ok());
  EXPECT_EQ(held.wait_for_held(kCap), kCap);
  (*download)->cancel();
  ASSERT_TRUE(held.wait_done());
  (*download)->cancel();  // again: nothing more happens
  held.release_all();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(held.done_calls, 1);
  EXPECT_EQ(held.status.message(), "cancelled");
  EXPECT_TRUE(drained(store));
}

TEST(PartEngine, APoolThatStaysBusyFailsNewTransfersTransient) {
  MemoryStore store(small_options());
  ASSERT_TRUE(put_pattern(store, "there", 8, 2 * kPart).ok());
  std::vector<PartPool::Part> taken;
  while (auto p = store.parts().try_acquire()) taken.push_back(std::move(p));
  ASSERT_EQ(taken.size(), 8u);

  Feeder feeder;
  auto upload = store.begin_put("waits", std::nullopt, feeder.callback());
  ASSERT_TRUE(upload.ok());
  const Status fed = feeder.feed(**upload, 8, 0, kPart, nullptr, 5s);
  EXPECT_EQ(fed.kind(), ErrorKind::transient) << fed.message();
  EXPECT_NE(fed.message().find("transfer buffers stayed busy"), std::string::npos) << fed.message();
  EXPECT_EQ(finish(**upload).status().kind(), ErrorKind::transient);

  Got got = get_all(store, "there");
  EXPECT_EQ(got.status.kind(), ErrorKind::transient) << got.status.message();
  EXPECT_FALSE(got.started && got.bytes > 0);

  taken.clear();
  EXPECT_TRUE(get_all(store, "there").status.ok());
  EXPECT_TRUE(drained(store));
}

}  // namespace
}  // namespace kiroku::testing
