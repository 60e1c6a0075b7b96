// store_harness.h - drives an ObjectStore as the file API does, for the
// store tests (file store, S3 store, the conformance suite): uploads fed in
// pieces that wait for when_writable, downloads gathered and hashed, and the
// callback operations made synchronous. Test objects are a cheap function of
// (seed, offset), so no test keeps a copy to compare.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "store/object_store.h"
#include "store/part_pool.h"

namespace kiroku::testing {

using namespace std::chrono_literals;

// Byte `i` of test object `seed`.
inline std::byte pattern_byte(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t x = (i / 8 + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
  x ^= x >> 31;
  return std::byte(x >> (8 * (i % 8)));
}

inline void fill_pattern(std::uint64_t seed, std::uint64_t offset, std::span<std::byte> out) {
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = pattern_byte(seed, offset + i);
}

// The SHA-256 (hex) of the first `size` bytes of object `seed`.
inline std::string pattern_sha(std::uint64_t seed, std::uint64_t size) {
  Sha256Stream sha;
  std::vector<std::byte> buffer(256 * 1024);
  for (std::uint64_t off = 0; off < size;) {
    std::size_t n = std::min<std::uint64_t>(buffer.size(), size - off);
    fill_pattern(seed, off, std::span(buffer).first(n));
    sha.update(std::span(buffer).first(n));
    off += n;
  }
  return sha.finish_hex();
}

// Feeds an upload as an HTTP connection does: pieces of `piece` bytes,
// waiting for when_writable after a write that took nothing.
struct Feeder {
  std::mutex mutex;
  std::condition_variable cv;
  bool writable = false;
  int wakeups = 0;
  std::size_t piece = 256 * 1024;

  std::function<void()> callback() {
    return [this] {
      std::lock_guard lock(mutex);
      writable = true;
      ++wakeups;
      cv.notify_all();
    };
  }

  // Feeds bytes [from, to) of object `seed`; what was taken goes to `sha`.
  Status feed(Upload& upload, std::uint64_t seed, std::uint64_t from, std::uint64_t to, Sha256Stream* sha = nullptr,
              std::chrono::seconds patience = 60s) {
    std::vector<std::byte> buffer(piece);
    for (std::uint64_t done = from; done < to;) {
      std::size_t n = std::min<std::uint64_t>(buffer.size(), to - done);
      fill_pattern(seed, done, std::span(buffer).first(n));
      for (std::size_t off = 0; off < n;) {
        {
          std::lock_guard lock(mutex);
          writable = false;
        }
        auto took = upload.write(std::span(buffer).subspan(off, n - off));
        if (!took.ok()) return took.status();
        if (sha) sha->update(std::span(buffer).subspan(off, *took));
        off += *took;
        if (off < n && *took == 0) {
          std::unique_lock lock(mutex);
          if (!cv.wait_for(lock, patience, [&] { return writable; }))
            return Status::transient("when_writable did not run");
        }
      }
      done += n;
    }
    return {};
  }
};

inline Result<PutResult> finish(Upload& upload) {
  std::promise<Result<PutResult>> promise;
  auto future = promise.get_future();
  upload.finish([&promise](Result<PutResult> r) { promise.set_value(std::move(r)); });
  if (future.wait_for(120s) != std::future_status::ready) std::abort();
  return future.get();
}

// Uploads `size` bytes of object `seed` under `key` with its size declared.
inline Result<PutResult> put_pattern(ObjectStore& store, const std::string& key, std::uint64_t seed, std::uint64_t size,
                                     std::string* sha_hex = nullptr, std::size_t piece = 256 * 1024) {
  Feeder feeder;
  feeder.piece = piece;
  auto upload = store.begin_put(key, size, feeder.callback());
  if (!upload.ok()) return upload.status();
  Sha256Stream sha;
  if (Status s = feeder.feed(**upload, seed, 0, size, &sha); !s) return s;
  if (sha_hex) *sha_hex = sha.finish_hex();
  return finish(**upload);
}

struct Got {
  Status status;
  GetStart start;
  bool started = false;
  std::vector<std::byte> data;  // when kept
  std::string sha256;
  std::uint64_t bytes = 0;
  bool in_order = true;
  std::size_t max_chunk = 0;
};

// Downloads `key` (or a range of it); keeps the bytes when `keep`, else only hashes them.
inline Got get_all(ObjectStore& store, const std::string& key, std::optional<ByteRange> range = {}, bool keep = true) {
  auto got = std::make_shared<Got>();
  auto sha = std::make_shared<Sha256Stream>();
  auto finished = std::make_shared<std::promise<void>>();
  auto future = finished->get_future();
  GetSink sink;
  sink.on_start = [got](const GetStart& s) {
    got->start = s;
    got->started = true;
  };
  sink.on_chunk = [got, sha, keep](Chunk c) {
    if (c.offset() != got->start.offset + got->bytes) got->in_order = false;
    got->bytes += c.data().size();
    got->max_chunk = std::max(got->max_chunk, c.data().size());
    sha->update(c.data());
    if (keep) got->data.insert(got->data.end(), c.data().begin(), c.data().end());
  };
  sink.on_done = [got, sha, finished](Status s) {
    got->status = std::move(s);
    got->sha256 = sha->finish_hex();
    finished->set_value();
  };
  auto download = store.get(key, range, std::move(sink));
  if (!download.ok()) {
    Got out;
    out.status = download.status();
    return out;
  }
  if (future.wait_for(120s) != std::future_status::ready) std::abort();
  return *got;
}

inline Result<ObjectMeta> head(ObjectStore& store, const std::string& key) {
  auto promise = std::make_shared<std::promise<Result<ObjectMeta>>>();
  auto future = promise->get_future();
  store.head(key, [promise](Result<ObjectMeta> r) { promise->set_value(std::move(r)); });
  return future.get();
}

inline Status remove(ObjectStore& store, const std::string& key) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  store.remove(key, [promise](Status s) { promise->set_value(std::move(s)); });
  return future.get();
}

inline Result<ListPage> list(ObjectStore& store, ListRequest request) {
  auto promise = std::make_shared<std::promise<Result<ListPage>>>();
  auto future = promise->get_future();
  store.list(std::move(request), [promise](Result<ListPage> r) { promise->set_value(std::move(r)); });
  return future.get();
}

// Every page of a listing of `prefix`, `limit` keys at a time.
inline std::vector<ObjectMeta> list_all(ObjectStore& store, const std::string& prefix, std::size_t limit,
                                        int* pages = nullptr) {
  std::vector<ObjectMeta> out;
  ListRequest request{prefix, "", limit};
  int n = 0;
  for (;;) {
    auto page = list(store, request);
    EXPECT_TRUE(page.ok()) << page.status().message();
    if (!page.ok()) break;
    ++n;
    EXPECT_LE(page->objects.size(), limit);
    for (auto& o : page->objects) out.push_back(o);
    if (page->next.empty() || n > 1000) break;
    request.after = page->next;
  }
  if (pages) *pages = n;
  return out;
}

}  // namespace kiroku::testing
