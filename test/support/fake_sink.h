// fake_sink.h - a Sink in memory for the unit tests of the ingest layer.
//
// Stores rows by id (a replay of the same id is reported as replayed) and can
// be told to fail: the next N writes transiently (the database away), every
// write while `hold` is set (a slow database: writes wait), and rows whose
// name starts with "bad" as refused values (like a CHECK constraint), naming
// the row or not. Thread-safe: the writer thread writes, the test reads.
#pragma once

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/event.h"
#include "sink/sink.h"

namespace kiroku::testing {

class FakeSink final : public Sink {
 public:
  // Whether a refusal names its row: not at all, truly, or falsely.
  enum class Hint { none, right, wrong };

  Status open() override { return {}; }

  Status write(std::string_view records, std::size_t count) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !hold_; });
    ++writes_;
    refused_ = kNoRow;
    if (transient_failures_ > 0) {
      --transient_failures_;
      return Status::transient("the fake database is away");
    }
    std::vector<EventView> rows;
    RecordReader reader(records);
    EventView e;
    while (reader.next(e)) {
      if (refuse_all || e.name.starts_with("bad")) {
        const std::size_t n = rows.size();
        if (hint == Hint::right) refused_ = n;
        if (hint == Hint::wrong) refused_ = (n + 1) % count;  // the next row, or the first
        return Status::invalid("CHECK constraint failed: name (" + std::string(e.name) + ")");
      }
      rows.push_back(e);
    }
    EXPECT_EQ(rows.size(), count);
    report_.clear();
    for (const EventView& r : rows) {
      auto [it, fresh] = rows_.emplace(r.id, std::string(r.name));
      if (fresh) ++report_.stored;
      else ++report_.replayed, ++replays_;
    }
    ++commits_;
    return {};
  }
  const WriteReport& last_write() const override { return report_; }
  std::string_view rejection_reason() const override { return "constraint"; }
  std::size_t refused_row() const override { return refused_; }
  Result<unsigned> lease_instance(std::string_view, int, std::int64_t) override { return 0u; }
  Status release_instance(unsigned, std::string_view) override { return {}; }
  Result<std::uint64_t> max_id() override {
    std::lock_guard lock(mu_);
    return rows_.empty() ? std::uint64_t{0} : rows_.rbegin()->first;
  }
  Status ping() override { return {}; }
  PoolStats stats() const override { return {}; }
  std::string_view kind() const override { return "fake"; }

  // The next `n` writes fail transiently.
  void fail_next(int n) {
    std::lock_guard lock(mu_);
    transient_failures_ = n;
  }
  // While held, writes wait (the writer thread blocks in write()).
  void set_hold(bool on) {
    {
      std::lock_guard lock(mu_);
      hold_ = on;
    }
    cv_.notify_all();
  }
  std::size_t rows() const {
    std::lock_guard lock(mu_);
    return rows_.size();
  }
  std::size_t writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }
  // Rows written again under an id already stored.
  std::size_t replays() const {
    std::lock_guard lock(mu_);
    return replays_;
  }
  std::size_t commits() const {
    std::lock_guard lock(mu_);
    return commits_;
  }
  std::map<std::uint64_t, std::string> stored() const {
    std::lock_guard lock(mu_);
    return rows_;
  }

  // Set before the writer starts.
  Hint hint = Hint::none;
  bool refuse_all = false;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int transient_failures_ = 0;
  std::size_t writes_ = 0;
  std::size_t commits_ = 0;
  std::size_t replays_ = 0;
  std::size_t refused_ = kNoRow;
  std::map<std::uint64_t, std::string> rows_;
  WriteReport report_;
};

}  // namespace kiroku::testing
