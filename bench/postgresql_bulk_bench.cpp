// postgresql_bulk_bench.cpp - rows/s of the PostgreSQL sink's batch insert (Sink::write).
//
// For batches of 100, 1,000 and 10,000 events, against a real server: each
// batch one transaction, idempotent on id, as the sink writes them (COPY into
// the staging table, INSERT ... ON CONFLICT DO NOTHING); each run starts from
// an empty table and is checked to have stored every row.
//
//   scripts/with-postgres.sh build/bench/postgresql_bulk_bench [--rows N] [--rounds R]
//
// The server URL comes from KIROKU_TEST_POSTGRES_URL (or --url). Prints one line
// per batch size, "sink BATCH MEDIAN BEST" (rows/s over the rounds, after one
// warm-up round), the format of mysql_bulk_bench.
#include <libpq-fe.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event.h"
#include "sink/postgresql/postgresql_sink.h"

namespace kiroku {
namespace {

constexpr std::string_view kTable = "bench_events";

// Batches of `batch` events, `rows` in all: the events of mysql_bulk_bench.
std::vector<EventBuffer> make_batches(std::size_t rows, std::size_t batch) {
  static const char* const kNames[] = {"hoge",           "page.view",     "signup.completed",
                                       "api.latency_ms", "計測.応答時間", "checkout.cart.items.count"};
  std::vector<EventBuffer> out;
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
    out.back().append(e);
  }
  return out;
}

// Runs a statement on the admin connection; the first value of its result.
std::string query(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::fprintf(stderr, "%s: %s", sql.c_str(), PQerrorMessage(c));
    std::exit(1);
  }
  std::string out = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return out;
}

double run(Sink& sink, PGconn* admin, const std::vector<EventBuffer>& batches, std::size_t rows) {
  query(admin, "TRUNCATE TABLE " + std::string(kTable));
  const auto start = std::chrono::steady_clock::now();
  for (const EventBuffer& b : batches) {
    if (Status s = sink.write(b.view(), b.count); !s) {
      std::fprintf(stderr, "sink write: %s\n", s.message().c_str());
      std::exit(1);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::size_t stored =
      std::strtoull(query(admin, "SELECT count(*) FROM " + std::string(kTable)).c_str(), nullptr, 10);
  if (stored != rows) {
    std::fprintf(stderr, "stored %zu rows, expected %zu\n", stored, rows);
    std::exit(1);
  }
  return static_cast<double>(rows) / seconds;
}

int bench_main(int argc, char** argv) {
  const char* env = std::getenv("KIROKU_TEST_POSTGRES_URL");
  std::string url = env ? env : "";
  std::size_t rows = 100'000;
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--url") {
      url = argv[i + 1];
    } else if (flag == "--rows") {
      rows = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "usage: %s [--url URL] [--rows N] [--rounds R]\n", argv[0]);
      return 2;
    }
  }
  if (rows == 0 || rounds < 1) {
    std::fprintf(stderr, "--rows and --rounds must be positive\n");
    return 2;
  }
  if (url.empty()) {
    std::fprintf(stderr, "set KIROKU_TEST_POSTGRES_URL or --url (run under scripts/with-postgres.sh)\n");
    return 2;
  }
  // The sink creates the table (and so the benchmark uses the product's schema).
  SinkOptions options;
  options.table = std::string(kTable);
  Result<std::unique_ptr<Sink>> sink = make_postgres_sink(url, options);
  if (Status s = sink.ok() ? (*sink)->open() : sink.status(); !s) {
    std::fprintf(stderr, "sink: %s\n", s.message().c_str());
    return 1;
  }
  // libpq reads the same URL (a conninfo URI) for the admin connection.
  PGconn* admin = PQconnectdb(url.c_str());
  if (PQstatus(admin) != CONNECTION_OK) {
    std::fprintf(stderr, "connect: %s", PQerrorMessage(admin));
    return 1;
  }
  std::printf("server %s, %zu rows per run, %d rounds after one warm-up round\n",
              query(admin, "SHOW server_version").c_str(), rows, rounds);
  std::printf("%-14s %8s %14s %14s\n", "method", "batch", "median rows/s", "best rows/s");
  for (const std::size_t batch : {std::size_t{100}, std::size_t{1000}, std::size_t{10000}}) {
    const std::vector<EventBuffer> batches = make_batches(rows, batch);
    std::vector<double> rates;
    for (int r = -1; r < rounds; ++r) {
      const double rate = run(**sink, admin, batches, rows);
      if (r >= 0) rates.push_back(rate);
    }
    std::sort(rates.begin(), rates.end());
    std::printf("%-14s %8zu %14.0f %14.0f\n", "sink", batch, rates[rates.size() / 2], rates.back());
    std::fflush(stdout);
  }
  query(admin, "DROP TABLE " + std::string(kTable));
  PQfinish(admin);
  return 0;
}

}  // namespace
}  // namespace kiroku

int main(int argc, char** argv) { return kiroku::bench_main(argc, argv); }
