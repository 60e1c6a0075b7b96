// router.cpp - endpoint dispatch, method checks and the operations endpoints.
#include "app/router.h"

#include <nlohmann/json.hpp>

#include <chrono>

#include "ingest/batch_writer.h"
#include "ingest/collector.h"
#include "ops/metrics.h"

namespace kiroku {
namespace {

const char* route_name(Route r) {
  switch (r) {
    case Route::collect: return "collect";
    case Route::pixel: return "pixel";
    case Route::events: return "events";
    case Route::healthz: return "healthz";
    case Route::readyz: return "readyz";
    case Route::metrics: return "metrics";
    case Route::stats: return "stats";
    case Route::not_found: return "not_found";
    case Route::count_: break;
  }
  return "?";
}

}  // namespace

Router::Router(RouterDeps deps) : deps_(deps) {
  if (deps_.registry) {
    auto& fam = deps_.registry->counter("kiroku_http_requests_total", "HTTP requests by route", {"route"});
    for (int r = 0; r < static_cast<int>(Route::count_); ++r)
      requests_.push_back(fam.with({route_name(static_cast<Route>(r))}));
    latency_ = deps_.registry
                   ->histogram("kiroku_http_handler_seconds",
                               "time to handle a request on its IO thread (answer sent or deferred)", {},
                               exponential_buckets(1, 2, 24))
                   .with({});
    scrape_buffers_.resize(deps_.registry->shards());
  }
}

Route Router::route_of(std::string_view path) {
  if (path == "/" || path == "/collect") return Route::collect;
  if (path == "/pixel.gif") return Route::pixel;
  if (path == "/events") return Route::events;
  if (path == "/healthz") return Route::healthz;
  if (path == "/readyz") return Route::readyz;
  if (path == "/metrics") return Route::metrics;
  if (path == "/stats") return Route::stats;
  return Route::not_found;
}

std::uint64_t Router::body_limit(http::Method method, std::string_view path) {
  if (method == http::Method::post && route_of(path) == Route::events) return deps_.max_body_bytes;
  return 64 * 1024;  // small bodies elsewhere are read and ignored
}

void Router::readyz(http::Reply& reply) {
  if (draining_.load()) {
    reply.send(503, "application/json", "{\"ready\":false,\"reason\":\"draining\"}\n");
    return;
  }
  if (deps_.writer && !deps_.writer->sink_healthy()) {
    nlohmann::json j{{"ready", false}, {"reason", "sink unavailable: " + deps_.writer->last_error()}};
    reply.send(503, "application/json", j.dump() + "\n");
    return;
  }
  reply.send(200, "application/json", "{\"ready\":true}\n");
}

void Router::handle(const http::Request& req, http::Reply& reply) {
  const auto t0 = std::chrono::steady_clock::now();
  const Route route = route_of(req.path);
  if (!requests_.empty()) requests_[static_cast<int>(route)]->inc(req.shard);
  using M = http::Method;
  const bool get = req.method == M::get;
  const bool read = get || req.method == M::head;

  switch (route) {
    case Route::collect:
    case Route::pixel:
      if (!get) {
        reply.error(405, "use GET", "Allow: GET\r\n");
        break;
      }
      deps_.collector->handle_query(req, reply, route == Route::pixel ? Answer::pixel : Answer::no_content);
      break;
    case Route::events:
      if (req.method != M::post) {
        reply.error(405, "use POST with NDJSON or a JSON array", "Allow: POST\r\n");
        break;
      }
      deps_.collector->handle_batch(req, reply);
      break;
    case Route::healthz:
      if (!read) reply.error(405, "use GET", "Allow: GET, HEAD\r\n");
      else reply.send(200, "application/json", "{\"status\":\"ok\"}\n");
      break;
    case Route::readyz:
      if (!read) reply.error(405, "use GET", "Allow: GET, HEAD\r\n");
      else readyz(reply);
      break;
    case Route::metrics: {
      if (!read) {
        reply.error(405, "use GET", "Allow: GET, HEAD\r\n");
        break;
      }
      std::string& out = scrape_buffers_[req.shard];
      out.clear();
      deps_.registry->render_prometheus(out);
      reply.send(200, "text/plain; version=0.0.4; charset=utf-8", out);
      break;
    }
    case Route::stats:
      if (!read) reply.error(405, "use GET", "Allow: GET, HEAD\r\n");
      else reply.send(200, "application/json", deps_.registry->render_json().dump() + "\n");
      break;
    case Route::not_found:
    case Route::count_:
      reply.error(404, "no such endpoint");
      break;
  }
  if (latency_)
    latency_->observe(req.shard, static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                                std::chrono::steady_clock::now() - t0)
                                                                .count()));
}

}  // namespace kiroku
