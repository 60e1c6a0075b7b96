// batch_writer.h - the thread that moves batches of events into the sink.
//
// Shards hand over whole batches (submit never waits on the database: the
// queue lock is held only to push or pop). The writer stores each batch in
// one sink transaction, retrying with backoff while the database is away,
// then deletes the batch's spool segment and reports the commit. Batches are
// written in the order they were submitted.
//
// Nothing is lost without a word: every record of a committed batch was
// stored, proven stored before (a replay, a client id), or is a conflict (a
// different row holds its id) that is counted, logged, not counted as
// committed, and kept in a .conflict file of the spool (logged in full when
// there is no spool).
//
// Refused rows: when the sink answers invalid (the data is at fault, see
// sink.h) and a dead-letter file is given, the writer isolates each refused
// row: it stores the rows before the one the database named
// (Sink::refused_row), tries the named row alone and goes on with the rows
// after it; where the database names none, it bisects the batch into smaller
// transactions until each refused row stands alone. It stores every other
// row, appends the refused ones to the dead-letter file (synced) and only
// then removes the batch's segment; a crash in between replays the segment
// (stored rows are idempotent, dead-lettered ids are skipped). If
// kTableFaultRows rows in a row are refused with none stored between them
// (across batches), the table is at fault, not the data: the batch is kept
// and retried with backoff like any permanent error. So is a batch whose
// refused rows do not fit in the dead-letter file.
//
// Memory is bounded: when the queued batches hold more than queue_max_bytes,
// those that also sit in a spool segment drop their in-memory copy (read
// back from the segment when their turn comes); batches without a segment
// (durability none/sink) make backlog_full() true and the shards answer 503.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"
#include "ingest/dead_letter.h"
#include "ingest/spool.h"
#include "sink/sink.h"

namespace kiroku {

class Counter;
class Histogram;

inline constexpr unsigned kReplayShard = ~0u;

// Refused rows in a row, none stored between them, that mean the table is at fault.
inline constexpr std::size_t kTableFaultRows = 16;

struct Batch {
  unsigned shard = kReplayShard;        // kReplayShard: a segment left by a previous run
  std::uint64_t seq = 0;                // per-shard batch number
  std::unique_ptr<EventBuffer> events;  // null once spilled (then `segment` holds them)
  std::optional<SegmentInfo> segment;   // spool segment holding the same records
  std::size_t count = 0;
  std::size_t bytes = 0;
};

// What the writer reports to the rest of the server (metrics may be null).
struct BatchWriterHooks {
  Histogram* accept_to_durable = nullptr;  // microseconds, per event
  Histogram* flush_duration = nullptr;     // microseconds, per transaction
  Histogram* batch_events = nullptr;       // events per transaction
  Counter* committed_events = nullptr;     // stored, or proven stored before (replay, client id)
  Counter* replayed_events = nullptr;      // of those, rows already stored under the same id and fields
  Counter* client_duplicates = nullptr;    // of those, client ids already stored (first wins)
  Counter* conflict_events = nullptr;      // NOT stored: a different row holds the id; set aside
  Counter* sink_errors = nullptr;
  Counter* sink_writes = nullptr;  // sink transactions tried, parts of split batches included
  // Dead-lettered events, by kRejectionReasons (sink.h; a null entry is not counted).
  std::array<Counter*, kRejectionReasons.size()> dead_lettered{};
};

class BatchWriter {
 public:
  // `dead_letter` null: refused rows are not isolated (such a batch is
  // retried like a permanent error).
  BatchWriter(Sink& sink, Spool* spool, std::uint64_t queue_max_bytes, BatchWriterHooks hooks,
              DeadLetterFile* dead_letter = nullptr);
  ~BatchWriter();

  // The sink's open() has not succeeded yet (the database was unreachable at
  // start): the writer opens it before its first write. Before start().
  void open_sink_first();

  // A shard's batch is committed (or, at a stop past the deadline,
  // abandoned: ok false). Called on the writer thread; must not block.
  using OnDone = std::function<void(unsigned shard, std::uint64_t seq, bool ok)>;
  // Starts the writer thread, which reports each shard batch to `on_done`.
  void start(OnDone on_done = {});

  // Queues a batch; any thread; never blocks on the sink.
  void submit(Batch batch);

  // An empty event buffer for a shard (recycled when possible); any thread.
  std::unique_ptr<EventBuffer> take_buffer();

  // True while the in-memory backlog is over its limit (shards answer 503
  // for events that have no spool to wait in). Any thread.
  bool backlog_full() const { return memory_bytes_.load(std::memory_order_relaxed) > queue_max_bytes_; }

  // Writes what is queued until the queue is empty or `deadline`, then stops
  // the thread. Returns the events left unwritten.
  std::uint64_t drain_and_stop(std::chrono::steady_clock::time_point deadline);

  // Figures for metrics and /readyz; any thread.
  std::uint64_t queued_events() const { return queued_events_.load(std::memory_order_relaxed); }
  std::uint64_t queued_batches() const { return queued_batches_.load(std::memory_order_relaxed); }
  std::uint64_t memory_bytes() const { return memory_bytes_.load(std::memory_order_relaxed); }
  // Unix microseconds of the oldest event not yet committed, 0 if none.
  std::int64_t oldest_received_us() const { return oldest_us_.load(std::memory_order_relaxed); }
  bool sink_healthy() const { return healthy_.load(std::memory_order_relaxed); }
  // The last write failed with an error that waiting will not heal (the
  // table refuses every row, the dead-letter file is full, a schema
  // mismatch): /readyz is 503 then, spool or not.
  bool sink_needs_operator() const { return needs_operator_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  void run();
  // Stores one batch; retries until ok or the stop deadline. True if stored.
  bool write(Batch& b);
  Status write_once(Batch& b);
  // Adds one successful sink write's report to the batch's totals.
  void take_report();
  // Keeps the records the sink could not store (a different row holds their id).
  void set_aside_conflicts(const Batch& b);
  // One sink transaction, counted; resets the refused streak when it stores.
  Status sink_write(std::string_view records, std::size_t count);
  // Stores `records` (a run of the batch); on invalid, isolates the refused
  // rows into dead_lines_ and stores the rest.
  Status store(std::string_view records, std::size_t count);
  // Bisects records [lo, hi) of offsets_, which failed as a whole with `err`.
  Status split(std::string_view records, std::size_t lo, std::size_t hi, const Status& err, bool tried);
  Status refuse(std::string_view records, std::size_t i, const Status& err, std::string_view reason);
  // Appends the batch's refused rows to the dead-letter file and counts them.
  Status flush_dead_letters();
  void spill_locked();
  bool stop_due() const;
  void record_latencies(std::string_view records, std::int64_t now_us);

  Sink& sink_;
  Spool* spool_;
  const std::uint64_t queue_max_bytes_;
  BatchWriterHooks hooks_;
  OnDone on_done_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::vector<std::unique_ptr<EventBuffer>> free_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::string last_error_;

  std::atomic<std::uint64_t> queued_events_{0};
  std::atomic<std::uint64_t> queued_batches_{0};
  std::atomic<std::uint64_t> memory_bytes_{0};
  std::atomic<std::int64_t> oldest_us_{0};
  std::atomic<bool> healthy_{true};
  std::atomic<bool> needs_operator_{false};
  std::atomic<bool> stop_now_{false};
  std::vector<std::byte> scratch_;  // reading spilled segments
  bool sink_open_ = true;
  // The batch being written: what the sink reported for it (writer thread).
  std::size_t replayed_ = 0;
  std::size_t client_dups_ = 0;
  std::size_t conflicts_ = 0;
  std::string conflict_records_;
  DeadLetterFile* dead_letter_;
  // The refused rows of the batch being written (writer thread only; reused).
  std::vector<std::size_t> offsets_;
  std::string dead_lines_;
  std::vector<std::uint64_t> dead_ids_;
  std::array<std::uint64_t, kRejectionReasons.size()> dead_by_reason_{};
  std::size_t dead_in_batch_ = 0;  // refused rows of the batch (already in the file or not)
  std::size_t refused_streak_ = 0;
  std::string first_refusal_;
  bool quarantine_ = false;  // the batch's segment has a corrupt record: keep it as .corrupt
  std::thread thread_;
};

}  // namespace kiroku
