// ingest_api.h - the ingestion endpoints: requests to events, outcomes to answers.
//
// GET / and /collect (204), GET /pixel.gif (the GIF) and POST /events (202
// with {"accepted":n}) go to the Collector; what it reports becomes the
// status code, the JSON error and Retry-After (PRODUCT.md). A request the
// collector holds (durability process, fsync, sink) is parked in a per-shard
// slot until its outcome comes; the slots are reused, so answering
// allocates nothing in steady state.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "app/cors.h"
#include "http/server.h"
#include "ingest/collector.h"

namespace kiroku {

class IngestApi final : public Answers {
 public:
  // How an accepted request is answered.
  enum class Form : std::uint8_t { no_content, pixel, accepted };

  // Builds the collector, which reports to this object. `cors`: the pages
  // that may send events from a browser (app/cors.h).
  IngestApi(CollectorOptions options, Runtime& runtime, BatchWriter& writer, Spool* spool, CollectorMetrics metrics,
            CorsPolicy cors = {});
  ~IngestApi();

  Collector& collector() { return *collector_; }

  // On the request's shard.
  void query(const http::Request& req, http::Reply& reply, Form form);
  void batch(const http::Request& req, http::Reply& reply);
  // OPTIONS on an ingest path: answers the CORS preflight and returns true,
  // or returns false (answering nothing) when CORS is off.
  bool preflight(const http::Request& req, http::Reply& reply) const;
  // Replaces the CORS origins (SIGHUP): each shard takes the new policy from
  // its next request on; answers held meanwhile keep the policy they began with.
  // Any thread.
  void set_cors(CorsPolicy cors);

  void answer(unsigned shard, std::uint32_t ticket, Outcome outcome, std::uint32_t events) override;

 private:
  class Hold;
  struct Parked {
    http::Deferred reply;
    Form form = Form::no_content;
    int cors = CorsPolicy::kNone;
    std::shared_ptr<const CorsPolicy> policy;  // set with cors >= 0 only
  };
  struct Slots {
    std::vector<Parked> parked;
    std::vector<std::uint32_t> free;
  };
  std::uint32_t park(unsigned shard, http::Deferred reply, Form form, int cors);
  std::string_view cors_headers(unsigned shard, int index) const;
  // Answers 403 and returns true for a browser page whose origin is not
  // allowed; else sets `cors` to what check() says.
  bool refused_origin(const http::Request& req, http::Reply& reply, int& cors) const;

  Runtime& runtime_;
  std::vector<std::shared_ptr<const CorsPolicy>> cors_;  // per shard, read and replaced on its thread
  std::vector<Slots> slots_;                             // per shard
  std::unique_ptr<Collector> collector_;
};

}  // namespace kiroku
