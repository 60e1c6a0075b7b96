// ingest_api.cpp - outcomes to status codes, parked answers.
#include "app/ingest_api.h"

#include <fmt/format.h>

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

// Sends the answer to `outcome` on a Reply or a Deferred.
template <class R>
void send(R& r, IngestApi::Form form, Outcome outcome, std::uint32_t events, std::string_view error = {}) {
  if (outcome == Outcome::invalid) {
    r.send(400, "application/json", json_error_body(error));
    return;
  }
  if (outcome != Outcome::accepted) {
    const Refusal f = refusal(outcome);
    r.send(f.status, "application/json", json_error_body(f.message), f.headers);
    return;
  }
  switch (form) {
    case IngestApi::Form::no_content: r.send(204, {}, {}); break;
    case IngestApi::Form::pixel: r.send(200, "image/gif", kPixelView, "Cache-Control: no-store\r\n"); break;
    case IngestApi::Form::accepted: {
      char body[48];
      const auto end = fmt::format_to_n(body, sizeof body, "{{\"accepted\":{}}}\n", events);
      r.send(202, "application/json", std::string_view(body, end.size));
      break;
    }
  }
}

}  // namespace

// Parks the request being handled when the collector holds it.
class IngestApi::Hold final : public Holder {
 public:
  Hold(IngestApi& api, unsigned shard, http::Reply& reply, Form form)
      : api_(api), shard_(shard), reply_(reply), form_(form) {}
  std::uint32_t hold() override { return api_.park(shard_, reply_.defer(), form_); }

 private:
  IngestApi& api_;
  unsigned shard_;
  http::Reply& reply_;
  Form form_;
};

IngestApi::IngestApi(CollectorOptions options, Runtime& runtime, BatchWriter& writer, Spool* spool,
                     CollectorMetrics metrics)
    : slots_(runtime.shards()),
      collector_(std::make_unique<Collector>(options, runtime, writer, spool, metrics, *this)) {
  for (auto& s : slots_) {
    s.parked.reserve(1024);
    s.free.reserve(1024);
  }
}

IngestApi::~IngestApi() = default;

std::uint32_t IngestApi::park(unsigned shard, http::Deferred reply, Form form) {
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
  return t;
}

void IngestApi::answer(unsigned shard, std::uint32_t ticket, Outcome outcome, std::uint32_t events) {
  Slots& s = slots_[shard];
  Parked& p = s.parked[ticket];
  http::Deferred reply = std::move(p.reply);
  s.free.push_back(ticket);
  send(reply, p.form, outcome, events);
}

void IngestApi::query(const http::Request& req, http::Reply& reply, Form form) {
  Hold hold(*this, req.shard, reply, form);
  const Taken t = collector_->take_query(req.shard, req.query, req.received_us, hold);
  if (!t.held) send(reply, form, t.outcome, t.events, t.error);
}

void IngestApi::batch(const http::Request& req, http::Reply& reply) {
  Hold hold(*this, req.shard, reply, Form::accepted);
  const Taken t = collector_->take_batch(req.shard, req.body, req.received_us, hold);
  if (!t.held) send(reply, Form::accepted, t.outcome, t.events, t.error);
}

}  // namespace kiroku
