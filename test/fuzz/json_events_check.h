// json_events_check.h - invariants of the POST /events body parser
// (ingest/json_events.h). The input is one body: NDJSON or a JSON array.
//
// One parser is kept across inputs, as a shard keeps it across requests; it
// must give what a fresh parser gives. Accepted events obey check_event, an
// error names the event it stopped at, and accepted bodies written back as
// NDJSON and as an array give the same events.
#pragma once

#include <charconv>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/event_text.h"
#include "fuzz/fuzz_check.h"
#include "ingest/json_events.h"

namespace kiroku::fuzz {
namespace json_detail {

struct Event {
  std::string name;
  std::int64_t value = 0;
  std::optional<std::int64_t> at_us;
  std::string client_id;
  bool operator==(const Event&) const = default;
};

struct Parsed {
  std::vector<Event> events;
  std::string error;
  bool operator==(const Parsed&) const = default;
};

// Parses `body`; on_event answers false at event `stop_at` (never if npos).
inline Parsed parse(JsonEventParser& parser, std::string_view body, std::size_t stop_at = std::string_view::npos) {
  Parsed r;
  r.error = parser.parse(body, [&](const EventInput& e) {
    FUZZ_REQUIRE(!check_event(e));
    r.events.push_back({std::string(e.name), e.value, e.at_us, std::string(e.client_id)});
    return r.events.size() - 1 != stop_at;
  });
  return r;
}

inline std::string to_json(const Event& e) {
  std::string s = "{\"name\":" + json_string(e.name) + ",\"value\":" + std::to_string(e.value);
  if (e.at_us) {
    const std::string at = timestamp_text(*e.at_us);
    FUZZ_REQUIRE(!at.empty());
    const bool ms = at.find_first_not_of("0123456789") == std::string::npos;
    s += ",\"at\":" + (ms ? at : json_string(at));
  }
  if (!e.client_id.empty()) s += ",\"id\":" + json_string(e.client_id);
  return s + "}";
}

// "event N: ..." -> N.
inline std::optional<std::size_t> event_index(std::string_view error) {
  if (!error.starts_with("event ")) return std::nullopt;
  error.remove_prefix(6);
  std::size_t n = 0;
  auto [ptr, ec] = std::from_chars(error.data(), error.data() + error.size(), n);
  if (ec != std::errc() || ptr == error.data() || !std::string_view(ptr, 2).starts_with(": ")) return std::nullopt;
  return n;
}

inline bool blank(std::string_view line) { return line.find_first_not_of(" \t\r\n") == std::string_view::npos; }

}  // namespace json_detail

inline void check_json_events(std::string_view body) {
  using namespace json_detail;
  static JsonEventParser reused;  // keeps its buffers from input to input
  const Parsed r = parse(reused, body);
  {
    JsonEventParser fresh;
    FUZZ_REQUIRE(parse(fresh, body) == r);
  }

  if (!r.error.empty()) {
    // Events before the failing one were handed over; the message says which.
    const std::optional<std::size_t> index = event_index(r.error);
    FUZZ_REQUIRE(index || (r.error.starts_with("body: ") && r.events.empty()));
    if (index) FUZZ_REQUIRE(*index == r.events.size());
    return;
  }

  // A handler that stops at event k ends the parse there.
  if (!r.events.empty()) {
    const std::size_t k = r.events.size() / 2;
    const Parsed stopped = parse(reused, body, k);
    FUZZ_REQUIRE(stopped.events.size() == k + 1);
    FUZZ_REQUIRE(stopped.error == "event " + std::to_string(k) + ": not accepted");
  }

  const std::size_t start = body.find_first_not_of(" \t\r\n");
  FUZZ_REQUIRE(start != std::string_view::npos);
  if (body[start] == '[') {
    // As many events as elements (when nlohmann reads the body too).
    const nlohmann::json doc = nlohmann::json::parse(body, nullptr, false);
    if (!doc.is_discarded()) FUZZ_REQUIRE(doc.is_array() && doc.size() == r.events.size());
  } else {
    // NDJSON: one event per non-blank line.
    std::size_t lines = 0;
    for (std::string_view rest = body; !rest.empty();) {
      const std::size_t nl = rest.find('\n');
      if (!blank(rest.substr(0, nl))) ++lines;
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    }
    FUZZ_REQUIRE(lines == r.events.size());
  }

  // Written back, as NDJSON and as an array, the events read the same.
  FUZZ_REQUIRE(!r.events.empty() || body[start] == '[');
  std::string ndjson, array = "[";
  for (const Event& e : r.events) {
    ndjson += to_json(e) + "\n";
    array += (array.size() > 1 ? "," : "") + to_json(e);
  }
  array += "]";
  if (!ndjson.empty()) FUZZ_REQUIRE(parse(reused, ndjson) == r);
  FUZZ_REQUIRE(parse(reused, array) == r);
}

}  // namespace kiroku::fuzz
