// sink.h - where events are finally stored.
//
// A Sink writes batches of event records into a database table (schema in
// PRODUCT.md: id, received_at, at, name, value, client_id). Writes are
// idempotent on the event id: writing the same record twice stores one row,
// which is what makes spool replay after a crash safe. Nothing is skipped
// silently: a record that is not stored is accounted for in last_write()
// (a replay of a row proven equal, a client id stored before, or a conflict:
// another event under the same id, handed back to the caller).
//
// Instance numbers (the 8 bits of the event id that keep instances apart) are
// leased through the sink, in the table `{table}_instances`
// (instance, holder, renewed_at in Unix ms by the database's clock), so that
// instances writing to one table never share a number.
//
// Threading: a Sink is used by one writer thread at a time (the BatchWriter);
// stats() and ready() may be called from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

// Connection pool figures, the fields of Go's database/sql DBStats.
// The classes of rows the database refuses for their values (metrics labels).
inline constexpr std::array<std::string_view, 7> kRejectionReasons = {
    "data_too_long", "out_of_range", "incorrect_value", "null", "constraint", "foreign_key", "other"};

struct PoolStats {
  std::int64_t max_open = 0;
  std::int64_t open = 0;
  std::int64_t in_use = 0;
  std::int64_t idle = 0;
  std::int64_t wait_count = 0;
  std::int64_t wait_duration_us = 0;
  std::int64_t max_idle_closed = 0;
  std::int64_t max_idle_time_closed = 0;
  std::int64_t max_lifetime_closed = 0;
};

// What the last successful write() did with its records. Every record is in
// exactly one of the counts: stored + replayed + client_duplicates + conflicts.
struct WriteReport {
  std::size_t stored = 0;             // new rows
  std::size_t replayed = 0;           // a row with the same id and the same fields was there
  std::size_t client_duplicates = 0;  // a row with the same client id was there (first wins)
  std::size_t conflicts = 0;          // a different row holds the id: NOT stored
  std::string conflict_records;       // those records (event.h format), for the caller to keep

  void clear() {
    stored = replayed = client_duplicates = conflicts = 0;
    conflict_records.clear();
  }
};

class Sink {
 public:
  virtual ~Sink() = default;

  // Creates the table if missing and checks that the database is usable.
  // A permanent error means the configuration is wrong (exit 2 at start).
  virtual Status open() = 0;

  // Stores every record in `records` (concatenated records, see event.h) in
  // one transaction: all or none. transient: retry later; permanent: the
  // operator must act (logged, shown in /readyz and metrics); invalid: the
  // database refused the values of a row (too long, out of range, NULL, a
  // CHECK or foreign key...): the data is at fault, not the table, so the same
  // rows fail again and the others may not (the batch writer isolates them).
  // After a success, last_write() says what became of each record.
  virtual Status write(std::string_view records, std::size_t count) = 0;

  // The report of the last successful write(); the writer thread only.
  virtual const WriteReport& last_write() const = 0;

  // After a write() that returned invalid: the class of the refusal, one of
  // kRejectionReasons. Writer thread only.
  virtual std::string_view rejection_reason() const { return kRejectionReasons.back(); }

  // After a write() that returned invalid: the index (in the records passed)
  // of the row the database named as refused, or kNoRow when it did not say.
  // A hint, not a proof: the batch writer confirms it. Writer thread only.
  static constexpr std::size_t kNoRow = static_cast<std::size_t>(-1);
  virtual std::size_t refused_row() const { return kNoRow; }

  // Leases an instance number (0..255) to `holder` (an opaque token of at most
  // 64 bytes) in one transaction: `wanted` >= 0 asks for that number (a renewal
  // or an explicit --instance), -1 for any: the one `holder` already has, else
  // a number never leased, else the one whose lease expired longest ago. A
  // number is free when its holder released it or has not renewed it for
  // `ttl_ms`. Returns full when the number (or every number) is held by
  // another live holder; transient when the database cannot be reached.
  virtual Result<unsigned> lease_instance(std::string_view holder, int wanted, std::int64_t ttl_ms) = 0;

  // Gives the number back at a clean stop (only if `holder` still holds it).
  virtual Status release_instance(unsigned instance, std::string_view holder) = 0;

  // The largest event id stored, 0 if none (used to keep ids increasing
  // across restarts even if the clock went back).
  virtual Result<std::uint64_t> max_id() = 0;

  // Cheap reachability check for /readyz; any thread.
  virtual Status ping() = 0;

  // Pool statistics; any thread. Sinks without a pool report one connection.
  virtual PoolStats stats() const = 0;

  // "sqlite", "mysql", "postgresql", "clickhouse".
  virtual std::string_view kind() const = 0;
};

struct SinkOptions {
  std::string table = "events";
  // MySQL and PostgreSQL pool knobs (Go's SetMaxOpenConns & co.); 0 = unlimited where it applies.
  int max_open = 4;
  int max_idle = 2;
  std::int64_t max_lifetime_ms = 30 * 60 * 1000;
  std::int64_t max_idle_time_ms = 5 * 60 * 1000;
  std::int64_t connect_timeout_ms = 5000;
  // Every commit must survive a machine crash (durability fsync or sink):
  // SQLite syncs each commit; MySQL relies on the server's settings; PostgreSQL
  // sets synchronous_commit = on for its sessions.
  bool durable_commits = false;
};

// Builds the sink for a --sink URL (sqlite:///path, mysql://user:pass@host:port/db,
// postgresql://user:pass@host:port/db, clickhouse://user:pass@host:port/db[?shards=...]).
// `table` is the table name (validated: [A-Za-z0-9_]{1,64}). Returns invalid
// for a malformed URL; does not connect (open() does).
Result<std::unique_ptr<Sink>> make_sink(std::string_view url, const SinkOptions& options);

}  // namespace kiroku
