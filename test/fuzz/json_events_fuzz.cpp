// json_events_fuzz.cpp - fuzz target: POST /events bodies, NDJSON and JSON
// arrays (invariants in json_events_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/json_events_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_json_events(kiroku::fuzz::as_text(data, size));
  return 0;
}
