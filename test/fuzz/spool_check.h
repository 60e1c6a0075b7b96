// spool_check.h - invariants of reading spool segments (ingest/spool.h,
// read_segment) and of the record format (common/event.h).
//
// The first input byte picks what the file is:
//   mode 0: the rest of the input as raw file bytes, behind a valid header
//           when bit 2 is set (so the fuzzer also spends time on records);
//   mode 1: a segment written by the real writer (Spool::create, append)
//           with events built from the input;
//   mode 2: the same, torn: cut at a point the input chooses;
//   mode 3: the same, corrupt: one byte changed at a point the input chooses.
// Bits 2..7 equal to 0xF0 (first byte 0xF1..0xF3): the events repeat past
// one read chunk (1 MiB), so runs cross a refill of the scratch buffer. Bytes 1..4 choose the point, byte 5
// the xor mask and the run size.
//
// Whatever the file, the runs handed over are whole, valid records whose
// count and bytes add up to the result, and a clean tail is the end of the
// file. For written segments the result is exactly known: the events read
// are the events written, up to the first record that the cut or the
// changed byte reaches, where reading stops as torn or corrupt.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event.h"
#include "fuzz/fuzz_check.h"
#include "ingest/spool.h"

namespace kiroku::fuzz {
namespace spool_detail {

struct Event {
  std::uint64_t id;
  std::int64_t received_us, at_us, value;
  std::string name, client_id;
};

inline std::string temp_dir(const char* what) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/kiroku-" + what + "-XXXXXX";
  FUZZ_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
  return pattern;
}

// One spool for the process; its directory and the raw file's are removed at exit.
struct Dirs {
  std::string raw_dir = temp_dir("spool-fuzz-raw");
  std::string raw_path = raw_dir + "/0000000000000001-00.kseg";  // a segment name: seq 1
  std::string spool_dir = temp_dir("spool-fuzz");
  std::unique_ptr<Spool> spool;
};

inline Dirs& dirs() {
  static Dirs* const d = [] {
    auto* made = new Dirs;
    Result<std::unique_ptr<Spool>> s = Spool::open({.dir = made->spool_dir});
    FUZZ_REQUIRE(s.ok());
    made->spool = std::move(s.value());
    std::atexit([] {
      Dirs& all = dirs();
      all.spool.reset();
      ::unlink(all.raw_path.c_str());
      ::rmdir(all.raw_dir.c_str());
      ::unlink((all.spool_dir + "/LOCK").c_str());
      ::rmdir(all.spool_dir.c_str());
    });
    return made;
  }();
  return *d;
}

inline void write_file(const std::string& path, std::string_view a, std::string_view b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_REQUIRE(f != nullptr);
  FUZZ_REQUIRE(std::fwrite(a.data(), 1, a.size(), f) == a.size());
  FUZZ_REQUIRE(std::fwrite(b.data(), 1, b.size(), f) == b.size());
  FUZZ_REQUIRE(std::fclose(f) == 0);
}

inline std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  FUZZ_REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

// Reads `path`, checking what holds for any file, and calls on_event(view)
// for each event read, in order.
template <typename OnEvent>
inline SegmentReadResult read(const std::string& path, std::size_t max_records, OnEvent&& on_event) {
  static std::vector<std::byte> scratch;  // reused, as replay reuses it
  std::uint64_t records = 0, bytes = 0;
  const auto result = read_segment(
      path, scratch,
      [&](std::string_view run, std::size_t count) {
        // Every run is exactly `count` whole records, at most max_records.
        FUZZ_REQUIRE(count > 0 && count <= max_records);
        RecordReader reader(run);
        EventView e;
        std::size_t seen = 0, used = 0;
        while (reader.next(e)) {
          ++seen;
          used += record_size(e.name.size(), e.client_id.size());
          FUZZ_REQUIRE(!e.name.empty());
          on_event(e);
        }
        FUZZ_REQUIRE(seen == count && used == run.size());
        records += count;
        bytes += run.size();
        return Status{};
      },
      max_records);
  FUZZ_REQUIRE(result.ok());
  FUZZ_REQUIRE(scratch.size() == kSegmentReadChunk);
  const SegmentReadResult& r = result.value();
  const std::uint64_t size = file_size(path);
  FUZZ_REQUIRE(r.records == records && r.bytes == bytes && r.tail_offset <= size);
  if (r.records > 0) FUZZ_REQUIRE(r.tail_offset == kSegmentHeaderBytes + r.bytes);
  if (r.tail == SegmentReadResult::Tail::clean) FUZZ_REQUIRE(r.tail_offset == size && size >= kSegmentHeaderBytes);
  return r;
}

// Events from the input: per event a name length byte, a client id length
// byte, then the bytes of both (the input's end pads with 'n').
inline std::vector<Event> events_from(std::string_view in) {
  std::vector<Event> out;
  std::size_t pos = 0;
  auto byte = [&]() -> unsigned char { return pos < in.size() ? static_cast<unsigned char>(in[pos++]) : 'n'; };
  while (pos < in.size() && out.size() < 64) {
    const std::size_t name_len = 1 + byte() % kMaxNameBytes, client_len = byte();
    Event e{};
    for (std::size_t i = 0; i < name_len; ++i) e.name.push_back(static_cast<char>(byte()));
    for (std::size_t i = 0; i < client_len; ++i) e.client_id.push_back(static_cast<char>(byte()));
    const std::uint64_t k = out.size() + 1;
    e.id = k * 0x9E3779B97F4A7C15ull;
    e.received_us = 1'714'564'800'000'000 + static_cast<std::int64_t>(k);
    e.value = static_cast<std::int64_t>(pos * 0x100000001ull) - static_cast<std::int64_t>(k << 40);
    e.at_us = -e.value;
    out.push_back(std::move(e));
  }
  return out;
}

inline bool same(const EventView& a, const Event& b, std::uint64_t id_shift = 0) {
  return a.id == b.id + id_shift && a.received_us == b.received_us && a.at_us == b.at_us && a.value == b.value &&
         a.name == b.name && a.client_id == b.client_id;
}

inline void check_written(std::string_view in, unsigned mode, bool large, std::uint32_t point, unsigned char mask,
                          std::size_t max_records) {
  Dirs& d = dirs();
  std::vector<Event> events = events_from(in);
  // The records, and where each ends in the file.
  std::vector<std::byte> bytes;
  std::vector<std::uint64_t> ends;
  // Large: the events again and again (ids shifted) past one read chunk.
  const std::size_t base = events.size();
  auto expected = [&](std::size_t i) {
    Event e = events[i % base];
    e.id += i / base;
    return e;
  };
  for (std::size_t i = 0; i < base || (large && base > 0 && bytes.size() <= kSegmentReadChunk + kMaxRecordBytes); ++i) {
    const Event e = expected(i);
    append_record(bytes, {e.id, e.received_us, e.at_us, e.value, e.name, e.client_id});
    ends.push_back(kSegmentHeaderBytes + bytes.size());
  }

  Result<SegmentWriter> w = d.spool->create(0);
  FUZZ_REQUIRE(w.ok());
  // Appended in two pieces, split at a record boundary, as two requests would.
  const std::size_t split = ends.empty() ? 0 : ends[ends.size() / 2] - kSegmentHeaderBytes;
  const std::string_view all(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  FUZZ_REQUIRE(w.value().append(all.substr(0, split)).ok());
  FUZZ_REQUIRE(w.value().append(all.substr(split)).ok());
  const SegmentInfo info = w.value().seal();
  FUZZ_REQUIRE(info.bytes == kSegmentHeaderBytes + bytes.size() && file_size(info.path) == info.bytes);
  FUZZ_REQUIRE(d.spool->bytes() == info.bytes);

  // The damage, and the first record it reaches.
  std::uint64_t damaged_at = info.bytes;  // offset where reading must stop
  std::size_t intact = ends.size();       // records before it
  if (mode == 2) {
    const std::uint64_t cut = point % (info.bytes + 1);
    FUZZ_REQUIRE(::truncate(info.path.c_str(), static_cast<off_t>(cut)) == 0);
    if (cut < kSegmentHeaderBytes) {
      damaged_at = 0;
      intact = 0;
    } else {
      intact = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), cut) - ends.begin());
      damaged_at = intact == 0 ? kSegmentHeaderBytes : ends[intact - 1];
    }
  } else if (mode == 3 && info.bytes > 0) {
    const std::uint64_t at = point % info.bytes;
    const int fd = ::open(info.path.c_str(), O_RDWR | O_CLOEXEC);
    FUZZ_REQUIRE(fd >= 0);
    unsigned char b = 0;
    FUZZ_REQUIRE(::pread(fd, &b, 1, static_cast<off_t>(at)) == 1);
    b ^= mask;
    FUZZ_REQUIRE(::pwrite(fd, &b, 1, static_cast<off_t>(at)) == 1);
    ::close(fd);
    if (at < kSegmentHeaderBytes) {
      damaged_at = 0;
      intact = 0;
    } else {
      intact = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), at) - ends.begin());
      damaged_at = intact == 0 ? kSegmentHeaderBytes : ends[intact - 1];
    }
  }

  std::size_t read_events = 0;
  const SegmentReadResult r = read(info.path, max_records, [&](const EventView& e) {
    FUZZ_REQUIRE(read_events < intact && same(e, events[read_events % base], read_events / base));
    ++read_events;
  });
  FUZZ_REQUIRE(r.records == intact && read_events == intact);
  const std::uint64_t size = file_size(info.path);
  if (damaged_at == size && size >= kSegmentHeaderBytes) {
    FUZZ_REQUIRE(r.tail == SegmentReadResult::Tail::clean);  // intact, or cut between records
  } else {
    // A cut is torn; a changed byte is corrupt, or torn when it makes a
    // record's length run past the end of the file (CRC-32C catches every
    // single changed byte, so no record after it can read as valid).
    FUZZ_REQUIRE(r.tail_offset == damaged_at);
    if (mode == 2) FUZZ_REQUIRE(r.tail == SegmentReadResult::Tail::torn);
    if (mode == 3) FUZZ_REQUIRE(r.tail != SegmentReadResult::Tail::clean);
  }

  FUZZ_REQUIRE(d.spool->remove(info).ok());
  FUZZ_REQUIRE(d.spool->bytes() == 0);
}

}  // namespace spool_detail

inline void check_spool(std::string_view in) {
  using namespace spool_detail;
  if (in.empty()) return;
  const auto b0 = static_cast<unsigned char>(in[0]);
  const unsigned mode = b0 & 3;
  if (mode == 0) {
    Dirs& d = dirs();
    char header[kSegmentHeaderBytes] = {'K', 'S', 'E', 'G'};
    const std::uint32_t version = kSegmentVersion;
    const std::uint64_t seq = 1;
    std::memcpy(header + 4, &version, 4);
    std::memcpy(header + 8, &seq, 8);
    write_file(d.raw_path, (b0 & 4) != 0 ? std::string_view(header, sizeof header) : std::string_view(), in.substr(1));
    read(d.raw_path, 1 + in.size() % 5, [](const EventView&) {});
    return;
  }
  auto at = [&](std::size_t i) -> unsigned char { return i < in.size() ? static_cast<unsigned char>(in[i]) : 0; };
  const std::uint32_t point = at(1) | at(2) << 8 | at(3) << 16 | static_cast<std::uint32_t>(at(4)) << 24;
  const unsigned char mask = at(5) == 0 ? 1 : at(5);
  check_written(in.size() > 6 ? in.substr(6) : std::string_view(), mode, (b0 & 0xFC) == 0xF0, point, mask,
                1 + at(5) % 7);
}

}  // namespace kiroku::fuzz
