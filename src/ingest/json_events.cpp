// json_events.cpp - POST /events bodies with simdjson's on-demand API.
#include "ingest/json_events.h"

#include "common/memory.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <cstring>

namespace kiroku {

namespace sj = simdjson;

struct JsonEventParser::Impl {
  // The DOM parser dispatches to the best SIMD kernel at run time (the
  // on-demand front end of simdjson 3.0 would be fixed at compile time).
  sj::dom::parser parser;
  std::vector<char> padded;  // body copy with simdjson's padding after it
};

JsonEventParser::JsonEventParser() : impl_(std::make_unique<Impl>()) {}
JsonEventParser::~JsonEventParser() = default;

namespace {

// Reads one event object. Returns nullptr or a static message.
const char* read_event(sj::dom::element el, EventInput& e, char* id_buf) {
  sj::dom::object obj;
  if (el.get_object().get(obj)) return "must be a JSON object";
  bool have_name = false, have_value = false;
  e = EventInput{};
  for (auto [key, v] : obj) {
    if (key == "name") {
      if (v.get_string().get(e.name)) return "name: must be a string";
      have_name = true;
    } else if (key == "value") {
      if (!v.is_int64()) return "value: must be a signed 64-bit integer";
      e.value = v.get_int64().value_unsafe();
      have_value = true;
    } else if (key == "at") {
      std::optional<std::int64_t> us;
      if (v.is_null()) continue;
      if (v.is_string()) {
        us = parse_timestamp(v.get_string().value_unsafe());
      } else if (v.is_int64()) {
        const std::int64_t ms = v.get_int64().value_unsafe();
        if (ms >= 0 && ms < 1'000'000'000'000'000) us = ms * 1000;
      }
      if (!us) return "at: must be RFC 3339 or Unix milliseconds";
      e.at_us = *us;
    } else if (key == "id") {
      if (v.is_null()) continue;
      if (v.is_int64() || v.is_uint64()) {
        // A numeric key is kept as its decimal text.
        const auto end = v.is_int64() ? fmt::format_to(id_buf, "{}", v.get_int64().value_unsafe())
                                      : fmt::format_to(id_buf, "{}", v.get_uint64().value_unsafe());
        e.client_id = {id_buf, static_cast<std::size_t>(end - id_buf)};
      } else if (v.get_string().get(e.client_id)) {
        return "id: must be a string";
      }
      if (e.client_id.empty()) return "id: must not be empty";
    }
  }
  if (!have_name) return "name: missing";
  if (!have_value) return "value: missing";
  if (auto err = check_event(e)) return err.message;
  return nullptr;
}

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

}  // namespace

std::string JsonEventParser::parse_impl(std::string_view body, Visit visit, void* ctx) {
  std::string error = parse_body(body, visit, ctx);
  if (impl_->padded.size() > kMaxKeptBytes) {
    // A large body: give its buffers back rather than keep them for good.
    std::vector<char>().swap(impl_->padded);
    impl_->parser = sj::dom::parser();
    note_large_free();
  }
  return error;
}

std::string JsonEventParser::parse_body(std::string_view body, Visit visit, void* ctx) {
  auto& p = impl_->padded;
  if (p.size() < body.size() + sj::SIMDJSON_PADDING) p.resize(body.size() + sj::SIMDJSON_PADDING);
  std::memcpy(p.data(), body.data(), body.size());
  std::memset(p.data() + body.size(), 0, sj::SIMDJSON_PADDING);
  char id_buf[32];

  std::size_t start = 0;
  while (start < body.size() && is_space(body[start])) ++start;
  if (start == body.size()) return "body: no events (send NDJSON or a JSON array)";

  std::size_t index = 0;
  EventInput e;
  if (body[start] == '[') {
    sj::dom::element doc;
    if (impl_->parser.parse(p.data(), body.size(), false).get(doc)) return "body: malformed JSON";
    sj::dom::array arr;
    if (doc.get_array().get(arr)) return "body: malformed JSON";
    for (sj::dom::element item : arr) {
      if (const char* err = read_event(item, e, id_buf)) return fmt::format("event {}: {}", index, err);
      if (!visit(ctx, e)) return fmt::format("event {}: not accepted", index);
      ++index;
    }
    return {};
  }

  // NDJSON: one object per line; blank lines are skipped.
  std::size_t pos = start;
  while (pos < body.size()) {
    std::size_t end = body.find('\n', pos);
    if (end == std::string_view::npos) end = body.size();
    std::size_t a = pos, b = end;
    while (a < b && is_space(body[a])) ++a;
    while (b > a && is_space(body[b - 1])) --b;
    pos = end + 1;
    if (a == b) continue;
    if (body[a] != '{') return fmt::format("event {}: must be a JSON object", index);
    sj::dom::element doc;
    if (impl_->parser.parse(p.data() + a, b - a, false).get(doc))
      return fmt::format("event {}: malformed JSON (one object per line)", index);
    if (const char* err = read_event(doc, e, id_buf)) return fmt::format("event {}: {}", index, err);
    if (!visit(ctx, e)) return fmt::format("event {}: not accepted", index);
    ++index;
  }
  return {};
}

}  // namespace kiroku
