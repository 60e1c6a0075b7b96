// postgresql_sink.h - the Sink that stores events in PostgreSQL (10 or later).
//
// Rows go to the table of SinkOptions::table, created by open() if missing:
//   id NUMERIC(20) PRIMARY KEY CHECK (0 <= id < 2^64), received_at BIGINT (Unix µs),
//   at BIGINT (Unix µs), name VARCHAR(255) COLLATE "C", value BIGINT,
//   client_id VARCHAR(255) COLLATE "C" NULL UNIQUE
// PostgreSQL has no unsigned 64-bit integer: the event id is stored as the
// exact decimal number (NUMERIC(20)), so it reads as kiroku reports it, sorts
// in id order and MAX(id) is the largest id. "C" compares bytes, as the other
// sinks do.
//
// write() stores a batch in one transaction: COPY into a temporary staging
// table of the connection (ON COMMIT DELETE ROWS, columns LIKE the events
// table), then INSERT ... SELECT ... ORDER BY the record's position ON
// CONFLICT DO NOTHING; when fewer rows were inserted than sent, the staged
// rows are compared with the table in the same transaction so that every
// record is accounted for (last_write(), sink.h). A row the server refuses
// while copying is named by the COPY line in the error (refused_row()).
// Buffers and the staging table are per connection and reused.
//
// Errors by SQLSTATE class: 22 (data: too long 22001, out of range 22003,
// incorrect 22P02/22007/22008/22021) and 23 (23502 NULL, 23514 CHECK, 23503
// foreign key) are invalid, their class in rejection_reason(); 08 (connection),
// 57P01-57P03 (shutdown), 53 (resources), 40001/40P01 (retried first) and a
// lost connection are transient; 28 (credentials), 3D000 (no database), 42
// (schema, privileges) and TLS certificate failures are permanent. A failed
// connect is retried with exponential backoff; while backing off, calls fail at
// once with the last error. Messages are one line and never hold the password.
//
// Instance leases live in `kiroku_instances` (sink.h), claimed in one
// transaction under an advisory lock of the events table, stamped with the
// database's clock.
//
// Threading: as Sink (sink.h) — write() from one writer thread at a time;
// ping(), max_id() and stats() from any thread, each on a pool connection of
// its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "common/status.h"
#include "sink/sink.h"

namespace kiroku {

// Knobs that are not product options; the defaults are what the product uses.
struct PostgresSinkTuning {
  std::int64_t reconnect_backoff_min_ms = 50;    // first wait after a failed connect
  std::int64_t reconnect_backoff_max_ms = 5000;  // doubling up to this
  std::int64_t tcp_user_timeout_ms = 30'000;     // unacknowledged data before the connection counts as lost
};

// Builds the sink for postgresql://user:pass@host:port/db[?sslmode=...] (see
// postgresql_url.h). Returns invalid for a malformed URL or table name, or ssl
// files that cannot be read; does not connect (open() does).
Result<std::unique_ptr<Sink>> make_postgres_sink(std::string_view url, const SinkOptions& options,
                                                 const PostgresSinkTuning& tuning = {});

}  // namespace kiroku
