// profiler.cpp - CPU profiles from gperftools' profiler, heap samples from tcmalloc.
#include "ops/profiler.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <gperftools/malloc_extension.h>
#include <gperftools/profiler.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "common/text.h"

namespace kiroku {
namespace {

// gperftools has one CPU profiler per process, so one profile at a time per
// process, whichever Profiler asked for it.
std::atomic<bool> g_cpu_profile_running{false};

// A new, empty file for the profiler to write into; its path, or "" (errno set).
std::string make_temp_file() {
  const char* dir = std::getenv("TMPDIR");
  std::string path = (dir != nullptr && *dir != '\0') ? dir : "/tmp";
  path += "/kiroku-cpu-XXXXXX.prof";
  std::vector<char> name(path.begin(), path.end());
  name.push_back('\0');
  const int fd = ::mkstemps(name.data(), 5);
  if (fd < 0) return {};
  ::close(fd);
  return std::string(name.data());
}

Result<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::permanent("cannot open the profile file: " + errno_text(errno));
  std::string bytes;
  char chunk[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;  // SIGPROF may still be in flight
      const int err = errno;
      ::close(fd);
      return Status::permanent("cannot read the profile file: " + errno_text(err));
    }
    bytes.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return bytes;
}

bool cpu_profiler_enabled() {
  ProfilerState state{};
  ProfilerGetCurrentState(&state);
  return state.enabled != 0;
}

}  // namespace

// ============================================================================
// CPU profiles
// ============================================================================

Profiler::Profiler() : thread_([this] { run(); }) {}

Profiler::~Profiler() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

Status Profiler::cpu_profile(int seconds, ProfileDone done) {
  if (seconds < kMinProfileSeconds || seconds > kMaxProfileSeconds) {
    return Status::invalid("seconds must be between " + std::to_string(kMinProfileSeconds) + " and " +
                           std::to_string(kMaxProfileSeconds));
  }
  if (!done) return Status::invalid("a CPU profile needs somewhere to go");
  bool expected = false;
  if (!g_cpu_profile_running.compare_exchange_strong(expected, true)) {
    return Status::full("a profile is already running");
  }
  if (cpu_profiler_enabled()) {  // started outside kiroku, e.g. with CPUPROFILE
    g_cpu_profile_running.store(false);
    return Status::full("a profile is already running");
  }
  {
    std::lock_guard lock(mu_);
    job_ = Job{seconds, std::move(done)};
  }
  wake_.notify_all();
  return {};
}

void Profiler::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || job_.has_value(); });
    if (!job_) return;  // stopping, nothing asked
    Job job = std::move(*job_);
    job_.reset();
    lock.unlock();
    Result<std::string> profile = profile_cpu(job.seconds);
    // Free before answering, so the answer's receiver may ask for the next one.
    g_cpu_profile_running.store(false);
    job.done(std::move(profile));
    lock.lock();
  }
}

Result<std::string> Profiler::profile_cpu(int seconds) {
  const std::string path = make_temp_file();
  if (path.empty()) {
    return Status::permanent("cannot create a temporary file for the profile: " + errno_text(errno));
  }
  if (ProfilerStart(path.c_str()) == 0) {
    ::unlink(path.c_str());
    return Status::permanent("the CPU profiler did not start (is it already running?)");
  }
  bool stopped_early = false;
  {
    std::unique_lock lock(mu_);
    stopped_early = wake_.wait_for(lock, std::chrono::seconds(seconds), [this] { return stopping_; });
  }
  ProfilerStop();  // writes the rest of the profile and closes the file
  if (stopped_early) {
    ::unlink(path.c_str());
    return Status::transient("the server is stopping; the profile was cut short");
  }
  Result<std::string> bytes = read_file(path);
  ::unlink(path.c_str());
  return bytes;
}

// ============================================================================
// Heap profiles
// ============================================================================

// Looked up at run time so that binaries without tcmalloc (the unit tests,
// the sanitizer build) still link; LD_PRELOAD=libtcmalloc.so also works. No
// vptr check: it would need MallocExtension's type info at link time.
__attribute__((no_sanitize("vptr"))) Result<std::string> Profiler::heap_profile() {
  using InstanceFn = MallocExtension* (*)();
  void* symbol = ::dlsym(RTLD_DEFAULT, "_ZN15MallocExtension8instanceEv");
  if (symbol == nullptr) {
    return Status::permanent("heap profiles come from tcmalloc, and tcmalloc is not linked into this binary");
  }
  MallocExtension* tcmalloc = reinterpret_cast<InstanceFn>(symbol)();
  std::string sample;
  tcmalloc->GetHeapSample(&sample);
  // With sampling off tcmalloc returns only "%warn" lines.
  if (sample.rfind("heap profile:", 0) != 0) {
    return Status::permanent(
        "heap sampling is off: start the server with TCMALLOC_SAMPLE_PARAMETER=524288 in its "
        "environment (bytes between samples)");
  }
  return sample;
}

}  // namespace kiroku
