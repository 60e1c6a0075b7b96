// multipart_check.h - invariants of the multipart/form-data parser
// (http/multipart.h).
//
// Input: one byte choosing how the body is cut, then the body (boundary
// "XyZ"). The body is parsed twice: whole, and cut into small slices with a
// pause after every data slice. Both runs must report the same parts, bytes
// and error; events come in the documented order; the parser never holds or
// reserves more than its limits allow. The whole input is also read as a
// Content-Type value by multipart_boundary, and a boundary it accepts must
// be one the parser accepts.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

#include "fuzz/fuzz_check.h"
#include "http/multipart.h"

namespace kiroku::fuzz {
namespace multipart_detail {

constexpr std::string_view kBoundary = "XyZ";
constexpr MultipartLimits kLimits{.max_header_bytes = 200, .max_parts = 8};

// Writes every event into one log, so two runs can be compared, and checks
// their order: (begin data* end)* body_end.
class EventLog final : public MultipartHandler {
 public:
  explicit EventLog(bool pause) : pause_(pause) {}
  Status on_part_begin(const PartHeaders& h) override {
    FUZZ_REQUIRE(!in_part_ && !body_ended_);
    FUZZ_REQUIRE(!h.name.empty());
    FUZZ_REQUIRE(h.has_filename || h.filename.empty());
    in_part_ = true;
    ++parts;
    log += "B" + std::string(h.name) + "|" + std::string(h.filename) + "|" + std::string(h.content_type) +
           (h.has_filename ? "|f\n" : "|\n");
    log += "D";
    return {};
  }
  PartFlow on_part_data(std::string_view data) override {
    FUZZ_REQUIRE(in_part_ && !data.empty());
    log.append(data);
    return pause_ ? PartFlow::pause : PartFlow::proceed;
  }
  void on_part_end() override {
    FUZZ_REQUIRE(in_part_);
    in_part_ = false;
    log += "\nE\n";
  }
  void on_body_end() override {
    FUZZ_REQUIRE(!in_part_ && !body_ended_);
    body_ended_ = true;
    log += "Z\n";
  }

  std::string log;
  std::size_t parts = 0;
  bool body_ended() const { return body_ended_; }

 private:
  bool pause_;
  bool in_part_ = false;
  bool body_ended_ = false;
};

// Feeds `body` whole (max_slice 0) or in slices of 1..max_slice bytes.
inline std::string run(std::string_view body, std::size_t max_slice, bool pause) {
  EventLog events(pause);
  MultipartParser p(kBoundary, events, kLimits);
  std::size_t step = 0;
  Status st;
  while (!body.empty() && st.ok()) {
    const std::size_t n = max_slice == 0 ? body.size() : std::min(body.size(), 1 + (step++ * 7919) % max_slice);
    const std::string_view slice = body.substr(0, n);
    Result<std::size_t> r = p.feed(slice);
    if (!r.ok()) {
      st = r.status();
      FUZZ_REQUIRE(st.kind() == ErrorKind::invalid && !st.message().empty());
      break;
    }
    FUZZ_REQUIRE(*r <= n);
    FUZZ_REQUIRE(*r == n || p.paused());
    FUZZ_REQUIRE(p.held_bytes() <= std::max(kLimits.max_header_bytes, kBoundary.size() + 4));
    // Growth only while a header block is read: each string at most twice the limit.
    FUZZ_REQUIRE(p.reserved_bytes() <= 6 * kLimits.max_header_bytes + 3 * 32);
    // parts() counts a part from its delimiter, before its headers are read.
    FUZZ_REQUIRE(p.parts() - events.parts <= 1 && p.parts() <= kLimits.max_parts);
    if (p.paused()) {
      // While paused, feed consumes nothing.
      Result<std::size_t> again = p.feed(body.substr(*r));
      FUZZ_REQUIRE(again.ok() && *again == 0);
    }
    body.remove_prefix(*r);
    p.resume();
  }
  if (st.ok()) st = p.finish();
  FUZZ_REQUIRE(p.finish().message() == st.message());  // errors are sticky
  FUZZ_REQUIRE(st.ok() == (p.done() && events.body_ended()));
  return events.log + "#" + st.message();
}

}  // namespace multipart_detail

inline void check_multipart(std::string_view in) {
  using namespace multipart_detail;
  Result<std::string_view> b = multipart_boundary(in);
  if (b.ok()) {
    FUZZ_REQUIRE(!b->empty() && b->size() <= kMaxBoundaryBytes);
    FUZZ_REQUIRE(b->data() >= in.data() && b->data() + b->size() <= in.data() + in.size());
    EventLog events(false);
    MultipartParser p(*b, events);
    FUZZ_REQUIRE(p.status().ok());
  } else {
    FUZZ_REQUIRE(b.status().kind() == ErrorKind::invalid);
  }

  if (in.empty()) return;
  const std::size_t max_slice = 1 + static_cast<unsigned char>(in[0]) % 16;
  const std::string_view body = in.substr(1);
  FUZZ_REQUIRE(run(body, 0, false) == run(body, max_slice, true));
}

}  // namespace kiroku::fuzz
