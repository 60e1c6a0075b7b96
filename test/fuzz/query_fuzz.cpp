// query_fuzz.cpp - fuzz target: percent decoding and the event query string
// (invariants in query_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/query_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_query(kiroku::fuzz::as_text(data, size));
  return 0;
}
