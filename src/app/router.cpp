// router.cpp - endpoint dispatch, method checks and the operations endpoints.
#include "app/router.h"

#include "common/request_id.h"

#include "ingest/spool.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <chrono>

#include "app/file_api.h"
#include "app/ingest_api.h"
#include "common/text.h"
#include "ingest/batch_writer.h"
#include "ops/dashboard.h"
#include "ops/metrics.h"
#include "ops/profiler.h"
#include "runtime/runtime.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <memory>

namespace kiroku {
namespace {

const char* metric_route_name(MetricRoute r) {
  switch (r) {
    case MetricRoute::ingest: return "ingest";
    case MetricRoute::events: return "events";
    case MetricRoute::files_upload: return "files_upload";
    case MetricRoute::files_download: return "files_download";
    case MetricRoute::files_list: return "files_list";
    case MetricRoute::files_other: return "files_other";
    case MetricRoute::operations: return "operations";
    case MetricRoute::not_found: return "not_found";
    case MetricRoute::malformed: return "malformed";
    case MetricRoute::count_: break;
  }
  return "?";
}

constexpr int kMetricRoutes = static_cast<int>(MetricRoute::count_);
constexpr int kFirstStatus = 100, kStatuses = 500;  // 100..599

}  // namespace

Router::Router(RouterDeps deps) : deps_(deps) {
  auth_token_ = std::make_shared<const std::string>(deps_.auth_token);
  if (deps_.registry) {
    requests_family_ = &deps_.registry->counter("kiroku_http_requests_total",
                                                "HTTP requests answered, by route and status", {"route", "status"});
    requests_ = std::make_unique<std::atomic<Counter*>[]>(kMetricRoutes * kStatuses);
    auto& latency = deps_.registry->histogram("kiroku_http_request_seconds",
                                              "time from a request's complete head to its answer, by route "
                                              "(durability waits included; a streamed answer: to its head)",
                                              {"route"}, exponential_buckets(1e-6, 2, 24));  // 1 us .. 8 s
    for (int r = 0; r < kMetricRoutes; ++r)
      latency_.push_back(latency.with({metric_route_name(static_cast<MetricRoute>(r))}));
    scrape_buffers_.resize(deps_.registry->shards());
  }
  if (deps_.access_log_sample > 0) {
    access_log_every_ = static_cast<std::uint64_t>(1.0 / deps_.access_log_sample + 0.5);
    if (access_log_every_ == 0) access_log_every_ = 1;
    access_log_seq_.resize(deps_.registry ? deps_.registry->shards() : 64);
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
  if (path == "/dashboard") return Route::dashboard;
  if (path == "/debug/pprof/profile") return Route::pprof_profile;
  if (path == "/debug/pprof/heap") return Route::pprof_heap;
  if (path == "/files" || path.starts_with("/files/")) return Route::files;
  return Route::not_found;
}

MetricRoute Router::metric_route(const http::Request& req) {
  if (req.path.empty()) return MetricRoute::malformed;
  using M = http::Method;
  switch (route_of(req.path)) {
    case Route::collect:
    case Route::pixel: return MetricRoute::ingest;
    case Route::events: return MetricRoute::events;
    case Route::files:
      if (req.method == M::put || req.method == M::post) return MetricRoute::files_upload;
      if (req.method == M::get || req.method == M::head)
        return req.path == "/files" ? MetricRoute::files_list : MetricRoute::files_download;
      return MetricRoute::files_other;
    case Route::not_found: return MetricRoute::not_found;
    case Route::malformed:
    case Route::count_: return MetricRoute::malformed;
    default: return MetricRoute::operations;
  }
}

Counter* Router::requests_counter(MetricRoute route, int status) {
  if (!requests_ || status < kFirstStatus || status >= kFirstStatus + kStatuses) return nullptr;
  std::atomic<Counter*>& slot = requests_[static_cast<int>(route) * kStatuses + (status - kFirstStatus)];
  Counter* c = slot.load(std::memory_order_acquire);
  if (!c) {
    // The first answer of this route and status: the series is made once
    // (under the registry's lock; the same values give the same counter).
    c = requests_family_->with({metric_route_name(route), std::to_string(status)});
    slot.store(c, std::memory_order_release);
  }
  return c;
}

std::uint64_t Router::body_limit(http::Method method, std::string_view path) {
  const Route route = route_of(path);
  if (method == http::Method::post && route == Route::events) return deps_.max_body_bytes;
  // Uploads are streamed through pooled buffers: any length, unless limited.
  if ((method == http::Method::put || method == http::Method::post) && route == Route::files)
    return deps_.max_upload_bytes > 0 ? deps_.max_upload_bytes : std::numeric_limits<std::uint64_t>::max();
  return 64 * 1024;  // small bodies elsewhere are read and ignored
}

std::shared_ptr<http::BodyReader> Router::stream_body(const http::Request& req, http::Reply& reply) {
  using M = http::Method;
  if (req.method != M::put && req.method != M::post) return nullptr;
  if (route_of(req.path) != Route::files) return nullptr;
  if (!authorized(req, reply)) return nullptr;
  if (!deps_.files) {
    reply.error(503, "the file API is not available");
    return nullptr;
  }
  return deps_.files->upload(req, reply);
}

void Router::readyz(http::Reply& reply) {
  if (draining_.load()) {
    reply.send(503, "application/json", "{\"ready\":false,\"reason\":\"draining\"}\n");
    return;
  }
  if (deps_.writer && !deps_.writer->sink_healthy()) {
    // With a spool an outage is absorbed: keep the traffic while it has room
    // (a margin of an eighth, at most 16 MiB, so that the balancer moves
    // away before 503s start). An error that waiting will not heal is a 503
    // at once: the operator must act.
    if (deps_.spool && !deps_.writer->sink_needs_operator() &&
        !deps_.spool->would_exceed(std::min<std::uint64_t>(16u << 20, deps_.spool->max_bytes() / 8))) {
      nlohmann::json j{{"ready", true},
                       {"sink", "unavailable: " + deps_.writer->last_error()},
                       {"spooling", true},
                       {"spool_bytes", deps_.spool->bytes()},
                       {"spool_max_bytes", deps_.spool->max_bytes()}};
      reply.send(200, "application/json", j.dump() + "\n");
      return;
    }
    nlohmann::json j{{"ready", false},
                     {"reason", deps_.writer->sink_needs_operator()
                                    ? "sink refuses the writes, the operator must act: " + deps_.writer->last_error()
                                    : std::string(deps_.spool ? "spool nearly full and " : "") +
                                          "sink unavailable: " + deps_.writer->last_error()}};
    reply.send(503, "application/json", j.dump() + "\n");
    return;
  }
  reply.send(200, "application/json", "{\"ready\":true}\n");
}

namespace {

// Compares the SHA-256 digests of both in constant time: how long the
// comparison takes tells nothing of the token, not even its length.
bool same_secret(std::string_view given, std::string_view secret) {
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(given.data()), given.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), b);
  return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

}  // namespace

void Router::set_auth_token(std::string token) {
  auto next = std::make_shared<const std::string>(std::move(token));
  std::lock_guard lock(auth_mu_);
  auth_token_.swap(next);
}

bool Router::authorized(const http::Request& req, http::Reply& reply) {
  std::shared_ptr<const std::string> token;
  {
    std::lock_guard lock(auth_mu_);
    token = auth_token_;
  }
  if (token->empty()) {
    if (!req.peer_loopback) {
      reply.error(403, "this endpoint answers loopback clients only unless --auth-token is set");
      return false;
    }
    // Through a reverse proxy on this host every client is a loopback peer.
    if (req.forwarded) {
      reply.error(403,
                  "this request came through a proxy (Forwarded, X-Forwarded-For or X-Real-IP): without "
                  "--auth-token this endpoint answers direct loopback clients only; set a token to use it "
                  "behind a proxy");
      return false;
    }
    return true;
  }
  // RFC 9110 11.1: the scheme is case-insensitive, then one or more spaces.
  std::string_view a = req.authorization;
  if (a.size() > 7 && istarts_with(a, "Bearer ")) {
    a.remove_prefix(std::min(a.find_first_not_of(' ', 7), a.size()));
    if (same_secret(a, *token)) return true;
  }
  reply.error(401, "missing or wrong bearer token", "WWW-Authenticate: Bearer\r\n");
  return false;
}

void Router::cpu_profile(const http::Request& req, http::Reply& reply) {
  int seconds = 30;
  for (std::string_view q = req.query; !q.empty();) {
    const auto amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (pair.starts_with("seconds=")) {
      const std::string_view v = pair.substr(8);
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), seconds);
      if (ec != std::errc() || p != v.data() + v.size()) seconds = -1;
    }
  }
  if (seconds < kMinProfileSeconds || seconds > kMaxProfileSeconds) {
    reply.error(400, "seconds: must be an integer from 1 to 300");
    return;
  }
  if (!deps_.profiler || !deps_.runtime) {
    reply.error(503, "profiling is not available");
    return;
  }
  // The profile is taken on the profiler's thread; the answer goes back to
  // this connection's IO thread (posted, so it runs after handle() returns).
  auto later = std::make_shared<http::Deferred>();
  Runtime& runtime = *deps_.runtime;
  const unsigned shard = req.shard;
  Status st = deps_.profiler->cpu_profile(seconds, [later, &runtime, shard](Result<std::string> r) {
    auto bytes = std::make_shared<Result<std::string>>(std::move(r));
    runtime.post(shard, [later, bytes] {
      if (bytes->ok())
        later->send(200, kProfileContentType, bytes->value(),
                    "Content-Disposition: attachment; filename=\"cpu.pprof\"\r\n");
      else later->send(500, "application/json", json_error_body(bytes->status().message()));
    });
  });
  if (!st.ok()) {
    reply.error(st.kind() == ErrorKind::full ? 409 : 400, st.message());
    return;
  }
  *later = reply.defer();
}

void Router::handle(const http::Request& req, http::Reply& reply) {
  const Route route = route_of(req.path);
  using M = http::Method;
  const bool get = req.method == M::get;
  const bool read = get || req.method == M::head;

  switch (route) {
    case Route::collect:
    case Route::pixel:
      if (req.method == M::options && deps_.ingest->preflight(req, reply)) break;
      if (!get) {
        reply.error(405, "use GET", "Allow: GET\r\n");
        break;
      }
      deps_.ingest->query(req, reply, route == Route::pixel ? IngestApi::Form::pixel : IngestApi::Form::no_content);
      break;
    case Route::events:
      if (req.method == M::options && deps_.ingest->preflight(req, reply)) break;
      if (req.method != M::post) {
        reply.error(405, "use POST with NDJSON or a JSON array", "Allow: POST\r\n");
        break;
      }
      deps_.ingest->batch(req, reply);
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
    case Route::dashboard:
      if (!read) reply.error(405, "use GET", "Allow: GET, HEAD\r\n");
      else reply.send(200, kDashboardContentType, dashboard_html(), kDashboardHeaders);
      break;
    case Route::pprof_profile:
      if (!get) reply.error(405, "use GET", "Allow: GET\r\n");
      else if (authorized(req, reply)) cpu_profile(req, reply);
      break;
    case Route::pprof_heap:
      if (!get) {
        reply.error(405, "use GET", "Allow: GET\r\n");
      } else if (authorized(req, reply)) {
        auto heap = Profiler::heap_profile();
        if (heap.ok()) reply.send(200, kProfileContentType, heap.value());
        else reply.error(503, heap.status().message());
      }
      break;
    case Route::files:
      if (!authorized(req, reply)) break;
      if (!deps_.files) reply.error(503, "the file API is not available");
      else deps_.files->handle(req, reply);
      break;
    case Route::not_found:
    case Route::malformed:
    case Route::count_: reply.error(404, "no such endpoint"); break;
  }
}

void Router::answered(const http::Request& req, int status, std::uint64_t took_us) {
  const MetricRoute route = metric_route(req);
  if (Counter* c = requests_counter(route, status)) c->inc(req.shard);
  if (!latency_.empty()) latency_[static_cast<int>(route)]->observe(req.shard, took_us);
  // Access log: off by default; when on, one request in access_log_every_ per shard.
  if (access_log_every_ && req.shard < access_log_seq_.size() &&
      access_log_seq_[req.shard]++ % access_log_every_ == 0) {
    RequestIdScope scope(req.request_id);  // a held answer comes outside the handler's scope
    if (req.path.empty()) spdlog::info("access (unreadable request) {} {}us", status, took_us);
    else
      spdlog::info("access {} {} {} {}us{}", req.method_name, req.target, status, took_us,
                   req.peer_loopback ? " loopback" : "");
  }
}

}  // namespace kiroku
