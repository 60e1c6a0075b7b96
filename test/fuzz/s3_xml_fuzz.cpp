// s3_xml_fuzz.cpp - fuzz target: S3's XML documents, every parser of
// s3_xml.h (invariants in s3_xml_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/s3_xml_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_s3_xml(kiroku::fuzz::as_text(data, size));
  return 0;
}
