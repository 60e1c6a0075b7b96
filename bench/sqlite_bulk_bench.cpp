// sqlite_bulk_bench.cpp - rows/s of the SQLite sink's batch insert (Sink::write).
//
// For batches of 100, 1,000 and 10,000 events: each batch one transaction,
// idempotent on id, as the sink writes them, into a new database file in a
// temporary directory for each run; every run is checked to have stored every
// row (the sink's write reports). `sink`: commits as in durability none and
// process; `durable`: each commit synced to the disk (fsync and sink).
//
//   build/bench/sqlite_bulk_bench [--rows N] [--rounds R]
//
// Prints one line per kind and batch size, "KIND BATCH MEDIAN BEST" (rows/s
// over the rounds, after one warm-up round), the format of mysql_bulk_bench.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/event.h"
#include "sink/sink.h"

using namespace kiroku;

namespace {

struct Batch {
  std::vector<std::byte> bytes;
  std::size_t count = 0;
  std::string_view view() const { return {reinterpret_cast<const char*>(bytes.data()), bytes.size()}; }
};

// Batches of `batch` events, `rows` in all: the events of the other bulk benchmarks.
std::vector<Batch> make_batches(std::size_t rows, std::size_t batch) {
  static const char* const kNames[] = {"hoge",           "page.view",     "signup.completed",
                                       "api.latency_ms", "計測.応答時間", "checkout.cart.items.count"};
  std::vector<Batch> out;
  std::string client;
  for (std::size_t id = 1; id <= rows; ++id) {
    if ((id - 1) % batch == 0) out.emplace_back();
    EventView e;
    e.id = (std::uint64_t{1} << 40) + id;
    e.received_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(id) * 37;
    e.at_us = e.received_us - 1000;
    e.value = static_cast<std::int64_t>(id * 7919 % 100'000) - 50'000;
    e.name = kNames[id % std::size(kNames)];
    client = "client-" + std::to_string(id);
    e.client_id = id % 3 == 0 ? std::string_view(client) : std::string_view();
    append_record(out.back().bytes, e);
    ++out.back().count;
  }
  return out;
}

double run(const std::filesystem::path& dir, bool durable, const std::vector<Batch>& batches, std::size_t rows) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  SinkOptions o;
  o.table = "bench_events";
  o.durable_commits = durable;
  auto made = make_sink("sqlite://" + (dir / "events.db").string(), o);
  if (!made.ok() || !(*made)->open().ok()) {
    std::fprintf(stderr, "open: %s\n", made.ok() ? "failed" : made.status().message().c_str());
    std::exit(1);
  }
  Sink& sink = **made;
  std::size_t stored = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const Batch& b : batches) {
    if (Status s = sink.write(b.view(), b.count); !s) {
      std::fprintf(stderr, "write: %s\n", s.message().c_str());
      std::exit(1);
    }
    stored += sink.last_write().stored;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (stored != rows) {
    std::fprintf(stderr, "stored %zu rows, expected %zu\n", stored, rows);
    std::exit(1);
  }
  return static_cast<double>(rows) / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t rows = 100'000;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--rows") {
      rows = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--rows N] [--rounds R]\n", argv[0]);
      return 2;
    }
  }
  if (rows == 0 || rounds <= 0) {
    std::fprintf(stderr, "--rows and --rounds must be positive\n");
    return 2;
  }
  const auto dir = std::filesystem::temp_directory_path() /
                   ("kiroku-sqlite-bulk-" + std::to_string(std::random_device{}()));
  std::printf("%-7s %8s %14s %14s\n", "kind", "batch", "median rows/s", "best rows/s");
  for (const bool durable : {false, true}) {
    for (const std::size_t batch : {std::size_t{100}, std::size_t{1000}, std::size_t{10000}}) {
      const auto batches = make_batches(rows, batch);
      run(dir, durable, batches, rows);  // warm-up
      std::vector<double> r;
      for (int k = 0; k < rounds; ++k) r.push_back(run(dir, durable, batches, rows));
      std::sort(r.begin(), r.end());
      std::printf("%-7s %8zu %14.0f %14.0f\n", durable ? "durable" : "sink", batch, r[r.size() / 2], r.back());
      std::fflush(stdout);
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
