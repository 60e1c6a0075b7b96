// process_stats.cpp - reads /proc/self and the resource limits for process_stats.h.
#include "ops/process_stats.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "common/text.h"
#include "ops/metrics.h"

namespace kiroku {

namespace {

// The value in kB of the "Key:   123 kB" line of a /proc status file, in bytes; -1 if absent.
std::int64_t status_kb_field(std::string_view text, std::string_view key) {
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with(key) || line.size() <= key.size() || line[key.size()] != ':') continue;
    std::int64_t kb = 0;
    bool digits = false;
    for (std::size_t i = key.size() + 1; i < line.size(); ++i) {
      const char c = line[i];
      if (c >= '0' && c <= '9') {
        kb = kb * 10 + (c - '0');
        digits = true;
      } else if (digits) {
        break;
      }
    }
    return digits ? kb * 1024 : -1;
  }
  return -1;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + kiroku::errno_text(errno); }

}  // namespace

Result<ProcessMemory> read_process_memory() {
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::permanent(errno_text("/proc/self/status"));
  // The file is about 1.5 KB; VmHWM and VmRSS sit in its first half.
  char buf[8192];
  std::size_t used = 0;
  while (used < sizeof buf) {
    const ssize_t n = ::read(fd, buf + used, sizeof buf - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const Status error = Status::transient(errno_text("read /proc/self/status"));
      ::close(fd);
      return error;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  ::close(fd);
  const std::string_view text(buf, used);
  ProcessMemory m;
  m.resident_bytes = status_kb_field(text, "VmRSS");
  m.peak_resident_bytes = status_kb_field(text, "VmHWM");
  if (m.resident_bytes < 0 || m.peak_resident_bytes < 0) {
    return Status::permanent("/proc/self/status has no VmRSS or VmHWM");
  }
  return m;
}

Result<std::int64_t> count_open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return Status::permanent(errno_text("/proc/self/fd"));
  std::int64_t count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count - 1;  // the descriptor opendir used
}

Result<std::int64_t> open_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return Status::permanent(errno_text("getrlimit"));
  if (limit.rlim_cur == RLIM_INFINITY) return std::int64_t{-1};
  return static_cast<std::int64_t>(limit.rlim_cur);
}

double process_cpu_seconds() {
  rusage usage{};
  if (::getrusage(RUSAGE_SELF, &usage) != 0) return std::numeric_limits<double>::quiet_NaN();
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void register_process_metrics(Registry& registry) {
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  registry.callback_gauge("process_resident_memory_bytes", "Resident memory size in bytes.", [] {
    const Result<ProcessMemory> m = read_process_memory();
    return m.ok() ? static_cast<double>(m.value().resident_bytes) : nan;
  });
  registry.callback_gauge("process_resident_memory_peak_bytes", "Highest resident memory size in bytes.", [] {
    const Result<ProcessMemory> m = read_process_memory();
    return m.ok() ? static_cast<double>(m.value().peak_resident_bytes) : nan;
  });
  registry.callback_gauge("process_open_fds", "Number of open file descriptors.", [] {
    const Result<std::int64_t> n = count_open_fds();
    return n.ok() ? static_cast<double>(n.value()) : nan;
  });
  registry.callback_gauge("process_max_fds", "Maximum number of open file descriptors.", [] {
    const Result<std::int64_t> n = open_file_limit();
    if (!n.ok()) return nan;
    return n.value() < 0 ? std::numeric_limits<double>::infinity() : static_cast<double>(n.value());
  });
  registry.callback_counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                            [] { return process_cpu_seconds(); });
}

}  // namespace kiroku
