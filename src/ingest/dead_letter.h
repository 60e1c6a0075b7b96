// dead_letter.h - the file of events the database refused, one JSON line each.
//
// When the database refuses a row for its values (Sink::write answers invalid: too
// long, out of range, a CHECK...), the batch writer isolates that row and
// appends it here, so the rest of the batch is stored. A line:
//
//   {"id":N,"received_at":US,"at":US,"name":"...","value":N,"client_id":"..."|null,
//    "reason":"data_too_long","error":"<the database's message>","dead_lettered_at":US}
//
// (one line; times in Unix microseconds, the columns of the stored row).
// Lines are appended and fdatasync'ed before the spool segment of their batch
// is removed, so a crash never loses a refused event; a replay of that
// segment finds the ids already here and does not write them twice.
//
// Bounded: an append that would take the file past max_bytes writes nothing
// and returns full; the writer then keeps the batch and retries it with
// backoff (the behaviour without a dead-letter file) until an operator makes
// room (`kiroku spool replay`, or moving the file away while the server is
// stopped).
//
// The file's directory is flock'ed for the life of the object (a spool
// command refuses to run while a server holds it).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/event.h"
#include "common/status.h"

namespace kiroku {

inline constexpr std::string_view kDeadLetterFileName = "dead-letter.ndjson";

struct DeadLetterOptions {
  std::string path;                       // its directory is created if missing
  std::uint64_t max_bytes = 64ull << 20;  // append() answers full past it
};

class DeadLetterFile {
 public:
  // Creates the file if missing, locks its directory, cuts a torn last line
  // (a crash mid-append: its batch is still in the spool) and learns the ids
  // the file holds. permanent: cannot create, open or lock ("... is in use by
  // another process").
  static Result<std::unique_ptr<DeadLetterFile>> open(DeadLetterOptions options);
  ~DeadLetterFile();
  DeadLetterFile(const DeadLetterFile&) = delete;
  DeadLetterFile& operator=(const DeadLetterFile&) = delete;

  // Appends whole lines and fdatasyncs them; remembers `ids` (the lines'
  // events). full: the lines would pass max_bytes (nothing written);
  // transient: an I/O error (the file is cut back to its previous length).
  Status append(std::string_view lines, const std::vector<std::uint64_t>& ids);

  // True if an event with this id is in the file.
  bool holds(std::uint64_t id) const;

  // Replaces the whole content with `lines` (the replay keeps the events
  // still refused): written to PATH.tmp, synced, renamed over the file.
  Status replace(std::string_view lines);

  std::uint64_t bytes() const;
  std::uint64_t max_bytes() const { return options_.max_bytes; }
  const std::string& path() const { return options_.path; }

 private:
  DeadLetterFile(DeadLetterOptions options, int fd, int dir_fd);
  Status load();

  DeadLetterOptions options_;
  int fd_ = -1;
  int dir_fd_ = -1;  // flock'ed
  mutable std::mutex mu_;
  std::uint64_t bytes_ = 0;
  std::unordered_set<std::uint64_t> ids_;
};

// Appends the event's columns as JSON object members, without braces:
// "id":N,"received_at":US,"at":US,"name":"...","value":N,"client_id":...
void append_event_members(std::string& out, const EventView& e);

// Appends the dead-letter line (with its '\n') of a refused event to `out`.
void append_dead_letter_line(std::string& out, const EventView& e, std::string_view reason, std::string_view error,
                             std::int64_t now_us);

// Parses a dead-letter line and appends the event's record to `records`.
// False if the line is not one (nothing appended); `id` is set on success.
bool parse_dead_letter_line(std::string_view line, std::vector<std::byte>& records, std::uint64_t& id);

}  // namespace kiroku
