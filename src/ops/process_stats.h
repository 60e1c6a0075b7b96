// process_stats.h - figures about the server process itself: memory, file descriptors, CPU.
//
// Read from /proc/self (Linux) and getrlimit/getrusage at the moment of the
// call; nothing is cached. Every function is safe from any thread. Failures
// (no /proc, an unreadable file) come back as a Status, never an exception.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kiroku {

class Registry;

struct ProcessMemory {
  std::int64_t resident_bytes = 0;       // VmRSS
  std::int64_t peak_resident_bytes = 0;  // VmHWM, the high-water mark of VmRSS
};

// VmRSS and VmHWM from /proc/self/status. Allocates nothing.
Result<ProcessMemory> read_process_memory();

// The number of open file descriptors (entries of /proc/self/fd, not counting
// the one used to list them).
Result<std::int64_t> count_open_fds();

// The soft RLIMIT_NOFILE: how many descriptors the process may open. -1 when
// unlimited.
Result<std::int64_t> open_file_limit();

// User plus system CPU time used by the process so far, in seconds.
double process_cpu_seconds();

// Registers, as callback metrics read at each scrape (NaN when a read fails):
//   process_resident_memory_bytes, process_resident_memory_peak_bytes,
//   process_open_fds, process_max_fds (+Inf when unlimited) and
//   process_cpu_seconds_total. Throws only as Registry registration does.
void register_process_metrics(Registry& registry);

}  // namespace kiroku
