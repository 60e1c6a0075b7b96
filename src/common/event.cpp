// event.cpp - encoding and decoding of event records (format in event.h).
#include "common/event.h"

#include <cstring>

#include "common/crc32c.h"

namespace kiroku {
namespace {

template <typename T>
void put(std::byte*& p, T v) {
  std::memcpy(p, &v, sizeof v);  // little-endian hosts only (x86-64, arm64)
  p += sizeof v;
}
template <typename T>
T get(const char*& p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  p += sizeof v;
  return v;
}

}  // namespace

void append_record(std::vector<std::byte>& out, const EventView& e) {
  const std::size_t size = record_size(e.name.size(), e.client_id.size());
  const std::size_t at = out.size();
  out.resize(at + size);
  std::byte* const start = out.data() + at;
  std::byte* p = start;
  put<std::uint32_t>(p, static_cast<std::uint32_t>(size - 4));
  std::byte* const crc_at = p;
  p += 4;
  put<std::uint64_t>(p, e.id);
  put<std::int64_t>(p, e.received_us);
  put<std::int64_t>(p, e.at_us);
  put<std::int64_t>(p, e.value);
  put<std::uint8_t>(p, static_cast<std::uint8_t>(e.name.size()));
  put<std::uint8_t>(p, static_cast<std::uint8_t>(e.client_id.size()));
  std::memcpy(p, e.name.data(), e.name.size());
  p += e.name.size();
  if (!e.client_id.empty()) std::memcpy(p, e.client_id.data(), e.client_id.size());
  const std::uint32_t crc = crc32c(crc_at + 4, size - 8);
  std::memcpy(crc_at, &crc, 4);
}

DecodeResult decode_record(std::string_view bytes, EventView& e, std::size_t& size, bool verify) {
  if (bytes.size() < 4) return DecodeResult::need_more;
  const char* p = bytes.data();
  const std::uint32_t len = get<std::uint32_t>(p);
  if (len < kRecordHeaderBytes - 4 + 1 || len > kMaxRecordBytes - 4) return DecodeResult::corrupt;
  if (bytes.size() < 4 + std::size_t{len}) return DecodeResult::need_more;
  const std::uint32_t crc = get<std::uint32_t>(p);
  if (verify && crc32c(p, len - 4) != crc) return DecodeResult::corrupt;
  e.id = get<std::uint64_t>(p);
  e.received_us = get<std::int64_t>(p);
  e.at_us = get<std::int64_t>(p);
  e.value = get<std::int64_t>(p);
  const std::size_t name_len = get<std::uint8_t>(p);
  const std::size_t client_len = get<std::uint8_t>(p);
  if (name_len == 0 || record_size(name_len, client_len) != 4 + std::size_t{len}) return DecodeResult::corrupt;
  e.name = {p, name_len};
  e.client_id = {p + name_len, client_len};
  size = 4 + std::size_t{len};
  return DecodeResult::ok;
}

bool RecordReader::next(EventView& e) {
  std::size_t size = 0;
  if (bytes_.empty() || decode_record(bytes_, e, size, false) != DecodeResult::ok) return false;
  last_ = bytes_.substr(0, size);
  bytes_.remove_prefix(size);
  return true;
}

}  // namespace kiroku
