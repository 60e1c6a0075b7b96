// http_fuzz.cpp - fuzz target: HTTP request heads and body framing through
// the real engine on a loopback socket (invariants in http_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/http_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_http(kiroku::fuzz::as_text(data, size));
  return 0;
}
