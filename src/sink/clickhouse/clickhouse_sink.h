// clickhouse_sink.h - the Sink that stores events in ClickHouse (18.16 and
// later), over its HTTP interface, on one server or spread over shards.
//
// Table (SinkOptions::table, created by open() on every shard if missing):
//   id UInt64, received_at Int64 (Unix µs), at Int64 (Unix µs), name String,
//   value Int64, client_id Nullable(String)
//   ENGINE = ReplacingMergeTree ORDER BY id
// A replayed row is stored again and collapsed with its first copy by the
// engine's merges; a query sees each event once with FINAL
// (SELECT count() FROM events FINAL). `{table}_client_ids` (client_id, id),
// a ReplacingMergeTree ORDER BY client_id, makes client ids idempotency keys.
//
// Shards: every event goes to one shard, chosen from its client id or its id
// (row_binary.h: shard_of), so a replay lands where its first copy is and a
// 2xx from that shard means the rows are stored there. write() sends each
// shard its rows as one INSERT ... FORMAT RowBinary (atomic on that shard),
// to every shard at once; before it, one SELECT per shard reads the rows
// already under the batch's ids and client ids, so that last_write() accounts
// for every record (replays and conflicts are not sent again; client
// duplicates are not stored). The id part of that read is skipped for ids
// above the largest the shard held (new events). A batch is all-or-nothing per shard, not across shards: after a
// failure the caller's retry finds the shards that took their rows and
// counts them as replayed.
//
// Instance leases live in `kiroku_instances` on the first shard, a
// ReplacingMergeTree(version): a claim is written, then read back with FINAL
// after a settling wait; the claim read back is the one that holds the number
// (limits in README: ClickHouse has no transactions).
//
// Errors (clickhouse_http.h): no answer and 5xx are transient; credentials,
// unknown database, schema mismatches are permanent. Messages carry the
// server's text and code, never the password.
//
// Threading: write() from one writer thread; lease_instance, release_instance
// and max_id share a lock; ping() and stats() from any thread.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "sink/sink.h"

namespace kiroku {

// Builds the sink for clickhouse://user:pass@host:port/db[?shards=...]
// (clickhouse_url.h). Returns invalid for a malformed URL or table name; does
// not connect (open() does).
Result<std::unique_ptr<Sink>> make_clickhouse_sink(std::string_view url, const SinkOptions& options);

}  // namespace kiroku
