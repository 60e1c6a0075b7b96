// batch_writer.cpp - queue, retries and spilling of the writer thread.
#include "ingest/batch_writer.h"

#include "common/memory.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <random>

#include "ops/metrics.h"

namespace kiroku {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t unix_us_now() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Free buffers kept for reuse; more are released.
constexpr std::size_t kMaxFreeBuffers = 64;
// A buffer that grew past this (one huge POST /events) is released, not kept:
// memory follows load. A full batch of --batch-max 10,000 short events takes
// about 0.5 MiB, so ordinary batches are reused and allocate nothing.
constexpr std::size_t kMaxKeptBufferBytes = 4 << 20;

}  // namespace

BatchWriter::BatchWriter(Sink& sink, Spool* spool, std::uint64_t queue_max_bytes, BatchWriterHooks hooks,
                         DeadLetterFile* dead_letter)
    : sink_(sink),
      spool_(spool),
      queue_max_bytes_(queue_max_bytes),
      hooks_(std::move(hooks)),
      dead_letter_(dead_letter) {}

BatchWriter::~BatchWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    deadline_ = Clock::now();
  }
  stop_now_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BatchWriter::open_sink_first() {
  sink_open_ = false;
  healthy_ = false;
}

void BatchWriter::start(OnDone on_done) {
  on_done_ = std::move(on_done);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kiroku-writer");
    run();
  });
}

std::unique_ptr<EventBuffer> BatchWriter::take_buffer() {
  {
    std::lock_guard lock(mu_);
    if (!free_.empty()) {
      auto b = std::move(free_.back());
      free_.pop_back();
      return b;
    }
  }
  return std::make_unique<EventBuffer>();
}

void BatchWriter::submit(Batch batch) {
  const std::size_t mem = batch.events ? batch.events->bytes.capacity() : 0;
  batch.bytes = batch.events ? batch.events->bytes.size() : (batch.segment ? batch.segment->bytes : 0);
  {
    std::lock_guard lock(mu_);
    queued_events_.fetch_add(batch.count, std::memory_order_relaxed);
    queued_batches_.fetch_add(1, std::memory_order_relaxed);
    memory_bytes_.fetch_add(mem, std::memory_order_relaxed);
    if (batch.events && queue_.empty()) oldest_us_.store(batch.events->oldest_received_us, std::memory_order_relaxed);
    queue_.push_back(std::move(batch));
    if (memory_bytes_.load(std::memory_order_relaxed) > queue_max_bytes_) spill_locked();
  }
  cv_.notify_one();
}

void BatchWriter::spill_locked() {
  // Newest first: the oldest batches are written next and are worth keeping.
  for (auto it = queue_.rbegin(); it != queue_.rend(); ++it) {
    if (memory_bytes_.load(std::memory_order_relaxed) <= queue_max_bytes_ / 2) break;
    if (!it->events || !it->segment) continue;
    memory_bytes_.fetch_sub(it->events->bytes.capacity(), std::memory_order_relaxed);
    it->events.reset();  // freed, not pooled: the pool itself must stay small
  }
}

std::string BatchWriter::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

bool BatchWriter::stop_due() const {
  std::lock_guard lock(mu_);
  return stopping_ && Clock::now() >= deadline_;
}

void BatchWriter::run() {
  for (;;) {
    Batch b;
    {
      std::unique_lock lock(mu_);
      while (queue_.empty() && !stopping_) {
        // Idle: check the sink once a second so /readyz notices an outage
        // (and a recovery) even without traffic.
        if (!cv_.wait_for(lock, std::chrono::seconds(1), [&] { return !queue_.empty() || stopping_; })) {
          lock.unlock();
          release_noted_memory();  // what a large request freed meanwhile
          Status st = sink_open_ ? sink_.ping() : sink_.open();
          if (st.ok()) sink_open_ = true;
          if (st.ok() != healthy_.exchange(st.ok())) {
            if (st.ok()) spdlog::info("sink is reachable again");
            else spdlog::error("sink is not reachable: {}", st.message());
          }
          lock.lock();
          if (!st.ok()) last_error_ = st.message();
        }
      }
      if (queue_.empty()) break;  // stopping with nothing left
      if (stopping_ && Clock::now() >= deadline_) break;
      b = std::move(queue_.front());
      queue_.pop_front();
      if (!queue_.empty() && queue_.front().events)
        oldest_us_.store(queue_.front().events->oldest_received_us, std::memory_order_relaxed);
    }
    const std::size_t queued_count = b.count;  // a replayed segment learns its count while read
    const bool ok = write(b);
    const std::size_t mem = b.events ? b.events->bytes.capacity() : 0;
    {
      std::lock_guard lock(mu_);
      queued_events_.fetch_sub(queued_count, std::memory_order_relaxed);
      queued_batches_.fetch_sub(1, std::memory_order_relaxed);
      memory_bytes_.fetch_sub(mem, std::memory_order_relaxed);
      if (queue_.empty()) oldest_us_.store(0, std::memory_order_relaxed);
      if (b.events && free_.size() < kMaxFreeBuffers && b.events->bytes.capacity() <= kMaxKeptBufferBytes) {
        b.events->clear();
        free_.push_back(std::move(b.events));
      }
    }
    if (b.events && b.events->bytes.capacity() > kMaxKeptBufferBytes) note_large_free();
    b.events.reset();
    release_noted_memory();
    if (on_done_ && b.shard != kReplayShard) on_done_(b.shard, b.seq, ok);
    if (!ok) {
      // Only at a stop past its deadline: put the batch back for the count.
      std::lock_guard lock(mu_);
      queued_events_.fetch_add(queued_count, std::memory_order_relaxed);
      break;
    }
  }
}

void BatchWriter::record_latencies(std::string_view records, std::int64_t now_us) {
  if (!hooks_.accept_to_durable) return;
  RecordReader reader(records);
  EventView e;
  while (reader.next(e)) {
    const std::int64_t d = now_us - e.received_us;
    hooks_.accept_to_durable->observe_shared(d > 0 ? static_cast<std::uint64_t>(d) : 0);
  }
}

void BatchWriter::take_report() {
  const WriteReport& r = sink_.last_write();
  replayed_ += r.replayed;
  client_dups_ += r.client_duplicates;
  conflicts_ += r.conflicts;
  conflict_records_.append(r.conflict_records);
}

void BatchWriter::set_aside_conflicts(const Batch& b) {
  std::string ids;
  RecordReader reader(conflict_records_);
  EventView e;
  for (int i = 0; i < 5 && reader.next(e); ++i) ids += (i ? "," : "") + std::to_string(e.id);
  std::string kept = "logged below";
  if (spool_) {
    if (auto path = spool_->set_aside(conflict_records_); path.ok()) kept = "kept in " + *path;
    else kept = "could not be kept (" + path.status().message() + "), logged below";
  }
  spdlog::error(
      "{} events of a batch (shard {}) were NOT stored: a different row holds their id (ids {}...); "
      "{}; counted in kiroku_events_conflicts_total",
      conflicts_, b.shard == kReplayShard ? std::string("replay") : std::to_string(b.shard), ids, kept);
  if (kept.starts_with("kept")) return;
  RecordReader all(conflict_records_);
  while (all.next(e))
    spdlog::error("conflict: id={} received_us={} at_us={} name={:?} value={} client_id={:?}", e.id, e.received_us,
                  e.at_us, e.name, e.value, e.client_id);
}

Status BatchWriter::write_once(Batch& b) {
  const auto t0 = Clock::now();
  replayed_ = client_dups_ = conflicts_ = 0;
  conflict_records_.clear();
  if (!sink_open_) {
    if (Status st = sink_.open(); !st.ok()) return st;
    sink_open_ = true;
  }
  dead_lines_.clear();
  dead_ids_.clear();
  dead_by_reason_.fill(0);
  dead_in_batch_ = 0;
  first_refusal_.clear();
  quarantine_ = false;
  if (b.events) {
    Status st = store(b.events->view(), b.events->count);
    if (!st.ok()) return st;
    const auto now_us = unix_us_now();
    if (hooks_.flush_duration)
      hooks_.flush_duration->observe_shared(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count()));
    if (hooks_.batch_events) hooks_.batch_events->observe_shared(b.events->count);
    record_latencies(b.events->view(), now_us);
    return {};
  }
  if (!b.segment) return {};
  // Spilled or left by a previous run: read it back from the spool.
  auto r = read_segment(
      b.segment->path, scratch_,
      [&](std::string_view records, std::size_t count) -> Status {
        const auto t1 = Clock::now();
        Status st = store(records, count);
        if (!st.ok()) return st;
        if (hooks_.flush_duration)
          hooks_.flush_duration->observe_shared(static_cast<std::uint64_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t1).count()));
        if (hooks_.batch_events) hooks_.batch_events->observe_shared(count);
        record_latencies(records, unix_us_now());
        return {};
      },
      8192);
  if (!r.ok()) {
    if (r.status().kind() == ErrorKind::not_found) {
      spdlog::warn("spool segment {} is gone; skipping it", b.segment->path);
      return {};
    }
    return r.status();
  }
  if (b.count == 0) b.count = r->records;  // replayed segments count as they are read
  if (r->tail == SegmentReadResult::Tail::torn) {
    spdlog::warn("spool segment {}: torn tail at offset {} skipped ({} events replayed)", b.segment->path,
                 r->tail_offset, r->records);
  } else if (r->tail == SegmentReadResult::Tail::corrupt) {
    spdlog::error(
        "spool segment {}: corrupt record at offset {} ({} events before it replayed); "
        "kept as {}.corrupt",
        b.segment->path, r->tail_offset, r->records, b.segment->path);
    quarantine_ = spool_ != nullptr;  // once the batch is done (write())
  }
  return {};
}

Status BatchWriter::sink_write(std::string_view records, std::size_t count) {
  if (hooks_.sink_writes) hooks_.sink_writes->inc_shared();
  Status st = sink_.write(records, count);
  if (st.ok()) {
    refused_streak_ = 0;
    take_report();  // each transaction's report, parts of a split batch included
  }
  return st;
}

Status BatchWriter::store(std::string_view records, std::size_t count) {
  Status st = sink_write(records, count);
  if (st.kind() != ErrorKind::invalid || dead_letter_ == nullptr) return st;
  offsets_.clear();
  RecordReader reader(records);
  EventView e;
  std::size_t off = 0;
  while (reader.next(e)) {
    offsets_.push_back(off);
    off += record_size(e.name.size(), e.client_id.size());
  }
  offsets_.push_back(off);
  // While the database names the refused row: store the rows before it,
  // confirm it alone, go on with the rows after it (three transactions per
  // refused row; a store between refusals keeps the table-fault streak honest).
  // A named row that turns out storable ends the trust: bisect what is left.
  const std::size_t n = offsets_.size() - 1;
  const auto part = [&](std::size_t a, std::size_t b) {
    return records.substr(offsets_[a], offsets_[b] - offsets_[a]);
  };
  for (std::size_t lo = 0;;) {
    const std::size_t named = sink_.refused_row();
    if (named >= n - lo) return split(records, lo, n, st, true);
    const std::size_t i = lo + named;
    if (i > lo) {
      const Status before = sink_write(part(lo, i), i - lo);
      if (before.kind() == ErrorKind::invalid) return split(records, lo, n, st, true);
      if (!before.ok()) return before;
    }
    const Status alone = sink_write(part(i, i + 1), 1);
    const bool held = alone.kind() == ErrorKind::invalid;
    if (held) {
      if (Status r = refuse(records, i, alone, sink_.rejection_reason()); !r.ok()) return r;
    } else if (!alone.ok()) {
      return alone;
    }
    lo = i + 1;
    if (lo == n) return {};
    st = sink_write(part(lo, n), n - lo);
    if (st.kind() != ErrorKind::invalid) return st;
    if (!held) return split(records, lo, n, st, true);
  }
}

Status BatchWriter::split(std::string_view records, std::size_t lo, std::size_t hi, const Status& err, bool tried) {
  const auto part = [&](std::size_t a, std::size_t b) {
    return records.substr(offsets_[a], offsets_[b] - offsets_[a]);
  };
  if (hi - lo == 1) {
    if (tried) return refuse(records, lo, err, sink_.rejection_reason());
    // Known to fail only because its sibling was stored: try it alone, so
    // that what is recorded is its own error.
    Status st = sink_write(part(lo, hi), 1);
    if (st.kind() == ErrorKind::invalid) return refuse(records, lo, st, sink_.rejection_reason());
    return st;
  }
  const std::size_t mid = lo + (hi - lo) / 2;
  Status left = sink_write(part(lo, mid), mid - lo);
  if (left.ok()) {
    // The whole failed and its left half did not: the refused rows are on the right.
    return split(records, mid, hi, err, false);
  }
  if (left.kind() != ErrorKind::invalid) return left;
  if (Status st = split(records, lo, mid, left, true); !st.ok()) return st;
  Status right = sink_write(part(mid, hi), hi - mid);
  if (right.kind() == ErrorKind::invalid) return split(records, mid, hi, right, true);
  return right;
}

Status BatchWriter::refuse(std::string_view records, std::size_t i, const Status& err, std::string_view reason) {
  if (++refused_streak_ >= kTableFaultRows) {
    return Status::permanent(
        fmt::format("{} rows in a row were refused and none stored between them, so the table is at fault, not "
                    "the data (last: {}); the batch is kept and retried until the table is fixed",
                    refused_streak_, err.message()));
  }
  RecordReader reader(records.substr(offsets_[i], offsets_[i + 1] - offsets_[i]));
  EventView e;
  reader.next(e);
  ++dead_in_batch_;
  if (first_refusal_.empty()) first_refusal_ = err.message();
  if (dead_letter_->holds(e.id)) return {};  // written there before a crash or a failed retry
  std::size_t r = 0;
  while (r + 1 < kRejectionReasons.size() && kRejectionReasons[r] != reason) ++r;
  ++dead_by_reason_[r];
  append_dead_letter_line(dead_lines_, e, kRejectionReasons[r], err.message(), unix_us_now());
  dead_ids_.push_back(e.id);
  return {};
}

Status BatchWriter::flush_dead_letters() {
  if (dead_in_batch_ == 0) return {};
  if (Status st = dead_letter_->append(dead_lines_, dead_ids_); !st.ok()) {
    if (st.kind() == ErrorKind::full)
      return Status::full(st.message() + ": the batch is kept and retried until there is room");
    return st;
  }
  for (std::size_t r = 0; r < kRejectionReasons.size(); ++r) {
    if (dead_by_reason_[r] > 0 && hooks_.dead_lettered[r]) hooks_.dead_lettered[r]->add_shared(dead_by_reason_[r]);
  }
  const std::size_t already = dead_in_batch_ - dead_ids_.size();  // a replayed batch's, kept before
  if (dead_ids_.empty()) {
    spdlog::info("{} events refused by the database were already in {} (a replayed batch)", already,
                 dead_letter_->path());
  } else {
    spdlog::warn("{} events refused by the database were written to {}{} (first: {})", dead_ids_.size(),
                 dead_letter_->path(), already ? fmt::format(", {} more were there already", already) : "",
                 first_refusal_);
  }
  return {};
}

bool BatchWriter::write(Batch& b) {
  std::chrono::milliseconds backoff(50);
  std::minstd_rand rng(static_cast<unsigned>(b.seq * 2654435761u + b.shard));
  bool logged = false;
  for (;;) {
    Status st = write_once(b);
    if (st.ok()) st = flush_dead_letters();  // durable before the segment goes
    if (st.ok()) {
      if (!healthy_.exchange(true)) spdlog::info("sink is writable again");
      needs_operator_ = false;
      // Conflicts first: their records must be safe before the segment goes.
      if (conflicts_ > 0) set_aside_conflicts(b);
      if (b.segment && spool_) {
        if (quarantine_) spool_->quarantine(*b.segment);
        else spool_->remove(*b.segment);
      }
      const std::size_t not_stored = std::min(b.count, conflicts_ + dead_in_batch_);
      if (hooks_.committed_events) hooks_.committed_events->add_shared(b.count - not_stored);
      if (hooks_.replayed_events && replayed_ > 0) hooks_.replayed_events->add_shared(replayed_);
      if (hooks_.client_duplicates && client_dups_ > 0) hooks_.client_duplicates->add_shared(client_dups_);
      if (hooks_.conflict_events && conflicts_ > 0) hooks_.conflict_events->add_shared(conflicts_);
      return true;
    }
    if (hooks_.sink_errors) hooks_.sink_errors->inc_shared();
    {
      std::lock_guard lock(mu_);
      last_error_ = st.message();
    }
    needs_operator_ = st.kind() != ErrorKind::transient;
    healthy_ = false;
    if (!logged) {
      spdlog::error("sink write failed ({}): {}; retrying with backoff, {} events waiting",
                    st.kind() == ErrorKind::transient ? "transient" : "permanent, the operator must act", st.message(),
                    queued_events());
      logged = true;
    }
    if (st.kind() != ErrorKind::transient && backoff < std::chrono::milliseconds(5000))
      backoff = std::chrono::milliseconds(5000);
    // Full jitter: sleep a random part of the backoff, waking early on a stop.
    const auto sleep = std::chrono::milliseconds(
        std::uniform_int_distribution<std::int64_t>(backoff.count() / 2, backoff.count())(rng));
    {
      std::unique_lock lock(mu_);
      const auto until = std::min(Clock::now() + sleep, deadline_);
      cv_.wait_until(lock, until, [&] { return stopping_ && Clock::now() >= deadline_; });
      if (stopping_ && Clock::now() >= deadline_) return false;
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

std::uint64_t BatchWriter::drain_and_stop(Clock::time_point deadline) {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    deadline_ = deadline;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  return queued_events_.load();
}

}  // namespace kiroku
