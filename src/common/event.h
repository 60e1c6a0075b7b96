// event.h - one measurement event and its compact binary record.
//
// Events travel from the request handler to the sink as records appended to a
// byte buffer (EventBuffer). The same record bytes are what the spool writes
// to disk, so an event is encoded exactly once. A record is self-checking:
//
//   u32 length      bytes after this field (checksum .. client id)
//   u32 crc32c      of everything after this field
//   u64 id          server-assigned, unique (see ingest/id.h)
//   i64 received_us Unix microseconds at receipt
//   i64 at_us       Unix microseconds the client gave (or received_us)
//   i64 value
//   u8  name_len    1..255
//   u8  client_len  0..255 (0: no client id)
//   name bytes, client id bytes
//
// All integers little-endian. EventView points into the buffer it was read
// from and is valid as long as that buffer is not modified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace kiroku {

inline constexpr std::size_t kMaxNameBytes = 255;
inline constexpr std::size_t kMaxClientIdBytes = 255;
inline constexpr std::size_t kRecordHeaderBytes = 4 + 4 + 8 + 8 + 8 + 8 + 1 + 1;
inline constexpr std::size_t kMaxRecordBytes = kRecordHeaderBytes + kMaxNameBytes + kMaxClientIdBytes;

// A decoded event; name and client_id view the record's bytes.
struct EventView {
  std::uint64_t id = 0;
  std::int64_t received_us = 0;
  std::int64_t at_us = 0;
  std::int64_t value = 0;
  std::string_view name;
  std::string_view client_id;  // empty: none
};

// Appends the record for `e` to `out` (which grows only if it lacks capacity).
// The caller has validated name (1..255 bytes) and client_id (0..255 bytes).
void append_record(std::vector<std::byte>& out, const EventView& e);

// Size of the record for an event with these string lengths.
constexpr std::size_t record_size(std::size_t name_len, std::size_t client_len) {
  return kRecordHeaderBytes + name_len + client_len;
}

enum class DecodeResult { ok, need_more, corrupt };

// Decodes the record at the start of `bytes`. On ok, sets `e` and `size` (the
// record's total length). need_more: `bytes` holds only the start of a record
// (a torn tail, in a file). corrupt: bad length or checksum (the checksum is
// checked unless `verify` is false: bytes already checked or built here).
DecodeResult decode_record(std::string_view bytes, EventView& e, std::size_t& size, bool verify = true);

// Iterates the records of a buffer known to be well-formed (built by
// append_record in this process, or handed out by read_segment, which has
// checked them): checksums are not verified again.
class RecordReader {
 public:
  explicit RecordReader(std::string_view bytes) : bytes_(bytes) {}
  // Returns false at the end.
  bool next(EventView& e);
  // The encoded bytes of the record next() returned last.
  std::string_view last_record() const { return last_; }

 private:
  std::string_view bytes_;
  std::string_view last_;
};

// A batch of encoded records plus its count; reused between flushes.
struct EventBuffer {
  std::vector<std::byte> bytes;
  std::size_t count = 0;
  std::int64_t oldest_received_us = 0;  // 0 when empty

  void clear() {
    bytes.clear();
    count = 0;
    oldest_received_us = 0;
  }
  bool empty() const { return count == 0; }
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }
  void append(const EventView& e) {
    if (count++ == 0) oldest_received_us = e.received_us;
    append_record(bytes, e);
  }
};

}  // namespace kiroku
