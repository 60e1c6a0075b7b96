// file_store_test.cpp - the local-directory store: round trips with SHA-256
// compared, ranges, listings merged across partitions, abort, atomic
// replacement, keys that try to leave the directory, bounded memory.
#include "store/file/file_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "support/store_harness.h"

namespace kiroku {
namespace {

using namespace testing;

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// --- helpers ------------------------------------------------------------------------

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kiroku-file-store-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

StoreOptions small_options() {
  StoreOptions o;
  o.part_size = 256 * 1024;
  o.part_count = 4;
  o.parts_per_transfer = 2;
  o.threads = 2;
  return o;
}

std::unique_ptr<FileStore> open_store(const fs::path& dir, const StoreOptions& options) {
  auto store = FileStore::open(dir, options);
  EXPECT_TRUE(store.ok()) << store.status().message();
  return store.ok() ? std::move(*store) : nullptr;
}

bool incoming_empty(const fs::path& root) {
  for (int i = 0; i < 500; ++i) {
    if (fs::is_empty(root / ".incoming")) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// --- round trips ---------------------------------------------------------------------

TEST(StoreFileStore, RoundTripsAroundThePartSize) {
  TempDir dir;
  auto options = small_options();
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  const std::uint64_t P = options.part_size;
  std::uint64_t seed = 1;
  for (std::uint64_t size : {std::uint64_t{0}, std::uint64_t{1}, P - 1, P, P + 1, 3 * P + 17}) {
    std::string key = "round/trip-" + std::to_string(size) + ".bin";
    std::string fed_sha;
    auto put = put_pattern(*store, key, ++seed, size, &fed_sha, 10007);
    ASSERT_TRUE(put.ok()) << size << ": " << put.status().message();
    EXPECT_EQ(put->key, key);
    EXPECT_EQ(put->size, size);
    EXPECT_EQ(put->sha256_hex, fed_sha);
    EXPECT_EQ(put->etag, put->sha256_hex);

    auto meta = head(*store, key);
    ASSERT_TRUE(meta.ok()) << meta.status().message();
    EXPECT_EQ(meta->key, key);
    EXPECT_EQ(meta->size, size);
    EXPECT_EQ(meta->etag, put->etag);
    EXPECT_GT(meta->modified.time_since_epoch().count(), 0);

    Got got = get_all(*store, key);
    ASSERT_TRUE(got.status.ok()) << got.status.message();
    ASSERT_TRUE(got.started);
    EXPECT_EQ(got.start.object.size, size);
    EXPECT_EQ(got.start.offset, 0u);
    EXPECT_EQ(got.start.length, size);
    EXPECT_EQ(got.bytes, size);
    EXPECT_TRUE(got.in_order);
    EXPECT_LE(got.max_chunk, P);
    EXPECT_EQ(got.sha256, fed_sha);
  }
  EXPECT_LE(store->pool().high_water(), 2u * 2);  // one upload and one download at a time
  EXPECT_EQ(store->pool().in_use(), 0u);
}

TEST(StoreFileStore, HundredMegabytesStayWithinThePool) {
  TempDir dir;
  StoreOptions options;  // the defaults: 8 MiB parts
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  const std::uint64_t size = 100ull << 20;
  std::string fed_sha;
  auto put = put_pattern(*store, "big/hundred.bin", 42, size, &fed_sha, 256 * 1024);
  ASSERT_TRUE(put.ok()) << put.status().message();
  EXPECT_EQ(put->size, size);
  EXPECT_EQ(put->sha256_hex, fed_sha);
  // One part filling, one being written: never more, whatever the size.
  EXPECT_LE(store->pool().high_water(), 2u);
  EXPECT_EQ(fs::file_size(dir.path / (HashPrefixLayout(1).stored_key("big/hundred.bin"))), size);

  store->pool().high_water();
  Got got = get_all(*store, "big/hundred.bin", std::nullopt, /*keep=*/false);
  ASSERT_TRUE(got.status.ok()) << got.status.message();
  EXPECT_EQ(got.bytes, size);
  EXPECT_TRUE(got.in_order);
  EXPECT_EQ(got.sha256, fed_sha);
  EXPECT_LE(store->pool().high_water(), 2u);
  EXPECT_EQ(store->pool().in_use(), 0u);
}

TEST(StoreFileStore, ExpectedSizeIsChecked) {
  TempDir dir;
  auto store = open_store(dir.path, small_options());
  ASSERT_TRUE(store);
  Feeder feeder;
  auto upload = store->begin_put("short.bin", 100, feeder.callback());
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE(feeder.feed(**upload, 1, 0, 99).ok());
  auto put = finish(**upload);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.status().kind(), ErrorKind::invalid);
  EXPECT_EQ(head(*store, "short.bin").status().kind(), ErrorKind::not_found);
  EXPECT_TRUE(incoming_empty(store->root()));
}

// --- ranges ----------------------------------------------------------------------------

TEST(StoreFileStore, RangeReads) {
  TempDir dir;
  auto options = small_options();
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  const std::uint64_t size = 3 * options.part_size + 1000;
  ASSERT_TRUE(put_pattern(*store, "r.bin", 7, size).ok());
  std::vector<std::byte> all(size);
  fill_pattern(7, 0, all);

  struct Case {
    ByteRange range;
    std::uint64_t offset, length;
  };
  const std::uint64_t P = options.part_size;
  std::vector<Case> cases = {
      {{0, 0, 0}, 0, 1},
      {{10, 19, 0}, 10, 10},
      {{P - 5, P + 5, 0}, P - 5, 11},             // across a part boundary
      {{P, std::nullopt, 0}, P, size - P},        // to the end
      {{size - 1, size + 100, 0}, size - 1, 1},   // last clamped
      {{0, std::nullopt, 500}, size - 500, 500},  // a suffix
      {{0, std::nullopt, size + 9}, 0, size},     // a suffix longer than the object
  };
  for (const auto& c : cases) {
    Got got = get_all(*store, "r.bin", c.range);
    ASSERT_TRUE(got.status.ok()) << got.status.message();
    EXPECT_FALSE(got.start.range_unsatisfiable);
    EXPECT_EQ(got.start.offset, c.offset);
    EXPECT_EQ(got.start.length, c.length);
    EXPECT_EQ(got.start.object.size, size);
    ASSERT_EQ(got.data.size(), c.length);
    EXPECT_TRUE(std::equal(got.data.begin(), got.data.end(), all.begin() + c.offset));
  }
  Got past = get_all(*store, "r.bin", ByteRange{size, std::nullopt, 0});
  EXPECT_TRUE(past.status.ok());
  EXPECT_TRUE(past.start.range_unsatisfiable);
  EXPECT_EQ(past.bytes, 0u);
  Got backwards = get_all(*store, "r.bin", ByteRange{20, 10, 0});
  EXPECT_EQ(backwards.status.kind(), ErrorKind::invalid);
  Got missing = get_all(*store, "nope.bin");
  EXPECT_EQ(missing.status.kind(), ErrorKind::not_found);
  EXPECT_FALSE(missing.started);
}

// --- listing ------------------------------------------------------------------------------

TEST(StoreFileStore, ListingMergesPartitionsInOrderAndPaginates) {
  TempDir dir;
  auto store = open_store(dir.path, small_options());
  ASSERT_TRUE(store);
  std::vector<std::string> keys;
  for (int i = 0; i < 60; ++i) keys.push_back("photos/" + std::to_string(i * 7919 % 1000) + ".jpg");
  for (int i = 0; i < 20; ++i) keys.push_back("photos/2024/" + std::to_string(i) + "/x");
  for (int i = 0; i < 20; ++i) keys.push_back("photos-old/" + std::to_string(i));
  for (int i = 0; i < 20; ++i) keys.push_back("docs/" + std::to_string(i) + ".txt");
  keys.push_back("photos-");  // sorts between "photos" and "photos/"
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  for (const auto& k : keys) ASSERT_TRUE(put_pattern(*store, k, 3, k.size()).ok()) << k;

  // The keys are spread over the partitions.
  int partitions = 0;
  for (auto& e : fs::directory_iterator(store->root()))
    if (e.path().filename() != ".incoming") ++partitions;
  EXPECT_GE(partitions, 12);

  auto collect = [&](const std::string& prefix, std::size_t limit, int* pages) {
    std::vector<std::string> out;
    ListRequest request{prefix, "", limit};
    *pages = 0;
    while (true) {
      auto page = list(*store, request);
      EXPECT_TRUE(page.ok()) << page.status().message();
      if (!page.ok()) break;
      ++*pages;
      EXPECT_LE(page->objects.size(), limit);
      for (auto& o : page->objects) {
        out.push_back(o.key);
        EXPECT_EQ(o.size, o.key.size());
        EXPECT_EQ(o.etag.size(), 64u);
      }
      if (page->next.empty()) break;
      EXPECT_EQ(page->next, page->objects.back().key);
      request.after = page->next;
    }
    return out;
  };
  int pages = 0;
  EXPECT_EQ(collect("", 1000, &pages), keys);
  EXPECT_EQ(pages, 1);
  EXPECT_EQ(collect("", 7, &pages), keys);
  EXPECT_EQ(pages, int((keys.size() + 6) / 7));

  std::vector<std::string> photos;
  for (auto& k : keys)
    if (k.starts_with("photos/")) photos.push_back(k);
  EXPECT_EQ(collect("photos/", 9, &pages), photos);
  std::vector<std::string> under2024;
  for (auto& k : keys)
    if (k.starts_with("photos/2")) under2024.push_back(k);
  EXPECT_EQ(collect("photos/2", 5, &pages), under2024);
  EXPECT_TRUE(collect("nothing/", 5, &pages).empty());

  // `after` in the middle of a directory and past everything.
  auto page = list(*store, {"", "photos/2024/3", 3});
  ASSERT_TRUE(page.ok());
  auto it = std::upper_bound(keys.begin(), keys.end(), std::string("photos/2024/3"));
  ASSERT_EQ(page->objects.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(page->objects[i].key, *(it + i));
  auto end = list(*store, {"", "zzz", 3});
  ASSERT_TRUE(end.ok());
  EXPECT_TRUE(end->objects.empty());
  EXPECT_TRUE(end->next.empty());
  EXPECT_EQ(list(*store, {"", "", 0}).status().kind(), ErrorKind::invalid);

  // Removing drops the key and the directories it emptied.
  ASSERT_TRUE(remove(*store, "photos/2024/3/x").ok());
  EXPECT_TRUE(remove(*store, "photos/2024/3/x").ok());  // already gone: still ok
  EXPECT_EQ(head(*store, "photos/2024/3/x").status().kind(), ErrorKind::not_found);
  EXPECT_FALSE(fs::exists(store->root() / HashPrefixLayout(1).stored_key("photos/2024/3")));
  keys.erase(std::find(keys.begin(), keys.end(), "photos/2024/3/x"));
  EXPECT_EQ(collect("", 11, &pages), keys);
}

TEST(StoreFileStore, OnePartitionLayoutHidesTheIncomingDirectory) {
  TempDir dir;
  auto options = small_options();
  options.hash_prefix_chars = 0;
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  ASSERT_TRUE(put_pattern(*store, "a", 1, 10).ok());
  EXPECT_TRUE(fs::exists(dir.path / "a"));
  // "a" is a file: "a/b" cannot be stored in the same partition.
  auto conflict = put_pattern(*store, "a/b", 1, 10);
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.status().kind(), ErrorKind::invalid);
  ASSERT_TRUE(put_pattern(*store, "c/d", 1, 10).ok());
  auto replace_dir = put_pattern(*store, "c", 1, 10);
  EXPECT_EQ(replace_dir.status().kind(), ErrorKind::invalid);
  auto page = list(*store, {});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, "a");
  EXPECT_EQ(page->objects[1].key, "c/d");
  EXPECT_TRUE(incoming_empty(store->root()));
}

// --- abort, atomic replacement -------------------------------------------------------------

TEST(StoreFileStore, AbortLeavesNothingVisible) {
  TempDir dir;
  auto options = small_options();
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  {
    Feeder feeder;
    auto upload = store->begin_put("aborted.bin", std::nullopt, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 1, 0, 3 * options.part_size).ok());
    (*upload)->abort();
    EXPECT_FALSE((*upload)->write(std::as_bytes(std::span("x", 1))).ok());
    auto put = finish(**upload);
    EXPECT_FALSE(put.ok());
  }
  {
    // Destroying an unfinished upload aborts it too.
    Feeder feeder;
    auto upload = store->begin_put("dropped.bin", std::nullopt, feeder.callback());
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE(feeder.feed(**upload, 1, 0, 2 * options.part_size + 3).ok());
  }
  EXPECT_TRUE(incoming_empty(store->root()));
  EXPECT_EQ(head(*store, "aborted.bin").status().kind(), ErrorKind::not_found);
  EXPECT_EQ(head(*store, "dropped.bin").status().kind(), ErrorKind::not_found);
  auto page = list(*store, {});
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->objects.empty());
  for (int i = 0; i < 100 && store->pool().in_use() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(store->pool().in_use(), 0u);
}

TEST(StoreFileStore, ReaderNeverSeesAHalfWrittenObject) {
  TempDir dir;
  auto options = small_options();
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  const std::uint64_t size_a = 2 * options.part_size + 5, size_b = 3 * options.part_size + 9;
  std::string sha_a = pattern_sha(11, size_a), sha_b = pattern_sha(12, size_b);
  ASSERT_TRUE(put_pattern(*store, "doc.bin", 11, size_a).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, bad{0}, saw_b{0};
  std::thread reader([&] {
    while (!stop) {
      Got got = get_all(*store, "doc.bin", std::nullopt, false);
      ++reads;
      bool is_a = got.status.ok() && got.bytes == size_a && got.sha256 == sha_a;
      bool is_b = got.status.ok() && got.bytes == size_b && got.sha256 == sha_b;
      if (is_b) ++saw_b;
      if (!is_a && !is_b) ++bad;
    }
  });
  Feeder feeder;
  auto upload = store->begin_put("doc.bin", size_b, feeder.callback());
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE(feeder.feed(**upload, 12, 0, size_b - 1).ok());
  std::this_thread::sleep_for(100ms);  // most of it written, readers still see the old one
  auto meta = head(*store, "doc.bin");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->size, size_a);
  EXPECT_EQ(saw_b.load(), 0);
  std::vector<std::byte> last(1);
  fill_pattern(12, size_b - 1, last);
  ASSERT_TRUE((*upload)->write(last).ok());
  auto put = finish(**upload);
  ASSERT_TRUE(put.ok()) << put.status().message();
  for (int i = 0; i < 200 && saw_b == 0; ++i) std::this_thread::sleep_for(5ms);
  stop = true;
  reader.join();
  EXPECT_GT(reads.load(), 1);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(saw_b.load(), 0);
}

// --- the directory's boundary ---------------------------------------------------------------

TEST(StoreFileStore, KeysCannotEscapeTheDirectory) {
  TempDir dir;
  fs::path root = dir.path / "store";
  fs::path outside = dir.path / "outside";
  fs::create_directories(outside);
  auto store = open_store(root, small_options());
  ASSERT_TRUE(store);
  for (std::string key : {"../x", "a/../../b", "a/./b", "/etc/passwd", "..", "a//b"}) {
    auto upload = store->begin_put(key, std::nullopt, [] {});
    EXPECT_FALSE(upload.ok()) << key;
    EXPECT_EQ(upload.status().kind(), ErrorKind::invalid) << key;
    EXPECT_FALSE(store->get(key, std::nullopt, {}).ok()) << key;
    EXPECT_EQ(head(*store, key).status().kind(), ErrorKind::invalid) << key;
    EXPECT_EQ(remove(*store, key).kind(), ErrorKind::invalid) << key;
  }
  // A symlink planted inside the tree does not lead out either.
  HashPrefixLayout layout(1);
  fs::path partition = root / layout.stored_key("evil/x").substr(0, 1);
  fs::create_directories(partition);
  fs::create_directory_symlink(outside, partition / "evil");
  auto escaped = put_pattern(*store, "evil/x", 1, 100);
  ASSERT_FALSE(escaped.ok());
  EXPECT_EQ(escaped.status().kind(), ErrorKind::invalid) << escaped.status().message();
  EXPECT_TRUE(fs::is_empty(outside));
  // Deeper: no directory is made through the link before the check.
  fs::path deep = root / layout.stored_key("evil/sub/x").substr(0, 1);
  fs::create_directories(deep);
  if (!fs::is_symlink(deep / "evil")) fs::create_directory_symlink(outside, deep / "evil");
  escaped = put_pattern(*store, "evil/sub/x", 1, 100);
  ASSERT_FALSE(escaped.ok());
  EXPECT_EQ(escaped.status().kind(), ErrorKind::invalid) << escaped.status().message();
  EXPECT_EQ(escaped.status().message().find(root.string()), std::string::npos) << escaped.status().message();
  EXPECT_TRUE(fs::is_empty(outside));
  std::ofstream(outside / "secret") << "secret";
  EXPECT_NE(get_all(*store, "evil/secret").status.ok(), true);
  EXPECT_FALSE(head(*store, "evil/secret").ok());
  // A symlink as the object itself is not followed.
  fs::path p2 = root / layout.stored_key("link").substr(0, 1);
  fs::create_directories(p2);
  fs::create_symlink(outside / "secret", p2 / "link");
  EXPECT_EQ(get_all(*store, "link").status.kind(), ErrorKind::not_found);
  EXPECT_EQ(head(*store, "link").status().kind(), ErrorKind::not_found);
  auto page = list(*store, {});
  ASSERT_TRUE(page.ok());
  EXPECT_TRUE(page->objects.empty());
  EXPECT_TRUE(fs::exists(outside / "secret"));
}

// --- backpressure ------------------------------------------------------------------------------

TEST(StoreFileStore, HeldChunksStopDownloadsAndUploadsWaitForParts) {
  TempDir dir;
  auto options = small_options();  // 4 parts, 2 per transfer
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  const std::uint64_t size = 6 * options.part_size;
  ASSERT_TRUE(put_pattern(*store, "one", 1, size).ok());
  ASSERT_TRUE(put_pattern(*store, "two", 2, size).ok());

  // Two consumers that hold every chunk they get.
  struct Holder {
    std::mutex mutex;
    std::vector<Chunk> chunks;
    std::promise<Status> done;
  };
  auto start = [&](const std::string& key, Holder& h) {
    GetSink sink;
    sink.on_chunk = [&h](Chunk c) {
      std::lock_guard lock(h.mutex);
      h.chunks.push_back(std::move(c));
    };
    sink.on_done = [&h](Status s) { h.done.set_value(std::move(s)); };
    return store->get(key, std::nullopt, std::move(sink));
  };
  Holder one, two;
  auto d1 = start("one", one);
  auto d2 = start("two", two);
  ASSERT_TRUE(d1.ok() && d2.ok());
  auto held = [](Holder& h) {
    std::lock_guard lock(h.mutex);
    return h.chunks.size();
  };
  for (int i = 0; i < 500 && (held(one) < 2 || held(two) < 2); ++i) std::this_thread::sleep_for(2ms);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(held(one), 2u);  // stopped at its share
  EXPECT_EQ(held(two), 2u);
  EXPECT_EQ(store->pool().in_use(), 4u);

  // The pool is empty: an upload takes nothing until a chunk is released.
  Feeder feeder;
  auto upload = store->begin_put("three", std::nullopt, feeder.callback());
  ASSERT_TRUE(upload.ok());
  std::vector<std::byte> data(1000, std::byte{7});
  auto took = (*upload)->write(data);
  ASSERT_TRUE(took.ok());
  EXPECT_EQ(*took, 0u);
  {
    std::lock_guard lock(one.mutex);
    one.chunks.front().release();
  }
  {
    std::unique_lock lock(feeder.mutex);
    EXPECT_TRUE(feeder.cv.wait_for(lock, 5s, [&] { return feeder.writable; }));
  }
  took = (*upload)->write(data);
  ASSERT_TRUE(took.ok());
  EXPECT_EQ(*took, 1000u);
  auto put = finish(**upload);
  ASSERT_TRUE(put.ok()) << put.status().message();

  // Releasing everything as it comes lets both downloads end.
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    while (!stop) {
      for (Holder* h : {&one, &two}) {
        std::lock_guard lock(h->mutex);
        h->chunks.clear();
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  auto f1 = one.done.get_future(), f2 = two.done.get_future();
  EXPECT_EQ(f1.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f2.wait_for(30s), std::future_status::ready);
  stop = true;
  drain.join();
  EXPECT_TRUE(f1.get().ok());
  EXPECT_TRUE(f2.get().ok());
  one.chunks.clear();
  two.chunks.clear();
  EXPECT_EQ(store->pool().high_water(), 4u);
  EXPECT_EQ(store->pool().in_use(), 0u);
}

TEST(StoreFileStore, CancelEndsADownload) {
  TempDir dir;
  auto options = small_options();
  auto store = open_store(dir.path, options);
  ASSERT_TRUE(store);
  ASSERT_TRUE(put_pattern(*store, "c", 1, 5 * options.part_size).ok());
  std::promise<Status> done;
  auto kept = std::make_shared<std::vector<Chunk>>();
  std::mutex mutex;
  GetSink sink;
  sink.on_chunk = [&, kept](Chunk c) {
    std::lock_guard lock(mutex);
    kept->push_back(std::move(c));
  };
  sink.on_done = [&](Status s) { done.set_value(std::move(s)); };
  auto download = store->get("c", std::nullopt, std::move(sink));
  ASSERT_TRUE(download.ok());
  std::this_thread::sleep_for(50ms);
  (*download)->cancel();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get().kind(), ErrorKind::invalid);
  {
    std::lock_guard lock(mutex);
    EXPECT_LE(kept->size(), 2u);
    kept->clear();
  }
  EXPECT_EQ(store->pool().in_use(), 0u);
}

TEST(StoreFileStore, MakeStoreOpensFileUrls) {
  TempDir dir;
  auto store = make_store("file://" + (dir.path / "objects").string(), small_options());
  ASSERT_TRUE(store.ok()) << store.status().message();
  ASSERT_TRUE(put_pattern(**store, "k", 1, 3).ok());
  EXPECT_TRUE(head(**store, "k").ok());
  EXPECT_FALSE(make_store("file://relative", small_options()).ok());
  EXPECT_FALSE(make_store("ftp://x", small_options()).ok());
  StoreOptions bad = small_options();
  bad.parts_per_transfer = 1;
  auto rejected = make_store("file://" + dir.path.string(), bad);
  ASSERT_FALSE(rejected.ok());
  EXPECT_NE(rejected.status().message().find("parts per transfer"), std::string::npos);
}

}  // namespace
}  // namespace kiroku
