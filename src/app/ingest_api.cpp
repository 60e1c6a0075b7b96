// ingest_api.cpp - outcomes to status codes, parked answers.
#include "app/ingest_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "common/text.h"

namespace kiroku {
namespace {

// The 1x1 transparent GIF of GET /pixel.gif (43 bytes).
constexpr char kPixel[] =
    "GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00"
    "\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b";
constexpr std::string_view kPixelView(kPixel, sizeof kPixel - 1);
static_assert(kPixelView.size() == 43);

struct Refusal {
  int status;
  std::string_view message;
  std::string_view headers;
};

// The answer to every outcome but accepted and invalid.
constexpr Refusal refusal(Outcome o) {
  switch (o) {
    case Outcome::spool_full:
      return {503, "spool full: the database is not keeping up; retry later", "Retry-After: 5\r\n"};
    case Outcome::backlog_full:
      return {503, "backlog full: the database is not keeping up; retry later", "Retry-After: 2\r\n"};
    case Outcome::disk_full: return {503, "spool disk full; retry later", "Retry-After: 5\r\n"};
    case Outcome::spool_failed: return {500, "spool write failed; nothing was stored", {}};
    case Outcome::sync_failed: return {500, "fsync of the spool failed; the events may be lost on a machine crash", {}};
    case Outcome::not_committed: return {503, "not stored: the server stopped before the database commit", {}};
    case Outcome::commit_timeout:
      return {503, "the database did not commit in time; the events may still be stored later", "Retry-After: 5\r\n"};
    case Outcome::accepted:
    case Outcome::invalid: break;
  }
  return {500, "internal error", {}};
}

// Sends on a Reply or a Deferred, the CORS headers (if any) first.
template <class R>
void send_with(R& r, int status, std::string_view type, std::string_view body, std::string_view headers,
               std::string_view cors) {
  if (cors.empty()) return r.send(status, type, body, headers);
  char joined[1024];  // an origin is at most ~210 bytes (config)
  if (cors.size() + headers.size() > sizeof joined)
    return r.send(status, type, body, std::string(cors) + std::string(headers));
  std::copy(cors.begin(), cors.end(), joined);
  std::copy(headers.begin(), headers.end(), joined + cors.size());  // may be empty (and null)
  r.send(status, type, body, std::string_view(joined, cors.size() + headers.size()));
}

// Sends the answer to `outcome` on a Reply or a Deferred.
template <class R>
void send(R& r, IngestApi::Form form, std::string_view cors, Outcome outcome, std::uint32_t events,
          std::string_view error = {}) {
  if (outcome == Outcome::invalid) {
    send_with(r, 400, "application/json", json_error_body(error), {}, cors);
    return;
  }
  if (outcome != Outcome::accepted) {
    const Refusal f = refusal(outcome);
    send_with(r, f.status, "application/json", json_error_body(f.message), f.headers, cors);
    return;
  }
  switch (form) {
    case IngestApi::Form::no_content: send_with(r, 204, {}, {}, {}, cors); break;
    case IngestApi::Form::pixel: send_with(r, 200, "image/gif", kPixelView, "Cache-Control: no-store\r\n", cors); break;
    case IngestApi::Form::accepted: {
      char body[48];
      const auto end = fmt::format_to_n(body, sizeof body, "{{\"accepted\":{}}}\n", events);
      send_with(r, 202, "application/json", std::string_view(body, end.size), {}, cors);
      break;
    }
  }
}

}  // namespace

// Parks the request being handled when the collector holds it.
class IngestApi::Hold final : public Holder {
 public:
  Hold(IngestApi& api, unsigned shard, http::Reply& reply, Form form, int cors)
      : api_(api), shard_(shard), reply_(reply), form_(form), cors_(cors) {}
  std::uint32_t hold() override { return api_.park(shard_, reply_.defer(), form_, cors_); }

 private:
  IngestApi& api_;
  unsigned shard_;
  http::Reply& reply_;
  Form form_;
  int cors_;
};

IngestApi::IngestApi(CollectorOptions options, Runtime& runtime, BatchWriter& writer, Spool* spool,
                     CollectorMetrics metrics, CorsPolicy cors)
    : runtime_(runtime),
      cors_(runtime.shards(), std::make_shared<const CorsPolicy>(std::move(cors))),
      slots_(runtime.shards()),
      collector_(std::make_unique<Collector>(options, runtime, writer, spool, metrics, *this)) {
  for (auto& s : slots_) {
    s.parked.reserve(1024);
    s.free.reserve(1024);
  }
}

IngestApi::~IngestApi() = default;

std::uint32_t IngestApi::park(unsigned shard, http::Deferred reply, Form form, int cors) {
  Slots& s = slots_[shard];
  std::uint32_t t;
  if (!s.free.empty()) {
    t = s.free.back();
    s.free.pop_back();
  } else {
    t = static_cast<std::uint32_t>(s.parked.size());
    s.parked.emplace_back();
  }
  s.parked[t].reply = std::move(reply);
  s.parked[t].form = form;
  s.parked[t].cors = cors;
  if (cors >= 0) s.parked[t].policy = cors_[shard];
  return t;
}

void IngestApi::answer(unsigned shard, std::uint32_t ticket, Outcome outcome, std::uint32_t events) {
  Slots& s = slots_[shard];
  Parked& p = s.parked[ticket];
  http::Deferred reply = std::move(p.reply);
  s.free.push_back(ticket);
  auto policy = std::move(p.policy);
  send(reply, p.form, policy ? policy->headers(p.cors) : std::string_view(), outcome, events);
}

std::string_view IngestApi::cors_headers(unsigned shard, int index) const {
  return index >= 0 ? cors_[shard]->headers(index) : std::string_view();
}

void IngestApi::set_cors(CorsPolicy cors) {
  auto policy = std::make_shared<const CorsPolicy>(std::move(cors));
  for (unsigned shard = 0; shard < cors_.size(); ++shard)
    runtime_.post(shard, [this, shard, policy] { cors_[shard] = policy; });
}

bool IngestApi::refused_origin(const http::Request& req, http::Reply& reply, int& cors) const {
  cors = cors_[req.shard]->check(req.origin);
  if (cors != CorsPolicy::kRefused) return false;
  reply.send(403, "application/json",
             json_error_body("origin not allowed: " + std::string(req.origin) +
                             " is not in --cors-origins; nothing was stored"));
  return true;
}

void IngestApi::query(const http::Request& req, http::Reply& reply, Form form) {
  int cors;
  if (refused_origin(req, reply, cors)) return;
  Hold hold(*this, req.shard, reply, form, cors);
  const Taken t = collector_->take_query(req.shard, req.query, req.received_us, hold);
  if (!t.held) send(reply, form, cors_headers(req.shard, cors), t.outcome, t.events, t.error);
}

void IngestApi::batch(const http::Request& req, http::Reply& reply) {
  int cors;
  if (refused_origin(req, reply, cors)) return;
  Hold hold(*this, req.shard, reply, Form::accepted, cors);
  const Taken t = collector_->take_batch(req.shard, req.body, req.received_us, hold);
  if (!t.held) send(reply, Form::accepted, cors_headers(req.shard, cors), t.outcome, t.events, t.error);
}

bool IngestApi::preflight(const http::Request& req, http::Reply& reply) const {
  const CorsPolicy& policy = *cors_[req.shard];
  if (!policy.enabled()) return false;
  const int cors = policy.check(req.origin);
  if (cors == CorsPolicy::kRefused) {
    reply.send(403, "application/json",
               json_error_body("origin not allowed: " + std::string(req.origin) + " is not in --cors-origins"));
  } else if (cors == CorsPolicy::kNone) {
    reply.send(400, "application/json", json_error_body("a CORS preflight needs an Origin header"));
  } else {
    reply.send(204, {}, {}, policy.preflight_headers(cors));
  }
  return true;
}

}  // namespace kiroku
