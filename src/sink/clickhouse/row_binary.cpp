// row_binary.cpp - see row_binary.h.
#include "sink/clickhouse/row_binary.h"

#include <cstring>

namespace kiroku {
namespace {

void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  out.append(b, 8);
}

void put_string(std::string& out, std::string_view s) {
  std::uint64_t n = s.size();
  do {
    const auto byte = static_cast<unsigned char>(n & 0x7f);
    n >>= 7;
    out.push_back(static_cast<char>(n != 0 ? byte | 0x80 : byte));
  } while (n != 0);
  out.append(s);
}

// splitmix64's finalizer: every bit of the input moves every bit of the output.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

void append_event_row(std::string& out, const EventView& e) {
  put_u64(out, e.id);
  put_u64(out, static_cast<std::uint64_t>(e.received_us));
  put_u64(out, static_cast<std::uint64_t>(e.at_us));
  put_string(out, e.name);
  put_u64(out, static_cast<std::uint64_t>(e.value));
  if (e.client_id.empty()) {
    out.push_back('\1');
  } else {
    out.push_back('\0');
    put_string(out, e.client_id);
  }
}

void append_client_row(std::string& out, std::string_view client_id, std::uint64_t id) {
  put_string(out, client_id);
  put_u64(out, id);
}

bool RowBinaryReader::u8(std::uint8_t& v) {
  if (bytes_.empty()) return false;
  v = static_cast<std::uint8_t>(bytes_.front());
  bytes_.remove_prefix(1);
  return true;
}

bool RowBinaryReader::u64(std::uint64_t& v) {
  if (bytes_.size() < 8) return false;
  v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes_[static_cast<std::size_t>(i)]);
  bytes_.remove_prefix(8);
  return true;
}

bool RowBinaryReader::i64(std::int64_t& v) {
  std::uint64_t u = 0;
  if (!u64(u)) return false;
  v = static_cast<std::int64_t>(u);
  return true;
}

bool RowBinaryReader::string(std::string_view& v) {
  std::uint64_t n = 0;
  std::size_t i = 0;
  for (int shift = 0;; shift += 7) {
    if (i >= bytes_.size() || shift > 56) return false;
    const auto byte = static_cast<unsigned char>(bytes_[i++]);
    n |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) break;
  }
  if (n > bytes_.size() - i) return false;
  v = bytes_.substr(i, static_cast<std::size_t>(n));
  bytes_.remove_prefix(i + static_cast<std::size_t>(n));
  return true;
}

bool RowBinaryReader::nullable_string(std::string_view& v, bool& null) {
  if (bytes_.empty()) return false;
  const char flag = bytes_.front();
  if (flag != 0 && flag != 1) return false;
  bytes_.remove_prefix(1);
  null = flag == 1;
  v = {};
  return null || string(v);
}

bool read_event_row(RowBinaryReader& reader, EventView& e, bool& client_null) {
  return reader.u64(e.id) && reader.i64(e.received_us) && reader.i64(e.at_us) && reader.string(e.name) &&
         reader.i64(e.value) && reader.nullable_string(e.client_id, client_null);
}

std::size_t shard_of(const EventView& e, std::size_t shards) {
  if (shards <= 1) return 0;
  std::uint64_t h;
  if (!e.client_id.empty()) {
    h = 0xcbf29ce484222325ull;  // FNV-1a 64
    for (const char c : e.client_id) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  } else {
    h = e.id;
  }
  return static_cast<std::size_t>(mix(h) % shards);
}

}  // namespace kiroku
