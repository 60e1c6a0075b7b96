// crc32c.h - CRC-32C (Castagnoli), the checksum of spool records.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiroku {

// CRC-32C of `n` bytes at `data`, continuing from `crc` (0 to start).
// crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0);

}  // namespace kiroku
