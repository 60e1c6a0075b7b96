// mysql_sink.h - the Sink that stores events in MySQL or MariaDB.
//
// Rows go to the table of SinkOptions::table, created by open() if missing:
//   id BIGINT UNSIGNED PRIMARY KEY, received_at BIGINT (Unix µs), at BIGINT (Unix µs),
//   name VARCHAR(255), value BIGINT, client_id VARCHAR(255) NULL UNIQUE
// in InnoDB, utf8mb4 with the utf8mb4_bin collation (every UTF-8 name of up to
// 255 bytes fits and comes back byte for byte).
//
// write() stores a batch in one transaction with INSERT ... ON DUPLICATE KEY
// UPDATE id = id, so a replayed batch stores each row once; when the affected
// rows are fewer than the rows sent, the rows under those ids and client ids
// are read back in the same transaction and every record is accounted for
// (last_write(), sink.h). Instance leases live in `kiroku_instances`, created
// by open() like the events table. On MariaDB it sends
// the batch with array binding (one prepared single-row INSERT executed over
// column arrays, see bench/mysql_bulk_bench.cpp); on servers without it
// (MySQL) it uses multi-row prepared INSERTs. Statements and bind arrays are
// per connection and reused, growing only up to the largest batch seen.
//
// Errors: bad credentials, unknown database, missing privileges, schema
// mismatches and TLS failures (mysql_tls.h) are permanent; lost connections,
// timeouts, deadlocks and a server that is down are transient; values a row
// cannot hold (too long, out of range, incorrect, NULL, a CHECK or foreign
// key) are invalid, their class in rejection_reason() (the batch writer
// isolates such rows). A lost connection is reopened with exponential
// backoff: while backing off, calls fail at once with the last error rather
// than block. Messages carry the server's text and error number, never the
// password.
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

// How write() sends rows. automatic: array binding when the server supports
// it (MariaDB), else multi-row INSERTs. The others force one method (tests,
// benchmarks); array_binding fails on servers without it.
enum class MysqlInsertMethod { automatic, array_binding, multi_row };

// Knobs that are not product options; the defaults are what the product uses.
struct MysqlSinkTuning {
  MysqlInsertMethod method = MysqlInsertMethod::automatic;
  std::int64_t reconnect_backoff_min_ms = 50;    // first wait after a failed connect
  std::int64_t reconnect_backoff_max_ms = 5000;  // doubling up to this
  std::int64_t read_timeout_ms = 30'000;         // per network read/write on a connection
};

// Builds the sink for mysql://user:pass@host:port/db[?socket=/path|?ssl-mode=...]
// (see mysql_url.h). Returns invalid for a malformed URL or table name, or
// ssl- files that cannot be read; does not connect (open() does).
Result<std::unique_ptr<Sink>> make_mysql_sink(std::string_view url, const SinkOptions& options,
                                              const MysqlSinkTuning& tuning = {});

}  // namespace kiroku
