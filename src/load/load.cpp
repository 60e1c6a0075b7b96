// load.cpp - `kiroku load`: options, request templates, response parsing, the
// per-thread connection loops and the report.
#include "load/load.h"

#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

namespace kiroku {

namespace {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equals_nocase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && equals_nocase(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::size_t decimal_digits(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

void append_decimal(std::string& out, std::uint64_t v) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
  out.append(digits, end);
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
    if (!ok || c == '\0') return false;
  }
  return true;
}

}  // namespace

// ===========================================================================
// Options

Result<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  const std::string_view s = trim(text);
  double number = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), number);
  if (ec != std::errc() || end == s.data()) {
    return Status::invalid("not a duration: '" + std::string(text) + "' (e.g. 500ms, 10s, 1m)");
  }
  const std::string_view unit = s.substr(static_cast<std::size_t>(end - s.data()));
  double ns_per_unit = 0;
  if (unit.empty() || unit == "s") {
    ns_per_unit = 1e9;
  } else if (unit == "ms") {
    ns_per_unit = 1e6;
  } else if (unit == "us") {
    ns_per_unit = 1e3;
  } else if (unit == "ns") {
    ns_per_unit = 1;
  } else if (unit == "m") {
    ns_per_unit = 60e9;
  } else if (unit == "h") {
    ns_per_unit = 3600e9;
  } else {
    return Status::invalid("unknown unit in duration '" + std::string(text) + "' (use ns, us, ms, s, m or h)");
  }
  const double ns = number * ns_per_unit;
  if (!(ns >= 0) || ns > 1e18) {
    return Status::invalid("duration out of range: '" + std::string(text) + "'");
  }
  return std::chrono::nanoseconds(std::llround(ns));
}

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
            auto d = parse_duration(text);
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
            auto d = parse_duration(text);
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

namespace {

Status check_options(const LoadOptions& o) {
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
  if (!is_token(o.method)) return Status::invalid("--method: not a valid method '" + o.method + "'");
  return {};
}

}  // namespace

// ===========================================================================
// URL and request template

Result<LoadTarget> parse_load_url(std::string_view url) {
  const std::string shown(url);
  if (starts_with_nocase(url, "https://")) {
    return Status::invalid("--url: https is not supported, use http:// ('" + shown + "')");
  }
  if (!starts_with_nocase(url, "http://")) {
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

// Splits `text` into literal pieces and {seq}, {rand}, {name}. With `strict`
// (the URL) any other {...} is an error; elsewhere (headers, bodies such as
// JSON) it stays literal.
static Status split_placeholders(std::string_view text, bool strict, auto&& add) {
  std::size_t literal_start = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '{') {
      ++i;
      continue;
    }
    const std::size_t close = text.find('}', i);
    const std::string_view name =
        close == std::string_view::npos ? std::string_view() : text.substr(i + 1, close - i - 1);
    int field = 0;
    if (name == "seq") field = 1;
    if (name == "rand") field = 2;
    if (name == "name") field = 3;
    if (field == 0) {
      if (strict) {
        return Status::invalid("--url: unknown placeholder at '" + std::string(text.substr(i)) +
                               "' (known: {seq}, {rand}, {name})");
      }
      ++i;
      continue;
    }
    if (i > literal_start) add(0, text.substr(literal_start, i - literal_start));
    add(field, std::string_view());
    i = close + 1;
    literal_start = i;
  }
  if (literal_start < text.size()) add(0, text.substr(literal_start));
  return {};
}

Status RequestTemplate::parse_into(std::string_view text, std::vector<Piece>& out) {
  return split_placeholders(text, false, [&out](int field, std::string_view literal) {
    out.push_back({static_cast<Field>(field), std::string(literal)});
  });
}

Result<RequestTemplate> RequestTemplate::make(const LoadOptions& options, const LoadTarget& target,
                                              std::string_view body) {
  RequestTemplate t;
  t.is_head_ = equals_nocase(options.method, "HEAD");
  auto literal = [&t](std::string_view s) { t.head_.push_back({Field::literal, std::string(s)}); };

  literal(options.method + " ");
  Status st = split_placeholders(target.target, true, [&t](int field, std::string_view s) {
    t.head_.push_back({static_cast<Field>(field), std::string(s)});
  });
  if (!st.ok()) return st;
  literal(" HTTP/1.1\r\nHost: " + target.host_header + "\r\nUser-Agent: kiroku-load\r\n");
  for (const std::string& header : options.headers) {
    const std::size_t colon = header.find(':');
    if (colon == std::string::npos || !is_token(trim(header.substr(0, colon))) ||
        header.find_first_of("\r\n") != std::string::npos) {
      return Status::invalid("--header: expected 'Name: value', got '" + header + "'");
    }
    if (Status s = parse_into(header, t.head_); !s.ok()) return s;
    literal("\r\n");
  }
  t.has_body_ = !body.empty() || equals_nocase(options.method, "POST") || equals_nocase(options.method, "PUT") ||
                equals_nocase(options.method, "PATCH");
  if (Status s = parse_into(body, t.body_); !s.ok()) return s;

  // The longest rendering: every placeholder at its widest.
  auto widest = [](const std::vector<Piece>& pieces) {
    std::size_t n = 0;
    for (const Piece& p : pieces) {
      switch (p.field) {
        case Field::literal: n += p.text.size(); break;
        case Field::seq: n += 20; break;
        case Field::rand: n += 10; break;
        case Field::name: n += 11; break;
      }
    }
    return n;
  };
  t.max_size_ = widest(t.head_) + widest(t.body_) + sizeof("Content-Length: \r\n\r\n") + 20 + 2;
  return t;
}

std::size_t RequestTemplate::rendered_size(const std::vector<Piece>& pieces, std::uint64_t seq, std::uint32_t random,
                                           unsigned names) {
  std::size_t n = 0;
  for (const Piece& p : pieces) {
    switch (p.field) {
      case Field::literal: n += p.text.size(); break;
      case Field::seq: n += decimal_digits(seq); break;
      case Field::rand: n += decimal_digits(random); break;
      case Field::name: n += 1 + decimal_digits(seq % names); break;
    }
  }
  return n;
}

void RequestTemplate::append(std::string& out, const std::vector<Piece>& pieces, std::uint64_t seq,
                             std::uint32_t random, unsigned names) {
  for (const Piece& p : pieces) {
    switch (p.field) {
      case Field::literal: out.append(p.text); break;
      case Field::seq: append_decimal(out, seq); break;
      case Field::rand: append_decimal(out, random); break;
      case Field::name:
        out.push_back('m');
        append_decimal(out, seq % names);
        break;
    }
  }
}

void RequestTemplate::render(std::string& out, std::uint64_t seq, std::uint32_t random, unsigned names) const {
  if (names == 0) names = 1;
  append(out, head_, seq, random, names);
  if (!has_body_) {
    out.append("\r\n");
    return;
  }
  out.append("Content-Length: ");
  append_decimal(out, rendered_size(body_, seq, random, names));
  out.append("\r\n\r\n");
  append(out, body_, seq, random, names);
}

// ===========================================================================
// Response parser

void ResponseParser::start(bool head_request) {
  state_ = State::head;
  head_request_ = head_request;
  status_ = 0;
  keep_alive_ = true;
  remaining_ = 0;
  error_ = nullptr;
}

ResponseParser::Step ResponseParser::fail(const char* why) {
  error_ = why;
  return Step::error;
}

// Looks for the blank line that ends the header block; parses it only once
// it is complete. Lines end in CRLF or a bare LF.
ResponseParser::Step ResponseParser::parse_head(const char* data, std::size_t size, std::size_t& consumed) {
  consumed = 0;
  const std::string_view all(data, size);
  std::size_t pos = 0;
  // Tolerate empty lines before the status line.
  while (pos < all.size() && (all[pos] == '\r' || all[pos] == '\n')) {
    if (all[pos] == '\r' && pos + 1 >= all.size()) return Step::need_more;
    ++pos;
  }
  const std::size_t head_start = pos;
  std::size_t end = std::string_view::npos;  // just past the blank line
  for (std::size_t line = pos;;) {
    const std::size_t nl = all.find('\n', line);
    if (nl == std::string_view::npos) return Step::need_more;
    const std::size_t len = nl - line;
    if (line > head_start && (len == 0 || (len == 1 && all[line] == '\r'))) {
      end = nl + 1;
      break;
    }
    line = nl + 1;
  }

  // Status line: HTTP/1.x SP 3DIGIT [SP reason]
  std::size_t nl = all.find('\n', head_start);
  const std::string_view status_line = trim(all.substr(head_start, nl - head_start));
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
      (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ') {
    return fail("malformed status line");
  }
  const bool http11 = status_line[7] == '1';
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') return fail("malformed status code");
    status = status * 10 + (status_line[i] - '0');
  }
  if (status_line.size() > 12 && status_line[12] != ' ') return fail("malformed status code");

  bool has_length = false;
  std::uint64_t length = 0;
  bool has_transfer_encoding = false;
  bool chunked = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  for (std::size_t line = nl + 1; line < end;) {
    const std::size_t line_end = all.find('\n', line);
    std::string_view text = all.substr(line, line_end - line);
    line = line_end + 1;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.empty()) break;
    if (text.front() == ' ' || text.front() == '\t') continue;  // obsolete folding
    const std::size_t colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail("malformed header line");
    const std::string_view name = text.substr(0, colon);
    const std::string_view value = trim(text.substr(colon + 1));
    if (equals_nocase(name, "content-length")) {
      std::uint64_t v = 0;
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty()) {
        return fail("malformed Content-Length");
      }
      if (has_length && v != length) return fail("conflicting Content-Length headers");
      has_length = true;
      length = v;
    } else if (equals_nocase(name, "transfer-encoding")) {
      // Chunked only counts as the last coding applied.
      has_transfer_encoding = true;
      std::string_view last = value;
      const std::size_t comma = value.rfind(',');
      if (comma != std::string_view::npos) last = trim(value.substr(comma + 1));
      chunked = equals_nocase(last, "chunked");
    } else if (equals_nocase(name, "connection")) {
      std::string_view tokens = value;
      while (!tokens.empty()) {
        const std::size_t comma = std::min(tokens.find(','), tokens.size());
        const std::string_view token = trim(tokens.substr(0, comma));
        if (equals_nocase(token, "close")) connection_close = true;
        if (equals_nocase(token, "keep-alive")) connection_keep_alive = true;
        tokens.remove_prefix(std::min(comma + 1, tokens.size()));
      }
    }
  }

  consumed = end;
  status_ = status;
  keep_alive_ = http11 ? !connection_close : (connection_keep_alive && !connection_close);
  if (status >= 100 && status < 200) {
    if (status == 101) return fail("101 Switching Protocols is not supported");
    return Step::need_more;  // interim answer: the final one follows
  }
  if (head_request_ || status == 204 || status == 304) return Step::answer;
  if (has_transfer_encoding) {
    if (chunked) {
      state_ = State::chunk_size;
    } else {
      state_ = State::until_close;
      keep_alive_ = false;
    }
    return Step::need_more;
  }
  if (has_length) {
    if (length == 0) return Step::answer;
    state_ = State::fixed_body;
    remaining_ = length;
    return Step::need_more;
  }
  state_ = State::until_close;
  keep_alive_ = false;
  return Step::need_more;
}

ResponseParser::Step ResponseParser::parse(const char* data, std::size_t size, std::size_t& consumed) {
  consumed = 0;
  if (error_ != nullptr) return Step::error;
  for (;;) {
    const char* p = data + consumed;
    const std::size_t n = size - consumed;
    switch (state_) {
      case State::head: {
        if (n == 0) return Step::need_more;
        std::size_t used = 0;
        const Step step = parse_head(p, n, used);
        if (step == Step::error) return step;
        consumed += used;
        if (step == Step::answer) return step;
        if (used == 0) return Step::need_more;
        break;  // a body follows, or an interim answer was skipped
      }
      case State::fixed_body:
      case State::chunk_data: {
        const std::uint64_t take = std::min<std::uint64_t>(remaining_, n);
        consumed += static_cast<std::size_t>(take);
        remaining_ -= take;
        if (remaining_ > 0) return Step::need_more;
        if (state_ == State::fixed_body) {
          state_ = State::head;
          return Step::answer;
        }
        state_ = State::chunk_end;
        break;
      }
      case State::chunk_end: {
        if (n == 0) return Step::need_more;
        if (p[0] == '\n') {
          consumed += 1;
        } else if (p[0] == '\r') {
          if (n < 2) return Step::need_more;
          if (p[1] != '\n') return fail("malformed chunk end");
          consumed += 2;
        } else {
          return fail("malformed chunk end");
        }
        state_ = State::chunk_size;
        break;
      }
      case State::chunk_size: {
        const void* nl = std::memchr(p, '\n', n);
        if (nl == nullptr) {
          if (n > 4096) return fail("chunk size line too long");
          return Step::need_more;
        }
        const std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        std::uint64_t chunk = 0;
        std::size_t i = 0;
        for (; i < len; ++i) {
          const char c = p[i];
          int digit;
          if (c >= '0' && c <= '9') {
            digit = c - '0';
          } else if (lower(c) >= 'a' && lower(c) <= 'f') {
            digit = lower(c) - 'a' + 10;
          } else {
            break;
          }
          if (chunk >> 59) return fail("chunk size too large");
          chunk = chunk * 16 + static_cast<std::uint64_t>(digit);
        }
        if (i == 0) return fail("malformed chunk size");
        const std::string_view rest = trim(std::string_view(p + i, len - i));
        if (!rest.empty() && rest.front() != ';') return fail("malformed chunk size");
        consumed += len + 1;
        if (chunk == 0) {
          state_ = State::trailers;
        } else {
          remaining_ = chunk;
          state_ = State::chunk_data;
        }
        break;
      }
      case State::trailers: {
        const void* nl = std::memchr(p, '\n', n);
        if (nl == nullptr) {
          if (n > 8192) return fail("trailer line too long");
          return Step::need_more;
        }
        const std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        consumed += len + 1;
        if (len == 0 || (len == 1 && p[0] == '\r')) {
          state_ = State::head;
          return Step::answer;
        }
        break;
      }
      case State::until_close: consumed = size; return Step::need_more;
    }
  }
}

ResponseParser::Step ResponseParser::finish() {
  if (state_ == State::until_close) {
    state_ = State::head;
    keep_alive_ = false;
    return Step::answer;
  }
  return fail("connection closed before the answer was complete");
}

// ===========================================================================
// The run: workers (one per thread, each with its io_context) and connections

namespace {

enum class Failure { connect, timeout, closed, other };

// Counts of one worker: written only by its thread (a relaxed load and store,
// no read-modify-write), read by the progress line and the report.
struct Tally {
  std::atomic<std::uint64_t> scheduled{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> errors{0};
  std::array<std::atomic<std::uint64_t>, 5> by_class{};  // 2xx, 3xx, 4xx, 5xx, other
  std::array<std::atomic<std::uint64_t>, 4> by_failure{};

  static void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  static std::uint64_t get(const std::atomic<std::uint64_t>& counter) {
    return counter.load(std::memory_order_relaxed);
  }
};

// What all workers share: read-only once the run starts, but for `seq`.
struct Plan {
  const LoadOptions* options = nullptr;
  RequestTemplate request;
  std::vector<tcp::endpoint> endpoints;
  bool closed_loop = false;
  std::uint64_t total = 0;  // open loop: requests due over the run
  TimePoint start;          // set when every worker has connected
  alignas(64) std::atomic<std::uint64_t> seq{0};
};

struct StartClock {
  Plan* plan;
  void operator()() noexcept { plan->start = Clock::now(); }
};

constexpr std::size_t kReadBufferBytes = 8 * 1024;  // holds one header block; bodies stream
constexpr auto kSweepInterval = std::chrono::milliseconds(5);
constexpr auto kReconnectPause = std::chrono::milliseconds(10);

Failure classify(const boost::system::error_code& ec) {
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe || ec == asio::error::eof ||
      ec == asio::error::connection_aborted || ec == asio::error::shut_down) {
    return Failure::closed;
  }
  if (ec == asio::error::timed_out) return Failure::timeout;
  return Failure::other;
}

class Worker;

// One keep-alive connection and its share of the schedule. Request i of
// connection c (of N) is request k = i*N + c of the run, due at start + k/R.
// Requests in [next_send_, next_due_) are due and wait to be sent; the ones
// in flight sit in a ring in send order, each with its due and send times.
class Connection {
 public:
  Connection(Worker& worker, unsigned index, std::uint64_t quota);

  void connect_early();
  void abandon_early_connect();
  void start();
  void end_closed_loop();
  void drain();
  void sweep(TimePoint now);

 private:
  enum class State { closed, connecting, open };
  struct InFlight {
    TimePoint due;
    TimePoint sent;
  };

  TimePoint due_time(std::uint64_t i) const {
    const double k = static_cast<double>(i) * connections_ + index_;
    return start_ + std::chrono::nanoseconds(std::llround(k * ns_per_request_));
  }
  bool work_left() const;
  bool wants_connection() const;
  void arm_due();
  void on_due();
  void pump();
  void connect();
  void connect_to(std::size_t endpoint);
  void on_connected(const boost::system::error_code& ec, std::size_t endpoint, std::uint32_t epoch);
  void connect_failed();
  void start_read();
  void on_read(const boost::system::error_code& ec, std::size_t n, std::uint32_t epoch);
  void write_some();
  void on_written(const boost::system::error_code& ec, std::size_t n, std::uint32_t epoch);
  void on_answer(int status, TimePoint now);
  void fail(Failure kind);
  void close_socket();
  void finish();
  std::uint32_t next_random();

  Worker& worker_;
  Plan& plan_;  // read-only but for the sequence counter
  const unsigned index_;
  const double connections_;
  const double ns_per_request_;
  const std::uint64_t quota_;
  const unsigned depth_;
  const bool closed_loop_;
  const bool head_;
  const std::chrono::nanoseconds timeout_;
  TimePoint start_;

  tcp::socket socket_;
  asio::steady_timer due_timer_;
  State state_ = State::closed;
  std::uint32_t epoch_ = 0;  // bumped on close: completions of older sockets are ignored
  bool early_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool ending_ = false;
  bool done_ = false;
  TimePoint connect_started_;
  std::size_t endpoint_ = 0;  // the address that worked last

  std::uint64_t next_due_ = 0;
  std::uint64_t next_send_ = 0;
  std::array<InFlight, kMaxLoadPipeline> ring_{};
  unsigned ring_head_ = 0;
  unsigned in_flight_ = 0;
  unsigned writing_count_ = 0;

  ResponseParser parser_;
  std::vector<char> read_buffer_;
  std::size_t read_end_ = 0;
  std::string write_buffer_;
  std::size_t written_ = 0;
  std::uint64_t random_state_;
};

class Worker {
 public:
  Worker(Plan& plan, unsigned index, unsigned threads);
  // Connects, waits at `ready` for the other workers, runs the schedule.
  void run(std::barrier<StartClock>& ready);

  asio::io_context& io() { return io_; }
  Plan& plan() { return plan_; }
  Tally& tally() { return tally_; }
  LatencyHistogram& latency() { return latency_; }
  TimePoint finished_at() const { return finished_at_; }
  void connection_done();

 private:
  void arm_sweep();

  Plan& plan_;
  asio::io_context io_{1};
  Tally tally_;
  LatencyHistogram latency_;
  std::vector<std::unique_ptr<Connection>> connections_;
  asio::steady_timer sweep_timer_{io_};
  asio::steady_timer end_timer_{io_};
  asio::steady_timer drain_timer_{io_};
  std::size_t open_ = 0;
  TimePoint finished_at_;
};

// --- Connection ------------------------------------------------------------

Connection::Connection(Worker& worker, unsigned index, std::uint64_t quota)
    : worker_(worker),
      plan_(worker.plan()),
      index_(index),
      connections_(plan_.options->connections),
      ns_per_request_(plan_.closed_loop ? 0 : 1e9 / plan_.options->rate),
      quota_(quota),
      depth_(plan_.options->pipeline),
      closed_loop_(plan_.closed_loop),
      head_(plan_.request.is_head()),
      timeout_(plan_.options->timeout),
      socket_(worker.io()),
      due_timer_(worker.io()),
      read_buffer_(kReadBufferBytes),
      random_state_(0x9E3779B97F4A7C15ull * (index + 1) ^
                    static_cast<std::uint64_t>(Clock::now().time_since_epoch().count())) {
  write_buffer_.reserve(plan_.request.max_size() * depth_);
  parser_.start(head_);
}

// splitmix64, top 31 bits: uniform in [0, 2^31).
std::uint32_t Connection::next_random() {
  std::uint64_t z = (random_state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<std::uint32_t>(z >> 33);
}

void Connection::connect_early() {
  early_ = true;
  connect();
}

void Connection::abandon_early_connect() {
  if (state_ == State::connecting) close_socket();
}

void Connection::start() {
  early_ = false;
  start_ = plan_.start;
  if (state_ == State::open) start_read();
  if (!closed_loop_ && quota_ > 0) arm_due();
  pump();
}

void Connection::end_closed_loop() {
  ending_ = true;
  pump();
}

// The run is over: whatever is due and unanswered is a timeout.
void Connection::drain() {
  if (done_) return;
  Tally& t = worker_.tally();
  std::uint64_t lost = in_flight_;
  if (!closed_loop_) {
    Tally::bump(t.scheduled, quota_ - next_due_);
    lost += quota_ - next_send_;
    next_due_ = next_send_ = quota_;
  }
  Tally::bump(t.by_failure[static_cast<int>(Failure::timeout)], lost);
  Tally::bump(t.errors, lost);
  in_flight_ = 0;
  finish();
}

void Connection::sweep(TimePoint now) {
  if (done_) return;
  if (state_ == State::connecting && !early_ && now - connect_started_ >= timeout_) {
    connect_failed();
  } else if (state_ == State::open && in_flight_ > 0 && now - ring_[ring_head_].sent >= timeout_) {
    fail(Failure::timeout);
  }
}

bool Connection::work_left() const {
  if (closed_loop_) return !ending_ || in_flight_ > 0;
  return next_send_ < quota_ || in_flight_ > 0;
}

bool Connection::wants_connection() const { return closed_loop_ ? !ending_ : next_send_ < next_due_; }

void Connection::arm_due() {
  due_timer_.expires_at(due_time(next_due_));
  due_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) on_due();
  });
}

void Connection::on_due() {
  if (done_) return;
  // Everything due by now, at least the one the timer was set for.
  const TimePoint now = Clock::now();
  std::uint64_t n = 1;
  ++next_due_;
  while (next_due_ < quota_ && due_time(next_due_) <= now) {
    ++next_due_;
    ++n;
  }
  Tally::bump(worker_.tally().scheduled, n);
  if (next_due_ < quota_) arm_due();
  pump();
}

// Sends what is due if the connection can take it; opens the connection
// when something waits; finishes when nothing is left.
void Connection::pump() {
  if (done_) return;
  if (!work_left()) {
    finish();
    return;
  }
  if (state_ == State::closed) {
    if (wants_connection()) connect();
    return;
  }
  if (state_ != State::open || writing_) return;
  const unsigned room = depth_ - in_flight_;
  std::uint64_t n = closed_loop_ ? (ending_ ? 0 : room) : std::min<std::uint64_t>(room, next_due_ - next_send_);
  if (n == 0) return;

  const TimePoint now = Clock::now();
  write_buffer_.clear();
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t seq = plan_.seq.fetch_add(1, std::memory_order_relaxed);
    plan_.request.render(write_buffer_, seq, next_random(), plan_.options->names);
    const TimePoint due = closed_loop_ ? now : due_time(next_send_++);
    ring_[(ring_head_ + in_flight_) % kMaxLoadPipeline] = {due, now};
    ++in_flight_;
  }
  if (closed_loop_) Tally::bump(worker_.tally().scheduled, n);
  writing_ = true;
  writing_count_ = static_cast<unsigned>(n);
  written_ = 0;
  write_some();
}

// Single writes rather than a composed async_write: a completion of an older
// socket must never go on writing to a reopened one.
void Connection::write_some() {
  socket_.async_write_some(
      asio::buffer(write_buffer_.data() + written_, write_buffer_.size() - written_),
      [this, epoch = epoch_](const boost::system::error_code& ec, std::size_t n) { on_written(ec, n, epoch); });
}

void Connection::on_written(const boost::system::error_code& ec, std::size_t n, std::uint32_t epoch) {
  if (epoch != epoch_) return;
  if (ec) {
    writing_ = false;
    fail(classify(ec));
    return;
  }
  written_ += n;
  if (written_ < write_buffer_.size()) {
    write_some();
    return;
  }
  writing_ = false;
  Tally::bump(worker_.tally().sent, writing_count_);
  pump();
}

void Connection::connect() {
  state_ = State::connecting;
  connect_started_ = Clock::now();
  connect_to(endpoint_);
}

// Tries the resolved addresses in turn, starting with the one that worked
// last; single connects rather than the composed range connect, so that a
// stale completion never touches a reopened socket.
void Connection::connect_to(std::size_t endpoint) {
  boost::system::error_code ignored;
  socket_.close(ignored);
  socket_.async_connect(
      plan_.endpoints[endpoint],
      [this, endpoint, epoch = epoch_](const boost::system::error_code& ec) { on_connected(ec, endpoint, epoch); });
}

void Connection::on_connected(const boost::system::error_code& ec, std::size_t endpoint, std::uint32_t epoch) {
  if (epoch != epoch_) return;
  if (ec) {
    const std::size_t next = (endpoint + 1) % plan_.endpoints.size();
    if (next != endpoint_) {
      connect_to(next);
      return;
    }
    connect_failed();
    return;
  }
  endpoint_ = endpoint;
  state_ = State::open;
  boost::system::error_code ignored;
  socket_.set_option(tcp::no_delay(true), ignored);
  if (early_) return;  // start() begins reading
  start_read();
  pump();
}

// Every request waiting for this connection fails with a connect error.
void Connection::connect_failed() {
  close_socket();
  if (early_) return;  // retried when the first request is due
  Tally& t = worker_.tally();
  std::uint64_t n = 1;
  if (closed_loop_) {
    Tally::bump(t.scheduled);
  } else {
    n = next_due_ - next_send_;
    next_send_ = next_due_;
  }
  Tally::bump(t.by_failure[static_cast<int>(Failure::connect)], n);
  Tally::bump(t.errors, n);
  if (closed_loop_ && !ending_) {
    due_timer_.expires_after(kReconnectPause);
    due_timer_.async_wait([this](const boost::system::error_code& e) {
      if (!e) pump();
    });
    return;
  }
  pump();
}

void Connection::start_read() {
  if (reading_) return;
  reading_ = true;
  socket_.async_read_some(
      asio::buffer(read_buffer_.data() + read_end_, read_buffer_.size() - read_end_),
      [this, epoch = epoch_](const boost::system::error_code& ec, std::size_t n) { on_read(ec, n, epoch); });
}

void Connection::on_read(const boost::system::error_code& ec, std::size_t n, std::uint32_t epoch) {
  if (epoch != epoch_) return;
  reading_ = false;
  const TimePoint now = Clock::now();
  if (ec == asio::error::eof) {
    // The answer may run to the close; otherwise whatever is in flight is lost.
    if (in_flight_ > 0 && parser_.finish() == ResponseParser::Step::answer) {
      on_answer(parser_.status(), now);
    }
    if (in_flight_ > 0) {
      fail(Failure::closed);
    } else {
      close_socket();
      pump();
    }
    return;
  }
  if (ec) {
    fail(classify(ec));
    return;
  }
  read_end_ += n;
  std::size_t pos = 0;
  while (pos < read_end_) {
    if (in_flight_ == 0) {  // bytes nobody asked for
      fail(Failure::other);
      return;
    }
    std::size_t used = 0;
    const auto step = parser_.parse(read_buffer_.data() + pos, read_end_ - pos, used);
    pos += used;
    if (step == ResponseParser::Step::error) {
      fail(Failure::other);
      return;
    }
    if (step == ResponseParser::Step::need_more) break;
    const bool keep_alive = parser_.keep_alive();
    on_answer(parser_.status(), now);
    parser_.start(head_);
    if (!keep_alive) {  // the server closes after this answer; anything after it is lost
      if (in_flight_ > 0) {
        fail(Failure::closed);
      } else {
        close_socket();
        pump();
      }
      return;
    }
  }
  if (pos > 0) {
    std::memmove(read_buffer_.data(), read_buffer_.data() + pos, read_end_ - pos);
    read_end_ -= pos;
  }
  if (read_end_ == read_buffer_.size()) {  // a header block larger than the buffer
    fail(Failure::other);
    return;
  }
  start_read();
  pump();
}

void Connection::on_answer(int status, TimePoint now) {
  const InFlight request = ring_[ring_head_];
  ring_head_ = (ring_head_ + 1) % kMaxLoadPipeline;
  --in_flight_;
  worker_.latency().record(now - request.due);
  Tally& t = worker_.tally();
  Tally::bump(t.answered);
  const int cls = status / 100;
  Tally::bump(t.by_class[(cls >= 2 && cls <= 5) ? cls - 2 : 4]);
}

// Every request in flight fails with `kind`; the connection is reopened when
// something is due.
void Connection::fail(Failure kind) {
  Tally& t = worker_.tally();
  Tally::bump(t.by_failure[static_cast<int>(kind)], in_flight_);
  Tally::bump(t.errors, in_flight_);
  in_flight_ = 0;
  close_socket();
  pump();
}

void Connection::close_socket() {
  ++epoch_;
  boost::system::error_code ignored;
  socket_.close(ignored);
  state_ = State::closed;
  reading_ = false;
  writing_ = false;
  in_flight_ = 0;
  ring_head_ = 0;
  read_end_ = 0;
  parser_.start(head_);
}

void Connection::finish() {
  if (done_) return;
  done_ = true;
  close_socket();
  due_timer_.cancel();
  worker_.connection_done();
}

// --- Worker ----------------------------------------------------------------

Worker::Worker(Plan& plan, unsigned index, unsigned threads) : plan_(plan) {
  const LoadOptions& o = *plan.options;
  for (unsigned c = index; c < o.connections; c += threads) {
    // Requests k = i*N + c below the total.
    std::uint64_t quota = 0;
    if (!plan.closed_loop) {
      quota = plan.total / o.connections + (c < plan.total % o.connections ? 1 : 0);
    }
    connections_.push_back(std::make_unique<Connection>(*this, c, quota));
  }
  open_ = connections_.size();
}

void Worker::run(std::barrier<StartClock>& ready) {
  const LoadOptions& o = *plan_.options;
  // Connect first, so the schedule does not start with connection setup.
  for (auto& c : connections_) c->connect_early();
  io_.run_for(o.timeout);
  for (auto& c : connections_) c->abandon_early_connect();
  ready.arrive_and_wait();
  io_.restart();

  const TimePoint start = plan_.start;
  arm_sweep();
  if (plan_.closed_loop) {
    end_timer_.expires_at(start + o.duration);
    end_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      for (auto& c : connections_) c->end_closed_loop();
    });
  }
  drain_timer_.expires_at(start + o.duration + o.timeout);
  drain_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    for (auto& c : connections_) c->drain();
  });
  for (auto& c : connections_) c->start();
  io_.run();
  if (open_ > 0) finished_at_ = Clock::now();  // cannot happen; stay safe
}

void Worker::arm_sweep() {
  sweep_timer_.expires_after(kSweepInterval);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    const TimePoint now = Clock::now();
    for (auto& c : connections_) c->sweep(now);
    if (open_ > 0) arm_sweep();
  });
}

void Worker::connection_done() {
  if (--open_ > 0) return;
  finished_at_ = Clock::now();
  sweep_timer_.cancel();
  end_timer_.cancel();
  drain_timer_.cancel();
}

void add_tally(LoadReport& r, const Tally& t) {
  r.scheduled += Tally::get(t.scheduled);
  r.sent += Tally::get(t.sent);
  r.answered += Tally::get(t.answered);
  r.status_2xx += Tally::get(t.by_class[0]);
  r.status_3xx += Tally::get(t.by_class[1]);
  r.status_4xx += Tally::get(t.by_class[2]);
  r.status_5xx += Tally::get(t.by_class[3]);
  r.status_other += Tally::get(t.by_class[4]);
  r.connect_errors += Tally::get(t.by_failure[static_cast<int>(Failure::connect)]);
  r.timeout_errors += Tally::get(t.by_failure[static_cast<int>(Failure::timeout)]);
  r.closed_errors += Tally::get(t.by_failure[static_cast<int>(Failure::closed)]);
  r.other_errors += Tally::get(t.by_failure[static_cast<int>(Failure::other)]);
}

}  // namespace

double LoadReport::throughput() const {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  return seconds > 0 ? static_cast<double>(answered) / seconds : 0;
}

Result<LoadReport> run_load(const LoadOptions& options, std::ostream* progress) {
  if (Status s = check_options(options); !s.ok()) return s;
  auto target = parse_load_url(options.url);
  if (!target) return target.status();

  std::string body;
  if (!options.body_file.empty()) {
    std::ifstream in(options.body_file, std::ios::binary);
    if (!in) return Status::invalid("--body-file: cannot read '" + options.body_file + "'");
    std::ostringstream content;
    content << in.rdbuf();
    body = content.str();
  }

  Plan plan;
  plan.options = &options;
  auto request = RequestTemplate::make(options, *target, body);
  if (!request) return request.status();
  plan.request = std::move(*request);
  plan.closed_loop = options.rate == 0;
  if (!plan.closed_loop) {
    plan.total = static_cast<std::uint64_t>(
        std::llround(options.rate * std::chrono::duration<double>(options.duration).count()));
  }

  {
    asio::io_context io;
    tcp::resolver resolver(io);
    boost::system::error_code ec;
    auto results = resolver.resolve(target->host, std::to_string(target->port), ec);
    if (ec || results.empty()) {
      return Status::permanent("--url: cannot resolve '" + target->host + "': " + ec.message());
    }
    for (const auto& entry : results) plan.endpoints.push_back(entry.endpoint());
  }

  // Each connection is a descriptor: raise the soft limit if it is too low.
  rlimit files{};
  const rlim_t wanted = static_cast<rlim_t>(options.connections) + 64;
  if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < wanted) {
    files.rlim_cur = std::min(wanted, files.rlim_max);
    setrlimit(RLIMIT_NOFILE, &files);
  }

  const unsigned threads = options.threads;
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<Worker>(plan, i, threads));
  }

  std::barrier<StartClock> ready(static_cast<std::ptrdiff_t>(threads), StartClock{&plan});
  std::mutex mutex;
  std::condition_variable changed;
  unsigned finished = 0;
  std::vector<std::thread> running;
  for (auto& w : workers) {
    running.emplace_back([&, worker = w.get()] {
      worker->run(ready);
      std::lock_guard lock(mutex);
      ++finished;
      changed.notify_all();
    });
  }

  // A progress line each second until every worker is done.
  const bool show = progress != nullptr && !options.quiet;
  const TimePoint began = Clock::now();
  TimePoint last_tick = began;
  std::uint64_t last_answered = 0;
  {
    std::unique_lock lock(mutex);
    TimePoint next_tick = began + std::chrono::seconds(1);
    while (!changed.wait_until(lock, next_tick, [&] { return finished == threads; })) {
      next_tick += std::chrono::seconds(1);
      if (!show) continue;
      std::uint64_t sent = 0, answered = 0, errors = 0;
      for (auto& w : workers) {
        sent += Tally::get(w->tally().sent);
        answered += Tally::get(w->tally().answered);
        errors += Tally::get(w->tally().errors);
      }
      const TimePoint now = Clock::now();
      const double interval = std::chrono::duration<double>(now - last_tick).count();
      const double rate = interval > 0 ? static_cast<double>(answered - last_answered) / interval : 0;
      char line[160];
      std::snprintf(line, sizeof line, "load %4.0fs  sent %llu  answered %llu  errors %llu  rate %.0f/s\n",
                    std::chrono::duration<double>(now - began).count(), static_cast<unsigned long long>(sent),
                    static_cast<unsigned long long>(answered), static_cast<unsigned long long>(errors), rate);
      *progress << line << std::flush;
      last_tick = now;
      last_answered = answered;
    }
  }
  for (auto& t : running) t.join();

  LoadReport report;
  report.url = options.url;
  report.rate = options.rate;
  report.duration = options.duration;
  report.connections = options.connections;
  report.threads = threads;
  report.pipeline = options.pipeline;
  TimePoint end = plan.start;
  for (auto& w : workers) {
    add_tally(report, w->tally());
    report.latency.merge(w->latency());
    end = std::max(end, w->finished_at());
  }
  report.elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(end - plan.start);
  return report;
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
