// spool_fuzz.cpp - fuzz target: any file content read as a spool segment must not crash.
//
// Build (libFuzzer):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc test/fuzz/spool_fuzz.cpp
//     src/ingest/spool.cpp src/ingest/event.cpp src/common/crc32c.cpp -o spool_fuzz
// The first input byte chooses whether a valid header is put in front of the
// rest, so the fuzzer spends its time on records as well as on headers.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/event.h"
#include "ingest/spool.h"

namespace {

std::string segment_dir;
std::string segment_path;

void remove_segment_dir() {
  ::unlink(segment_path.c_str());
  ::rmdir(segment_dir.c_str());
}

const std::string& path_for_input() {
  if (segment_path.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/kiroku-spool-fuzz-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    segment_dir = pattern;
    // A segment name, so the header's seq is checked against it (seq 1).
    segment_path = segment_dir + "/0000000000000001-00.kseg";
    std::atexit(remove_segment_dir);
  }
  return segment_path;
}

void write_segment(const std::string& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && (data[0] & 1) != 0) {
    char header[kiroku::kSegmentHeaderBytes] = {'K', 'S', 'E', 'G'};
    const std::uint32_t version = kiroku::kSegmentVersion;
    const std::uint64_t seq = 1;
    std::memcpy(header + 4, &version, 4);
    std::memcpy(header + 8, &seq, 8);
    std::fwrite(header, 1, sizeof header, f);
  }
  if (size > 1) std::fwrite(data + 1, 1, size - 1, f);
  if (std::fclose(f) != 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = path_for_input();
  write_segment(path, data, size);
  const std::size_t file_size = (size > 0 && (data[0] & 1) != 0 ? kiroku::kSegmentHeaderBytes : 0) +
                                (size > 1 ? size - 1 : 0);

  static std::vector<std::byte> scratch;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  auto result = kiroku::read_segment(
      path, scratch,
      [&](std::string_view run, std::size_t count) {
        // Every run handed over is exactly `count` whole, valid records.
        kiroku::RecordReader reader(run);
        kiroku::EventView e;
        std::size_t seen = 0;
        std::size_t used = 0;
        while (reader.next(e)) {
          ++seen;
          used += kiroku::record_size(e.name.size(), e.client_id.size());
        }
        if (seen != count || used != run.size() || count == 0) __builtin_trap();
        records += count;
        bytes += run.size();
        return kiroku::Status{};
      },
      1 + size % 5);
  if (!result.ok()) __builtin_trap();
  const kiroku::SegmentReadResult& r = result.value();
  if (r.records != records || r.bytes != bytes || r.tail_offset > file_size) __builtin_trap();
  if (r.records > 0 && r.tail_offset != kiroku::kSegmentHeaderBytes + r.bytes) __builtin_trap();
  if (r.tail == kiroku::SegmentReadResult::Tail::clean && r.tail_offset != file_size)
    __builtin_trap();
  return 0;
}
