// sqlite_memory.h - SQLite's memory, recycled instead of malloc'd per row.
//
// Debian's SQLite is built without lookaside, so every statement step
// mallocs and frees its cursors and record buffers: about four heap calls per
// inserted row. install_sqlite_memory() gives SQLite (SQLITE_CONFIG_MALLOC)
// an allocator that keeps freed blocks in per-thread caches by power-of-two
// size class (16 B .. 64 KiB, at most 1 MiB and 256 blocks per class and
// thread; larger blocks go straight to malloc), so the writer's steady state
// reuses the same blocks and calls malloc only while the caches warm up.
// Blocks freed on another thread join that thread's cache.
#pragma once

#include <cstdint>

#include "common/status.h"

namespace kiroku {

// Once per process, before any other use of SQLite (later calls do nothing).
// Returns the error of sqlite3_config when SQLite was already in use.
Status install_sqlite_memory();

// Blocks SQLite's allocator took from malloc so far (cache misses and large
// blocks), for tests and benchmarks; any thread.
std::uint64_t sqlite_memory_heap_calls();

}  // namespace kiroku
