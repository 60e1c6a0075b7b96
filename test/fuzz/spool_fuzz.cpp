// spool_fuzz.cpp - fuzz target: spool segments, random, written, torn and
// corrupt, through the real read path (invariants in spool_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/spool_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_spool(kiroku::fuzz::as_text(data, size));
  return 0;
}
