// spool_bench.cpp - micro benchmarks of the spool: appends of 60-byte records, sync, replay.
//
// The spool directory is a fresh temporary directory under $KIROKU_BENCH_DIR,
// else $TMPDIR, else /tmp: point it at the disk the server would use.
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/event.h"
#include "ingest/spool.h"

namespace kiroku {
namespace {

constexpr std::size_t kRecordBytes = 60;
// A shard seals its segment when it hands its batch over; the benchmark does
// so (and removes the segment, as after a commit) every this many records.
constexpr std::size_t kRecordsPerSegment = 65536;

std::string make_bench_dir() {
  const char* base = std::getenv("KIROKU_BENCH_DIR");
  if (base == nullptr || *base == '\0') base = std::getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/kiroku-spool-bench-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

// `n` records of exactly 60 bytes (an 18-byte name, no client id).
EventBuffer sixty_byte_records(std::size_t n, std::uint64_t first_id = 1) {
  EventBuffer buffer;
  const std::string name = "bench.requests.sum";
  static_assert(record_size(18, 0) == kRecordBytes);
  for (std::size_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::int64_t>(i);
    buffer.append({first_id + i, 1'700'000'000'000'000 + k, 1'700'000'000'000'000 + k, k, name, {}});
  }
  return buffer;
}

struct BenchSpool {
  std::string dir = make_bench_dir();
  std::unique_ptr<Spool> spool;
  ~BenchSpool() {
    spool.reset();
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
  bool open(benchmark::State& state) {
    auto s = Spool::open({dir + "/spool"});
    if (dir.empty() || !s.ok()) {
      state.SkipWithError("cannot open a spool directory");
      return false;
    }
    spool = std::move(s.value());
    return true;
  }
};

// Appends of range(0) records per write(2); range(1) != 0 adds an fdatasync
// after each write (the --durability fsync path without group commit).
void BM_SpoolAppend(benchmark::State& state) {
  const auto per_write = static_cast<std::size_t>(state.range(0));
  const bool sync = state.range(1) != 0;
  BenchSpool bench;
  if (!bench.open(state)) return;
  const EventBuffer records = sixty_byte_records(per_write);
  auto writer = bench.spool->create(0);
  std::size_t in_segment = 0;
  for (auto _ : state) {
    if (!writer.ok() || !writer->append(records.view()).ok() || (sync && !writer->sync().ok())) {
      state.SkipWithError("append failed");
      break;
    }
    in_segment += per_write;
    if (in_segment >= kRecordsPerSegment) {
      (void)bench.spool->remove(writer->seal());
      writer = bench.spool->create(0);
      in_segment = 0;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * per_write));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * per_write * kRecordBytes));
}
BENCHMARK(BM_SpoolAppend)->ArgNames({"records", "sync"})->Args({1, 0})->Args({64, 0});
BENCHMARK(BM_SpoolAppend)->ArgNames({"records", "sync"})->Args({64, 1})->UseRealTime();

// Replay speed: reading a segment of range(0) records back in runs of 4096
// (file in the page cache).
void BM_SpoolReplay(benchmark::State& state) {
  const auto count = static_cast<std::size_t>(state.range(0));
  BenchSpool bench;
  if (!bench.open(state)) return;
  auto writer = bench.spool->create(0);
  const EventBuffer records = sixty_byte_records(count);
  if (!writer.ok() || !writer->append(records.view()).ok()) {
    state.SkipWithError("cannot write the segment");
    return;
  }
  const SegmentInfo info = writer->seal();
  std::vector<std::byte> scratch;
  std::uint64_t seen = 0;
  for (auto _ : state) {
    auto r = read_segment(info.path, scratch, [&](std::string_view run, std::size_t n) {
      benchmark::DoNotOptimize(run.data());
      seen += n;
      return Status{};
    });
    if (!r.ok() || r->records != count) {
      state.SkipWithError("read failed");
      break;
    }
  }
  benchmark::DoNotOptimize(seen);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * count));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * count * kRecordBytes));
}
BENCHMARK(BM_SpoolReplay)->Arg(1 << 20);

}  // namespace
}  // namespace kiroku

BENCHMARK_MAIN();
