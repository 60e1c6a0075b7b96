// collector.h - takes events from requests into per-shard batches.
//
// Each shard (a Runtime loop) owns its batch, id generator and spool segment,
// so accepting an event takes no lock: validate, assign an id, append the
// record to the batch, report. Every --flush-interval, or at --batch-max
// events, the shard hands the batch to the BatchWriter and starts a new one.
// What `accepted` means depends on --durability (PRODUCT.md): none reports it
// at once; process after the spool write, done once per loop turn for every
// request the turn handled (group commit); fsync after an fdatasync that
// covers that write, run on a syncer thread so that the loop goes on
// meanwhile (one sync in flight per shard; what is written during it waits
// for the next); sink after the database commit. The collector knows no
// HTTP: it reports Outcomes, and the caller (app/ingest_api) answers.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/durability.h"
#include "ingest/batch_writer.h"
#include "ingest/spool.h"
#include "runtime/runtime.h"

namespace kiroku {

class Counter;

// What became of an ingestion request.
enum class Outcome : std::uint8_t {
  accepted,        // as durable as --durability promises
  invalid,         // bad input; Taken::error says what
  spool_full,      // the spool is at --spool-max-bytes
  backlog_full,    // no spool (none, sink) and the writer's queue is full
  disk_full,       // the spool's disk is full: nothing was kept
  spool_failed,    // the spool write failed otherwise: nothing was kept
  sync_failed,     // fsync: the spool's fdatasync failed (the events are kept)
  not_committed,   // sink: the server stopped before the commit
  commit_timeout,  // sink: no commit within --sink-wait-timeout (may still come)
};

// A request the collector keeps until its events are durable.
class Holder {
 public:
  // Called at most once, during take_*: the outcome will come later through
  // Answers::answer with the returned ticket.
  virtual std::uint32_t hold() = 0;

 protected:
  ~Holder() = default;
};

// Where held requests learn their outcome; called on the request's shard.
class Answers {
 public:
  virtual void answer(unsigned shard, std::uint32_t ticket, Outcome outcome, std::uint32_t events) = 0;

 protected:
  ~Answers() = default;
};

// The outcome of take_*, unless the request was held.
struct Taken {
  bool held = false;
  Outcome outcome = Outcome::accepted;
  std::uint32_t events = 0;
  std::string_view error;  // Outcome::invalid: valid until the shard's next take_*
};

struct CollectorOptions {
  Durability durability = Durability::process;
  std::size_t batch_max = 10000;
  std::chrono::milliseconds flush_interval{50};
  std::chrono::milliseconds sink_wait_timeout{10'000};
  unsigned instance = 0;
  std::int64_t id_floor_unix_ms = 0;  // ids start above this millisecond
};

struct CollectorMetrics {
  Counter* accepted = nullptr;          // events
  Counter* rejected_invalid = nullptr;  // requests
  Counter* rejected_full = nullptr;     // requests answered 503
  Counter* spool_errors = nullptr;
};

class Collector {
 public:
  // One batch per shard of `runtime`. `spool` is required for process and
  // fsync, ignored otherwise. Held requests are answered through `answers`.
  Collector(CollectorOptions options, Runtime& runtime, BatchWriter& writer, Spool* spool, CollectorMetrics metrics,
            Answers& answers);
  ~Collector();

  // Starts the per-shard flush timers.
  void start();

  // One event from a query string (name, value, at, id), or the JSON events
  // of a POST body, received at `received_us`; on `shard`'s thread.
  Taken take_query(unsigned shard, std::string_view query, std::int64_t received_us, Holder& holder);
  Taken take_batch(unsigned shard, std::string_view body, std::int64_t received_us, Holder& holder);

  // The writer's commit report (any thread).
  void on_batch_done(unsigned shard, std::uint64_t seq, bool ok);

  // Hands every shard's current batch to the writer and stops the timers;
  // blocks until each shard has done it. For the graceful stop.
  void flush_all();

  // New ids use `instance`, above `floor_unix_ms` (the lease had to change
  // number); any thread, takes effect on each shard's next turn.
  void set_instance(unsigned instance, std::int64_t floor_unix_ms);

  // Events accepted but still in the shards' current batches (any thread).
  std::uint64_t pending_in_shards() const;

 private:
  struct Shard;
  void flush_shard(Shard& s);
  void arm_timer(Shard& s);
  // The records of `n` events are in s.current from `before`: answers, or
  // has them written to the spool first (process, fsync).
  Taken commit(Shard& s, Holder& holder, std::size_t before, std::size_t n);
  // The outcome refusing `bytes` more, or accepted.
  Outcome admit(Shard& s, std::size_t bytes);
  void schedule_write(Shard& s);
  // Writes the events of the requests in write_waiting to the spool (and
  // syncs for fsync), then answers them; on failure drops their events.
  void run_write(Shard& s);
  void spool_failed(Shard& s, const Status& st, std::size_t requests);
  // durability=fsync: hands the written groups' segments to the syncer
  // thread unless a sync is in flight; on_synced answers them.
  void start_sync(Shard& s);
  void on_synced(Shard& s, int error);
  class Syncer;
  void expire_waiters(Shard& s);

  CollectorOptions options_;
  Runtime& runtime_;
  BatchWriter& writer_;
  Spool* spool_;
  CollectorMetrics metrics_;
  Answers& answers_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<Syncer> syncer_;  // fsync only
};

}  // namespace kiroku
