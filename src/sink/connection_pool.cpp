// connection_pool.cpp - the database connection pool (contract in connection_pool.h).
#include "sink/connection_pool.h"

#include <algorithm>

namespace kiroku {
namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

std::size_t effective_max_idle(const PoolOptions& o) {
  if (o.max_idle <= 0) return 0;
  if (o.max_open > 0) return static_cast<std::size_t>(std::min(o.max_idle, o.max_open));
  return static_cast<std::size_t>(o.max_idle);
}

}  // namespace

// ---- Lease ----------------------------------------------------------------------------------

ConnectionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(other.pool_),
      conn_(std::move(other.conn_)),
      created_(other.created_),
      reused_(other.reused_),
      broken_(other.broken_) {
  other.pool_ = nullptr;
}

ConnectionPool::Lease& ConnectionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = other.pool_;
    conn_ = std::move(other.conn_);
    created_ = other.created_;
    reused_ = other.reused_;
    broken_ = other.broken_;
    other.pool_ = nullptr;
  }
  return *this;
}

ConnectionPool::Lease::~Lease() { release(); }

void ConnectionPool::Lease::release() {
  if (pool_ != nullptr && conn_ != nullptr) pool_->give_back(std::move(conn_), created_, broken_);
  pool_ = nullptr;
  conn_.reset();
}

// ---- ConnectionPool ---------------------------------------------------------------------------

ConnectionPool::ConnectionPool(PoolOptions options, Connector connect)
    : options_(options), connect_(std::move(connect)), max_idle_(effective_max_idle(options)) {
  counters_.max_open = options_.max_open > 0 ? options_.max_open : 0;
  if (max_idle_ > 0) idle_.reserve(max_idle_);
  if (options_.max_lifetime_ms > 0 || options_.max_idle_time_ms > 0) {
    cleaner_ = std::thread([this] { clean_periodically(); });
  }
}

ConnectionPool::~ConnectionPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cleaner_.notify_all();
  if (cleaner_.joinable()) cleaner_.join();
  close_idle();
}

bool ConnectionPool::lifetime_over(Clock::time_point created, Clock::time_point now) const {
  return options_.max_lifetime_ms > 0 && now - created >= milliseconds(options_.max_lifetime_ms);
}

bool ConnectionPool::idle_time_over(Clock::time_point idle_since, Clock::time_point now) const {
  return options_.max_idle_time_ms > 0 && now - idle_since >= milliseconds(options_.max_idle_time_ms);
}

Result<ConnectionPool::Lease> ConnectionPool::acquire(milliseconds timeout) {
  std::vector<std::unique_ptr<PooledConnection>> to_close;
  std::unique_lock lock(mu_);
  const Clock::time_point deadline = Clock::now() + timeout;
  Clock::time_point wait_start{};
  bool waited = false;
  const auto count_wait = [&] {
    if (waited) {
      counters_.wait_duration_us += duration_cast<microseconds>(Clock::now() - wait_start).count();
    }
  };

  for (;;) {
    // An idle connection, most recently used first, skipping expired ones.
    const Clock::time_point now = Clock::now();
    while (!idle_.empty()) {
      Idle it = std::move(idle_.back());
      idle_.pop_back();
      if (lifetime_over(it.created, now)) {
        ++counters_.max_lifetime_closed;
      } else if (idle_time_over(it.idle_since, now)) {
        ++counters_.max_idle_time_closed;
      } else {
        count_wait();
        lock.unlock();
        to_close.clear();  // closes the expired ones outside the lock
        Lease lease;
        lease.pool_ = this;
        lease.conn_ = std::move(it.conn);
        lease.created_ = it.created;
        lease.reused_ = true;
        return lease;
      }
      --open_;
      to_close.push_back(std::move(it.conn));
    }

    // Room for a new connection: open it outside the lock.
    if (options_.max_open <= 0 || open_ < options_.max_open) {
      ++open_;
      count_wait();
      lock.unlock();
      to_close.clear();
      Result<std::unique_ptr<PooledConnection>> conn = connect_();
      if (!conn.ok() || *conn == nullptr) {
        lock.lock();
        --open_;
        lock.unlock();
        returned_.notify_one();  // the slot is free again for a waiter
        if (!conn.ok()) return conn.status();
        return Status::transient("connection pool: the connector returned no connection");
      }
      Lease lease;
      lease.pool_ = this;
      lease.conn_ = std::move(*conn);
      lease.created_ = Clock::now();
      lease.reused_ = false;
      return lease;
    }

    // Full: wait for a connection to come back or a slot to free up.
    if (!waited) {
      waited = true;
      wait_start = now;
      ++counters_.wait_count;
    }
    ++waiters_;
    const std::cv_status woke = returned_.wait_until(lock, deadline);
    --waiters_;
    if (woke == std::cv_status::timeout && idle_.empty() && !(options_.max_open <= 0 || open_ < options_.max_open)) {
      count_wait();
      const std::int64_t in_use = open_ - static_cast<std::int64_t>(idle_.size());
      lock.unlock();
      return Status::transient("connection pool: no connection free after " + std::to_string(timeout.count()) +
                               " ms (max_open " + std::to_string(options_.max_open) + ", " + std::to_string(in_use) +
                               " in use)");
    }
  }
}

void ConnectionPool::give_back(std::unique_ptr<PooledConnection> conn, Clock::time_point created, bool broken) {
  std::unique_ptr<PooledConnection> to_close;
  {
    std::lock_guard lock(mu_);
    const Clock::time_point now = Clock::now();
    if (broken || stopping_) {
      to_close = std::move(conn);
    } else if (lifetime_over(created, now)) {
      ++counters_.max_lifetime_closed;
      to_close = std::move(conn);
    } else if (waiters_ > 0 || idle_.size() < max_idle_) {
      // A waiter gets it even when max_idle is 0, as database/sql hands it over.
      idle_.push_back(Idle{std::move(conn), created, now});
    } else {
      ++counters_.max_idle_closed;
      to_close = std::move(conn);
    }
    if (to_close) --open_;
  }
  returned_.notify_one();
  // to_close is destroyed here, outside the lock: closing may wait on the network.
}

void ConnectionPool::take_expired(Clock::time_point now, std::vector<std::unique_ptr<PooledConnection>>& out) {
  auto keep = idle_.begin();
  for (auto it = idle_.begin(); it != idle_.end(); ++it) {
    if (lifetime_over(it->created, now)) {
      ++counters_.max_lifetime_closed;
    } else if (idle_time_over(it->idle_since, now)) {
      ++counters_.max_idle_time_closed;
    } else {
      if (keep != it) *keep = std::move(*it);
      ++keep;
      continue;
    }
    out.push_back(std::move(it->conn));
    --open_;
  }
  idle_.erase(keep, idle_.end());
  // Connections parked for waiters that gave up: trim back to max_idle.
  while (idle_.size() > max_idle_ && waiters_ == 0) {
    out.push_back(std::move(idle_.front().conn));
    idle_.erase(idle_.begin());
    ++counters_.max_idle_closed;
    --open_;
  }
}

void ConnectionPool::sweep() {
  std::vector<std::unique_ptr<PooledConnection>> to_close;
  {
    std::lock_guard lock(mu_);
    take_expired(Clock::now(), to_close);
  }
  if (!to_close.empty()) returned_.notify_all();
}

void ConnectionPool::close_idle() {
  std::vector<Idle> to_close;
  {
    std::lock_guard lock(mu_);
    to_close.swap(idle_);
    open_ -= static_cast<std::int64_t>(to_close.size());
  }
  if (!to_close.empty()) returned_.notify_all();
}

void ConnectionPool::clean_periodically() {
  // As database/sql: check as often as the shorter of the two limits (at
  // least every 100 ms, at most every minute).
  std::int64_t ms = 60'000;
  if (options_.max_lifetime_ms > 0) ms = std::min(ms, options_.max_lifetime_ms);
  if (options_.max_idle_time_ms > 0) ms = std::min(ms, options_.max_idle_time_ms);
  const milliseconds interval(std::max<std::int64_t>(ms, 100));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    stop_cleaner_.wait_for(lock, interval, [this] { return stopping_; });
    if (stopping_) break;
    std::vector<std::unique_ptr<PooledConnection>> to_close;
    take_expired(Clock::now(), to_close);
    if (to_close.empty()) continue;
    lock.unlock();
    returned_.notify_all();
    to_close.clear();
    lock.lock();
  }
}

PoolStats ConnectionPool::stats() const {
  std::lock_guard lock(mu_);
  PoolStats s = counters_;
  s.open = open_;
  s.idle = static_cast<std::int64_t>(idle_.size());
  s.in_use = open_ - s.idle;
  return s;
}

std::string format_pool_stats(const PoolStats& s) {
  std::string out;
  out.reserve(200);
  const auto field = [&out](const char* name, std::int64_t v) {
    if (!out.empty()) out += ' ';
    out += name;
    out += '=';
    out += std::to_string(v);
  };
  field("max_open", s.max_open);
  field("open", s.open);
  field("in_use", s.in_use);
  field("idle", s.idle);
  field("wait_count", s.wait_count);
  field("wait_duration_us", s.wait_duration_us);
  field("max_idle_closed", s.max_idle_closed);
  field("max_idle_time_closed", s.max_idle_time_closed);
  field("max_lifetime_closed", s.max_lifetime_closed);
  return out;
}

}  // namespace kiroku
