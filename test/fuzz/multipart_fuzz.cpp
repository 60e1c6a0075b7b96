// multipart_fuzz.cpp - fuzz target: multipart/form-data bodies for POST
// /files, whole and in slices (invariants in multipart_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/multipart_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_multipart(kiroku::fuzz::as_text(data, size));
  return 0;
}
