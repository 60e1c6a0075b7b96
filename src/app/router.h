// router.h - maps request lines to the product's endpoints (PRODUCT.md).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "http/server.h"

namespace kiroku {

class IngestApi;
class BatchWriter;
class Runtime;
class Registry;
class Counter;
class CounterFamily;
class Histogram;
class Profiler;
class FileApi;

enum class Route : std::uint8_t {
  collect,  // GET / and GET /collect
  pixel,
  events,
  healthz,
  readyz,
  metrics,
  stats,
  dashboard,
  pprof_profile,
  pprof_heap,
  files,
  not_found,
  malformed,  // the request's head could not be read (400, 431)
  count_
};

// The route label of the request metrics (kiroku_http_requests_total,
// kiroku_http_request_seconds): endpoints grouped by what they cost.
enum class MetricRoute : std::uint8_t {
  ingest,          // GET /, /collect, /pixel.gif
  events,          // POST /events (and other methods on it)
  files_upload,    // PUT /files/{key}, POST /files
  files_download,  // GET and HEAD /files/{key}
  files_list,      // GET and HEAD /files
  files_other,     // DELETE /files/{key}; other methods
  operations,      // health, readiness, metrics, stats, dashboard, profiles
  not_found,
  malformed,  // the head could not be read, or was refused whole (400, 413, 431)
  count_
};

class Spool;

struct RouterDeps {
  Runtime* runtime = nullptr;  // answers from other threads are posted here
  IngestApi* ingest = nullptr;
  BatchWriter* writer = nullptr;
  Registry* registry = nullptr;
  Profiler* profiler = nullptr;
  FileApi* files = nullptr;  // the file API; null: /files answers 503
  // durability process/fsync: /readyz stays 200 while the sink is down and
  // this spool has room (the spool absorbs the outage). Null: 503 then.
  Spool* spool = nullptr;
  std::size_t max_body_bytes = 8 * 1024 * 1024;
  // Largest upload body (PUT/POST /files); 0: no limit. A larger
  // Content-Length is refused (413) before any body byte is read; a chunked
  // body is cut at the limit (413) and its upload aborted.
  std::uint64_t max_upload_bytes = 0;
  // Guards the profiling endpoints (and the file API): a bearer token, or
  // loopback peers only when empty.
  std::string auth_token;
  // Fraction of requests written to the access log (0: off).
  double access_log_sample = 0;
};

class Router final : public http::Handler {
 public:
  explicit Router(RouterDeps deps);

  std::uint64_t body_limit(http::Method method, std::string_view path) override;
  void handle(const http::Request& req, http::Reply& reply) override;
  // Uploads (PUT /files/{key}, POST /files) are streamed to the file API.
  std::shared_ptr<http::BodyReader> stream_body(const http::Request& req, http::Reply& reply) override;
  // Counts the answer by route and exact status, times it by route, samples the access log.
  void answered(const http::Request& req, int status, std::uint64_t took_us) override;

  // On a stop signal: /readyz answers 503 from now on. Any thread.
  void set_draining() { draining_.store(true); }
  // On SIGHUP: requests checked from now on need this token (empty: loopback
  // clients only). Any thread; requests already authorized are not affected.
  void set_auth_token(std::string token);

 private:
  static Route route_of(std::string_view path);
  static MetricRoute metric_route(const http::Request& req);
  Counter* requests_counter(MetricRoute route, int status);
  void readyz(http::Reply& reply);
  // True if the request may use a guarded endpoint; answers 401/403 if not.
  bool authorized(const http::Request& req, http::Reply& reply);
  void cpu_profile(const http::Request& req, http::Reply& reply);

  RouterDeps deps_;
  std::atomic<bool> draining_{false};
  // Replaced whole on reload (set_auth_token); a request copies the pointer
  // under the mutex (only the guarded endpoints: the file API, profiles).
  std::mutex auth_mu_;
  std::shared_ptr<const std::string> auth_token_;

  // By MetricRoute x status (100-599), each made on its first answer.
  std::unique_ptr<std::atomic<Counter*>[]> requests_;
  CounterFamily* requests_family_ = nullptr;
  std::vector<Histogram*> latency_;            // by MetricRoute: request head to answer
  std::vector<std::string> scrape_buffers_;    // one per shard, reused
  std::vector<std::uint64_t> access_log_seq_;  // per shard: requests seen, for sampling
  std::uint64_t access_log_every_ = 0;         // log one request in this many; 0: off
};

}  // namespace kiroku
