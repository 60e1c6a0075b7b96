// instance_lease.h - this process's instance number (the 8 bits of the event
// id that keep instances apart), leased through the sink.
//
// The number is leased in the database (Sink::lease_instance): claimed at
// start, renewed every `renew_every`, released at a clean stop, free again
// when its holder has not renewed it for `ttl`. The holder is a random token
// kept with the last number in `{dir}/instance` (the spool directory, flock'ed
// for the life of the lease), so a restart from the same directory, even
// after kill -9, takes its own number back at once.
//
// While the database cannot be reached the lease keeps the number it has (or,
// at start, the one the file remembers) and renews once the database is back;
// if another instance took it meanwhile (only possible after `ttl` without a
// renewal) the lease takes another number and reports it through on_change.
// Ids issued under the old number are checked row by row when written (a
// clash is a conflict, set aside, never a silent drop: sink.h).
//
// Threading: acquire() before start(); number() from any thread; on_change
// runs on the lease's own thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "sink/sink.h"

namespace kiroku {

struct InstanceLeaseOptions {
  int fixed = -1;   // --instance N, or -1: any free number
  std::string dir;  // where the holder token and the last number are kept
  std::chrono::milliseconds ttl{120'000};
  std::chrono::milliseconds renew_every{10'000};
};

class InstanceLease {
 public:
  InstanceLease(Sink& sink, InstanceLeaseOptions options);
  ~InstanceLease();  // stops the thread; does not release
  InstanceLease(const InstanceLease&) = delete;
  InstanceLease& operator=(const InstanceLease&) = delete;

  // Opens the state file and tries to lease a number. ok: number() is set
  // (leased, or, the database being unreachable, the remembered or fixed one).
  // transient: no number yet (unreachable database, nothing remembered): call
  // again. full: the fixed number is held by a live instance, or all are.
  // permanent: the directory is unusable or in use by another process.
  // ask_database false: the sink is not open; only the fixed or remembered
  // number can be taken.
  Status acquire(bool ask_database = true);

  // The number, or -1 before acquire() succeeded. Any thread.
  int number() const { return number_.load(std::memory_order_relaxed); }
  // True once the database has confirmed the current number.
  bool confirmed() const { return confirmed_.load(std::memory_order_relaxed); }
  // Ids may have been issued up to about this Unix ms by a previous run from
  // the same directory (the state file is touched every second; 2 s margin):
  // the id floor when the table cannot be asked for its largest id.
  std::int64_t id_floor_unix_ms() const { return floor_ms_; }

  // Starts renewing; `on_change(n)` is called when the number had to change.
  void start(std::function<void(unsigned)> on_change);

  // Stops renewing and gives the number back (clean stop).
  void release();

 private:
  void run();
  void renew();
  Status save(unsigned n);

  Sink& sink_;
  const InstanceLeaseOptions options_;
  std::string holder_;
  int fd_ = -1;
  std::int64_t floor_ms_ = 0;
  int remembered_ = -1;
  std::atomic<int> number_{-1};
  std::atomic<bool> confirmed_{false};
  std::function<void(unsigned)> on_change_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool unreachable_logged_ = false;
  std::thread thread_;
};

}  // namespace kiroku
