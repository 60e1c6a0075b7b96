// clickhouse_bulk_bench.cpp - rows/s of the ClickHouse sink (Sink::write) by batch size.
//
// Writes --rows events in batches of 100, 1,000, 10,000 and 50,000 through the
// sink, into a fresh table per run, and prints one line per batch size and
// kind of event: the median and the best rows/s over the rounds. Kinds:
//   plain     events without a client id: one INSERT per shard and batch
//   client    every event with a client id: a SELECT and two INSERTs per shard
// Ids increase as a real instance's do, so the id read-back is skipped after
// the first batch (clickhouse_sink.h).
//
//   scripts/with-clickhouse.sh build/bench/clickhouse_bulk_bench [--url URL] [--rows N] [--rounds R]
//
// The URL comes from KIROKU_TEST_CLICKHOUSE_URL (or --url; the cluster URL
// spreads the rows over the shards).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event.h"
#include "sink/clickhouse/clickhouse_http.h"
#include "sink/clickhouse/clickhouse_url.h"
#include "sink/sink.h"

namespace kiroku {
namespace {

constexpr std::string_view kTable = "bench_events";

void drop_tables(const ClickhouseUrl& url) {
  std::string out;
  for (const ClickhouseServer& s : url.shards) {
    ClickhouseHttp h(s, url, 5000, 60'000);
    for (const char* suffix : {"", "_client_ids"}) {
      if (Status st = h.query("DROP TABLE IF EXISTS `" + std::string(kTable) + suffix + "`", out, "drop"); !st.ok()) {
        std::fprintf(stderr, "%s\n", st.message().c_str());
        std::exit(1);
      }
    }
  }
}

// One run: `rows` events in batches of `batch`; rows/s.
double run(const std::string& url, const ClickhouseUrl& parsed, std::size_t rows, std::size_t batch, bool client) {
  drop_tables(parsed);
  SinkOptions o;
  o.table = std::string(kTable);
  auto made = make_sink(url, o);
  if (!made.ok() || !(*made)->open().ok()) {
    std::fprintf(stderr, "open: %s\n", made.ok() ? (*made)->open().message().c_str() : made.status().message().c_str());
    std::exit(1);
  }
  Sink& sink = **made;
  // The batches are built before the clock starts.
  std::vector<EventBuffer> batches;
  std::vector<std::string> clients;
  clients.reserve(rows);
  std::uint64_t id = 1ull << 40;
  for (std::size_t done = 0; done < rows; done += batch) {
    EventBuffer b;
    for (std::size_t i = 0; i < batch && done + i < rows; ++i) {
      clients.push_back(client ? "client-" + std::to_string(done + i) : std::string());
      const std::int64_t now = 1'780'000'000'000'000 + static_cast<std::int64_t>(done + i);
      b.append(EventView{id++, now, now, static_cast<std::int64_t>(i), "bench.metric", clients.back()});
    }
    batches.push_back(std::move(b));
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (const EventBuffer& b : batches) {
    if (Status st = sink.write(b.view(), b.count); !st.ok() || sink.last_write().stored != b.count) {
      std::fprintf(stderr, "write: %s (stored %zu of %zu)\n", st.message().c_str(), sink.last_write().stored, b.count);
      std::exit(1);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(rows) / s;
}

int bench_main(int argc, char** argv) {
  const char* env = std::getenv("KIROKU_TEST_CLICKHOUSE_URL");
  std::string url = env ? env : "";
  std::size_t rows = 100'000;
  int rounds = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--url") url = argv[i + 1];
    else if (flag == "--rows") rows = std::strtoull(argv[i + 1], nullptr, 10);
    else if (flag == "--rounds") rounds = std::atoi(argv[i + 1]);
  }
  Result<ClickhouseUrl> parsed = parse_clickhouse_url(url);
  if (!parsed.ok() || rows == 0 || rounds <= 0) {
    std::fprintf(stderr, "usage: %s [--url clickhouse://...] [--rows N] [--rounds R]%s%s\n", argv[0],
                 parsed.ok() ? "" : ": ", parsed.ok() ? "" : parsed.status().message().c_str());
    return 2;
  }
  std::printf("shards %zu, %zu rows per run, %d rounds\n", parsed->shards.size(), rows, rounds);
  std::printf("%-7s %8s %14s %14s\n", "kind", "batch", "median rows/s", "best rows/s");
  for (const bool client : {false, true}) {
    for (const std::size_t batch : {std::size_t{100}, std::size_t{1000}, std::size_t{10'000}, std::size_t{50'000}}) {
      std::vector<double> r;
      for (int i = 0; i < rounds; ++i) r.push_back(run(url, *parsed, rows, batch, client));
      std::sort(r.begin(), r.end());
      std::printf("%-7s %8zu %14.0f %14.0f\n", client ? "client" : "plain", batch, r[r.size() / 2], r.back());
      std::fflush(stdout);
    }
  }
  drop_tables(*parsed);
  return 0;
}

}  // namespace
}  // namespace kiroku

int main(int argc, char** argv) { return kiroku::bench_main(argc, argv); }
