// metrics_bench.cpp - cost of metric updates on the request path, and of a scrape.
//
// BM_CounterInc / BM_HistogramObserve: a shard's single-writer cell (relaxed
// load + store), from 1 and 2 threads, each thread its own shard.
// *Shared: the same through the shared cell (fetch_add), contended from 2
// threads. BM_PackedCellsInc: two single-writer cells in one cache line, what
// the 64-byte cell alignment avoids. BM_BucketLookup*: the linear scan of
// Histogram::bucket_of against binary searches. Update benchmarks also report
// allocations per operation (operator new is counted here), which must be 0.
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "ops/metrics.h"

// ---- allocation counting ----

namespace {
thread_local std::uint64_t allocations = 0;
}

// Out of line, so that callers pair operator new with operator delete, not malloc with it.
[[gnu::noinline]] void* operator new(std::size_t n) {
  ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t a) {
  ++allocations;
  const auto align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace kiroku {
namespace {

constexpr unsigned kShards = 2;

Registry& registry() {
  static Registry r(kShards);
  return r;
}

void report_allocations(benchmark::State& state, std::uint64_t before) {
  state.counters["allocs/op"] =
      benchmark::Counter(static_cast<double>(allocations - before), benchmark::Counter::kAvgIterations);
}

// Latency-like values in microseconds, 4096 of them (a power of two).
// Mix 0: exponential with a 200 us mean (a fast ingest path).
// Mix 1: log-uniform from 10 us to 10 s (every bucket).
std::vector<std::uint64_t> make_values(int mix) {
  std::mt19937_64 rng(7);
  std::exponential_distribution<double> fast(1.0 / 200);
  std::uniform_real_distribution<double> exponent(1, 7);
  std::vector<std::uint64_t> out;
  for (int i = 0; i < 4096; ++i) {
    const double v = mix == 0 ? fast(rng) : std::pow(10.0, exponent(rng));
    out.push_back(static_cast<std::uint64_t>(v));
  }
  return out;
}

const std::vector<std::uint64_t>& values(int mix) {
  static const std::array<std::vector<std::uint64_t>, 2> mixes = {make_values(0), make_values(1)};
  return mixes[mix];
}

// 50 us .. 26 s: the request latency buckets.
const std::vector<double>& latency_bounds() {
  static const std::vector<double> bounds = exponential_buckets(5e-5, 2, 20);
  return bounds;
}

// ============================================================================
// Counters
// ============================================================================

void BM_CounterInc(benchmark::State& state) {
  static Counter* c = registry().counter("bench_inc_total", "B.").with({});
  const auto shard = static_cast<unsigned>(state.thread_index());
  const std::uint64_t before = allocations;
  for (auto _ : state) c->inc(shard);
  report_allocations(state, before);
}
BENCHMARK(BM_CounterInc)->Threads(1)->Threads(2)->UseRealTime();

void BM_CounterIncShared(benchmark::State& state) {
  static Counter* c = registry().counter("bench_inc_shared_total", "B.").with({});
  const std::uint64_t before = allocations;
  for (auto _ : state) c->inc_shared();
  report_allocations(state, before);
}
BENCHMARK(BM_CounterIncShared)->Threads(1)->Threads(2)->UseRealTime();

// Two single-writer cells in one cache line: each thread writes its own word,
// yet the line bounces between cores.
void BM_PackedCellsInc(benchmark::State& state) {
  alignas(64) static std::atomic<std::uint64_t> cells[2];
  std::atomic<std::uint64_t>& mine = cells[state.thread_index() % 2];
  for (auto _ : state) mine.store(mine.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
BENCHMARK(BM_PackedCellsInc)->Threads(1)->Threads(2)->UseRealTime();

// ============================================================================
// Histograms
// ============================================================================

void BM_HistogramObserve(benchmark::State& state) {
  static Histogram* h = registry().histogram("bench_observe_seconds", "B.", {}, latency_bounds()).with({});
  const auto shard = static_cast<unsigned>(state.thread_index());
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  const std::uint64_t before = allocations;
  for (auto _ : state) h->observe(shard, v[i++ & 4095]);
  report_allocations(state, before);
}
BENCHMARK(BM_HistogramObserve)->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();

void BM_HistogramObserveShared(benchmark::State& state) {
  static Histogram* h = registry().histogram("bench_observe_shared_seconds", "B.", {}, latency_bounds()).with({});
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  const std::uint64_t before = allocations;
  for (auto _ : state) h->observe_shared(v[i++ & 4095]);
  report_allocations(state, before);
}
BENCHMARK(BM_HistogramObserveShared)->Arg(0)->Arg(1)->Threads(1)->Threads(2)->UseRealTime();

// ---- bucket lookup: args (mix, number of bounds) ----

std::vector<std::uint64_t> limits(std::int64_t n) {
  std::vector<std::uint64_t> out;
  for (const double b : exponential_buckets(5e-5, 2, static_cast<std::size_t>(n))) {
    out.push_back(static_cast<std::uint64_t>(std::llround(b * 1e6)));
  }
  return out;
}

void BM_BucketLookupLinear(benchmark::State& state) {
  const std::vector<double> bounds = exponential_buckets(5e-5, 2, state.range(1));
  const Histogram h(1, bounds, kMicrosecondsInSeconds);
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(h.bucket_of(v[i++ & 4095]));
}
BENCHMARK(BM_BucketLookupLinear)->ArgsProduct({{0, 1}, {20, 32}});

void BM_BucketLookupBinary(benchmark::State& state) {
  const std::vector<std::uint64_t> b = limits(state.range(1));
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(std::lower_bound(b.begin(), b.end(), v[i++ & 4095]) - b.begin());
  }
}
BENCHMARK(BM_BucketLookupBinary)->ArgsProduct({{0, 1}, {20, 32}});

// Counts the bounds below the value: no early exit, so no mispredicted exit.
void BM_BucketLookupCount(benchmark::State& state) {
  const std::vector<std::uint64_t> b = limits(state.range(1));
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    const std::uint64_t x = v[i++ & 4095];
    std::size_t index = 0;
    for (const std::uint64_t limit : b) index += x > limit;
    benchmark::DoNotOptimize(index);
  }
}
BENCHMARK(BM_BucketLookupCount)->ArgsProduct({{0, 1}, {20, 32}});

// A binary search without data-dependent branches (a conditional move per step).
void BM_BucketLookupBranchless(benchmark::State& state) {
  const std::vector<std::uint64_t> b = limits(state.range(1));
  const std::vector<std::uint64_t>& v = values(static_cast<int>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    const std::uint64_t x = v[i++ & 4095];
    const std::uint64_t* base = b.data();
    std::size_t n = b.size();
    while (n > 1) {
      const std::size_t half = n / 2;
      base = base[half - 1] < x ? base + half : base;
      n -= half;
    }
    benchmark::DoNotOptimize((base - b.data()) + (*base < x));
  }
}
BENCHMARK(BM_BucketLookupBranchless)->ArgsProduct({{0, 1}, {20, 32}});

// ============================================================================
// Scrapes
// ============================================================================

// A registry the size of kiroku's: 6 routes x 5 status classes of counters,
// a latency histogram per route, a dozen gauges.
Registry& scrape_registry() {
  static Registry* r = [] {
    auto* reg = new Registry(4);
    CounterFamily& requests = reg->counter("kiroku_http_requests_total", "Requests.", {"route", "status"});
    HistogramFamily& latency =
        reg->histogram("kiroku_http_request_duration_seconds", "Latency.", {"route"}, latency_bounds());
    std::uint64_t x = 1;
    for (const char* route : {"ingest", "collect", "pixel", "events", "files", "ops"}) {
      for (const char* status : {"1xx", "2xx", "3xx", "4xx", "5xx"}) {
        requests.with({route, status})->add(0, x *= 7);
      }
      Histogram* h = latency.with({route});
      for (const std::uint64_t v : values(1)) h->observe(1, v);
    }
    GaugeFamily& gauges = reg->gauge("kiroku_queue_depth", "Depth.", {"queue"});
    for (int i = 0; i < 12; ++i) gauges.with({"q" + std::to_string(i)})->set_shared(i * 1000);
    return reg;
  }();
  return *r;
}

void BM_RenderPrometheus(benchmark::State& state) {
  const Registry& reg = scrape_registry();
  std::string out;
  reg.render_prometheus(out);
  const std::uint64_t before = allocations;
  for (auto _ : state) {
    reg.render_prometheus(out);
    benchmark::DoNotOptimize(out.data());
  }
  report_allocations(state, before);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
  state.counters["bytes"] = static_cast<double>(out.size());
}
BENCHMARK(BM_RenderPrometheus);

void BM_RenderJson(benchmark::State& state) {
  const Registry& reg = scrape_registry();
  for (auto _ : state) benchmark::DoNotOptimize(reg.render_json().dump());
}
BENCHMARK(BM_RenderJson);

}  // namespace
}  // namespace kiroku

BENCHMARK_MAIN();
