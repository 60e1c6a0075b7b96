// connection_pool.h - a pool of database connections with the knobs of Go's database/sql.
//
// Seed 002's server ran out of connections ("too many connections"), then had
// them reset under it, until it bounded the pool with SetMaxOpenConns,
// SetMaxIdleConns and SetConnMaxLifetime and watched db.Stats(). This pool has
// the same knobs and reports the same figures (PoolStats in sink/sink.h).
//
// The pool knows nothing about the database (the MySQL and PostgreSQL sinks
// share it): connections are PooledConnection objects
// that a Connector creates. acquire() hands out a Lease, which gives the
// connection back when it goes out of scope (or closes it, after discard()).
// Connections are opened outside the pool's lock, so a slow connect does not
// stall other threads; waiting for a free connection is bounded by a timeout.
//
// Thread safety: every member function may be called from any thread. A Lease
// belongs to one thread at a time. Every Lease must be gone before the pool is
// destroyed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "sink/sink.h"

namespace kiroku {

// One open session to a database; the pool owns it and destroys it to close it.
class PooledConnection {
 public:
  virtual ~PooledConnection() = default;
};

struct PoolOptions {
  int max_open = 4;                   // connections open at once, in use or idle; <= 0: unlimited
  int max_idle = 2;                   // idle connections kept for reuse; <= 0: none; capped at max_open
  std::int64_t max_lifetime_ms = 0;   // close a connection this long after it opened; 0: never
  std::int64_t max_idle_time_ms = 0;  // close a connection idle for this long; 0: never
};

class ConnectionPool {
 public:
  // Opens one connection; its Status is what acquire() returns when it fails.
  using Connector = std::function<Result<std::unique_ptr<PooledConnection>>()>;
  using Clock = std::chrono::steady_clock;

  // A connection on loan. Moving transfers the loan; destruction returns it.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    PooledConnection& get() const { return *conn_; }
    // The connection as the type the Connector made.
    template <typename T>
    T& as() const {
      return static_cast<T&>(*conn_);
    }
    // True when the connection was taken from the idle list (it may have gone
    // stale meanwhile), false when it was opened for this acquire().
    bool reused() const { return reused_; }
    // The connection is broken: close it instead of returning it to the pool.
    void discard() { broken_ = true; }
    // Gives the connection back now (or closes it after discard()).
    void release();

   private:
    friend class ConnectionPool;
    ConnectionPool* pool_ = nullptr;
    std::unique_ptr<PooledConnection> conn_;
    Clock::time_point created_;
    bool reused_ = false;
    bool broken_ = false;
  };

  ConnectionPool(PoolOptions options, Connector connect);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Takes an idle connection (most recently used first), opens a new one if
  // fewer than max_open are open, or else waits up to `timeout` for one to be
  // returned. Fails with the Connector's Status, or transient on timeout.
  Result<Lease> acquire(std::chrono::milliseconds timeout);

  // Closes every idle connection, e.g. once one of them turned out to be dead
  // (the server restarted: the others are most likely dead too).
  void close_idle();

  // Closes idle connections past max_idle_time or max_lifetime now. A
  // background thread does this on its own when either knob is set.
  void sweep();

  PoolStats stats() const;
  const PoolOptions& options() const { return options_; }

 private:
  struct Idle {
    std::unique_ptr<PooledConnection> conn;
    Clock::time_point created;
    Clock::time_point idle_since;
  };

  void give_back(std::unique_ptr<PooledConnection> conn, Clock::time_point created, bool broken);
  // Moves expired idle connections to `out` and counts them; caller holds mu_.
  void take_expired(Clock::time_point now, std::vector<std::unique_ptr<PooledConnection>>& out);
  bool lifetime_over(Clock::time_point created, Clock::time_point now) const;
  bool idle_time_over(Clock::time_point idle_since, Clock::time_point now) const;
  void clean_periodically();

  const PoolOptions options_;
  const Connector connect_;
  const std::size_t max_idle_;  // effective: min(max_idle, max_open)

  mutable std::mutex mu_;
  std::condition_variable returned_;  // a connection came back or a slot freed
  std::vector<Idle> idle_;            // most recently returned last
  std::int64_t open_ = 0;             // in use + idle + being opened
  int waiters_ = 0;
  PoolStats counters_;  // wait and closed counters

  std::condition_variable stop_cleaner_;
  bool stopping_ = false;
  std::thread cleaner_;
};

// One log line with every figure, e.g.
// "max_open=4 open=2 in_use=1 idle=1 wait_count=0 wait_duration_us=0 max_idle_closed=0
// max_idle_time_closed=0 max_lifetime_closed=0".
std::string format_pool_stats(const PoolStats& stats);

}  // namespace kiroku
