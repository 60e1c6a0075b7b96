// row_binary.h - ClickHouse's RowBinary format for the events table, and the
// choice of the shard an event goes to.
//
// RowBinary (ClickHouse 18.16 and later): each row's columns in order, no
// separators; integers little-endian fixed width; String as a LEB128 length
// then the bytes; Nullable(T) as one byte, 1 for NULL (nothing follows) or 0
// then T. Every event value fits its column (UInt64 id, Int64 times in Unix
// microseconds and value, String of any bytes), so an encoded batch cannot
// hold a value the server refuses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/event.h"

namespace kiroku {

// Appends `e` as a row of (id UInt64, received_at Int64, at Int64, name String,
// value Int64, client_id Nullable(String)); an empty client id is NULL.
void append_event_row(std::string& out, const EventView& e);

// Appends a row of (client_id String, id UInt64) for the client-id table.
void append_client_row(std::string& out, std::string_view client_id, std::uint64_t id);

// Reads RowBinary values off the front of a response body. Each call returns
// false (and reads nothing more) once the bytes run out or are malformed.
class RowBinaryReader {
 public:
  explicit RowBinaryReader(std::string_view bytes) : bytes_(bytes) {}
  bool done() const { return bytes_.empty(); }
  bool u8(std::uint8_t& v);
  bool u64(std::uint64_t& v);
  bool i64(std::int64_t& v);
  bool string(std::string_view& v);
  // Nullable(String): `null` set for NULL (v left empty).
  bool nullable_string(std::string_view& v, bool& null);

 private:
  std::string_view bytes_;
};

// Reads one row as append_event_row writes it; the strings view `reader`'s bytes.
bool read_event_row(RowBinaryReader& reader, EventView& e, bool& client_null);

// The shard (0..shards-1) of an event: from a hash of its client id when it has
// one (so that a client id sent twice meets its first copy on one shard), else
// from a hash of its id. Stable across versions: it decides where rows are.
std::size_t shard_of(const EventView& e, std::size_t shards);

}  // namespace kiroku
