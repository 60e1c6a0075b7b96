// multipart_fuzz.cpp - fuzz target for the multipart/form-data parser.
//
// Input: one byte choosing how the body is cut, then the body (boundary "XyZ").
// The body is parsed twice: whole, and cut into small slices with a pause after
// every data slice. Both runs must report the same parts, bytes and error, and
// the parser must never hold more than its limits allow. The input is also
// read as a Content-Type value by multipart_boundary.
//
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
//     test/fuzz/multipart_fuzz.cpp src/http/multipart.cpp -o multipart_fuzz
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/multipart.h"

namespace kiroku {
namespace {

constexpr std::string_view kBoundary = "XyZ";
constexpr MultipartLimits kLimits{.max_header_bytes = 200, .max_parts = 8};

void check(bool ok) {
  if (!ok) std::abort();
}

// Writes every event into one log, so two runs can be compared.
class EventLog : public MultipartHandler {
 public:
  explicit EventLog(bool pause) : pause_(pause) {}
  Status on_part_begin(const PartHeaders& h) override {
    check(!h.name.empty());
    log += "B" + std::string(h.name) + "|" + std::string(h.filename) + "|" +
           std::string(h.content_type) + (h.has_filename ? "|f\n" : "|\n");
    log += "D";
    return {};
  }
  PartFlow on_part_data(std::string_view data) override {
    check(!data.empty());
    log.append(data);
    return pause_ ? PartFlow::pause : PartFlow::proceed;
  }
  void on_part_end() override { log += "\nE\n"; }
  void on_body_end() override { log += "Z\n"; }

  std::string log;

 private:
  bool pause_;
};

// Feeds `body` whole (max_slice 0) or in slices of 1..max_slice bytes.
std::string run(std::string_view body, std::size_t max_slice, bool pause) {
  EventLog events(pause);
  MultipartParser p(kBoundary, events, kLimits);
  std::size_t step = 0;
  Status st;
  while (!body.empty() && st.ok()) {
    std::size_t n = max_slice == 0 ? body.size()
                                   : std::min(body.size(), 1 + (step++ * 7919) % max_slice);
    std::string_view slice = body.substr(0, n);
    Result<std::size_t> r = p.feed(slice);
    if (!r.ok()) {
      st = r.status();
      break;
    }
    check(*r <= n);
    check(*r == n || p.paused());
    check(p.held_bytes() <= std::max(kLimits.max_header_bytes, kBoundary.size() + 4));
    body.remove_prefix(*r);
    p.resume();
  }
  if (st.ok()) st = p.finish();
  check(p.finish().message() == st.message());  // errors are sticky
  return events.log + "#" + st.message();
}

}  // namespace
}  // namespace kiroku

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace kiroku;
  std::string_view in(reinterpret_cast<const char*>(data), size);

  Result<std::string_view> b = multipart_boundary(in);
  if (b.ok()) {
    check(!b->empty() && b->size() <= kMaxBoundaryBytes);
    check(b->data() >= in.data() && b->data() + b->size() <= in.data() + in.size());
  }

  if (in.empty()) return 0;
  std::size_t max_slice = 1 + static_cast<std::uint8_t>(in[0]) % 16;
  std::string_view body = in.substr(1);
  check(run(body, 0, false) == run(body, max_slice, true));
  return 0;
}
