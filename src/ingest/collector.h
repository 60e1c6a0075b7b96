// collector.h - takes events from requests into per-shard batches.
//
// Each shard (IO thread) owns its batch, id generator and spool segment, so
// accepting an event takes no lock: validate, assign an id, append the
// record to the batch, answer. Every --flush-interval, or at --batch-max
// events, the shard hands the batch to the BatchWriter and starts a new one.
// What a 2xx means depends on --durability (PRODUCT.md): none answers at
// once; process after the spool write, done once per loop turn for every
// request the turn handled (group commit); fsync after an fdatasync that
// covers that write, run on a syncer thread so that the IO thread goes on
// meanwhile (one sync in flight per shard; what is written during it waits
// for the next); sink after the database commit.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.h"
#include "http/server.h"
#include "ingest/batch_writer.h"
#include "ingest/spool.h"

namespace kiroku {

class Counter;

// How an accepted request is answered.
enum class Answer : std::uint8_t { no_content, pixel, accepted };

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
  // `spool` is required for process and fsync, ignored otherwise.
  Collector(CollectorOptions options, http::HttpServer& server, BatchWriter& writer, Spool* spool,
            CollectorMetrics metrics);
  ~Collector();

  // Starts the per-shard flush timers (after server.bind, before or after start).
  void start();

  // Request handlers; on the request's shard thread.
  void handle_query(const http::Request& req, http::Reply& reply, Answer answer);
  void handle_batch(const http::Request& req, http::Reply& reply);

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
  void commit(Shard& s, http::Reply& reply, std::size_t before, std::size_t n, Answer answer);
  bool admit(Shard& s, std::size_t bytes, http::Reply& reply);
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
  http::HttpServer& server_;
  BatchWriter& writer_;
  Spool* spool_;
  CollectorMetrics metrics_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::unique_ptr<Syncer> syncer_;  // fsync only
};

}  // namespace kiroku
