// parse.h - validation of event fields as they arrive in a query string or
// JSON. Pure functions, no allocation: decoded bytes go to caller buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/event.h"
#include "common/percent.h"
#include "common/text.h"

namespace kiroku {

// A base-10 signed 64-bit integer with an optional sign; nothing else.
std::optional<std::int64_t> parse_int64(std::string_view s);

// `at` as RFC 3339 ("2024-05-01T12:00:00.123Z", "...+09:00") or Unix
// milliseconds ("1714564800123"); returns Unix microseconds.
std::optional<std::int64_t> parse_timestamp(std::string_view s);

// The fields of one event as sent by a client, before an id is assigned.
// name and client_id view caller storage.
struct EventInput {
  std::string_view name;
  std::int64_t value = 0;
  std::optional<std::int64_t> at_us;
  std::string_view client_id;
};

// Why a request's fields were rejected: a static message naming the field.
struct FieldError {
  const char* message = nullptr;  // e.g. "value: must be a signed 64-bit integer"
  explicit operator bool() const { return message != nullptr; }
};

// What makes valid UTF-8 unfit for a name or an id: a control character
// (C0, DEL, C1: NUL cuts text, CR/LF forge log lines, ESC drives terminals),
// or an explicit bidirectional embedding, override or isolate (U+202A..E,
// U+2066..9), which makes text display in another order than it is stored
// ("Trojan Source"). Right-to-left text needs none of them; the marks
// U+200E, U+200F and U+061C stay allowed. `s` must be valid UTF-8.
enum class TextFault { none, control, bidi };
TextFault text_fault(std::string_view s);

// Checks name and client_id rules shared by every input form: name 1..255
// bytes, id 0..255 (0: none), both valid UTF-8 without a TextFault.
FieldError check_event(const EventInput& e);

// Parses the query string of GET /, /collect, /pixel.gif: name, value, and
// optional at and id. Decoded name and id bytes go to the two buffers.
struct QueryBuffers {
  char name[kMaxNameBytes];
  char client_id[kMaxClientIdBytes];
};
FieldError parse_event_query(std::string_view query, QueryBuffers& buf, EventInput& out);

}  // namespace kiroku
