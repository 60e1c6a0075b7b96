// serve.cpp - start-up order, the signal wait and the graceful stop.
#include "app/serve.h"
#include "ops/log_format.h"

#include <signal.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <thread>

#include "app/file_api.h"
#include "app/ingest_api.h"
#include "app/router.h"
#include "common/event.h"
#include "http/server.h"
#include "ingest/batch_writer.h"
#include "ingest/dead_letter.h"
#include "ingest/id.h"
#include "ingest/instance_lease.h"
#include "ingest/spool.h"
#include "ops/metrics.h"
#include "ops/process_stats.h"
#include "ops/profiler.h"
#include "runtime/runtime.h"
#include "sink/sink.h"
#include "store/object_store.h"

namespace kiroku {
namespace {

using Clock = std::chrono::steady_clock;

int config_error(std::string_view option, std::string_view reason) {
  std::fprintf(stderr, "kiroku: %.*s: %.*s\n", static_cast<int>(option.size()), option.data(),
               static_cast<int>(reason.size()), reason.data());
  return 2;
}

// The largest id in the segments a previous run left (read whole: ids are not
// assumed to be in order across segments); nullopt if one could not be read.
std::optional<std::uint64_t> max_spooled_id(const Spool& spool) {
  std::vector<std::byte> scratch;
  std::uint64_t max = 0;
  for (const auto& seg : spool.leftover()) {
    auto r = read_segment(seg.path, scratch, [&max](std::string_view records, std::size_t) {
      RecordReader reader(records);
      EventView e;
      while (reader.next(e)) max = std::max(max, e.id);
      return Status{};
    });
    if (!r.ok() && r.status().kind() != ErrorKind::not_found) return std::nullopt;
  }
  return max;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

// SIGHUP: resolves the configuration again and applies what can change while
// running (the auth token, the log level and format, the CORS origins) to
// `running`, the router and the ingest API.
void reload_config(const ReloadConfig& reload, ServeConfig& running, Router& router, IngestApi& ingest) {
  if (!reload) return;
  ServeConfig next;
  ConfigError err;
  if (!reload(next, err)) {
    spdlog::error("SIGHUP: reload failed, the running configuration stays: {}", err.line());
    return;
  }
  std::vector<std::string> applied, later;
  const auto before = option_values(running), after = option_values(next);
  for (std::size_t i = 0; i < before.size() && i < after.size(); ++i) {
    const std::string& name = before[i].name;
    if (name == "log-level" || name == "log-format" || name == "cors-origins" || name == "auth-token" ||
        name == "auth-token-file")
      continue;
    if (before[i].value != after[i].value) later.push_back(name);
  }
  if (next.log_level != running.log_level)
    applied.push_back(fmt::format("log-level {} (was {})", next.log_level, running.log_level));
  if (next.auth_token != running.auth_token) {
    applied.push_back(next.auth_token.empty()      ? "auth token removed (the file API answers loopback clients only)"
                      : running.auth_token.empty() ? "auth token set"
                                                   : "auth token replaced");
    router.set_auth_token(next.auth_token);
  }
  if (next.cors_origins != running.cors_origins) {
    applied.push_back(next.cors_origins.empty() ? "CORS off" : "CORS origins " + joined(next.cors_origins));
    ingest.set_cors(CorsPolicy(next.cors_origins));
  }
  if (next.log_format != running.log_format) {
    applied.push_back(fmt::format("log-format {} (was {})", next.log_format, running.log_format));
    LogFormat format = LogFormat::text;
    parse_log_format(next.log_format, format);
    use_log_format(format);
  }
  // The line is logged at the more verbose of the two levels, so that it shows.
  const auto old_level = spdlog::level::from_str(running.log_level);
  const auto new_level = spdlog::level::from_str(next.log_level);
  spdlog::set_level(std::min(old_level, new_level));
  spdlog::info("SIGHUP: configuration reloaded: {}{}", applied.empty() ? "nothing to change" : joined(applied),
               later.empty() ? "" : "; changed but taking effect at the next start only: " + joined(later));
  spdlog::set_level(new_level);
  running.log_level = next.log_level;
  running.log_format = next.log_format;
  running.cors_origins = next.cors_origins;
  running.auth_token = next.auth_token;
  running.auth_token_file = next.auth_token_file;
}

}  // namespace

int serve(const ServeConfig& cfg, const ReloadConfig& reload) {
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  LogFormat log_format = LogFormat::text;
  parse_log_format(cfg.log_format, log_format);  // checked by the config
  use_log_format(log_format);
  // Block the stop signals (and SIGHUP, reload) in every thread; the main
  // thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGXFSZ, SIG_IGN);  // a file size limit becomes EFBIG (spool full), not death
  const std::uint64_t nofile = http::raise_open_file_limit();

  // The sink.
  SinkOptions sink_options;
  sink_options.table = cfg.table;
  sink_options.max_open = cfg.db_max_open;
  sink_options.max_idle = cfg.db_max_idle;
  sink_options.max_lifetime_ms = cfg.db_max_lifetime.count();
  sink_options.max_idle_time_ms = cfg.db_max_idle_time.count();
  sink_options.durable_commits = cfg.durability == Durability::fsync || cfg.durability == Durability::sink;
  auto made = make_sink(cfg.sink, sink_options);
  if (!made.ok()) return config_error("--sink", made.status().message());
  std::unique_ptr<Sink> sink = std::move(*made);
  // Errors that waiting will not heal (credentials, unknown database,
  // privileges) stop the start; an unreachable database does not: the spool
  // takes the events and the writer connects when it can.
  bool sink_open = true;
  if (Status st = sink->open(); !st.ok()) {
    if (st.kind() == ErrorKind::permanent || st.kind() == ErrorKind::invalid)
      return config_error("--sink", st.message());
    spdlog::warn("cannot reach the database: {}; starting without it, retrying in the background", st.message());
    sink_open = false;
  }

  // The spool, and what a previous run left in it.
  std::unique_ptr<Spool> spool;
  const bool spooled = cfg.durability == Durability::process || cfg.durability == Durability::fsync;
  if (spooled) {
    auto sp = Spool::open({cfg.spool_dir, cfg.spool_max_bytes, cfg.durability == Durability::fsync});
    if (!sp.ok()) return config_error("--spool-dir", sp.status().message());
    spool = std::move(*sp);
  }

  // Where the rows the database refuses go (dead_letter.h); it locks the spool
  // directory for the spool commands whatever the durability.
  std::unique_ptr<DeadLetterFile> dead_letter;
  if (cfg.dead_letter_max_bytes > 0) {
    auto dl = DeadLetterFile::open({cfg.spool_dir + "/" + std::string(kDeadLetterFileName), cfg.dead_letter_max_bytes});
    if (!dl.ok()) return config_error("--spool-dir", dl.status().message());
    dead_letter = std::move(*dl);
  }

  // The instance number: leased through the sink (or --instance, checked
  // against the live leases). Without the database and without a number
  // remembered in the spool directory, wait for it before listening.
  InstanceLease lease(*sink, {cfg.instance, cfg.spool_dir});
  for (bool waiting_logged = false;;) {
    Status st = lease.acquire(sink_open);
    if (st.ok()) break;
    if (st.kind() != ErrorKind::transient) return config_error("--instance", st.message());
    if (!waiting_logged)
      spdlog::warn("no instance number yet ({}) and none kept in {}: waiting for the database before listening",
                   st.message(), cfg.spool_dir);
    waiting_logged = true;
    const timespec second{1, 0};
    if (const int sig = sigtimedwait(&stop_signals, nullptr, &second); sig > 0 && sig != SIGHUP) return 0;
    if (!sink_open) {
      Status o = sink->open();
      if (o.kind() == ErrorKind::permanent || o.kind() == ErrorKind::invalid)
        return config_error("--sink", o.message());
      sink_open = o.ok();
    }
  }

  // Ids stay above everything already stored or spooled, whatever the clock
  // did: every id a previous run stored is in the table or in a leftover
  // segment. Only when the table cannot be asked, the state file's last touch
  // (plus a margin) stands in for it. (A margin on every start would push ids
  // ahead of the clock, and restarts quicker than the margin would stack it
  // past the ids of the run before.)
  std::int64_t id_floor_ms = 0;
  if (auto m = sink_open ? sink->max_id() : Result<std::uint64_t>(Status::transient("not open")); m.ok()) {
    if (*m > 0) id_floor_ms = id_unix_ms(*m);
  } else {
    id_floor_ms = lease.id_floor_unix_ms();
  }
  if (spool) {
    const std::optional<std::uint64_t> m = max_spooled_id(*spool);
    if (!m) id_floor_ms = std::max(id_floor_ms, lease.id_floor_unix_ms());  // a segment unreadable now
    else if (*m > 0) id_floor_ms = std::max(id_floor_ms, id_unix_ms(*m));
  }

  // Metrics.
  Registry registry(cfg.threads);
  const auto latency_buckets = exponential_buckets(50e-6, 2, 20);  // 50 us .. 26 s
  BatchWriterHooks hooks;
  hooks.accept_to_durable = registry
                                .histogram("kiroku_accept_to_durable_seconds",
                                           "time from an event's receipt to its database commit", {}, latency_buckets)
                                .with({});
  hooks.flush_duration =
      registry.histogram("kiroku_flush_duration_seconds", "time of one sink transaction", {}, latency_buckets).with({});
  hooks.batch_events =
      registry.histogram("kiroku_batch_events", "events per sink transaction", {}, exponential_buckets(1, 2, 20), 1.0)
          .with({});
  hooks.committed_events = registry.counter("kiroku_events_committed_total", "events committed to the sink").with({});
  hooks.sink_errors = registry.counter("kiroku_sink_errors_total", "failed sink transactions").with({});
  hooks.replayed_events =
      registry.counter("kiroku_events_replayed_total", "events whose row was already stored (a replay)").with({});
  hooks.client_duplicates =
      registry.counter("kiroku_events_client_duplicates_total", "events whose client id was already stored").with({});
  hooks.conflict_events =
      registry
          .counter("kiroku_events_conflicts_total",
                   "events NOT stored because a different row holds their id (kept in a .conflict file)")
          .with({});
  hooks.sink_writes =
      registry.counter("kiroku_sink_writes_total", "sink transactions tried, the parts of split batches included")
          .with({});
  auto& dead_lettered = registry.counter("kiroku_events_dead_lettered_total",
                                         "events the database refused, written to the dead-letter file", {"reason"});
  for (std::size_t r = 0; r < kRejectionReasons.size(); ++r)
    hooks.dead_lettered[r] = dead_lettered.with({std::string(kRejectionReasons[r])});
  CollectorMetrics cm;
  cm.accepted = registry.counter("kiroku_events_accepted_total", "events accepted (answered 2xx or pending)").with({});
  auto& rejected = registry.counter("kiroku_requests_rejected_total", "ingestion requests rejected", {"reason"});
  cm.rejected_invalid = rejected.with({"invalid"});
  cm.rejected_full = rejected.with({"full"});
  cm.spool_errors = rejected.with({"spool_error"});

  BatchWriter writer(*sink, spool.get(), cfg.queue_max_bytes, hooks, dead_letter.get());
  if (!sink_open) writer.open_sink_first();
  if (spool && !spool->leftover().empty()) {
    std::uint64_t bytes = 0;
    for (const auto& seg : spool->leftover()) {
      Batch b;
      b.segment = seg;
      bytes += seg.bytes;
      writer.submit(std::move(b));
    }
    spdlog::info("spool: replaying {} segments ({} bytes) left by the previous run", spool->leftover().size(), bytes);
  }

  // The object store of the file API; it outlives the runtime (chunks still
  // queued on a shard go back to its pool when the runtime is destroyed).
  StoreOptions store_options;
  store_options.part_size = cfg.part_size;
  store_options.part_count = cfg.store_buffers;
  store_options.parts_per_transfer = cfg.part_concurrency;
  store_options.first_buffer_wait = cfg.store_buffer_wait;
  auto made_store = make_store(cfg.store, store_options);
  if (!made_store.ok()) {
    const std::string& m = made_store.status().message();
    return m.starts_with("--store") ? config_error(m.substr(0, m.find(':')), m.substr(m.find(':') + 2))
                                    : config_error("--store", m);
  }
  std::unique_ptr<ObjectStore> store = std::move(*made_store);
  {
    // Credentials the store refuses stop the start; other trouble (S3 not
    // reachable yet, no permission to read) is only a warning. At most 5 s.
    auto checked = std::make_shared<std::promise<Status>>();
    store->check_access([checked](Status s) { checked->set_value(std::move(s)); });
    auto answer = checked->get_future();
    if (answer.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
      spdlog::warn("--store: no answer to the start-up check within 5 s; starting anyway");
    } else if (Status st = answer.get(); st.kind() == ErrorKind::denied) {
      return config_error("--store", st.message());
    } else if (!st.ok()) {
      spdlog::warn("--store: start-up check: {}; starting anyway", st.message());
    }
  }

  // The shards: one loop and thread per core, started once everything that
  // runs on them is built. After the store: tasks still queued at the stop
  // hold the store's part buffers, which go back to it when dropped.
  Runtime runtime(cfg.threads);
  CollectorOptions co;
  co.durability = cfg.durability;
  co.batch_max = cfg.batch_max;
  co.flush_interval = cfg.flush_interval;
  co.sink_wait_timeout = cfg.sink_wait_timeout;
  co.instance = static_cast<unsigned>(lease.number());
  co.id_floor_unix_ms = id_floor_ms;
  IngestApi ingest(co, runtime, writer, spool.get(), cm, CorsPolicy(cfg.cors_origins));
  Collector& collector = ingest.collector();
  FileApi files(*store, runtime, &registry);

  Profiler profiler;
  RouterDeps deps;
  deps.runtime = &runtime;
  deps.ingest = &ingest;
  deps.files = &files;
  deps.profiler = &profiler;
  deps.auth_token = cfg.auth_token;
  deps.access_log_sample = cfg.access_log_sample;
  deps.writer = &writer;
  deps.registry = &registry;
  deps.max_body_bytes = cfg.max_body_bytes;
  deps.max_upload_bytes = cfg.max_upload_bytes;
  deps.spool = spool.get();
  Router router(deps);

  http::ServerOptions so;
  so.listen = cfg.listen;
  so.max_connections = cfg.max_connections;
  // Connections must leave descriptors for the spool, the database and the
  // object store: past the limit they are closed at once instead.
  const std::uint64_t reserve = std::min<std::uint64_t>(nofile / 2, 256);
  if (nofile > 0 && so.max_connections > nofile - reserve) {
    so.max_connections = static_cast<unsigned>(nofile - reserve);
    spdlog::warn("--max-connections {} lowered to {}: the open-file limit is {}", cfg.max_connections,
                 so.max_connections, nofile);
  }
  so.max_header_bytes = cfg.max_header_bytes;
  so.idle_timeout = cfg.idle_timeout;
  so.read_timeout = cfg.read_timeout;
  so.write_timeout = cfg.write_timeout;
  http::HttpServer server(runtime, so, router);
  if (Status st = server.bind(); !st.ok()) {
    std::fprintf(stderr, "kiroku: %s\n", st.message().c_str());
    return 2;
  }

  // Gauges read at scrape time.
  registry.callback_gauge("kiroku_queue_events", "events accepted and not yet committed",
                          [&] { return static_cast<double>(writer.queued_events() + collector.pending_in_shards()); });
  registry.callback_gauge("kiroku_queue_batches", "batches waiting for the sink",
                          [&] { return static_cast<double>(writer.queued_batches()); });
  registry.callback_gauge("kiroku_queue_memory_bytes", "memory held by batches waiting for the sink",
                          [&] { return static_cast<double>(writer.memory_bytes()); });
  registry.callback_gauge("kiroku_oldest_unflushed_seconds", "age of the oldest event not yet committed", [&] {
    const std::int64_t t = writer.oldest_received_us();
    if (t == 0) return 0.0;
    const auto now =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    return static_cast<double>(now - t) / 1e6;
  });
  registry.callback_gauge("kiroku_sink_up", "1 when the sink accepts writes",
                          [&] { return writer.sink_healthy() ? 1.0 : 0.0; });
  if (dead_letter) {
    registry.callback_gauge("kiroku_dead_letter_bytes", "bytes in the dead-letter file",
                            [&] { return static_cast<double>(dead_letter->bytes()); });
    registry.callback_gauge("kiroku_dead_letter_max_bytes", "dead-letter file size limit",
                            [&] { return static_cast<double>(dead_letter->max_bytes()); });
  }
  if (spool) {
    registry.callback_gauge("kiroku_spool_bytes", "bytes in spool segments",
                            [&] { return static_cast<double>(spool->bytes()); });
    registry.callback_gauge("kiroku_spool_max_bytes", "spool size limit",
                            [&] { return static_cast<double>(spool->max_bytes()); });
  }
  auto pool_gauge = [&](const char* name, const char* help, auto field) {
    registry.callback_gauge(name, help, [&sink, field] { return static_cast<double>(sink->stats().*field); });
  };
  pool_gauge("kiroku_db_max_open_connections", "pool: most open connections", &PoolStats::max_open);
  pool_gauge("kiroku_db_open_connections", "pool: open connections", &PoolStats::open);
  pool_gauge("kiroku_db_in_use_connections", "pool: connections in use", &PoolStats::in_use);
  pool_gauge("kiroku_db_idle_connections", "pool: idle connections", &PoolStats::idle);
  registry.callback_counter("kiroku_db_wait_count_total", "pool: waits for a connection",
                            [&] { return static_cast<double>(sink->stats().wait_count); });
  registry.callback_counter("kiroku_db_wait_seconds_total", "pool: time waited for a connection",
                            [&] { return static_cast<double>(sink->stats().wait_duration_us) / 1e6; });
  auto& closed = registry.callback_family(MetricType::counter, "kiroku_db_closed_connections_total",
                                          "pool: connections closed by the pool, by reason", {"reason"});
  closed.with({"max_idle"}, [&sink] { return static_cast<double>(sink->stats().max_idle_closed); });
  closed.with({"max_idle_time"}, [&sink] { return static_cast<double>(sink->stats().max_idle_time_closed); });
  closed.with({"max_lifetime"}, [&sink] { return static_cast<double>(sink->stats().max_lifetime_closed); });
  registry.gauge("kiroku_build_info", "always 1; the labels name this build", {"version"})
      .with({KIROKU_VERSION})
      ->set_shared(1);
  const auto& sc = server.counters();
  registry.callback_gauge("kiroku_http_open_connections", "open client connections",
                          [&sc] { return static_cast<double>(sc.open_connections.load()); });
  registry.callback_counter("kiroku_http_connections_total", "accepted client connections",
                            [&sc] { return static_cast<double>(sc.accepted.load()); });
  registry.callback_counter("kiroku_http_connections_refused_total", "connections closed at once (limit)",
                            [&sc] { return static_cast<double>(sc.rejected_over_limit.load()); });
  registry.callback_counter("kiroku_http_timeouts_total", "connections closed by a timeout",
                            [&sc] { return static_cast<double>(sc.timeouts.load()); });
  registry.callback_counter("kiroku_http_bad_requests_total", "malformed requests (400, 413, 431)",
                            [&sc] { return static_cast<double>(sc.parse_errors.load()); });
  register_process_metrics(registry);

  registry.callback_gauge("kiroku_instance", "this instance's number (the instance bits of its event ids)",
                          [&] { return static_cast<double>(lease.number()); });
  registry.callback_gauge("kiroku_instance_confirmed", "1 when the database confirmed the instance number",
                          [&] { return lease.confirmed() ? 1.0 : 0.0; });

  runtime.start();
  writer.start([&collector](unsigned shard, std::uint64_t seq, bool ok) { collector.on_batch_done(shard, seq, ok); });
  collector.start();
  lease.start([&collector, &sink](unsigned n) {
    std::int64_t floor = 0;
    if (auto m = sink->max_id(); m.ok() && *m > 0) floor = id_unix_ms(*m);
    collector.set_instance(n, floor);
  });
  server.start();
  spdlog::info("kiroku {} listening on {} ({} sink, durability {}, instance {}{}, open-file limit {})", KIROKU_VERSION,
               server.local_address(), sink->kind(), to_string(cfg.durability), lease.number(),
               lease.confirmed() ? "" : " (not yet confirmed)", nofile);
  spdlog::info("config: {}", describe(cfg));
  if (cfg.auth_token.empty())
    spdlog::warn(
        "no --auth-token: the file API and /debug/pprof answer loopback clients only, and refuse "
        "(403) requests carrying Forwarded, X-Forwarded-For or X-Real-IP; behind a reverse proxy on "
        "this host every client is a loopback client: set a token there");

  // Wait for a stop signal; SIGHUP reloads.
  ServeConfig running = cfg;
  int sig = 0;
  for (;;) {
    sigwait(&stop_signals, &sig);
    if (sig != SIGHUP) break;
    reload_config(reload, running, router, ingest);
  }
  const auto deadline = Clock::now() + cfg.shutdown_timeout;
  spdlog::info("received {}: draining (readyz now 503)", strsignal(sig));
  router.set_draining();
  if (cfg.drain_delay.count() > 0) {
    // Keep serving while the load balancer notices; a second stop signal cuts
    // it short (SIGHUP does not).
    const auto drain_end = Clock::now() + cfg.drain_delay;
    for (auto now = Clock::now(); now < drain_end; now = Clock::now()) {
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(drain_end - now).count();
      const timespec ts{static_cast<time_t>(left / 1'000'000'000), static_cast<long>(left % 1'000'000'000)};
      const int s2 = sigtimedwait(&stop_signals, nullptr, &ts);
      if (s2 > 0 && s2 != SIGHUP) break;
    }
  }
  server.stop_accepting();
  while (server.open_connections() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  collector.flush_all();
  const std::uint64_t left = writer.drain_and_stop(deadline);
  lease.release();
  server.close_connections();
  if (const std::size_t n = files.shut_down(deadline); n > 0)
    spdlog::warn("stopped with {} object store operations still running", n);
  server.stop();
  runtime.stop();
  const auto accepted = cm.accepted->value();
  const auto committed = hooks.committed_events->value();
  if (left == 0) {
    spdlog::info("stopped: {} events accepted, {} committed this run, nothing left behind", accepted, committed);
  } else if (spool) {
    spdlog::warn(
        "stopped at the deadline: {} events accepted, {} committed; {} events stay in the spool for "
        "the next start",
        accepted, committed, left);
  } else {
    spdlog::error(
        "stopped at the deadline: {} events accepted, {} committed; {} events were NOT stored "
        "(durability {})",
        accepted, committed, left, to_string(cfg.durability));
  }
  return 0;
}

}  // namespace kiroku
