// metrics_test.cpp - the metrics registry, its /metrics and /stats renderings, and process stats.
//
// The Prometheus text is checked with the strict parser of prometheus_parser.h
// (itself tested first), never by grepping.
#include "ops/metrics.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <latch>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ops/process_stats.h"
#include "ops/prometheus_parser.h"

namespace kiroku {
namespace {

using test::PromExposition;
using test::PromLabels;

PromExposition parse_ok(const std::string& text) {
  PromExposition e;
  std::string error;
  EXPECT_TRUE(test::parse_prometheus(text, e, error)) << error << "\n--- text ---\n" << text;
  return e;
}

// The error for `text`, or "" if it parsed.
std::string parse_error(std::string_view text) {
  PromExposition e;
  std::string error;
  if (test::parse_prometheus(text, e, error)) return "";
  return error;
}

double value_of(const PromExposition& e, std::string_view name, const PromLabels& labels = {}) {
  const std::optional<double> v = e.value(name, labels);
  EXPECT_TRUE(v.has_value()) << "no sample " << name;
  return v.value_or(std::nan(""));
}

// ============================================================================
// The parser itself
// ============================================================================

constexpr std::string_view kWellFormed =
    "# HELP app_requests_total Requests served, by verb and outcome.\n"
    "# TYPE app_requests_total counter\n"
    "app_requests_total{verb=\"get\",outcome=\"ok\"} 1027 1700000000000\n"
    "app_requests_total{verb=\"put\",outcome=\"bad\"}\t\t3\n"
    "\n"
    "# a plain comment\n"
    "# TYPE app_path_errors gauge\n"
    "app_path_errors{path=\"C:\\\\tmp\\\\x\",why=\"line one\\nsaid \\\"no\\\"\",} -2e3\n"
    "# TYPE app_temperature gauge\n"
    "app_temperature +Inf\n"
    "# TYPE app_ratio gauge\n"
    "app_ratio{} NaN\n"
    "# HELP app_latency_seconds Latency \\\\ of \\n things.\n"
    "# TYPE app_latency_seconds histogram\n"
    "app_latency_seconds_bucket{route=\"a\",le=\"0.5\"} 2\n"
    "app_latency_seconds_bucket{route=\"a\",le=\"1\"} 2\n"
    "app_latency_seconds_bucket{route=\"a\",le=\"+Inf\"} 5\n"
    "app_latency_seconds_sum{route=\"a\"} 12.5\n"
    "app_latency_seconds_count{route=\"a\"} 5\n"
    "app_latency_seconds_bucket{route=\"b\",le=\"+Inf\"} 0\n"
    "app_latency_seconds_sum{route=\"b\"} 0\n"
    "app_latency_seconds_count{route=\"b\"} 0\n"
    "# TYPE app_rpc_seconds summary\n"
    "app_rpc_seconds{quantile=\"0.5\"} 0.25\n"
    "app_rpc_seconds_sum 100\n"
    "app_rpc_seconds_count 400\n"
    "# TYPE app_empty counter\n";

TEST(MetricsParser, AcceptsWellFormedText) {
  const PromExposition e = parse_ok(std::string(kWellFormed));
  ASSERT_EQ(e.families.size(), 7u);
  EXPECT_EQ(e.families[0].type, "counter");
  EXPECT_EQ(e.families[0].help, "Requests served, by verb and outcome.");
  EXPECT_EQ(value_of(e, "app_requests_total", {{"verb", "get"}, {"outcome", "ok"}}), 1027);
  EXPECT_EQ(e.families[0].samples[0].timestamp_ms, 1700000000000);
  EXPECT_EQ(value_of(e, "app_requests_total", {{"verb", "put"}, {"outcome", "bad"}}), 3);
  EXPECT_EQ(value_of(e, "app_path_errors", {{"path", "C:\\tmp\\x"}, {"why", "line one\nsaid \"no\""}}), -2000);
  EXPECT_TRUE(std::isinf(value_of(e, "app_temperature")));
  EXPECT_TRUE(std::isnan(value_of(e, "app_ratio")));
  EXPECT_EQ(e.family("app_latency_seconds")->help, "Latency \\ of \n things.");
  EXPECT_EQ(value_of(e, "app_latency_seconds_count", {{"route", "a"}}), 5);
  EXPECT_TRUE(e.family("app_empty")->samples.empty());
  EXPECT_EQ(parse_error(""), "");
}

TEST(MetricsParser, RejectsMalformedText) {
  const std::string t = "# TYPE a counter\n";
  const std::string h = "# TYPE h histogram\n";
  const std::vector<std::string> bad = {
      "# TYPE a counter\na 1",                             // no final newline
      "a 1\n",                                             // no TYPE
      "# HELP a only help\na 1\n",                         // HELP but no TYPE
      t + "a 1\n# TYPE b gauge\nb 1\n# TYPE a counter\n",  // family comes back
      "# TYPE a counter\n# TYPE b counter\na 1\n",         // interleaved
      t + "# TYPE a counter\na 1\n",                       // second TYPE
      "# HELP a x\n# HELP a y\n" + t,                      // second HELP
      "# TYPE a countr\n",                                 // unknown type
      "# TYPE a counter extra\n",                          // junk after type
      "# TYPE 1a counter\n",                               // bad family name
      "# HELP a bad \\t escape\n" + t,                     // bad HELP escape
      t + "a{x=\"1\"} 1\na{x=\"1\"} 2\n",                  // duplicate series
      t + "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",  // same, reordered
      t + "a 1\na 2\n",                                    // duplicate, no labels
      t + "a one\n",                                       // bad value
      t + "a 1.2.3\n",                                     // bad value
      t + "a 0x10\n",                                      // hex
      t + "a 1e\n",                                        // bad exponent
      t + "a\n",                                           // no value
      t + "a \n",                                          // no value
      t + "a 1 \n",                                        // trailing blank
      t + " a 1\n",                                        // leading blank
      t + "a 1 2 3\n",                                     // junk after timestamp
      t + "a 1 1.5\n",                                     // bad timestamp
      t + "a{x=1} 1\n",                                    // unquoted value
      t + "a{x=\"1} 1\n",                                  // unterminated value
      t + "a{x=\"1\" 1\n",                                 // unterminated set
      t + "a{x=\"1\"y=\"2\"} 1\n",                         // missing comma
      t + "a{1x=\"1\"} 1\n",                               // bad label name
      t + "a{__x=\"1\"} 1\n",                              // reserved label name
      t + "a{x=\"\\q\"} 1\n",                              // bad escape
      t + "a{x=\"1\",x=\"2\"} 1\n",                        // label twice
      t + "a{x = \"1\"} 1\n",                              // blanks in the set
      t + "a{,} 1\n",                                      // empty pair
      t + "a{x=\"1\"}1\n",                                 // no blank before value
      t + "a -1\n",                                        // negative counter
      t + "b 1\n",                                         // not this family
      h + "h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
          "h_sum 1\nh_count 2\n",                                                 // not cumulative
      h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_sum 1\nh_count 2\n",     // no +Inf
      h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",  // count
      h + "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",           // no _sum
      h + "h_bucket{le=\"+Inf\"} 2\nh_sum 1\n",                                   // no _count
      h + "h_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n"
          "h_sum 1\nh_count 1\n",                                     // le not increasing
      h + "h_bucket 1\nh_sum 1\nh_count 1\n",                         // bucket without le
      h + "h_bucket{le=\"+Inf\"} 1\nh_sum{le=\"1\"} 1\nh_count 1\n",  // le on _sum
      h + "h_bucket{le=\"x\"} 1\nh_sum 1\nh_count 1\n",               // bad le
      h + "h 1\n",                                                    // bare histogram name
      h + "h_sum 1\nh_count 0\n",                                     // no buckets
      "# TYPE s summary\ns{quantile=\"2\"} 1\ns_sum 1\ns_count 1\n",  // bad quantile
      "# TYPE s summary\ns 1\n",                                      // no quantile label
  };
  for (const std::string& text : bad) {
    EXPECT_NE(parse_error(text), "") << "accepted:\n" << text;
  }
}

// ============================================================================
// Registry and the Prometheus text
// ============================================================================

TEST(MetricsRegistry, CountersFromManyThreadsAreExact) {
  constexpr unsigned kShards = 4;
  constexpr int kPerShard = 200000;
  constexpr int kSharedThreads = 2;
  constexpr int kPerShared = 50000;
  Registry registry(kShards);
  CounterFamily& family =
      registry.counter("kiroku_http_requests_total", "Requests by route and status class.", {"route", "status"});
  Counter* ok = family.with({"ingest", "2xx"});
  Counter* bad = family.with({"ingest", "4xx"});
  Counter* events = registry.counter("kiroku_events_total", "Events accepted.").with({});

  std::latch start(kShards + kSharedThreads);
  std::vector<std::thread> threads;
  for (unsigned shard = 0; shard < kShards; ++shard) {
    threads.emplace_back([&, shard] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerShard; ++i) {
        ok->inc(shard);
        if (i % 10 == 0) bad->add(shard, 3);
        events->add(shard, 2);
      }
    });
  }
  for (int t = 0; t < kSharedThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < kPerShared; ++i) {
        ok->inc_shared();
        events->add(Registry::kShared, 5);
      }
    });
  }
  for (std::thread& t : threads) t.join();

  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_http_requests_total", {{"route", "ingest"}, {"status", "2xx"}}),
            kShards * kPerShard + kSharedThreads * kPerShared);
  EXPECT_EQ(value_of(e, "kiroku_http_requests_total", {{"route", "ingest"}, {"status", "4xx"}}),
            kShards * (kPerShard / 10) * 3);
  EXPECT_EQ(value_of(e, "kiroku_events_total"), kShards * kPerShard * 2.0 + kSharedThreads * kPerShared * 5.0);
  EXPECT_EQ(ok->value(), std::uint64_t{kShards * kPerShard + kSharedThreads * kPerShared});
  EXPECT_EQ(e.family("kiroku_http_requests_total")->type, "counter");
  EXPECT_EQ(e.family("kiroku_http_requests_total")->help, "Requests by route and status class.");
}

TEST(MetricsRegistry, HistogramFromManyThreadsIsExact) {
  constexpr unsigned kShards = 3;
  constexpr int kRounds = 20000;
  Registry registry(kShards);
  HistogramFamily& family =
      registry.histogram("kiroku_http_request_duration_seconds", "Request latency.", {"route"}, {0.001, 0.01, 0.1});
  Histogram* h = family.with({"ingest"});
  // 500 and 1000 us fall in le=0.001 (bounds are inclusive), 1001 in 0.01,
  // 50000 in 0.1, 200000 above every bound.
  const std::vector<std::uint64_t> values = {500, 1000, 1001, 50000, 200000};
  std::uint64_t round_sum = 0;
  for (const std::uint64_t v : values) round_sum += v;

  std::latch start(kShards + 1);
  std::vector<std::thread> threads;
  for (unsigned shard = 0; shard <= kShards; ++shard) {
    threads.emplace_back([&, shard] {
      start.arrive_and_wait();
      for (int i = 0; i < kRounds; ++i) {
        for (const std::uint64_t v : values) {
          if (shard == kShards) {
            h->observe_shared(v);
          } else {
            h->observe(shard, v);
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();

  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  const double n = (kShards + 1) * double{kRounds};
  const std::string b = "kiroku_http_request_duration_seconds_bucket";
  EXPECT_EQ(value_of(e, b, {{"route", "ingest"}, {"le", "0.001"}}), 2 * n);
  EXPECT_EQ(value_of(e, b, {{"route", "ingest"}, {"le", "0.01"}}), 3 * n);
  EXPECT_EQ(value_of(e, b, {{"route", "ingest"}, {"le", "0.1"}}), 4 * n);
  EXPECT_EQ(value_of(e, b, {{"route", "ingest"}, {"le", "+Inf"}}), 5 * n);
  EXPECT_EQ(value_of(e, "kiroku_http_request_duration_seconds_count", {{"route", "ingest"}}), 5 * n);
  EXPECT_DOUBLE_EQ(value_of(e, "kiroku_http_request_duration_seconds_sum", {{"route", "ingest"}}),
                   static_cast<double>(round_sum) * n / 1e6);

  const HistogramSnapshot snap = h->snapshot();
  EXPECT_EQ(snap.count, static_cast<std::uint64_t>(5 * n));
  EXPECT_DOUBLE_EQ(snap.max, 0.2);
}

TEST(MetricsRegistry, ScrapesWhileUpdatingStayValidAndMonotonic) {
  constexpr unsigned kShards = 2;
  Registry registry(kShards);
  Counter* c = registry.counter("kiroku_work_total", "Work done.").with({});
  Histogram* h =
      registry.histogram("kiroku_work_seconds", "Work time.", {}, exponential_buckets(0.0001, 4, 8)).with({});
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (unsigned shard = 0; shard < kShards; ++shard) {
    threads.emplace_back([&, shard] {
      std::uint64_t v = shard;
      while (!stop.load(std::memory_order_relaxed)) {
        c->inc(shard);
        h->observe(shard, v = (v * 7919 + 13) % 3000000);
      }
    });
  }
  while (c->value() == 0) std::this_thread::yield();
  std::string text;
  double last_count = 0;
  double last_bucket = 0;
  for (int i = 0; i < 200; ++i) {
    registry.render_prometheus(text);
    const PromExposition e = parse_ok(text);
    const double count = value_of(e, "kiroku_work_total");
    const double bucket = value_of(e, "kiroku_work_seconds_bucket", {{"le", "+Inf"}});
    EXPECT_GE(count, last_count);
    EXPECT_GE(bucket, last_bucket);
    last_count = count;
    last_bucket = bucket;
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  // Once quiet, every increment and observation shows.
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_work_total"), static_cast<double>(c->value()));
  EXPECT_EQ(value_of(e, "kiroku_work_seconds_count"), static_cast<double>(c->value()));
  EXPECT_GE(static_cast<double>(c->value()), last_count);
}

TEST(MetricsRegistry, GaugeIsTheSumOfItsParts) {
  Registry registry(3);
  GaugeFamily& family = registry.gauge("kiroku_queue_depth", "Events waiting.", {"queue"});
  Gauge* batch = family.with({"batch"});
  batch->set(0, 10);
  batch->set(1, 5);
  batch->add(2, -3);
  batch->set_shared(100);
  batch->add_shared(-1);
  batch->set(0, 7);  // replaces shard 0's part
  EXPECT_EQ(batch->value(), 7 + 5 - 3 + 99);
  Gauge* inflight = family.with({"inflight"});
  inflight->inc(1);
  inflight->inc(1);
  inflight->dec(0);
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_queue_depth", {{"queue", "batch"}}), 108);
  EXPECT_EQ(value_of(e, "kiroku_queue_depth", {{"queue", "inflight"}}), 1);
  EXPECT_EQ(e.family("kiroku_queue_depth")->type, "gauge");
}

TEST(MetricsRegistry, CallbackMetricsAreReadAtScrape) {
  Registry registry(1);
  double spool = 1.5;
  registry.callback_gauge("kiroku_spool_bytes", "Bytes in the spool.", [&] { return spool; });
  registry.callback_counter("kiroku_db_wait_count_total", "Waits for a connection.", [] { return 42.0; });
  CallbackFamily& pool =
      registry.callback_family(MetricType::gauge, "kiroku_db_connections", "Connections by state.", {"state"});
  pool.with({"idle"}, [] { return 2.0; });
  pool.with({"in_use"}, [] { return std::nan(""); });
  EXPECT_THROW(pool.with({"idle"}, [] { return 0.0; }), std::invalid_argument);

  std::string text;
  registry.render_prometheus(text);
  PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_spool_bytes"), 1.5);
  spool = 1e21;
  registry.render_prometheus(text);
  e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_spool_bytes"), 1e21);
  EXPECT_EQ(value_of(e, "kiroku_db_wait_count_total"), 42);
  EXPECT_EQ(e.family("kiroku_db_wait_count_total")->type, "counter");
  EXPECT_EQ(value_of(e, "kiroku_db_connections", {{"state", "idle"}}), 2);
  EXPECT_TRUE(std::isnan(value_of(e, "kiroku_db_connections", {{"state", "in_use"}})));
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  Registry registry(1);
  const std::string odd = "a\\b\"c\nd=\"e\",}";
  registry.counter("kiroku_odd_total", "Help with a \\ backslash\nand a \"quote\".", {"key"}).with({odd})->inc(0);
  registry.counter("kiroku_utf8_total", "Ünïcödé 記録.", {"key"}).with({"記録"})->inc(0);
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_odd_total", {{"key", odd}}), 1);
  EXPECT_EQ(e.family("kiroku_odd_total")->help, "Help with a \\ backslash\nand a \"quote\".");
  EXPECT_EQ(value_of(e, "kiroku_utf8_total", {{"key", "記録"}}), 1);
  EXPECT_EQ(text.find("\nd="), std::string::npos) << "raw newline in a label value";
}

TEST(MetricsRegistry, RendersFamiliesSortedWithUnlabeledSeriesFromTheStart) {
  Registry registry(2);
  registry.gauge("kiroku_b", "B.");
  registry.counter("kiroku_a_total", "A.");
  registry.histogram("kiroku_c_seconds", "C.", {}, {0.5});
  registry.counter("kiroku_labeled_total", "No series yet.", {"x"});
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  ASSERT_EQ(e.families.size(), 4u);
  EXPECT_EQ(e.families[0].name, "kiroku_a_total");
  EXPECT_EQ(e.families[1].name, "kiroku_b");
  EXPECT_EQ(e.families[2].name, "kiroku_c_seconds");
  EXPECT_EQ(e.families[3].name, "kiroku_labeled_total");
  EXPECT_EQ(value_of(e, "kiroku_a_total"), 0);
  EXPECT_EQ(value_of(e, "kiroku_b"), 0);
  EXPECT_EQ(value_of(e, "kiroku_c_seconds_bucket", {{"le", "+Inf"}}), 0);
  EXPECT_TRUE(e.families[3].samples.empty());
}

TEST(MetricsRegistry, RenderReusesTheCallersBuffer) {
  Registry registry(2);
  CounterFamily& family = registry.counter("kiroku_http_requests_total", "R.", {"route"});
  for (const char* route : {"ingest", "collect", "pixel", "events", "files"}) {
    family.with({route})->add(0, 123456789);
  }
  registry.histogram("kiroku_lat_seconds", "L.", {"route"}, exponential_buckets(1e-4, 2, 20))
      .with({"ingest"})
      ->observe(1, 777);
  std::string out = "old contents";
  registry.render_prometheus(out);
  EXPECT_EQ(out.find("old contents"), std::string::npos);
  const std::string first = out;
  const char* data = out.data();
  const std::size_t capacity = out.capacity();
  registry.render_prometheus(out);
  EXPECT_EQ(out, first);
  EXPECT_EQ(out.data(), data);
  EXPECT_EQ(out.capacity(), capacity);
}

TEST(MetricsRegistry, RegistrationIsIdempotentAndChecked) {
  Registry registry(2);
  CounterFamily& a = registry.counter("kiroku_x_total", "X.", {"route"});
  EXPECT_EQ(&registry.counter("kiroku_x_total", "X.", {"route"}), &a);
  EXPECT_EQ(a.with({"r"}), a.with({"r"}));
  EXPECT_NE(a.with({"r"}), a.with({"s"}));
  EXPECT_THROW(registry.counter("kiroku_x_total", "Other help.", {"route"}), std::invalid_argument);
  EXPECT_THROW(registry.counter("kiroku_x_total", "X.", {"status"}), std::invalid_argument);
  EXPECT_THROW(registry.gauge("kiroku_x_total", "X.", {"route"}), std::invalid_argument);
  EXPECT_THROW(registry.callback_family(MetricType::counter, "kiroku_x_total", "X.", {"route"}), std::invalid_argument);
  EXPECT_THROW(a.with({}), std::invalid_argument);
  EXPECT_THROW(a.with({"a", "b"}), std::invalid_argument);
  EXPECT_THROW(a.with({"\xff"}), std::invalid_argument);

  HistogramFamily& h = registry.histogram("kiroku_h_seconds", "H.", {}, {0.1, 1});
  EXPECT_EQ(&registry.histogram("kiroku_h_seconds", "H.", {}, {0.1, 1}), &h);
  EXPECT_THROW(registry.histogram("kiroku_h_seconds", "H.", {}, {0.1, 2}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("kiroku_h_seconds", "H.", {}, {0.1, 1}, 1.0), std::invalid_argument);
  // Sample names that would collide with the histogram's.
  EXPECT_THROW(registry.counter("kiroku_h_seconds_count", "C."), std::invalid_argument);
  EXPECT_THROW(registry.gauge("kiroku_h_seconds_bucket", "C."), std::invalid_argument);
  registry.gauge("kiroku_g_sum", "G.");
  EXPECT_THROW(registry.histogram("kiroku_g", "G.", {}, {1}), std::invalid_argument);
}

TEST(MetricsRegistry, RejectsMalformedDefinitions) {
  Registry registry(1);
  EXPECT_THROW(registry.counter("", "x"), std::invalid_argument);
  EXPECT_THROW(registry.counter("1abc", "x"), std::invalid_argument);
  EXPECT_THROW(registry.counter("a-b", "x"), std::invalid_argument);
  EXPECT_THROW(registry.counter("a", "x", {"1l"}), std::invalid_argument);
  EXPECT_THROW(registry.counter("a", "x", {"__l"}), std::invalid_argument);
  EXPECT_THROW(registry.counter("a", "x", {"l", "l"}), std::invalid_argument);
  EXPECT_THROW(registry.counter("a", "\xc0\x80"), std::invalid_argument);  // overlong UTF-8
  EXPECT_THROW(registry.histogram("h", "x", {"le"}, {1}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, {2, 1}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, {-1}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, {1, INFINITY}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, {1}, 0), std::invalid_argument);
  // 0.1 and 0.4 microseconds are both 0 whole microseconds.
  EXPECT_THROW(registry.histogram("h", "x", {}, {1e-7, 4e-7}), std::invalid_argument);
  EXPECT_THROW(registry.histogram("h", "x", {}, std::vector<double>(33, 1)), std::invalid_argument);
  EXPECT_THROW(registry.callback_family(MetricType::histogram, "cb", "x"), std::invalid_argument);
  EXPECT_THROW(registry.callback_gauge("cb2", "x", nullptr), std::invalid_argument);
  EXPECT_THROW(Registry(1u << 20), std::invalid_argument);
  // Nothing half-registered was left behind.
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_TRUE(e.families.empty());
}

TEST(MetricsRegistry, OutOfRangeShardCountsAsShared) {
  Registry registry(2);
  Counter* c = registry.counter("kiroku_c_total", "C.").with({});
  Gauge* g = registry.gauge("kiroku_g", "G.").with({});
  Histogram* h = registry.histogram("kiroku_h_seconds", "H.", {}, {0.001}).with({});
  c->inc(2);
  c->inc(1000);
  c->inc(Registry::kShared);
  g->add(7, 4);
  h->observe(99, 5);
  EXPECT_EQ(c->value(), 3u);
  EXPECT_EQ(g->value(), 4);
  EXPECT_EQ(h->snapshot().count, 1u);
}

// ============================================================================
// Histogram buckets and quantiles
// ============================================================================

TEST(MetricsHistogram, BoundsInExposedUnitsLimitRecordedIntegers) {
  const std::vector<double> seconds = {0.0005, 0.001, 0.0025, 1.1};
  const Histogram h(1, seconds, kMicrosecondsInSeconds);
  EXPECT_EQ(h.bucket_of(0), 0u);
  EXPECT_EQ(h.bucket_of(500), 0u);
  EXPECT_EQ(h.bucket_of(501), 1u);
  EXPECT_EQ(h.bucket_of(1000), 1u);
  EXPECT_EQ(h.bucket_of(2500), 2u);
  EXPECT_EQ(h.bucket_of(2501), 3u);
  EXPECT_EQ(h.bucket_of(1100000), 3u);
  EXPECT_EQ(h.bucket_of(1100001), 4u);

  const std::vector<double> sizes = {1, 10, 100};
  Histogram batch(2, sizes, 1.0);
  batch.observe(0, 10);
  batch.observe(1, 11);
  batch.observe_shared(1000);
  const HistogramSnapshot s = batch.snapshot();
  EXPECT_EQ(s.buckets[1], 1u);
  EXPECT_EQ(s.buckets[2], 1u);
  EXPECT_EQ(s.buckets[3], 1u);
  EXPECT_EQ(s.sum, 1021);
  EXPECT_EQ(s.max, 1000);

  // A bound that is not a whole number of units: values <= 2.5 ms in units of 1 ms.
  const std::vector<double> odd = {0.0025};
  const Histogram ms(1, odd, 1e-3);
  EXPECT_EQ(ms.bucket_of(2), 0u);
  EXPECT_EQ(ms.bucket_of(3), 1u);
}

TEST(MetricsHistogram, SumPrintsExactDecimalSeconds) {
  Registry registry(1);
  Histogram* h = registry.histogram("kiroku_t_seconds", "T.", {}, {1}).with({});
  h->observe(0, 1234567);
  std::string text;
  registry.render_prometheus(text);
  EXPECT_NE(text.find("kiroku_t_seconds_sum 1.234567\n"), std::string::npos) << text;
  EXPECT_NE(text.find("kiroku_t_seconds_bucket{le=\"1\"} 0\n"), std::string::npos) << text;
}

TEST(MetricsHistogram, ExponentialBuckets) {
  EXPECT_EQ(exponential_buckets(0.0001, 2, 5), (std::vector<double>{0.0001, 0.0002, 0.0004, 0.0008, 0.0016}));
  EXPECT_EQ(exponential_buckets(1, 1.5, 4), (std::vector<double>{1, 1.5, 2.25, 3.375}));
  // 1.1^k accumulates binary noise; the bounds come back rounded and print short.
  for (const double b : exponential_buckets(0.001, 1.1, 32)) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, b);
    EXPECT_LE(r.ptr - buf, 16) << std::string(buf, r.ptr);
  }
  EXPECT_THROW(exponential_buckets(0, 2, 5), std::invalid_argument);
  EXPECT_THROW(exponential_buckets(1, 1, 5), std::invalid_argument);
  EXPECT_THROW(exponential_buckets(1, 2, 0), std::invalid_argument);
  EXPECT_THROW(exponential_buckets(1, 2, 33), std::invalid_argument);
  EXPECT_THROW(exponential_buckets(1e300, 1e10, 5), std::invalid_argument);
}

// The width of the bucket holding `v` (the last bound to `max` above the bounds).
double bucket_width(const std::vector<double>& bounds, double v, double max) {
  double lower = 0;
  for (const double b : bounds) {
    if (v <= b) return b - lower;
    lower = b;
  }
  return max - lower;
}

// The value of rank ceil(q * n) (1-based) in sorted `values`, in seconds.
double true_quantile(const std::vector<std::uint64_t>& sorted, double q) {
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::max<std::size_t>(rank, 1) - 1]) / 1e6;
}

TEST(MetricsHistogram, QuantilesOfUniformValues) {
  const std::vector<double> bounds = exponential_buckets(1e-4, 2, 20);
  Histogram h(2, bounds, kMicrosecondsInSeconds);
  std::vector<std::uint64_t> values;
  for (std::uint64_t v = 1; v <= 100000; ++v) {
    h.observe(static_cast<unsigned>(v % 2), v);
    values.push_back(v);
  }
  const HistogramSnapshot s = h.snapshot();
  EXPECT_EQ(s.count, 100000u);
  EXPECT_DOUBLE_EQ(s.max, 0.1);
  for (const double q : {0.01, 0.25, 0.5, 0.9, 0.99, 0.999}) {
    const double truth = true_quantile(values, q);
    const double estimate = s.quantile(q);
    EXPECT_LE(std::fabs(estimate - truth), bucket_width(bounds, truth, s.max)) << q;
    // Uniform values fill each bucket evenly, so interpolation is nearly exact.
    EXPECT_NEAR(estimate, truth, 2e-6) << q;
  }
  EXPECT_DOUBLE_EQ(s.quantile(1), 0.1);
  EXPECT_DOUBLE_EQ(s.quantile(0), 0);
}

TEST(MetricsHistogram, QuantilesOfExponentialValuesStayWithinTheirBucket) {
  const std::vector<double> bounds = exponential_buckets(5e-5, 2, 16);
  Histogram h(1, bounds, kMicrosecondsInSeconds);
  std::mt19937_64 rng(20240611);
  std::exponential_distribution<double> latency(1.0 / 2000.0);  // mean 2 ms, in us
  std::vector<std::uint64_t> values;
  for (int i = 0; i < 200000; ++i) {
    const auto v = static_cast<std::uint64_t>(latency(rng));
    h.observe(0, v);
    values.push_back(v);
  }
  std::sort(values.begin(), values.end());
  const HistogramSnapshot s = h.snapshot();
  EXPECT_DOUBLE_EQ(s.max, static_cast<double>(values.back()) / 1e6);
  for (const double q : {0.1, 0.5, 0.9, 0.99, 0.999}) {
    const double truth = true_quantile(values, q);
    const double estimate = s.quantile(q);
    const double width = bucket_width(bounds, truth, s.max);
    EXPECT_LE(std::fabs(estimate - truth), width) << "q=" << q << " truth=" << truth;
    // Interpolation assumes values spread evenly over the bucket; a falling
    // density puts them low, so the estimate runs high, here by about a third
    // of a bucket.
    EXPECT_LE(std::fabs(estimate - truth), 0.5 * width) << "q=" << q << " truth=" << truth;
  }
}

TEST(MetricsHistogram, QuantilesAboveTheLastBoundUseTheMax) {
  const std::vector<double> bounds = {0.001};
  Histogram h(1, bounds, kMicrosecondsInSeconds);
  for (const std::uint64_t v : {5000, 6000, 7000}) h.observe(0, v);
  const HistogramSnapshot s = h.snapshot();
  EXPECT_DOUBLE_EQ(s.quantile(1), 0.007);
  const double p50 = s.quantile(0.5);
  EXPECT_GT(p50, 0.001);
  EXPECT_LE(p50, 0.007);

  Histogram single(1, exponential_buckets(1e-4, 2, 4), kMicrosecondsInSeconds);
  single.observe(0, 300);  // in (0.0002, 0.0004]; the estimate is capped at the max
  const HistogramSnapshot one = single.snapshot();
  EXPECT_GE(one.quantile(0.99), 0.0002);
  EXPECT_LE(one.quantile(0.99), 0.0003);

  const Histogram empty(1, bounds, kMicrosecondsInSeconds);
  EXPECT_TRUE(std::isnan(empty.snapshot().quantile(0.5)));
}

// ============================================================================
// /stats JSON
// ============================================================================

TEST(MetricsJson, CarriesTheSameFigures) {
  Registry registry(2);
  registry.counter("kiroku_requests_total", "Requests.", {"route", "status"}).with({"ingest", "2xx"})->add(1, 41);
  registry.gauge("kiroku_backlog", "Backlog.").with({})->set_shared(-7);
  HistogramFamily& lat =
      registry.histogram("kiroku_latency_seconds", "Latency.", {"route"}, exponential_buckets(1e-4, 2, 16));
  Histogram* ingest = lat.with({"ingest"});
  for (std::uint64_t v = 1; v <= 1000; ++v) ingest->observe(0, v * 10);
  lat.with({"files"});
  registry.callback_gauge("kiroku_ratio", "Ratio.", [] { return 0.25; });
  registry.callback_gauge("kiroku_broken", "Broken.", [] { return std::nan(""); });

  // Through text, as a client of /stats would see it.
  const nlohmann::json j = nlohmann::json::parse(registry.render_json().dump());
  const auto& req = j.at("kiroku_requests_total");
  EXPECT_EQ(req.at("type"), "counter");
  EXPECT_EQ(req.at("help"), "Requests.");
  ASSERT_EQ(req.at("series").size(), 1u);
  EXPECT_EQ(req.at("series")[0].at("labels"), (nlohmann::json{{"route", "ingest"}, {"status", "2xx"}}));
  EXPECT_EQ(req.at("series")[0].at("value"), 41);
  EXPECT_EQ(j.at("kiroku_backlog").at("series")[0].at("value"), -7);
  EXPECT_EQ(j.at("kiroku_ratio").at("series")[0].at("value"), 0.25);
  EXPECT_TRUE(j.at("kiroku_broken").at("series")[0].at("value").is_null());

  const auto& series = j.at("kiroku_latency_seconds").at("series");
  ASSERT_EQ(series.size(), 2u);
  const auto& hist = series[0];
  EXPECT_EQ(hist.at("labels"), (nlohmann::json{{"route", "ingest"}}));
  EXPECT_EQ(hist.at("count"), 1000);
  EXPECT_DOUBLE_EQ(hist.at("sum").get<double>(), 5.005);
  EXPECT_DOUBLE_EQ(hist.at("max").get<double>(), 0.01);
  const HistogramSnapshot snap = ingest->snapshot();
  EXPECT_DOUBLE_EQ(hist.at("p50").get<double>(), snap.quantile(0.5));
  EXPECT_DOUBLE_EQ(hist.at("p90").get<double>(), snap.quantile(0.9));
  EXPECT_DOUBLE_EQ(hist.at("p99").get<double>(), snap.quantile(0.99));
  EXPECT_NEAR(hist.at("p50").get<double>(), 0.005, 1e-5);
  const auto& files = series[1];
  EXPECT_EQ(files.at("count"), 0);
  EXPECT_TRUE(files.at("p50").is_null());
  EXPECT_TRUE(files.at("max").is_null());

  // The text exposition agrees.
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_EQ(value_of(e, "kiroku_latency_seconds_count", {{"route", "ingest"}}), 1000);
  EXPECT_DOUBLE_EQ(value_of(e, "kiroku_latency_seconds_sum", {{"route", "ingest"}}), 5.005);
}

// ============================================================================
// Process stats
// ============================================================================

TEST(MetricsProcess, ReadsMemoryFromProc) {
  const Result<ProcessMemory> m = read_process_memory();
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_GT(m.value().resident_bytes, 1 << 20);
  EXPECT_GE(m.value().peak_resident_bytes, m.value().resident_bytes);
}

TEST(MetricsProcess, CountsOpenDescriptors) {
  const Result<std::int64_t> before = count_open_fds();
  ASSERT_TRUE(before.ok()) << before.status().message();
  EXPECT_GE(before.value(), 3);
  const int a = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int b = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(count_open_fds().value(), before.value() + 2);
  ::close(a);
  ::close(b);
  EXPECT_EQ(count_open_fds().value(), before.value());
}

TEST(MetricsProcess, ReportsTheOpenFileLimit) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  const Result<std::int64_t> n = open_file_limit();
  ASSERT_TRUE(n.ok());
  if (limit.rlim_cur == RLIM_INFINITY) {
    EXPECT_EQ(n.value(), -1);
  } else {
    EXPECT_EQ(n.value(), static_cast<std::int64_t>(limit.rlim_cur));
  }
}

TEST(MetricsProcess, RegistersCallbackGauges) {
  Registry registry(1);
  register_process_metrics(registry);
  std::string text;
  registry.render_prometheus(text);
  const PromExposition e = parse_ok(text);
  EXPECT_GT(value_of(e, "process_resident_memory_bytes"), 0);
  EXPECT_GE(value_of(e, "process_resident_memory_peak_bytes"), value_of(e, "process_resident_memory_bytes"));
  EXPECT_GE(value_of(e, "process_open_fds"), 3);
  EXPECT_GT(value_of(e, "process_max_fds"), 0);
  EXPECT_GE(value_of(e, "process_cpu_seconds_total"), 0);
  EXPECT_EQ(e.family("process_cpu_seconds_total")->type, "counter");
  EXPECT_EQ(e.family("process_open_fds")->type, "gauge");
}

}  // namespace
}  // namespace kiroku
