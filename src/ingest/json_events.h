// json_events.h - the body of POST /events: NDJSON or a JSON array of
// {"name":…,"value":…,"at":…?,"id":…?} objects, parsed with simdjson.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/parse.h"

namespace kiroku {

// One per shard (not thread-safe); keeps simdjson's parser and a padded copy
// of the body between requests, so steady-state parsing allocates nothing.
// After a body over kMaxKeptBytes both are released (a 8 MiB array holds
// about 80 MiB of them), so memory goes back down after a large batch.
class JsonEventParser {
 public:
  static constexpr std::size_t kMaxKeptBytes = 1 << 20;

  JsonEventParser();
  ~JsonEventParser();

  // Calls `on_event` for every event of `body`, in order, each already checked
  // with check_event. Returns an empty string on success, or the message of
  // the first problem ("event 3: value: must be a signed 64-bit integer");
  // events before it were handed to on_event, so the caller must keep its
  // output provisional until the whole body is accepted. `on_event` returns
  // false to stop (with the message it leaves in `error`).
  template <typename OnEvent>
  std::string parse(std::string_view body, OnEvent&& on_event);

 private:
  struct Impl;
  using Visit = bool (*)(void* ctx, const EventInput&);
  std::string parse_impl(std::string_view body, Visit visit, void* ctx);
  std::string parse_body(std::string_view body, Visit visit, void* ctx);
  std::unique_ptr<Impl> impl_;
};

template <typename OnEvent>
std::string JsonEventParser::parse(std::string_view body, OnEvent&& on_event) {
  return parse_impl(
      body, [](void* ctx, const EventInput& e) { return (*static_cast<OnEvent*>(ctx))(e); }, &on_event);
}

}  // namespace kiroku
