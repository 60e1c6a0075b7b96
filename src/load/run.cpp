// run.cpp - `kiroku load`'s run: one io_context per thread, its connections
// and their schedule, and the tallies they leave.
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

}  // namespace

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
  void server_closed();
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
    server_closed();
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
      server_closed();
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
// The server closed (or will close) the connection: what is in flight fails
// as closed; with nothing in flight, reconnect for what is due.
void Connection::server_closed() {
  if (in_flight_ > 0) {
    fail(Failure::closed);
  } else {
    close_socket();
    pump();
  }
}

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

Result<LoadReport> run_load(const LoadOptions& options, std::ostream* progress) {
  if (Status s = check_load_options(options); !s.ok()) return s;
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

}  // namespace kiroku
