// sqlite_memory.cpp - per-thread size-class caches behind SQLITE_CONFIG_MALLOC.
#include "sink/sqlite/sqlite_memory.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace kiroku {
namespace {

constexpr int kMinShift = 4;   // 16 bytes
constexpr int kMaxShift = 16;  // 64 KiB
constexpr int kClasses = kMaxShift - kMinShift + 1;
constexpr int kLarge = kClasses;  // a block past the largest class
constexpr std::size_t kMaxCachedBytes = 1 << 20;
constexpr std::size_t kMaxCachedBlocks = 256;

// In front of every block: its class and, for a large block, its size.
struct alignas(16) Header {
  std::uint64_t size;  // usable bytes
  std::uint32_t size_class;
  std::uint32_t unused;
};
static_assert(sizeof(Header) == 16);

struct FreeBlock {
  FreeBlock* next;
};

int class_of(std::size_t n) {
  int c = 0;
  while (c < kClasses && (std::size_t{1} << (c + kMinShift)) < n) ++c;
  return c;  // kLarge when it fits no class
}

std::size_t class_bytes(int c) { return std::size_t{1} << (c + kMinShift); }

struct Cache {
  std::array<FreeBlock*, kClasses> head{};
  std::array<std::size_t, kClasses> count{};

  ~Cache() {
    for (auto* h : head) {
      while (h) {
        FreeBlock* next = h->next;
        std::free(reinterpret_cast<Header*>(h) - 1);
        h = next;
      }
    }
  }
};

thread_local Cache t_cache;
std::atomic<std::uint64_t> g_heap_calls{0};

void* allocate(int n) {
  if (n <= 0) return nullptr;
  const int c = class_of(static_cast<std::size_t>(n));
  if (c < kClasses) {
    if (FreeBlock* b = t_cache.head[c]) {
      t_cache.head[c] = b->next;
      --t_cache.count[c];
      return b;
    }
  }
  const std::size_t usable = c < kClasses ? class_bytes(c) : static_cast<std::size_t>(n);
  g_heap_calls.fetch_add(1, std::memory_order_relaxed);
  auto* h = static_cast<Header*>(std::malloc(sizeof(Header) + usable));
  if (!h) return nullptr;
  h->size = usable;
  h->size_class = static_cast<std::uint32_t>(c);
  return h + 1;
}

void release(void* p) {
  if (!p) return;
  Header* h = static_cast<Header*>(p) - 1;
  const int c = static_cast<int>(h->size_class);
  if (c < kClasses && t_cache.count[c] < kMaxCachedBlocks &&
      (t_cache.count[c] + 1) * class_bytes(c) <= kMaxCachedBytes) {
    auto* b = static_cast<FreeBlock*>(p);
    b->next = t_cache.head[c];
    t_cache.head[c] = b;
    ++t_cache.count[c];
    return;
  }
  std::free(h);
}

int size_of(void* p) { return p ? static_cast<int>((static_cast<Header*>(p) - 1)->size) : 0; }

void* reallocate(void* p, int n) {
  if (!p) return allocate(n);
  const std::size_t have = static_cast<std::size_t>(size_of(p));
  if (n > 0 && static_cast<std::size_t>(n) <= have && (static_cast<Header*>(p) - 1)->size_class != kLarge) return p;
  void* q = allocate(n);
  if (!q) return nullptr;
  std::memcpy(q, p, std::min(have, static_cast<std::size_t>(n)));
  release(p);
  return q;
}

int roundup(int n) {
  const int c = class_of(static_cast<std::size_t>(n));
  return c < kClasses ? static_cast<int>(class_bytes(c)) : n;
}

int init(void*) { return SQLITE_OK; }
void shutdown(void*) {}

const sqlite3_mem_methods kMethods = {
    allocate, release, reallocate, size_of, roundup, init, shutdown, nullptr,
};

}  // namespace

std::uint64_t sqlite_memory_heap_calls() { return g_heap_calls.load(std::memory_order_relaxed); }

Status install_sqlite_memory() {
  static int rc = [] {
    const int r = sqlite3_config(SQLITE_CONFIG_MALLOC, &kMethods);
    // No memory statistics: each allocation would take a global mutex to
    // count itself (sqlite3StatusUp), for figures nothing reads.
    if (r == SQLITE_OK) sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    return r;
  }();
  if (rc != SQLITE_OK)
    return Status::permanent("SQLite memory methods not installed: SQLite was in use already (" +
                             std::string(sqlite3_errstr(rc)) + ")");
  return {};
}

}  // namespace kiroku
