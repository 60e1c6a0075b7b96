// load.h - `kiroku load`: a constant-rate (open model) HTTP/1.1 load generator.
//
// Requests come due on a fixed schedule: at --rate R the k-th request of the
// run is due at start + k/R, and request k goes to connection k mod N, so each
// keep-alive connection sends one every N/R seconds. Latency is measured from
// the moment a request was due, not from when it could be sent: when the
// server stalls, every request that should have gone out meanwhile waits in
// its connection's backlog and shows the stall in its latency (coordinated
// omission corrected). --rate 0 runs closed loop instead (like wrk): each
// connection sends its next request as soon as the previous one is answered,
// and latency runs from the send.
//
// A connection has at most --pipeline requests in flight (default 1: the next
// due request waits for the previous answer). Threads (--threads) each run
// their own io_context with every T-th connection; they share nothing but a
// sequence counter and the progress counters.
//
// Every due request ends as exactly one of: an answer (counted by status class
// and recorded in the latency histogram) or an error of one kind: connect (no
// connection could be made, or not within --timeout), timeout (sent but not
// answered within --timeout of the send; the connection is reopened), closed
// (the server reset or closed the connection before answering) or other
// (malformed answer, other socket errors). The run ends when every request
// due within --duration has an answer or an error, at the latest --timeout
// after --duration; what is still open then counts as a timeout.
//
// Errors: run_load returns Status::invalid for bad options (exit code 2) and
// Status::permanent when the host cannot be resolved; what happens to
// requests is in the report, never an error of run_load.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "load/latency_histogram.h"

namespace CLI {
class App;
}

namespace kiroku {

inline constexpr unsigned kMaxLoadPipeline = 16;

struct LoadOptions {
  // http://host[:port]/path?query. {seq}, {rand} and {name} in the path,
  // query, headers or body are replaced per request by a global sequence
  // number, a random integer in [0, 2^31) and one of m0 .. m{names-1}.
  std::string url;
  double rate = 1000;  // requests/s over all connections; 0: closed loop, as fast as answered
  std::chrono::nanoseconds duration = std::chrono::seconds(10);
  unsigned connections = 16;
  unsigned threads = 1;
  std::chrono::milliseconds timeout = std::chrono::milliseconds(2000);
  unsigned pipeline = 1;             // requests in flight per connection, 1..kMaxLoadPipeline
  std::string method = "GET";        // GET, HEAD, POST, PUT, DELETE, ...
  std::string body_file;             // sent as the body of every request, with Content-Length
  std::vector<std::string> headers;  // extra "Name: value" request headers
  unsigned names = 16;               // how many distinct {name} values
  bool json = false;                 // report as JSON on stdout
  bool quiet = false;                // no progress line each second
  bool fail_on_error = false;        // exit 1 on errors or non-2xx answers
};

// Registers the options above on the `load` subcommand (CLI11). Durations take
// a unit: 500ms, 10s, 1m, 1h (a bare number is seconds). A malformed value
// makes CLI11's parse throw CLI::ValidationError; ranges are checked by
// run_load (Status::invalid).
void add_load_options(CLI::App& subcommand, LoadOptions& options);

struct LoadReport {
  std::string url;
  double rate = 0;  // the target; 0 for closed loop
  std::chrono::nanoseconds duration{0};
  unsigned connections = 0;
  unsigned threads = 0;
  unsigned pipeline = 1;
  // From the start of the schedule to the end of the run (last answer or error).
  std::chrono::nanoseconds elapsed{0};

  std::uint64_t scheduled = 0;  // requests that came due; = answered + errors()
  std::uint64_t sent = 0;       // requests written to a connection
  std::uint64_t answered = 0;   // complete answers, whatever their status

  std::uint64_t status_2xx = 0;
  std::uint64_t status_3xx = 0;
  std::uint64_t status_4xx = 0;
  std::uint64_t status_5xx = 0;
  std::uint64_t status_other = 0;  // 1xx as a final answer, or outside 100..599

  std::uint64_t connect_errors = 0;
  std::uint64_t timeout_errors = 0;
  std::uint64_t closed_errors = 0;
  std::uint64_t other_errors = 0;

  // Latency of every answered request, from when it was due (open model) or
  // sent (closed loop) to the last byte of its answer.
  LatencyHistogram latency;

  std::uint64_t errors() const { return connect_errors + timeout_errors + closed_errors + other_errors; }
  std::uint64_t not_2xx() const { return answered - status_2xx; }
  // Answers per second over `elapsed`.
  double throughput() const;
};

// invalid, naming the option, for values out of range (run_load checks them).
Status check_load_options(const LoadOptions& options);

// Runs the load described by `options` and blocks until it is over. Progress
// lines (one a second) go to `progress` unless it is null or options.quiet.
Result<LoadReport> run_load(const LoadOptions& options, std::ostream* progress);

// The report for a person (several aligned lines) or as one JSON object.
std::string format_report(const LoadReport& report, bool json);

// 0 if the load ran; 1 if options.fail_on_error and there were errors or
// non-2xx answers.
int exit_code(const LoadReport& report, const LoadOptions& options);

// ---------------------------------------------------------------------------
// Building blocks, exposed for tests.

// The parts of a load URL. `target` (path and query) keeps its placeholders.
struct LoadTarget {
  std::string host;  // name or address, IPv6 without brackets
  std::uint16_t port = 80;
  std::string target;       // "/path?query", at least "/"
  std::string host_header;  // "host:port" as sent in Host:, brackets kept
};

// Plain http only; Status::invalid otherwise.
Result<LoadTarget> parse_load_url(std::string_view url);

// The bytes of one request with placeholders, parsed once and rendered per
// request. render() appends to `out` and never allocates when `out` has
// max_size() bytes of spare capacity.
class RequestTemplate {
 public:
  // Status::invalid for an unknown {placeholder} or a bad header line.
  static Result<RequestTemplate> make(const LoadOptions& options, const LoadTarget& target, std::string_view body);

  std::size_t max_size() const { return max_size_; }
  bool is_head() const { return is_head_; }
  void render(std::string& out, std::uint64_t seq, std::uint32_t random, unsigned names) const;

 private:
  enum class Field : std::uint8_t { literal, seq, rand, name };
  struct Piece {
    Field field;
    std::string text;  // for literal pieces
  };
  static Status parse_into(std::string_view text, std::vector<Piece>& out);
  static std::size_t rendered_size(const std::vector<Piece>& pieces, std::uint64_t seq, std::uint32_t random,
                                   unsigned names);
  static void append(std::string& out, const std::vector<Piece>& pieces, std::uint64_t seq, std::uint32_t random,
                     unsigned names);

  std::vector<Piece> head_;  // request line and headers, up to where Content-Length goes
  std::vector<Piece> body_;
  bool has_body_ = false;
  bool is_head_ = false;
  std::size_t max_size_ = 0;
};

// Incremental parser of HTTP/1.x responses on one connection: status line,
// headers, then a body framed by Content-Length, chunked encoding, or the
// close of the connection. Bodies are skipped, never stored; the header block
// must fit in the caller's buffer (need_more with nothing consumed on a full
// buffer means it does not). Interim 1xx answers are skipped.
class ResponseParser {
 public:
  enum class Step { need_more, answer, error };

  // Expects the next response; `head_request`: it answers a HEAD (no body).
  void start(bool head_request);
  // Consumes from data[0..size) and sets `consumed`; `answer` when a
  // response ended there (status() and keep_alive() describe it).
  Step parse(const char* data, std::size_t size, std::size_t& consumed);
  // The peer closed the connection: `answer` if the body ran to the close.
  Step finish();

  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }
  const char* error() const { return error_; }

 private:
  enum class State { head, fixed_body, chunk_size, chunk_data, chunk_end, trailers, until_close };
  Step fail(const char* why);
  Step parse_head(const char* data, std::size_t size, std::size_t& consumed);

  State state_ = State::head;
  bool head_request_ = false;
  int status_ = 0;
  bool keep_alive_ = true;
  std::uint64_t remaining_ = 0;
  const char* error_ = nullptr;
};

}  // namespace kiroku
