// profiler.h - CPU and heap profiles behind GET /debug/pprof/profile and GET /debug/pprof/heap.
//
// Both profiles come in gperftools' legacy formats, which `pprof` reads with
// the server binary at hand: `pprof --text ./kiroku cpu.prof`.
//
// CPU: gperftools' sampling profiler (SIGPROF at 100 Hz from a process-wide
// ITIMER_PROF timer, which samples whichever thread is on a CPU, so every
// thread is covered). A profile runs for N seconds on the Profiler's own
// thread; the caller, an IO thread, only hands the request over. Under load
// on a 2-vCPU VM the server's profiles held 15-40% of the samples its CPU
// time calls for (per-thread timers did no better; the kernel checks CPU
// timers at its ticks, which short IO bursts tend to miss). Read a profile
// for where the time goes; process_cpu_seconds_total says how much.
//
// Heap: tcmalloc's sampled heap (like Go's heap profile, one sample every
// ~512 KiB allocated). tcmalloc reads its sampling period once, at process
// start, from the environment: run the server with
// TCMALLOC_SAMPLE_PARAMETER=524288 to have heap profiles. Without tcmalloc in
// the process, or without sampling, heap_profile() says so in its error.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"

namespace kiroku {

// Bounds of GET /debug/pprof/profile?seconds=N.
inline constexpr int kMinProfileSeconds = 1;
inline constexpr int kMaxProfileSeconds = 300;

// The content type both profiles are served with.
inline constexpr std::string_view kProfileContentType = "application/octet-stream";

// Called once with a finished CPU profile (its bytes) or the reason there is none.
// A std::function is copyable: hold a move-only http::Deferred by shared_ptr.
using ProfileDone = std::function<void(Result<std::string>)>;

class Profiler {
 public:
  // Starts the thread that runs CPU profiles; it sleeps until asked for one.
  Profiler();
  // Cuts a running CPU profile short (its callback gets Status::transient)
  // and joins the thread.
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Profiles the whole process's CPU for `seconds`. Returns at once: ok, and
  // `done` is called exactly once later, on the Profiler's thread, with the
  // profile or an error (permanent: the profiler could not start or write
  // its file; transient: the Profiler was destroyed first). Otherwise `done`
  // is never called and the Status says why: invalid when seconds is outside
  // [kMinProfileSeconds, kMaxProfileSeconds]; full when a CPU profile is
  // already running in this process (from any Profiler, or CPUPROFILE).
  // `done` must not block for long and must not destroy this Profiler.
  // Thread-safe.
  Status cpu_profile(int seconds, ProfileDone done);

  // The current heap sample from tcmalloc, in the text format pprof reads.
  // Quick (no waiting; the sample is kept by tcmalloc at all times).
  // Errors are permanent: tcmalloc is not linked into the process, or heap
  // sampling is off (TCMALLOC_SAMPLE_PARAMETER unset at start). Thread-safe.
  static Result<std::string> heap_profile();

 private:
  struct Job {
    int seconds = 0;
    ProfileDone done;
  };

  void run();
  // Runs one profile; returns its bytes or the error. Releases nothing.
  Result<std::string> profile_cpu(int seconds);

  std::mutex mu_;
  std::condition_variable wake_;
  std::optional<Job> job_;  // handed from cpu_profile() to the thread
  bool stopping_ = false;
  std::thread thread_;  // last member: starts once the rest is built
};

}  // namespace kiroku
