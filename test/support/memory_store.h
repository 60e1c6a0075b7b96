// memory_store.h - an ObjectStore that keeps objects in memory, built on the
// stores' shared part engine (UploadParts, ReadAhead), for unit tests of the
// engine and of what sits on a store. What it lets a test do that a real
// store does not: fail the storing of a given part, and hold each stored part
// until the test lets it go (a slow store).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/object_store.h"
#include "store/part_pool.h"
#include "store/read_ahead.h"
#include "store/upload_parts.h"

namespace kiroku::testing {

class MemoryStore final : public ObjectStore {
 public:
  explicit MemoryStore(StoreOptions options)
      : options_(options), pool_(options.part_size, options.part_count), threads_(options.threads) {}
  ~MemoryStore() override { open_gate(); }

  // The next upload part stored with this number (1, 2, ...) fails with s.
  void fail_part(int number, Status s) {
    std::lock_guard lock(mutex_);
    fail_number_ = number;
    fail_status_ = std::move(s);
  }
  // While closed, each part waits in the store's step until open_gate().
  void close_gate() {
    std::lock_guard lock(mutex_);
    gate_closed_ = true;
  }
  void open_gate() {
    {
      std::lock_guard lock(mutex_);
      gate_closed_ = false;
    }
    gate_.notify_all();
  }
  // Parts stored (or waiting at the gate) so far, all uploads.
  int parts_stored() const {
    std::lock_guard lock(mutex_);
    return parts_stored_;
  }
  std::optional<std::string> object(const std::string& key) const {
    std::lock_guard lock(mutex_);
    auto it = objects_.find(key);
    if (it == objects_.end()) return std::nullopt;
    return it->second;
  }

  Result<std::unique_ptr<Upload>> begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                            std::function<void()> when_writable,
                                            std::string_view /*content_type*/ = {}) override {
    UploadParts::Setup setup{&pool_,
                             &threads_,
                             &options_,
                             std::string(key),
                             expected_size,
                             std::move(when_writable),
                             options_.parts_per_transfer,
                             0};
    return std::unique_ptr<Upload>(new UploadHandle(std::make_shared<Put>(std::move(setup), this)));
  }

  Result<std::unique_ptr<Download>> get(std::string_view key, std::optional<ByteRange> range, GetSink sink) override {
    ReadAhead::Setup setup{&pool_, &threads_, &options_, std::string(key), range, options_.parts_per_transfer};
    auto state = std::make_shared<Get>(std::move(setup), std::move(sink), this);
    state->begin();
    return std::unique_ptr<Download>(new DownloadHandle(std::move(state)));
  }

  void head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) override {
    auto data = object(std::string(key));
    threads_.post([done = std::move(done), key = std::string(key), data] {
      if (!data) return done(Status::not_found("no object '" + key + "'"));
      done(ObjectMeta{key, data->size(), "", {}, ""});
    });
  }
  void remove(std::string_view key, std::function<void(Status)> done) override {
    {
      std::lock_guard lock(mutex_);
      objects_.erase(std::string(key));
    }
    threads_.post([done = std::move(done)] { done(Status()); });
  }
  void list(ListRequest request, std::function<void(Result<ListPage>)> done) override {
    ListPage page;
    {
      std::lock_guard lock(mutex_);
      for (auto it = objects_.upper_bound(request.after); it != objects_.end(); ++it) {
        if (!it->first.starts_with(request.prefix)) continue;
        if (page.objects.size() == request.limit) {
          page.next = page.objects.back().key;
          break;
        }
        page.objects.push_back({it->first, it->second.size(), "", {}, ""});
      }
    }
    threads_.post([done = std::move(done), page = std::move(page)]() mutable { done(std::move(page)); });
  }
  const PartPool& pool() const override { return pool_; }
  // The pool itself, for a test that takes its buffers away.
  PartPool& parts() { return pool_; }

 private:
  // Stores one part (in the upload's step): waits at the gate, fails when told to.
  Status store_part(int number) {
    std::unique_lock lock(mutex_);
    ++parts_stored_;
    gate_.wait(lock, [&] { return !gate_closed_; });
    if (number != fail_number_) return {};
    fail_number_ = 0;
    return fail_status_;
  }

  struct Put final : UploadParts {
    MemoryStore* store;
    std::string bytes;  // step() only

    Put(Setup setup, MemoryStore* s) : UploadParts(std::move(setup)), store(s) {}

    void step() override {
      std::deque<FullPart> batch;
      std::vector<PartPool::Part> drop;
      bool commit = false, clean = false, notify = false;
      std::function<void(Result<PutResult>)> answer;
      Status failure;
      {
        std::lock_guard lock(mutex);
        if (ended) return;
        if (!failed.ok()) {  // nothing is kept: answer and end
          drop_unsent_locked(drop);
          ended = clean = true;
          answer = take_done_locked();
          notify = writable_locked();
          failure = failed;
        } else {
          batch.swap(full);
          commit = caller == Caller::finishing;
        }
      }
      drop.clear();  // parts go back outside the lock, as in every store
      if (clean) {
        if (notify) notify_writable();
        if (answer) answer(failure);
        return;
      }
      Status error;
      for (auto& p : batch) {
        if (!error.ok()) break;
        error = store->store_part(p.number);
        if (error.ok()) bytes.append(reinterpret_cast<const char*>(p.part.bytes().data()), p.size);
      }
      const std::size_t done_parts = batch.size();
      batch.clear();
      std::string sha;
      std::uint64_t total;
      {
        std::lock_guard lock(mutex);
        held -= done_parts;
        if (!error.ok()) fail_locked(error);
        notify = writable_locked();
        if (!failed.ok()) commit = false;
        sha = sha_hex;
        total = size;
      }
      if (notify) notify_writable();
      if (!error.ok()) return schedule();
      if (!commit) return;
      {
        std::lock_guard lock(store->mutex_);
        store->objects_[setup_.key] = bytes;
      }
      {
        std::lock_guard lock(mutex);
        ended = true;
        answer = take_done_locked();
      }
      if (answer) answer(PutResult{setup_.key, total, sha, sha});
    }
  };

  struct Get final : ReadAhead {
    MemoryStore* store;
    std::string bytes;  // a copy taken at open()

    Get(Setup setup, GetSink sink, MemoryStore* s) : ReadAhead(std::move(setup), std::move(sink)), store(s) {}

    void open() override {
      auto data = store->object(setup_.key);
      if (!data) return opened(Status::not_found("no object '" + setup_.key + "'"));
      bytes = std::move(*data);
      GetStart info;
      info.object = {setup_.key, bytes.size(), "", {}, ""};
      if (auto r = resolve_range(setup_.range, bytes.size())) {
        info.offset = r->offset;
        info.length = r->length;
      } else {
        info.range_unsatisfiable = true;
      }
      opened(std::move(info));
    }
    void fetch(std::uint64_t offset, std::span<std::byte> buffer) override {
      std::memcpy(buffer.data(), bytes.data() + offset, buffer.size());
      filled(offset, Status());
    }
  };

  StoreOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable gate_;
  bool gate_closed_ = false;
  int parts_stored_ = 0;
  int fail_number_ = 0;
  Status fail_status_;
  std::map<std::string, std::string> objects_;
  PartPool pool_;
  TransferThreads threads_;  // last: destroyed first
};

}  // namespace kiroku::testing
