// dashboard.h - the live operations page served at GET /dashboard.
//
// One self-contained HTML document: inline CSS and script, no external
// resource of any kind (no CDN, no font, no image). Once a second it fetches
// the Prometheus text of GET /metrics and GET /readyz, relative to its own
// URL, and draws nine live charts (throughput, request and accept-to-durable
// latency percentiles over the last second, backlog in events and bytes,
// database pool, RSS, CPU, rejections) with a status line. Metrics the
// server does not expose (no spool with durability none) show as "off".
//
// For tests and scripts the page marks its DOM: each chart is a
// <section data-chart="ID" data-points="N"> where N counts the samples drawn
// with a value, and <body data-polls="N" data-error="..."> counts the polls
// answered and says why the last one failed ("" when it did not).
#pragma once

#include <string_view>

namespace kiroku {

// The page. Static storage, valid for the life of the process; any thread.
std::string_view dashboard_html();

inline constexpr std::string_view kDashboardContentType = "text/html; charset=utf-8";

// Extra response headers for the page ("Name: value\r\n" lines): a
// Content-Security-Policy that lets it run its inline script and style and
// talk to its own origin only, so a browser enforces what the page promises.
inline constexpr std::string_view kDashboardHeaders =
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n";

}  // namespace kiroku
