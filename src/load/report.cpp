// report.cpp - the load report as text or JSON, and the exit code.
#include "load/load.h"

#include <cstdio>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

namespace kiroku {

double LoadReport::throughput() const {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  return seconds > 0 ? static_cast<double>(answered) / seconds : 0;
}

// ===========================================================================
// Report

namespace {

std::string format_latency(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  char text[32];
  if (ns < 1e3) {
    std::snprintf(text, sizeof text, "%.0fns", ns);
  } else if (ns < 1e6) {
    std::snprintf(text, sizeof text, "%.1fus", ns / 1e3);
  } else if (ns < 1e9) {
    std::snprintf(text, sizeof text, "%.2fms", ns / 1e6);
  } else {
    std::snprintf(text, sizeof text, "%.3fs", ns / 1e9);
  }
  return text;
}

double milliseconds(std::chrono::nanoseconds d) {
  return std::round(static_cast<double>(d.count()) / 1e3) / 1e3;  // to the microsecond
}

double seconds(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

std::string format_report(const LoadReport& r, bool json) {
  const LatencyHistogram& h = r.latency;
  if (json) {
    nlohmann::ordered_json j;
    j["url"] = r.url;
    j["rate"] = r.rate;
    j["duration_s"] = seconds(r.duration);
    j["connections"] = r.connections;
    j["threads"] = r.threads;
    j["pipeline"] = r.pipeline;
    j["elapsed_s"] = seconds(r.elapsed);
    j["requests"] = {{"scheduled", r.scheduled}, {"sent", r.sent}, {"answered", r.answered}};
    j["throughput_rps"] = std::round(r.throughput() * 10) / 10;
    j["status"] = {{"2xx", r.status_2xx},
                   {"3xx", r.status_3xx},
                   {"4xx", r.status_4xx},
                   {"5xx", r.status_5xx},
                   {"other", r.status_other}};
    j["errors"] = {{"total", r.errors()},
                   {"connect", r.connect_errors},
                   {"timeout", r.timeout_errors},
                   {"closed", r.closed_errors},
                   {"other", r.other_errors}};
    j["latency_ms"] = {{"min", milliseconds(h.min())},
                       {"mean", milliseconds(h.mean())},
                       {"p50", milliseconds(h.value_at_percentile(50))},
                       {"p90", milliseconds(h.value_at_percentile(90))},
                       {"p99", milliseconds(h.value_at_percentile(99))},
                       {"p99_9", milliseconds(h.value_at_percentile(99.9))},
                       {"max", milliseconds(h.max())}};
    return j.dump() + "\n";
  }

  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "kiroku load  %s\n", r.url.c_str());
  out += line;
  if (r.rate > 0) {
    std::snprintf(line, sizeof line, "  schedule   %g requests/s for %gs", r.rate, seconds(r.duration));
  } else {
    std::snprintf(line, sizeof line, "  schedule   closed loop for %gs", seconds(r.duration));
  }
  out += line;
  std::snprintf(line, sizeof line, ", %u connections, %u threads, pipeline %u\n", r.connections, r.threads, r.pipeline);
  out += line;
  std::snprintf(line, sizeof line, "  requests   %llu due, %llu sent, %llu answered in %.2fs: %.1f answers/s\n",
                u(r.scheduled), u(r.sent), u(r.answered), seconds(r.elapsed), r.throughput());
  out += line;
  std::snprintf(line, sizeof line, "  answers    2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu, other %llu\n", u(r.status_2xx),
                u(r.status_3xx), u(r.status_4xx), u(r.status_5xx), u(r.status_other));
  out += line;
  std::snprintf(line, sizeof line, "  errors     %llu (connect %llu, timeout %llu, closed %llu, other %llu)\n",
                u(r.errors()), u(r.connect_errors), u(r.timeout_errors), u(r.closed_errors), u(r.other_errors));
  out += line;
  out += "  latency    mean " + format_latency(h.mean()) + ", p50 " + format_latency(h.value_at_percentile(50)) +
         ", p90 " + format_latency(h.value_at_percentile(90)) + ", p99 " + format_latency(h.value_at_percentile(99)) +
         ", p99.9 " + format_latency(h.value_at_percentile(99.9)) + ", max " + format_latency(h.max()) + "\n";
  return out;
}

int exit_code(const LoadReport& report, const LoadOptions& options) {
  if (options.fail_on_error && (report.errors() > 0 || report.not_2xx() > 0)) return 1;
  return 0;
}

}  // namespace kiroku
