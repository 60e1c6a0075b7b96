// options.cpp - `kiroku load`: its options, their checks, the target URL.
#include "load/load.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <string>

#include "common/duration.h"
#include "common/text.h"

namespace kiroku {

// ===========================================================================
// Options

void add_load_options(CLI::App& subcommand, LoadOptions& options) {
  subcommand
      .add_option("--url", options.url, "http://host:port/path?query; {seq}, {rand}, {name} are replaced per request")
      ->required();
  subcommand
      .add_option("--rate", options.rate,
                  "Requests per second over all connections; 0: closed loop (as fast as "
                  "answered)")
      ->capture_default_str();
  subcommand
      .add_option_function<std::string>(
          "--duration",
          [&options](const std::string& text) {
            auto d = parse_duration(text, BareNumber::seconds);
            if (!d) throw CLI::ValidationError("--duration", d.status().message());
            options.duration = *d;
          },
          "How long requests come due: 500ms, 10s, 1m")
      ->default_str("10s");
  subcommand.add_option("--connections", options.connections, "Keep-alive connections")->capture_default_str();
  subcommand.add_option("--threads", options.threads, "Threads, each with its share of connections")
      ->capture_default_str();
  subcommand
      .add_option_function<std::string>(
          "--timeout",
          [&options](const std::string& text) {
            auto d = parse_duration(text, BareNumber::seconds);
            if (!d) throw CLI::ValidationError("--timeout", d.status().message());
            options.timeout = std::chrono::ceil<std::chrono::milliseconds>(*d);
          },
          "Longest wait for a connection or an answer; a timed-out connection is reopened")
      ->default_str("2s");
  subcommand.add_option("--pipeline", options.pipeline, "Requests in flight per connection (1-16)")
      ->capture_default_str();
  subcommand.add_option("--method", options.method, "Request method")->capture_default_str();
  subcommand.add_option("--body-file", options.body_file,
                        "File sent as the body of every request (placeholders replaced)");
  subcommand.add_option("--header", options.headers, "Extra request header 'Name: value' (repeatable)");
  subcommand.add_option("--names", options.names, "How many distinct {name} values (m0, m1, ...)")
      ->capture_default_str();
  subcommand.add_flag("--json", options.json, "Print the report as JSON on stdout");
  subcommand.add_flag("--quiet", options.quiet, "No progress line each second on stderr");
  subcommand.add_flag("--fail-on-error", options.fail_on_error,
                      "Exit 1 if any request failed or was answered with a non-2xx status");
}

Status check_load_options(const LoadOptions& o) {
  if (!std::isfinite(o.rate) || o.rate < 0) {
    return Status::invalid("--rate: must be a number >= 0 (0: closed loop)");
  }
  if (o.duration <= std::chrono::nanoseconds::zero()) {
    return Status::invalid("--duration: must be greater than 0");
  }
  if (o.rate * std::chrono::duration<double>(o.duration).count() > 1e12) {
    return Status::invalid("--rate x --duration: more than 10^12 requests");
  }
  if (o.connections < 1 || o.connections > 100'000) {
    return Status::invalid("--connections: must be from 1 to 100000");
  }
  if (o.threads < 1 || o.threads > 256) return Status::invalid("--threads: must be from 1 to 256");
  if (o.threads > o.connections) {
    return Status::invalid("--threads: must not exceed --connections");
  }
  if (o.timeout <= std::chrono::milliseconds::zero()) {
    return Status::invalid("--timeout: must be greater than 0");
  }
  if (o.pipeline < 1 || o.pipeline > kMaxLoadPipeline) {
    return Status::invalid("--pipeline: must be from 1 to " + std::to_string(kMaxLoadPipeline));
  }
  if (o.names < 1) return Status::invalid("--names: must be at least 1");
  if (!is_http_token(o.method)) return Status::invalid("--method: not a valid method '" + o.method + "'");
  return {};
}

// ===========================================================================
// URL and request template

Result<LoadTarget> parse_load_url(std::string_view url) {
  const std::string shown(url);
  if (istarts_with(url, "https://")) {
    return Status::invalid("--url: https is not supported, use http:// ('" + shown + "')");
  }
  if (!istarts_with(url, "http://")) {
    return Status::invalid("--url: must start with http:// ('" + shown + "')");
  }
  std::string_view rest = url.substr(7);
  const std::size_t authority_end = std::min(rest.find_first_of("/?#"), rest.size());
  const std::string_view authority = rest.substr(0, authority_end);
  rest.remove_prefix(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    return Status::invalid("--url: user info is not supported ('" + shown + "')");
  }

  LoadTarget t;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Status::invalid("--url: unclosed '[' in host ('" + shown + "')");
    }
    t.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Status::invalid("--url: bad host ('" + shown + "')");
      port_text = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.find(':');
    t.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (t.host.empty()) return Status::invalid("--url: no host ('" + shown + "')");
  for (char c : t.host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '{' || c == '}') {
      return Status::invalid("--url: bad host ('" + shown + "')");
    }
  }
  if (!port_text.empty()) {
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port < 1 || port > 65535) {
      return Status::invalid("--url: bad port '" + std::string(port_text) + "'");
    }
    t.port = static_cast<std::uint16_t>(port);
  } else if (authority.back() == ':') {
    return Status::invalid("--url: empty port ('" + shown + "')");
  }
  t.host_header = std::string(authority);

  const std::size_t fragment = rest.find('#');
  if (fragment != std::string_view::npos) rest = rest.substr(0, fragment);
  if (rest.empty() || rest.front() != '/') t.target = "/";
  t.target.append(rest);
  for (char c : t.target) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return Status::invalid("--url: spaces and control characters must be percent-encoded ('" + shown + "')");
    }
  }
  return t;
}

}  // namespace kiroku
